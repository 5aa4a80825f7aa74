"""Where a layer may go in, and how it goes in: points, the flat-size guard, helpers, caps.

Every edit that adds a layer picks a :class:`~llmatic.llm.rules.network._Point` here and
calls :func:`_insert_layer`, which writes both the ``__init__`` line and the ``forward``
line. The size edits read the current widths through :func:`_widths`.
"""

from __future__ import annotations

import ast
import copy

from llmatic.llm.rules.astutil import _arg, _fresh, _int_literal, _is_super_init, _self_attr, _stmt
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.helpers import _HELPER_TEMPLATES, _HELPER_WIDTH
from llmatic.llm.rules.network import _Layout, _Net, _Point
from llmatic.llm.rules.vocab import _ADAPTIVE_POOLS, _FUNC_ADAPTIVE, _GUARD_SIZE


def _points(
    net: _Net, region: str | None = None, reshape: bool = False, resize: bool = False
) -> list[_Point]:
    """Insertion points with the required guarantees."""
    return [
        p
        for p in net.layout().points
        if (region is None or p.region == region)
        and (p.reshape_ok or not reshape)
        and (p.resize_ok or not resize)
    ]


def _choose_point(
    net: _Net, ctx: _Ctx, region: str | None = None, reshape: bool = False, resize: bool = False
) -> _Point | None:
    """A random insertion point with the required guarantees, or None."""
    points = _points(net, region, reshape, resize)
    return points[ctx.index(len(points))] if points else None


def _flat_point(net: _Net, ctx: _Ctx) -> _Point | None:
    """A flat point for a layer with weights, guarding the flat size when needed.

    A hidden layer right after the flatten sees every pixel of every channel (up to
    128 * 32 * 32 inputs), so an adaptive pool goes before the flatten first.
    """
    points = [p for p in net.layout().points if p.region == "flat" and p.reshape_ok]
    if any(p.first_flat for p in points):
        if _ensure_guard(net):
            points = [p for p in net.layout().points if p.region == "flat" and p.reshape_ok]
        else:
            points = [p for p in points if not p.first_flat]
    return points[ctx.index(len(points))] if points else None


def _has_guard(net: _Net, layout: _Layout) -> bool:
    """Whether an adaptive pool (module or function) already runs before the flatten."""
    attrs = net.module_attrs()
    for chain in layout.chains[: layout.flatten]:
        for op in chain.ops if chain else []:
            if op.kind == "func" and op.name in _FUNC_ADAPTIVE:
                return True
            if op.kind == "module" and net.ctor_kind(attrs.get(op.name)) in _ADAPTIVE_POOLS:
                return True
    return False


def _ensure_guard(net: _Net) -> bool:
    """Put ``nn.AdaptiveAvgPool2d(4)`` right before the flatten unless one is there."""
    layout = net.layout()
    if layout.flatten is None:
        return False
    if _has_guard(net, layout):
        return True
    before = [p for p in layout.points if p.region == "spatial" and p.index == layout.flatten]
    # The pool fixes H and W (never below 1): the flatten must carry that to lazy layers.
    if not before or not net.absorbs(layout, layout.flatten, spatial=True):
        return False
    attr = _fresh("gap", net.taken_attrs())
    _insert_layer(net, before[0], attr, f"nn.AdaptiveAvgPool2d({_GUARD_SIZE})", "self.{a}({x})")
    return True


def _insert_layer(net: _Net, point: _Point, attr: str, ctor: str, expr: str) -> None:
    """Add ``self.attr = ctor`` to __init__ and ``var = expr`` to forward at ``point``.

    The __init__ line goes before the first layer that forward uses after the point, so the
    constructor reads in the order the layers run.
    """
    later = [
        n.attr
        for stmt in net.forward.body[point.index :]
        for n in ast.walk(stmt)
        if _self_attr(n) is not None
    ]
    body = net.init.body
    position = len(body)
    for name in later:
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Assign) and any(_self_attr(t) == name for t in stmt.targets):
                position = min(position, i)
    supers = [i for i, stmt in enumerate(body) if _is_super_init(stmt)]
    if supers:  # modules cannot be assigned before nn.Module.__init__ ran
        position = max(position, supers[0] + 1)
    net.init.body.insert(position, _stmt(f"self.{attr} = {ctor}"))
    net.forward.body.insert(point.index, _stmt(f"{point.var} = {expr.format(a=attr, x=point.var)}"))


def _ensure_helper(net: _Net, key: str) -> str:
    """Return the name of our helper class ``key``, adding it to the module if missing."""
    for name, found in net.helpers().items():
        if found == key:
            return name
    taken = {n.name for n in net.tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    template = _HELPER_TEMPLATES[key]
    name = template.name
    while name in taken:
        name = _fresh(template.name, taken)
    node = copy.deepcopy(template)
    node.name = name
    net.tree.body.insert(net.tree.body.index(net.cls), node)
    return name


def _at_cap(net: _Net, ctx: _Ctx) -> bool:
    """Whether the network has as many layers as the cap allows: no edit adds another."""
    return net.layer_count() >= ctx.max_layers


def _widths(net: _Net, kinds: set[str]) -> list[int]:
    """Output widths (int literals) of the non-classifier layers of these kinds."""
    protected = net.protected_call(net.head()[1])
    found: list[int] = []
    for node in ast.walk(net.init):
        if isinstance(node, ast.Call) and node is not protected and net.ctor_kind(node) in kinds:
            width = _int_literal(_arg(node, 0, _width_keyword(net.ctor_kind(node) or "")))
            if width is not None:
                found.append(width)
    return found


def _width_keyword(kind: str) -> str:
    """The keyword of a layer kind's output width (its first argument)."""
    if kind in _HELPER_WIDTH:
        return _HELPER_WIDTH[kind]
    return "out_features" if kind == "LazyLinear" else "out_channels"
