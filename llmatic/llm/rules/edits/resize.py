"""Edits that change widths: scale every layer's width, grow or shrink the network drastically.

Only layers whose change of width the rest of the network absorbs are touched
(:func:`_resizable_calls`), and never the classifier, so the number of classes stays.
"""

from __future__ import annotations

import ast

from llmatic.llm.rules.astutil import _arg, _int_literal
from llmatic.llm.rules.edits.add import _add_conv, _add_pool, _add_residual
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.edits.delete import _delete
from llmatic.llm.rules.edits.insert import _width_keyword, _widths
from llmatic.llm.rules.layers import _groups
from llmatic.llm.rules.network import _Net
from llmatic.llm.rules.vocab import _CONV_KINDS, _LAZY_CONVS, _LINEAR_KINDS

#: Hidden layers narrower than this are bottlenecks no edit narrows to, and that an edit
#: widens to :data:`BOTTLENECK_WIDTH` with probability ``HEAD_FIX_P`` (see ``edits.fixes``):
#: the seed's 1-channel ``relu(conv1(x))`` loses everything when its one unit dies (a third
#: of the at-chance children of a seed-1 benchmark run had no output activation but kept it).
_MIN_WIDTH, BOTTLENECK_WIDTH = 4, 16


def _resizable_calls(net: _Net) -> list[ast.Call]:
    """Layer constructors whose output width may change: everything after them adapts.

    A layer qualifies when forward uses it once, in a simple statement, and the layers after it
    absorb the change (see :meth:`_Net.absorbs`). The classifier never qualifies.
    """
    layout = net.layout()
    protected = net.protected_call(layout.head_attr)
    if protected is None and layout.head_attr is not None:
        return []  # cannot tell which layer is the classifier
    uses = net.attr_uses()
    used_at = {
        op.name: j
        for j, chain in enumerate(layout.chains)
        for op in (chain.ops if chain else [])
        if op.kind == "module"
    }
    calls: list[ast.Call] = []
    for attr, call in net.module_attrs().items():
        if uses[attr] != 1 or attr not in used_at:
            continue
        elements = call.args if net.ctor_kind(call) == "Sequential" else [call]
        for k, element in enumerate(elements):
            if not isinstance(element, ast.Call) or element is protected:
                continue
            state: tuple[bool, bool] | None = (True, False)  # its output width changes
            for later in elements[k + 1 :]:  # the rest of its nn.Sequential, then forward
                state = net.transfer(later, state, False) if state else None
            if state and net.absorbs(layout, used_at[attr] + 1, *state):
                calls.append(element)
    return calls


def _literal_widths(net: _Net, ctx: _Ctx) -> list[tuple[ast.Constant, int, int]]:
    """(argument node, width, cap) of every resizable conv / linear with a literal width."""
    found = []
    for node in _resizable_calls(net):
        kind = net.ctor_kind(node) or ""
        if not (kind in _CONV_KINDS | _LINEAR_KINDS or kind in _LAZY_CONVS):
            continue
        arg = _arg(node, 0, _width_keyword(kind))
        value = _int_literal(arg)
        if value is None or _groups(node) != 1:
            continue
        cap = ctx.max_channels if kind in _CONV_KINDS | _LAZY_CONVS else ctx.max_features
        found.append((arg, value, cap))  # type: ignore[arg-type]
    return found


def _scale(net: _Net, ctx: _Ctx, factor: int, up: bool) -> str | None:
    """Multiply (or divide) every literal layer width by ``factor``, within the caps.

    The classifier is never touched, so the number of classes stays.
    """
    changed = 0
    for arg, value, cap in _literal_widths(net, ctx):
        new = (max(value, min(cap, value * factor)) if up
               else max(min(value, _MIN_WIDTH), value // factor))
        if new != value:
            arg.value = new  # type: ignore[union-attr]
            changed += 1
    net.touch()
    if not changed:
        return None
    return f"{'widen' if up else 'narrow'} {changed} layers x{factor}"


def _grow(net: _Net, ctx: _Ctx) -> list[str]:
    """Widen drastically, maybe add convolutions as wide as the widest one.

    Only before the flatten: a new hidden linear layer brings the adaptive pool that bounds
    the flat size, which can make the network smaller.
    """
    done = [d for d in [_scale(net, ctx, ctx.factor(), up=True)] if d]
    extra = int(ctx.rng.binomial(2, ctx.temperature)) + (0 if done else 1)
    for _ in range(extra):
        width = max(_widths(net, _CONV_KINDS), default=None)
        if ctx.chance(0.6):
            d = _add_conv(net, ctx, width=width)
        else:
            d = _add_residual(net, ctx, width=width, spatial_only=True)
        if d is None:
            break
        done.append(d)
    return done


def _shrink(net: _Net, ctx: _Ctx) -> list[str]:
    """Narrow drastically, pool before the flatten, maybe drop a norm/dropout layer.

    Each of these only removes parameters: the pool shrinks what the classifier sees.
    """
    done = [d for d in [_scale(net, ctx, ctx.factor(), up=False)] if d]
    if not done or ctx.chance(0.5):
        done += [d for d in [_add_pool(net, ctx, last=True)] if d]
    if ctx.chance(ctx.temperature / 2):
        done += [d for d in [_delete(net, ctx, preserving_only=True)] if d]
    return done


def _narrow(net: _Net, ctx: _Ctx) -> list[str]:
    """Narrow the layers; when none can be narrower, pool to narrow the flat features."""
    d = _scale(net, ctx, ctx.factor(), up=False) or _add_pool(net, ctx, last=True)
    return [d] if d else []


def _widen(net: _Net, ctx: _Ctx) -> list[str]:
    """Widen the layers by a factor (2 when cold, up to 4 when hot)."""
    d = _scale(net, ctx, ctx.factor(), up=True)
    return [d] if d else []
