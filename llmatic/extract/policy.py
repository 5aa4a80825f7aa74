"""Static policy: reject generated code that reaches outside a network's business.

This is the first of two layers (the sandbox is the second). It reads the syntax tree only
and never runs anything. Real network code passes: ``super(Net, self).__init__()``,
``nn.ModuleList``, loops and comprehensions in ``forward``, ``x.view(x.size(0), -1)``,
``torch.cat``, ``math.sqrt``, type hints, helper classes, ``getattr(self, name)``.
Rejected, with the offending line:

* imports outside an allow-list (torch, torch.nn, torch.nn.functional, math, typing, ...);
* builtins that execute or reflect: ``open``, ``exec``, ``eval``, ``compile``,
  ``__import__``, ``globals``, ``locals``, ``vars``, ``breakpoint``, ``input``, ...;
* ``getattr`` / ``setattr`` / ``delattr`` on a module (``getattr(torch, "lo" + "ad")``);
* dunder attribute walks (``__class__``, ``__subclasses__``, ``__globals__``,
  ``__builtins__``, ``__dict__``, ``__code__``, ...) — only ``__init__`` is needed;
* assignments to anything reached through a module (``F.cross_entropy = ...``,
  ``torch.Tensor.backward = ...``): monkeypatching the functions training relies on;
* torch escape hatches: ``torch.hub``, ``torch.load`` / ``torch.save``, ``torch.ops``,
  ``torch._C`` and every private ``torch._*``, ``torch.utils.cpp_extension``,
  ``torch.jit.load``, ``torch.classes``, ``torch.library``, ``torch.multiprocessing``,
  ``torch.distributed``, ``torch.package``, ``torch.serialization``.

A determined attacker can still write code this does not recognise; that is what the
sandbox is for.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass

from llmatic.astparse import parse as parse_source

#: Modules generated network code may import (a module's submodules are allowed with it
#: only when listed).
DEFAULT_ALLOWED_IMPORTS: tuple[str, ...] = (
    "__future__",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.nn.init",
    "torch.nn.utils.parametrizations",
    "math",
    "typing",
    "collections",
    "collections.abc",
    "functools",
    "itertools",
    "operator",
    "numbers",
    "dataclasses",
    "enum",
    "abc",
    "copy",
    "random",
    "numpy",
)

FORBIDDEN_BUILTINS = frozenset({
    "open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars",
    "breakpoint", "input", "memoryview", "exit", "quit", "help", "__builtins__",
    "__loader__", "__spec__",
})
REFLECTION_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__doc__", "__len__", "__call__",
                             "__annotations__", "__future__"})
#: Attribute paths (after resolving import aliases) that are never allowed, with prefixes.
FORBIDDEN_PATHS = (
    "torch.hub", "torch.load", "torch.save", "torch.ops", "torch.utils.cpp_extension",
    "torch.jit.load", "torch.jit.save", "torch.classes", "torch.library",
    "torch.multiprocessing", "torch.distributed", "torch.package", "torch.serialization",
    "torch.from_file",
)


#: Attribute names never allowed on anything: each reaches a module that escapes the sandbox
#: (``torch.os``, ``np.ctypes``, an alias ``t = torch; t.distributed``), whatever the object.
FORBIDDEN_ATTRS = frozenset({
    "os", "sys", "subprocess", "distributed", "multiprocessing", "ctypes", "builtins",
    "importlib", "hub", "cpp_extension", "serialization",
})


#: Special methods a class in generated code may not define: each runs at a moment the
#: worker does not choose (collection, subclassing, copying, pickling, attribute access,
#: isinstance checks) or takes over torch's dispatch.
FORBIDDEN_METHODS = frozenset({
    "__del__", "__init_subclass__", "__set_name__", "__class_getitem__", "__getattribute__",
    "__getattr__", "__setattr__", "__delattr__", "__reduce__", "__reduce_ex__",
    "__getstate__", "__setstate__", "__copy__", "__deepcopy__", "__instancecheck__",
    "__subclasscheck__", "__new__", "__torch_function__", "__torch_dispatch__",
    "__enter__", "__exit__", "__index__", "__hash__", "__eq__", "__bool__",
    "__getnewargs__", "__getnewargs_ex__",
})


def _foreign_module(path: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """The module ``path`` reaches when that module lies outside its root's package.

    ``random._os`` -> ``os``, ``torch.inspect`` -> ``inspect``, ``enum.bltns`` ->
    ``builtins``; ``torch.linalg`` stays inside torch. Read from the already imported
    modules' own dicts: nothing is imported or called.
    """
    parts = path.split(".")
    obj: object = sys.modules.get(parts[0])
    if obj is None and parts[0] in allowed:
        try:  # an allowed module the search process has not needed yet (random, enum)
            obj = importlib.import_module(parts[0])
        except Exception:  # noqa: BLE001 - unknown: nothing to read
            return None
    if not isinstance(obj, types.ModuleType):
        return None
    root = parts[0]
    for name in parts[1:]:
        try:
            obj = object.__getattribute__(obj, "__dict__")[name]
        except (AttributeError, KeyError, TypeError):
            return None
        if isinstance(obj, types.ModuleType):
            mod = str(getattr(obj, "__name__", ""))
            if mod.split(".")[0] != root:
                return mod
    return None


def _holds_module(expr: ast.AST, resolve) -> str | None:  # noqa: ANN001
    """The module (or module attribute) an expression can evaluate to without a call.

    ``[torch][0]``, ``(np, 1)[0]``, ``torch if c else np``, ``a or torch``: the aliases a
    plain ``name = module`` check misses.
    """
    if isinstance(expr, ast.Name | ast.Attribute):
        return resolve(expr)
    if isinstance(expr, ast.List | ast.Tuple | ast.Set):
        elts = expr.elts
    elif isinstance(expr, ast.Dict):
        elts = expr.values
    elif isinstance(expr, ast.Subscript | ast.Starred | ast.NamedExpr):
        elts = [expr.value]
    elif isinstance(expr, ast.IfExp):
        elts = [expr.body, expr.orelse]
    elif isinstance(expr, ast.BoolOp):
        elts = expr.values
    else:
        return None
    for elt in elts:
        found = _holds_module(elt, resolve) if elt is not None else None
        if found:
            return found
    return None


@dataclass(frozen=True)
class Violation:
    """One reason to reject a program."""

    line: int
    message: str
    source: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}: {self.source.strip()}"


def _dotted_parts(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]`` (None: not a plain dotted name)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _forbidden_path(path: str) -> bool:
    parts = path.split(".")
    private = [p for p in parts[1:] if p.startswith("_") and not (p.startswith("__")
                                                                  and p.endswith("__"))]
    if parts[0] == "torch" and private:
        return True
    return any(path == p or path.startswith(p + ".") for p in FORBIDDEN_PATHS)


class _Checker(ast.NodeVisitor):
    def __init__(self, lines: list[str], allowed: frozenset[str]) -> None:
        self.lines = lines
        self.allowed = allowed
        self.modules: dict[str, str] = {}  # local name -> module path it is bound to
        self.violations: list[Violation] = []

    def flag(self, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", 0)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        self.violations.append(Violation(line, message, text))

    def _allowed_module(self, name: str) -> bool:
        return name in self.allowed

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802 - ast API
        for alias in node.names:
            if not self._allowed_module(alias.name):
                self.flag(node, f"import of {alias.name!r} is not allowed")
            local = alias.asname or alias.name.split(".")[0]
            self.modules[local] = alias.name if alias.asname else alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        module = node.module or ""
        if node.level or not self._allowed_module(module):
            self.flag(node, f"import from {module or '.'!r} is not allowed")
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if alias.name == "*":
                self.flag(node, "star imports are not allowed")
            elif _forbidden_path(full):
                self.flag(node, f"{full} is not allowed")
            elif full in self._known_modules() and not self._allowed_module(full):
                self.flag(node, f"import of {full!r} is not allowed")
            self.modules[alias.asname or alias.name] = full

    @staticmethod
    def _known_modules() -> frozenset[str]:
        return frozenset({"torch.hub", "torch.utils", "torch.jit", "torch.multiprocessing",
                          "torch.distributed", "torch.package", "torch.serialization",
                          "torch.cuda", "torch.backends", "torch.testing", "torch.onnx",
                          "torch.utils.cpp_extension", "torch.library", "torch.ops"})

    def _resolve(self, node: ast.AST) -> str | None:
        parts = _dotted_parts(node)
        if not parts or parts[0] not in self.modules:
            return None
        return ".".join([self.modules[parts[0]], *parts[1:]])

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        if node.attr.startswith("__") and node.attr.endswith("__") and (
            node.attr not in ALLOWED_DUNDERS
        ):
            self.flag(node, f"attribute {node.attr!r} is not allowed")
        if node.attr in FORBIDDEN_ATTRS:
            self.flag(node, f"attribute {node.attr!r} is not allowed (it reaches a module "
                            "outside the sandbox)")
            return
        path = self._resolve(node)
        if path is not None and _forbidden_path(path):
            self.flag(node, f"{path} is not allowed")
            return  # one message per chain
        foreign = _foreign_module(path, self.allowed) if path is not None else None
        if foreign is not None:
            self.flag(node, f"{path} reaches the module {foreign!r}, which is not allowed")
            return
        self.generic_visit(node)

    def _changed(self, target: ast.AST) -> Iterable[ast.AST]:
        """The objects an assignment target changes (not the expressions in its index)."""
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                yield from self._changed(elt)
        elif isinstance(target, ast.Starred):
            yield from self._changed(target.value)
        elif isinstance(target, ast.Subscript | ast.Attribute):
            yield target.value if isinstance(target, ast.Subscript) else target

    def _check_targets(self, targets: Iterable[ast.AST]) -> None:
        for target in targets:
            for node in self._changed(target):
                path = self._resolve(node) if isinstance(node, ast.Attribute | ast.Name) \
                    else None
                if path is None and isinstance(node, ast.Attribute):
                    path = _holds_module(node.value, self._resolve)  # [torch][0].relu = f
                    path = None if path is None else f"{path}.{node.attr}"
                elif path is None and isinstance(node, ast.Subscript):
                    path = _holds_module(node, self._resolve)
                if path is not None:
                    self.flag(node, f"assigning to {path} (monkeypatching) is not allowed")
                    break

    def _bind(self, target: ast.AST, value: ast.AST) -> None:
        """``t = torch`` / ``t = [torch][0]``: the new name is an alias of the module."""
        bound = _holds_module(value, self._resolve)
        if isinstance(target, ast.Name):
            if bound is not None:
                self.modules[target.id] = bound
            else:  # rebound to something else: no longer an alias
                self.modules.pop(target.id, None)
        elif bound is not None and isinstance(target, ast.Tuple | ast.List):
            # `a, b = torch, np`: element by element; otherwise each may be the module
            pairwise = isinstance(value, ast.Tuple | ast.List) and \
                len(value.elts) == len(target.elts)
            for i, elt in enumerate(target.elts):
                self._bind(elt, value.elts[i] if pairwise else value)

    def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        self._check_targets(node.targets)
        for target in node.targets:
            self._bind(target, node.value)
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:  # noqa: N802
        self._bind(node.target, node.value)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:  # noqa: N802
        self._check_targets([node.target])
        self._bind(node.target, node.iter)  # `for m in [torch]: m.relu = f`
        self.generic_visit(node)

    visit_AsyncFor = visit_For  # noqa: N815

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802
        if node.name in FORBIDDEN_METHODS:
            self.flag(node, f"defining {node.name} is not allowed (it runs when the worker "
                            "does not expect it)")
        # `def f(m=torch)`: a default bound to a module makes the parameter an alias.
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        for arg, default in zip(positional[len(positional) - len(args.defaults):],
                                args.defaults, strict=True):
            self._bind(ast.Name(id=arg.arg), default)
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if default is not None:
                self._bind(ast.Name(id=arg.arg), default)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_AugAssign(self, node: ast.AugAssign) -> None:  # noqa: N802
        self._check_targets([node.target])
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:  # noqa: N802
        self._check_targets([node.target])
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:  # noqa: N802
        self._check_targets(node.targets)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802
        if node.id in FORBIDDEN_BUILTINS:
            self.flag(node, f"{node.id!r} is not allowed")
        elif node.id.startswith("__") and node.id.endswith("__") and (
            node.id not in ALLOWED_DUNDERS
        ):
            self.flag(node, f"name {node.id!r} is not allowed")

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        func = node.func
        if isinstance(func, ast.Name) and func.id in REFLECTION_BUILTINS and node.args:
            target = node.args[0]
            root = _dotted_parts(target)
            if root and root[0] in self.modules:
                self.flag(node, f"{func.id}() on a module is not allowed")
            elif not (root and root[0] in ("self", "cls")) and not isinstance(target, ast.Name):
                # getattr(some_call(), ...) could reach anything; names and self are fine.
                self.flag(node, f"{func.id}() on an expression is not allowed")
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(
                node.args[1].value, str
            ) and node.args[1].value.startswith("__"):
                self.flag(node, f"{func.id}() of a dunder is not allowed")
        self.generic_visit(node)


def check_source(source: str, allowed_imports: Iterable[str] = DEFAULT_ALLOWED_IMPORTS
                 ) -> list[Violation]:
    """All policy violations in ``source`` (empty list: allowed). Never executes it."""
    try:
        tree = parse_source(source)
    except SyntaxError:
        return []  # not ours to judge: the caller reports a syntax error
    checker = _Checker(source.splitlines(), frozenset(allowed_imports))
    checker.visit(tree)
    return sorted(checker.violations, key=lambda v: v.line)


def policy_error(source: str, allowed_imports: Iterable[str] = DEFAULT_ALLOWED_IMPORTS
                 ) -> str | None:
    """The first violation (and how many more) as one message, or None when allowed."""
    violations = check_source(source, allowed_imports)
    if not violations:
        return None
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{violations[0]}{more}"
