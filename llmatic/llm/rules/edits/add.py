"""Edits that add one layer: convolution, linear, pool, dropout, norm, residual or recurrent.

Each finds a place where the shapes stay valid (see :mod:`llmatic.llm.rules.edits.insert`),
picks sizes near the network's current ones (wider apart when hot), and inserts the layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator

from llmatic.llm.rules.astutil import _ctor_name, _fresh
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.edits.insert import (
    _at_cap,
    _choose_point,
    _ensure_helper,
    _flat_point,
    _insert_layer,
    _points,
    _widths,
)
from llmatic.llm.rules.forward import _Chain, _Op
from llmatic.llm.rules.network import _Net, _Point
from llmatic.llm.rules.vocab import (
    _CONV_KINDS,
    _CONV_WIDTHS,
    _DROPOUT_PS,
    _DROPOUTS,
    _FUNC_NORMS,
    _FUNC_POOLS,
    _KERNELS,
    _LINEAR_KINDS,
    _LINEAR_WIDTHS,
    _MAX_DOWNSAMPLES,
    _NORM_KINDS,
    _POOLS,
    _RNN_WIDTHS,
)


def _add_conv(net: _Net, ctx: _Ctx, width: int | None = None) -> str | None:
    """Insert ``relu(LazyConv2d(c, k, padding=k // 2))``: same H and W, any channels in."""
    if _at_cap(net, ctx):
        return None
    point = _choose_point(net, ctx, "spatial", reshape=True)
    if point is None:
        return None
    ref = max(_widths(net, _CONV_KINDS) + [16])
    c = min(width, ctx.max_channels) if width else int(
        ctx.pick(_CONV_WIDTHS, ref, ctx.max_channels)
    )
    k = int(ctx.pick(_KERNELS, 3))
    attr = _fresh("conv", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.LazyConv2d({c}, {k}, padding={k // 2})",
                  "F.relu(self.{a}({x}))")
    return f"add {attr}: conv {c} channels {k}x{k}"


def _add_linear(net: _Net, ctx: _Ctx, width: int | None = None) -> str | None:
    """Insert ``relu(LazyLinear(f))`` in the flat region, before the classifier."""
    if _at_cap(net, ctx):
        return None
    point = _flat_point(net, ctx)
    if point is None:
        return None
    ref = max(_widths(net, _LINEAR_KINDS) + [64])
    f = min(width, ctx.max_features) if width else int(
        ctx.pick(_LINEAR_WIDTHS, ref, ctx.max_features)
    )
    attr = _fresh("fc", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.LazyLinear({f})", "F.relu(self.{a}({x}))")
    return f"add {attr}: linear {f}"


def _downsamples(net: _Net) -> int:
    """Pooling layers before the flatten."""
    layout = net.layout()
    attrs, count = net.module_attrs(), 0
    for chain in layout.chains[: layout.flatten]:
        for op in chain.ops if chain else []:
            if op.kind == "func" and op.name in _FUNC_POOLS:
                count += 1
            elif op.kind == "module":
                call = attrs.get(op.name)
                count += sum(isinstance(n, ast.Call) and _ctor_name(n) in _POOLS
                             for n in ast.walk(call)) if call else 0
    return count


def _add_pool(net: _Net, ctx: _Ctx, last: bool = False) -> str | None:
    """Insert a ceil-mode pooling layer: halves H and W, never below 1x1."""
    if _at_cap(net, ctx) or _downsamples(net) >= _MAX_DOWNSAMPLES:
        return None
    if last:  # right before the flatten: shrinks what the classifier sees the most
        points = [p for p in net.layout().points if p.region == "spatial" and p.resize_ok]
        point = max(points, key=lambda p: p.index) if points else None
    else:
        point = _choose_point(net, ctx, "spatial", reshape=True, resize=True)
    if point is None:
        return None
    ctor = "nn.MaxPool2d(2, ceil_mode=True)"
    if not last and ctx.chance(ctx.temperature / 2):
        ctor = ("nn.AvgPool2d(2, ceil_mode=True)",
                "nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)")[ctx.index(2)]
    attr = _fresh("pool", net.taken_attrs())
    _insert_layer(net, point, attr, ctor, "self.{a}({x})")
    return f"add {attr}: {ctor}"


def _add_dropout(net: _Net, ctx: _Ctx) -> str | None:
    """Insert dropout anywhere (it keeps the shape)."""
    if _at_cap(net, ctx):
        return None
    point = _choose_point(net, ctx)
    if point is None:
        return None
    p = ctx.pick(_DROPOUT_PS, 0.2)
    # Dropout2d drops whole channels: only sometimes, and only when hot.
    channelwise = point.region == "spatial" and ctx.chance(ctx.temperature / 2)
    kind = "Dropout2d" if channelwise else "Dropout"
    attr = _fresh("dropout", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.{kind}({p})", "self.{a}({x})")
    return f"add {attr}: {kind}({p})"


def _norm_kind(net: _Net, op: _Op) -> str:
    """'norm', 'transparent' (a reshape or dropout: the same values on) or 'other'."""
    if op.kind == "flatten":
        return "transparent"
    if op.kind == "func":
        return "norm" if op.name in _FUNC_NORMS else "other"
    kind = net.ctor_kind(net.module_attrs().get(op.name))
    if kind in _NORM_KINDS:
        return "norm"
    return "transparent" if kind in _DROPOUTS else "other"


def _next_to_norm(net: _Net, point: _Point) -> bool:
    """Whether a normalisation layer is applied right before or right after ``point``.

    Reshapes and dropout between them do not count: ``bn -> flatten -> bn1d`` normalises the
    same values twice. Stacked normalisation is an edit no LLM makes, and stacks of three or
    four train to chance (measured: a 0.979 network scored 0.094 after three more norms).
    """
    chains = net.layout().chains

    def ops(statements: Iterable[_Chain | None], backwards: bool) -> Iterator[_Op | None]:
        for chain in statements:
            if chain is None:  # not a plain layer chain (a sum, a loop): stop looking
                yield None
                return
            yield from (reversed(chain.ops) if backwards else chain.ops)

    for walk in (ops(reversed(chains[: point.index]), True), ops(chains[point.index :], False)):
        for op in walk:
            kind = "other" if op is None else _norm_kind(net, op)
            if kind != "transparent":
                if kind == "norm":
                    return True
                break
    return False


def _add_norm(net: _Net, ctx: _Ctx) -> str | None:
    """Insert lazy batch normalisation (it keeps the shape; infers its channels).

    Never right next to another normalisation layer (see ``_next_to_norm``).
    """
    if _at_cap(net, ctx):
        return None
    points = [p for p in _points(net) if not _next_to_norm(net, p)]
    if not points:
        return None
    point = points[ctx.index(len(points))]
    kind = "LazyBatchNorm2d" if point.region == "spatial" else "LazyBatchNorm1d"
    attr = _fresh("bn", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.{kind}()", "self.{a}({x})")
    return f"add {attr}: {kind}"


def _add_residual(
    net: _Net, ctx: _Ctx, width: int | None = None, spatial_only: bool = False
) -> str | None:
    """Insert a residual helper: conv blocks before the flatten, linear blocks after it."""
    if _at_cap(net, ctx):
        return None
    spatial = _choose_point(net, ctx, "spatial", reshape=True)
    if spatial is not None and (
        spatial_only or ctx.chance(0.75) or not _points(net, "flat", reshape=True)
    ):
        ref = max(_widths(net, _CONV_KINDS) + [16])
        c = min(width, ctx.max_channels) if width else int(
            ctx.pick(_CONV_WIDTHS, ref, ctx.max_channels)
        )
        k = int(ctx.pick(_KERNELS[1:], 3))
        helper = _ensure_helper(net, "conv_residual")
        args = f"{c}" if k == 3 else f"{c}, {k}"
        attr = _fresh("res", net.taken_attrs())
        _insert_layer(net, spatial, attr, f"{helper}({args})", "self.{a}({x})")
        return f"add {attr}: conv residual block {c} channels"
    point = None if spatial_only else _flat_point(net, ctx)
    if point is None:
        return None
    f = int(ctx.pick(_LINEAR_WIDTHS, max(_widths(net, _LINEAR_KINDS) + [64]), ctx.max_features))
    helper = _ensure_helper(net, "linear_residual")
    attr = _fresh("res", net.taken_attrs())
    _insert_layer(net, point, attr, f"{helper}({f})", "self.{a}({x})")
    return f"add {attr}: linear residual block {f}"


def _add_recurrent(net: _Net, ctx: _Ctx) -> str | None:
    """Insert a recurrent helper (LazyLinear projection + GRU/LSTM/RNN) after the flatten."""
    if _at_cap(net, ctx):
        return None
    point = _flat_point(net, ctx)
    if point is None:
        return None
    h = int(ctx.pick(_RNN_WIDTHS, 64, ctx.max_features))
    cell = ("gru", "lstm", "rnn")[int(ctx.rng.choice(3, p=[0.45, 0.45, 0.1]))]
    helper = _ensure_helper(net, "recurrent")
    attr = _fresh("rnn", net.taken_attrs())
    _insert_layer(net, point, attr, f"{helper}({h}, {cell!r})", "self.{a}({x})")
    return f"add {attr}: {cell.upper()} {h}"
