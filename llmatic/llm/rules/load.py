"""Loading a parent: parse its source and bring it into the form the edits understand.

:func:`_load` drops script code, finds the network class, turns eager layers into lazy ones
(unless the code reads layer sizes), gives pooling ``ceil_mode=True`` and splits ``forward``
into one layer per statement. The result is a :class:`~llmatic.llm.rules.network._Net`.
"""

from __future__ import annotations

import ast

from llmatic.astparse import parse as parse_source
from llmatic.llm.rules.astutil import _assign, _dotted, _func_name, _method, _name, _names
from llmatic.llm.rules.errors import _NoEdit
from llmatic.llm.rules.forward import _split_statement
from llmatic.llm.rules.network import _Net
from llmatic.llm.rules.vocab import _LAZY_TWIN, _SIZE_READS


def _bare_torch_nn_names(tree: ast.Module) -> set[str]:
    """Names imported with ``from torch.nn import X``."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "torch.nn":
            names |= {alias.name for alias in node.names if alias.asname is None}
    return names


def _torch_nn_call(call: ast.Call, bare: set[str]) -> str | None:
    """Return X for ``nn.X(...)``, ``torch.nn.X(...)`` or ``X(...)`` imported from torch.nn."""
    name = _dotted(call.func)
    if name is None:
        return None
    prefix, _, last = name.rpartition(".")
    if prefix in ("nn", "torch.nn") or (prefix == "" and last in bare):
        return last
    return None


class _Lazify(ast.NodeTransformer):
    """Turn eager layers into lazy ones: ``nn.Conv2d(3, 16, 3)`` -> ``nn.LazyConv2d(16, 3)``.

    A lazy layer infers its input size at the first forward pass, so a layer inserted before
    it, or a parent spliced in front of it, cannot break it.
    """

    def __init__(self, bare: set[str]) -> None:
        self.bare = bare

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        eager = _torch_nn_call(node, self.bare)
        if eager not in _LAZY_TWIN:
            return node
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            return node
        lazy, size_keyword = _LAZY_TWIN[eager]
        keywords = [k for k in node.keywords if k.arg != size_keyword]
        args = list(node.args)
        if len(keywords) == len(node.keywords):  # the input size was positional
            if not args:
                return node
            args = args[1:]
        func = ast.Attribute(value=_name("nn"), attr=lazy, ctx=ast.Load())
        return ast.copy_location(ast.Call(func=func, args=args, keywords=keywords), node)


class _CeilPools(ast.NodeTransformer):
    """Make max/avg pooling use ``ceil_mode=True``, so a 1x1 map stays 1x1 instead of failing."""

    # Position of ceil_mode among the positional arguments.
    _MODULES = {"MaxPool1d": 5, "MaxPool2d": 5, "AvgPool1d": 3, "AvgPool2d": 3}
    _FUNCS = {"max_pool1d": 5, "max_pool2d": 5, "avg_pool1d": 4, "avg_pool2d": 4}

    def __init__(self, bare: set[str]) -> None:
        self.bare = bare

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        module, func = _torch_nn_call(node, self.bare), _func_name(node.func)
        position = self._MODULES.get(module or "", self._FUNCS.get(func or ""))
        if position is None or any(isinstance(a, ast.Starred) for a in node.args):
            return node
        if len(node.args) > position:
            node.args[position] = ast.Constant(True)
            return node
        node.keywords = [k for k in node.keywords if k.arg != "ceil_mode"]
        node.keywords.append(ast.keyword(arg="ceil_mode", value=ast.Constant(True)))
        return node


def _reads_layer_sizes(tree: ast.Module) -> bool:
    """Whether any code reads sizes or weights that lazy layers do not have until used."""
    return any(isinstance(n, ast.Attribute) and n.attr in _SIZE_READS for n in ast.walk(tree))


def _drop_script_code(tree: ast.Module) -> None:
    """Keep imports, definitions and constants; drop script code (``print``, ``Net()``, main)."""
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    kept: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef)):
            kept.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            calls = {_dotted(c.func) for c in ast.walk(node.value) if isinstance(c, ast.Call)}
            if not calls & classes:  # instantiating a network is script code
                kept.append(node)
    tree.body = kept


def _network_class(tree: ast.Module) -> ast.ClassDef | None:
    """The network class: an nn.Module class with __init__ and forward that no other uses."""
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    local = {c.name for c in classes}
    candidates = [
        c
        for c in classes
        if _method(c, "__init__") and _method(c, "forward")
        and any((_dotted(b) or "").endswith("Module") or _dotted(b) in local for b in c.bases)
    ]
    used = set()
    for c in classes:
        used |= _names(c, ast.Load) - {c.name}
    top = [c for c in candidates if c.name not in used] or candidates
    named_net = [c for c in top if c.name == "Net"]
    return (named_net or top or [None])[-1]


def _load(source: str) -> _Net:
    """Parse a parent and bring it into the canonical form the edits understand."""
    try:
        tree = parse_source(source)
    except SyntaxError as exc:
        raise _NoEdit(f"the parent is not valid Python ({exc.msg}, line {exc.lineno})") from exc
    except ValueError as exc:  # e.g. null bytes
        raise _NoEdit(f"the parent is not valid Python ({exc})") from exc
    _drop_script_code(tree)
    cls = _network_class(tree)
    if cls is None:
        raise _NoEdit("the parent has no nn.Module class with __init__ and forward")
    net = _Net(tree, cls)
    bare = _bare_torch_nn_names(tree)
    if not _reads_layer_sizes(tree):
        _Lazify(bare).visit(tree)
    _CeilPools(bare).visit(tree)
    _normalise_forward(net)
    return net


def _normalise_forward(net: _Net) -> None:
    """Drop docstrings, name the returned value, and split statements to one layer each."""
    body = [
        s
        for s in net.forward.body
        if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    if body and isinstance(body[-1], ast.Return) and isinstance(body[-1].value, ast.Call):
        # return self.fc(x) -> x = self.fc(x); return x: gives a place before the classifier
        stored = [t.id for s in body[:-1] if isinstance(s, ast.Assign) for t in s.targets
                  if isinstance(t, ast.Name)]
        var = stored[-1] if stored else net.input_name
        body[-1:] = [_assign(var, body[-1].value), ast.Return(value=_name(var))]
    net.forward.body = [piece for stmt in body for piece in _split_statement(stmt)] or [
        ast.Pass()
    ]
