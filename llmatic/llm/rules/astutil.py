"""Small helpers to read and build Python syntax trees (:mod:`ast`).

They know nothing about networks beyond the names ``self``, ``nn`` and ``F``: reading dotted
names, call arguments and literals, building statements, renaming, and fresh names.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from llmatic.astparse import parse as parse_source
from llmatic.llm.rules.vocab import _FUNC_MODULES


def _dotted(node: ast.AST) -> str | None:
    """Return ``"a.b.c"`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _self_attr(node: ast.AST) -> str | None:
    """Return ``X`` for the expression ``self.X``, else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "self":
            return node.attr
    return None


def _ctor_name(node: ast.AST) -> str | None:
    """Return the class a constructor call builds: ``Conv2d`` for ``nn.Conv2d(...)``.

    Only ``nn.X``, ``torch.nn.X`` and bare ``X`` count; ``self.make_layer(...)`` does not.
    """
    if not isinstance(node, ast.Call):
        return None
    name = _dotted(node.func)
    if name is None:
        return None
    prefix, _, last = name.rpartition(".")
    return last if prefix in ("", "nn", "torch.nn") else None


def _func_name(func: ast.AST) -> str | None:
    """Return ``relu`` for ``F.relu`` / ``torch.relu`` / ``torch.nn.functional.relu``."""
    name = _dotted(func)
    if name is None or "." not in name:
        return None
    prefix, _, last = name.rpartition(".")
    return last if prefix in _FUNC_MODULES else None


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    """Return a call's argument given by position or by keyword, else None."""
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if index < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args):
        return call.args[index]
    return None


_UNKNOWN = object()


def _literal(node: ast.expr | None, default: object = None) -> object:
    """Return ``node``'s literal value; ``default`` if absent, ``_UNKNOWN`` if not a literal."""
    if node is None:
        return default
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNKNOWN


def _int_literal(node: ast.expr | None) -> int | None:
    """Return the int a literal node holds (not bools), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _pair(value: object) -> tuple[int, int] | None:
    """Return ``(v, v)`` for an int, the tuple for a 2-tuple of ints, else None."""
    if type(value) is int:
        return value, value  # type: ignore[return-value]
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return value[0], value[1]
    return None


def _names(node: ast.AST, ctx: type[ast.expr_context]) -> set[str]:
    """Return the variable names ``node`` reads (``ast.Load``) or writes (``ast.Store``)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _static(nodes: Iterable[ast.AST]) -> bool:
    """Whether expressions read no local variable (``self.training`` and constants are fine)."""
    return all(_names(node, ast.Load) <= {"self"} for node in nodes)


def _stmt(source: str) -> ast.stmt:
    """Parse one statement."""
    return parse_source(source).body[0]


def _assign(target: str, value: ast.expr) -> ast.Assign:
    """Build ``target = value``."""
    return ast.Assign(targets=[ast.Name(id=target, ctx=ast.Store())], value=value, lineno=0)


def _name(var: str) -> ast.Name:
    """Build a Name that reads ``var``."""
    return ast.Name(id=var, ctx=ast.Load())


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    """Return a class's method of that name."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _is_super_init(stmt: ast.stmt) -> bool:
    """Whether ``stmt`` is ``super().__init__(...)`` or ``nn.Module.__init__(self)``."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    func = stmt.value.func
    return isinstance(func, ast.Attribute) and func.attr == "__init__"


class _Swap(ast.NodeTransformer):
    """Replace one node (by identity) with another."""

    def __init__(self, old: ast.AST, new: ast.AST) -> None:
        self.old, self.new = old, new

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.old:
            return self.new
        return self.generic_visit(node)


class _RenameAttrs(ast.NodeTransformer):
    """Rename ``self.X`` attributes."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if _self_attr(node) in self.mapping:
            node.attr = self.mapping[node.attr]
        return node


class _RenameNames(ast.NodeTransformer):
    """Rename module-level names (classes, functions) where they are defined and used."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.generic_visit(node)
        node.name = self.mapping.get(node.name, node.name)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name = self.mapping.get(node.name, node.name)
        return node


def _fresh(prefix: str, taken: set[str]) -> str:
    """Return ``prefix1``, ``prefix2``, ... : the first one not in ``taken``."""
    base = re.sub(r"[_\d]+$", "", prefix) or prefix
    n = 1
    while f"{base}{n}" in taken:
        n += 1
    return f"{base}{n}"
