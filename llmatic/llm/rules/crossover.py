"""Crossover of two parents: a one-point splice at a cut where the shapes fit.

By default the cut is at the flatten, so one parent gives the feature extractor and the other
the classifier head. The child gets both parents' helper classes, constants and methods,
renamed where their names collide.
"""

from __future__ import annotations

import ast
import copy

from llmatic.llm.rules.astutil import (
    _fresh,
    _is_super_init,
    _method,
    _RenameAttrs,
    _RenameNames,
    _self_attr,
    _stmt,
)
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.edits.fixes import _llm_fixes
from llmatic.llm.rules.edits.insert import _ensure_guard, _has_guard
from llmatic.llm.rules.errors import _NoEdit
from llmatic.llm.rules.load import _load
from llmatic.llm.rules.network import _Net, _Point
from llmatic.llm.rules.render import _prune, _render

#: Further cuts a crossover tries when its first splice gives back a parent.
_CROSSOVER_RETRIES = 24


def _cut_pairs(a: _Net, b: _Net) -> list[tuple[_Point, _Point]]:
    """Pairs (cut in A, cut in B) where A's front part can feed B's back part."""
    front = [p for p in a.layout().points if p.index >= 1]
    back = [p for p in b.layout().points if p.reshape_ok and (p.region == "flat" or p.resize_ok)]
    return [(pa, pb) for pa in front for pb in back if pa.region == pb.region]


def _crossover(source_a: str, source_b: str, ctx: _Ctx) -> str:
    """Splice two parents: A's forward up to a cut, then B's forward from a matching cut.

    When cold the cut is at the flatten (A's feature extractor, B's classifier head); when
    hot it may be any pair of shape-compatible places. Either parent may come first.
    A splice that gives back one of the parents (two networks with the same head, cut at the
    flatten) is not a child: the other cuts are tried in a random order, and when every one
    gives a parent back the crossover says so instead of returning a copy.
    """
    copies = {_render(_load(source_a)), _render(_load(source_b))}

    def loaded(swap: bool) -> tuple[_Net, _Net, list[tuple[_Point, _Point]]]:
        a, b = _load(source_a), _load(source_b)
        if swap:
            a, b = b, a
        return a, b, _cut_pairs(a, b)

    def child(swap: bool, choice: int | None) -> str:
        a, b, pairs = loaded(swap)
        if choice is None:  # the first try: the flatten cut when cold
            la, lb = a.layout(), b.layout()
            at_flatten = [
                (pa, pb)
                for pa, pb in pairs
                if la.flatten is not None and lb.flatten is not None
                and pa.index == la.flatten + 1 and pb.index == lb.flatten + 1
            ]
            if at_flatten and not ctx.chance(ctx.temperature / 2):
                pa, pb = at_flatten[0]
            else:
                pa, pb = pairs[ctx.index(len(pairs))]
        else:
            pa, pb = pairs[choice]
        _splice(a, b, pa, pb)
        _prune(a)
        if _needs_guard(a):
            _ensure_guard(a)
        _llm_fixes(a, ctx)
        return _render(a)

    swap = ctx.chance(0.5)
    if not loaded(swap)[2]:
        swap = not swap
    if not loaded(swap)[2]:
        raise _NoEdit("crossover: the parents have no shape-compatible places to splice")
    result = child(swap, None)
    if result not in copies:
        return result
    others = [(s, i) for s in (swap, not swap) for i in range(len(loaded(s)[2]))]
    for k in ctx.rng.permutation(len(others))[:_CROSSOVER_RETRIES]:
        result = child(*others[int(k)])
        if result not in copies:
            return result
    raise _NoEdit("crossover: every shape-compatible splice gives back one of the parents")


def _needs_guard(net: _Net) -> bool:
    """Whether a hidden layer with weights sees the flattened map without a pool bounding it."""
    layout = net.layout()
    if layout.flatten is None or layout.head is None:
        return False
    hidden = [
        op
        for chain in layout.chains[layout.flatten + 1 : layout.head]
        for op in (chain.ops if chain else [])
        if op.kind == "module" and net.is_weighted(op.name)
    ]
    return bool(hidden) and not _has_guard(net, layout)


def _splice(a: _Net, b: _Net, pa: _Point, pb: _Point) -> None:
    """Make ``a`` the child: its forward up to ``pa``, then ``b``'s forward from ``pb``."""
    tail = copy.deepcopy(b.forward.body[pb.index :])
    used_b = {n.attr for s in tail for n in ast.walk(s) if _self_attr(n) is not None}
    b_attrs = b.module_attrs()
    b_init = [
        copy.deepcopy(s)
        for s in b.init.body
        if not _is_super_init(s)
        and not (
            isinstance(s, ast.Assign) and len(s.targets) == 1
            and _self_attr(s.targets[0]) in b_attrs and _self_attr(s.targets[0]) not in used_b
        )
    ]
    b_methods = [
        copy.deepcopy(m)
        for m in b.cls.body
        if isinstance(m, ast.FunctionDef) and m.name not in ("__init__", "forward")
        and _method(a.cls, m.name) is None
    ]
    # A keeps what its front part uses; B's layers are renamed where A's names collide.
    a.forward.body = a.forward.body[: pa.index]
    _prune(a)
    taken = a.taken_attrs()
    rename: dict[str, str] = {}
    for stmt in b_init:
        for target in getattr(stmt, "targets", []):
            attr = _self_attr(target)
            if attr is not None and attr not in rename:
                rename[attr] = _fresh(attr, taken) if attr in taken else attr
                taken.add(rename[attr])
    carried: list[ast.AST] = [*b_init, *tail, *b_methods]
    for node in carried:
        _RenameAttrs(rename).visit(node)
    _merge_module_level(a, b, carried)
    if pb.var != pa.var:
        tail.insert(0, _stmt(f"{pb.var} = {pa.var}"))
    a.forward.body = a.forward.body + tail
    a.init.body.extend(b_init)
    a.cls.body.extend(b_methods)
    _merge_init_defaults(a, b)


def _merge_module_level(a: _Net, b: _Net, carried: list[ast.AST]) -> None:
    """Bring B's imports, helper classes, functions and constants into A's module.

    Definitions with the same name and the same code are kept once; a B definition whose name
    A uses for something else is renamed, and so are its uses in B's carried code.
    """
    a_defs = {
        n.name: n for n in a.tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }
    a_texts = {ast.unparse(n) for n in a.tree.body}
    b_nodes = [copy.deepcopy(n) for n in b.tree.body if n is not b.cls]
    renames: dict[str, str] = {}
    b_defs = {n.name for n in b_nodes if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    taken = set(a_defs) | b_defs
    for node in b_nodes:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in a_defs:
            if ast.dump(node) != ast.dump(a_defs[node.name]):
                renames[node.name] = _fresh(node.name, taken)
                taken.add(renames[node.name])
    for node in [*b_nodes, *carried]:
        _RenameNames(renames).visit(node)
    position = a.tree.body.index(a.cls)
    for node in b_nodes:
        text = ast.unparse(node)
        if text in a_texts:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            a.tree.body.insert(0, node)
            position += 1
        else:
            a.tree.body.insert(position, node)
            position += 1
        a_texts.add(text)


def _merge_init_defaults(a: _Net, b: _Net) -> None:
    """Give A's __init__ the defaulted parameters of B's that B's carried code may read."""
    a_args, b_args = a.init.args, b.init.args
    have = {x.arg for x in (*a_args.args, *a_args.kwonlyargs)}
    b_defaults = dict(zip([x.arg for x in b_args.args[len(b_args.args) - len(b_args.defaults):]],
                          b_args.defaults, strict=True))
    if a_args.vararg is not None or len(a_args.defaults) != len(a_args.args) - 1:
        return  # keep signatures we cannot safely extend
    for name, default in b_defaults.items():
        if name not in have:
            a_args.args.append(ast.arg(arg=name))
            a_args.defaults.append(copy.deepcopy(default))
