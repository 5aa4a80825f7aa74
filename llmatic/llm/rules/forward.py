"""Reading ``forward`` statement by statement: layer chains, flattens, live variables.

A simple statement is a *chain*, ``target = op_n(...op_1(source))``, whose steps are layer
calls (``self.X``), tensor functions (``F.relu``) or a flatten. The loader splits statements
so that each holds at most one layer, which gives a place between any two layers; the layout
(:mod:`llmatic.llm.rules.network`) then asks which variables are live at each place.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

from llmatic.llm.rules.astutil import (
    _arg,
    _assign,
    _func_name,
    _literal,
    _name,
    _names,
    _self_attr,
    _static,
)
from llmatic.llm.rules.vocab import _CHAIN_FUNCS, _REDUCTIONS


@dataclass
class _Op:
    """One step of a chain: a layer call, a tensor function, or a flatten."""

    kind: str  # "module" (self.X(...)), "func" (F.relu(...)), "flatten"
    name: str  # attribute name for a module, function name otherwise
    call: ast.Call
    canonical: bool = True  # flatten only: False for view/reshape forms, rebuilt as torch.flatten
    reduces: bool = False  # flatten only: global pooling (x.mean([2, 3])), gives just C features


@dataclass
class _Chain:
    """A simple forward statement ``target = op_n(...op_1(source))``."""

    target: str
    source: str
    ops: list[_Op]  # innermost first


def _flatten_source(call: ast.Call) -> tuple[ast.expr, bool, bool] | None:
    """If ``call`` flattens (B, ...) to (B, F), return (tensor, canonical form, reduces).

    Recognises ``torch.flatten(t, 1)``, ``t.flatten(1)``, ``t.view(t.size(0), -1)``,
    ``t.view(-1, n)``, ``t.reshape(...)`` with two arguments one of which is -1, and global
    pooling by reduction such as ``t.mean([2, 3])``.
    """
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    receiver_is_module = isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
    if func.attr == "flatten":
        if receiver_is_module:  # torch.flatten(t, start_dim)
            if not call.args:
                return None
            tensor, start, end = call.args[0], _arg(call, 1, "start_dim"), _arg(call, 2, "end_dim")
        else:  # t.flatten(start_dim)
            tensor, start, end = func.value, _arg(call, 0, "start_dim"), _arg(call, 1, "end_dim")
        if _literal(start) == 1 and _literal(end, -1) == -1:
            return tensor, receiver_is_module, False
        return None
    if func.attr in ("view", "reshape") and not receiver_is_module:
        if len(call.args) == 2 and not call.keywords:
            minus_one = [_literal(a) == -1 for a in call.args]
            if sum(minus_one) == 1:
                return func.value, False, False
        return None
    if func.attr in _REDUCTIONS:
        if receiver_is_module:
            if not call.args:
                return None
            tensor, dims, keep = call.args[0], _arg(call, 1, "dim"), _arg(call, 2, "keepdim")
        else:
            tensor, dims, keep = func.value, _arg(call, 0, "dim"), _arg(call, 1, "keepdim")
        dims_value = _literal(dims)
        if isinstance(dims_value, (list, tuple)) and set(dims_value) in ({2, 3}, {-1, -2}):
            if _literal(keep, False) is False:
                return tensor, True, True
    return None


def _parse_chain(expr: ast.expr) -> tuple[str, list[_Op]] | None:
    """Read ``op_n(...op_1(name))`` into (name, ops innermost first); None if not a chain."""
    ops: list[_Op] = []
    node = expr
    while True:
        if isinstance(node, ast.Name):
            return node.id, ops[::-1]
        if not isinstance(node, ast.Call):
            return None
        attr = _self_attr(node.func)
        if attr is not None:
            if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
                return None
            ops.append(_Op("module", attr, node))
            node = node.args[0]
            continue
        flat = _flatten_source(node)
        if flat is not None:
            tensor, canonical, reduces = flat
            ops.append(_Op("flatten", "flatten", node, canonical, reduces))
            node = tensor
            continue
        fname = _func_name(node.func)
        if fname in _CHAIN_FUNCS and node.args and not isinstance(node.args[0], ast.Starred):
            if not _static([*node.args[1:], *(k.value for k in node.keywords)]):
                return None
            ops.append(_Op("func", fname, node))
            node = node.args[0]
            continue
        return None


def _stmt_chain(stmt: ast.stmt) -> _Chain | None:
    """Return the chain of a simple statement ``name = chain``, else None."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return None
    target = stmt.targets[0]
    if not isinstance(target, ast.Name):
        return None
    parsed = _parse_chain(stmt.value)
    if parsed is None:
        return None
    return _Chain(target.id, parsed[0], parsed[1])


def _rebuild(op: _Op, inner: ast.expr) -> ast.expr:
    """Re-apply one chain step to a new inner expression."""
    if op.kind == "module":
        return ast.Call(func=copy.deepcopy(op.call.func), args=[inner], keywords=[])
    if op.kind == "flatten" and not op.canonical:
        return ast.Call(
            func=ast.Attribute(value=_name("torch"), attr="flatten", ctx=ast.Load()),
            args=[inner, ast.Constant(1)],
            keywords=[],
        )
    call = copy.deepcopy(op.call)
    func = call.func
    if op.kind == "flatten" and isinstance(func, ast.Attribute) and not (
        isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
    ):
        func.value = inner  # a method form such as t.mean([2, 3])
    else:
        call.args[0] = inner
    return call


def _split_statement(stmt: ast.stmt) -> list[ast.stmt]:
    """Give every layer call its own statement, so that there is a place between any two.

    ``x = self.pool(F.relu(self.conv1(x)))`` becomes ``x = F.relu(self.conv1(x))`` and
    ``x = self.pool(x)``; a view/reshape flatten becomes ``torch.flatten(x, 1)``, which drops
    hard-coded sizes; ``x = self.fc(expr)`` becomes ``x = expr`` and ``x = self.fc(x)``.
    """
    chain = _stmt_chain(stmt)
    if chain is None:
        hoisted = _hoist_layer_input(stmt)
        if hoisted is None:
            return [stmt]
        return [*_split_statement(hoisted[0]), *_split_statement(hoisted[1])]
    groups: list[list[_Op]] = [[]]
    for op in chain.ops:
        if op.kind != "func" and any(o.kind != "func" for o in groups[-1]):
            groups.append([])
        groups[-1].append(op)
    if len(groups) == 1 and all(op.canonical for op in chain.ops):
        return [stmt]
    pieces: list[ast.stmt] = []
    inner = chain.source
    for group in groups:
        expr: ast.expr = _name(inner)
        for op in group:
            expr = _rebuild(op, expr)
        pieces.append(_assign(chain.target, expr))
        inner = chain.target
    return pieces


def _hoist_layer_input(stmt: ast.stmt) -> tuple[ast.stmt, ast.stmt] | None:
    """Split ``v = act(self.layer(expr))`` into ``v = expr`` and ``v = act(self.layer(v))``."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return None
    target = stmt.targets[0]
    if not isinstance(target, ast.Name):
        return None
    node = stmt.value
    while isinstance(node, ast.Call) and _func_name(node.func) in _CHAIN_FUNCS and node.args:
        if not _static([*node.args[1:], *(k.value for k in node.keywords)]):
            return None
        node = node.args[0]
    if not (isinstance(node, ast.Call) and _self_attr(node.func) is not None):
        return None
    if len(node.args) != 1 or node.keywords or isinstance(node.args[0], (ast.Name, ast.Starred)):
        return None
    first = _assign(target.id, node.args[0])
    node.args[0] = _name(target.id)
    return first, stmt


def _live_vars(body: list[ast.stmt], params: set[str]) -> list[set[str]]:
    """For each p, the local variables defined before ``body[p]`` and still read from it on.

    A layer can go at p only if exactly one variable (the tensor) is live there; otherwise a
    value saved earlier (a skip connection, a shape) would meet the changed tensor.
    """
    defined = [set(params)]
    for stmt in body:
        defined.append(defined[-1] | _names(stmt, ast.Store))
    live_from: list[set[str]] = [set() for _ in range(len(body) + 1)]
    for i in reversed(range(len(body))):
        stmt, after = body[i], live_from[i + 1]
        if isinstance(stmt, ast.Assign):  # reads first, then unconditional writes
            reads = _names(stmt.value, ast.Load).union(*(_names(t, ast.Load) for t in stmt.targets))
            writes = set().union(*(_names(t, ast.Store) for t in stmt.targets))
            live_from[i] = (after - writes) | reads
        else:  # compound statements may not run their assignments: only count reads
            reads = _names(stmt, ast.Load)
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                reads.add(stmt.target.id)
            live_from[i] = after | reads
    return [(live & known) - {"self"} for live, known in zip(live_from, defined, strict=True)]
