"""The edit that removes one layer, where the layers after it adapt to what came into it."""

from __future__ import annotations

import ast

from llmatic.llm.rules.astutil import _self_attr, _Swap
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.forward import _stmt_chain
from llmatic.llm.rules.network import _Net
from llmatic.llm.rules.vocab import _ADAPTIVE_POOLS, _FUNC_ELEMENTWISE, _SHAPE_PRESERVING


def _delete_candidates(net: _Net, preserving_only: bool) -> list[tuple[str, int, str, ast.Call]]:
    """Layers whose removal keeps the network valid.

    Each is ``("stmt", forward statement index, attr, call)`` or
    ``("seq", element index, attr, nn.Sequential call)``.
    """
    layout = net.layout()
    attrs, uses = net.module_attrs(), net.attr_uses()
    found: list[tuple[str, int, str, ast.Call]] = []
    for j, chain in enumerate(layout.chains):
        for op in chain.ops if chain else []:
            call = attrs.get(op.name) if op.kind == "module" else None
            if call is None or uses[op.name] != 1 or op.name == layout.head_attr:
                continue
            kind = net.ctor_kind(call)
            if kind in _ADAPTIVE_POOLS or kind == "Flatten":
                continue  # the adaptive pool bounds the flat size; the flatten is structure
            preserving = kind in _SHAPE_PRESERVING
            # Without the layer, what came into it goes on: other channels, larger H and W.
            after_flatten = layout.flatten is not None and j > layout.flatten
            if preserving or (
                not preserving_only
                and net.absorbs(layout, j + 1, channels=True, spatial=not after_flatten)
            ):
                found.append(("stmt", j, op.name, op.call))
    for attr, call in attrs.items():
        if net.ctor_kind(call) == "Sequential" and len(call.args) > 1 and uses[attr] >= 1:
            for k, element in enumerate(call.args):
                if net.ctor_kind(element) in _SHAPE_PRESERVING:
                    found.append(("seq", k, attr, call))
    return found


def _delete(net: _Net, ctx: _Ctx, preserving_only: bool = False) -> str | None:
    """Remove one layer (never the classifier, never the flatten)."""
    candidates = _delete_candidates(net, preserving_only)
    if not candidates:
        return None
    where, index, attr, call = candidates[ctx.index(len(candidates))]
    net.touch()
    if where == "seq":
        del call.args[index]
        return f"delete element {index} of {attr}"
    stmt = _Swap(call, call.args[0]).visit(net.forward.body[index])
    net.forward.body[index] = stmt
    chain = _stmt_chain(stmt)
    if chain and chain.source == chain.target and all(
        op.kind == "func" and op.name in _FUNC_ELEMENTWISE for op in chain.ops
    ):
        del net.forward.body[index]  # only the deleted layer's activation was left
    if net.attr_uses()[attr] == 0:
        net.init.body = [
            s for s in net.init.body
            if not (isinstance(s, ast.Assign) and any(_self_attr(t) == attr for t in s.targets))
        ]
    return f"delete {attr}"
