"""Which edits each instruction kind runs, and :func:`_mutate`, which runs one on a parent.

The keys of :data:`_MUTATIONS` are the names that
:func:`~llmatic.llm.rules.instructions.classify_instruction` returns (all but ``crossover``).
An edit that finds nothing to change raises ``_NoEdit`` with the reason from
:data:`_WHY_NOT`; it never returns a copy of the parent.
"""

from __future__ import annotations

from collections.abc import Callable

from llmatic.llm.rules.edits.add import (
    _add_conv,
    _add_dropout,
    _add_linear,
    _add_norm,
    _add_pool,
    _add_recurrent,
    _add_residual,
)
from llmatic.llm.rules.edits.context import Edit, _Ctx
from llmatic.llm.rules.edits.delete import _delete
from llmatic.llm.rules.edits.fixes import _with_llm_fixes
from llmatic.llm.rules.edits.head import _add_head, _drop_output_activation, _widen_head
from llmatic.llm.rules.edits.insert import _at_cap
from llmatic.llm.rules.edits.resize import _grow, _narrow, _scale, _shrink, _widen
from llmatic.llm.rules.errors import _NoEdit
from llmatic.llm.rules.load import _load
from llmatic.llm.rules.network import _Net
from llmatic.llm.rules.render import _prune, _render
from llmatic.llm.rules.vocab import _MAX_DOWNSAMPLES

_ADD_EDITS: dict[str, Edit] = {
    "conv": _add_conv,
    "linear": _add_linear,
    "pool": _add_pool,
    "dropout": _add_dropout,
    "norm": _add_norm,
    "residual": _add_residual,
    "recurrent": _add_recurrent,
}
_ANY_EDITS: dict[str, Edit] = {
    **_ADD_EDITS,
    "delete": _delete,
    "widen": lambda net, ctx: _scale(net, ctx, ctx.factor(), up=True),
    "narrow": lambda net, ctx: _scale(net, ctx, ctx.factor(), up=False),
    "drop_output_activation": _drop_output_activation,
    "widen_head": _widen_head,
    "add_head": _add_head,
}
#: Relative weights of a random edit ("improve the above network").
_RANDOM_WEIGHTS = {"conv": 3, "linear": 2, "pool": 1, "dropout": 1, "norm": 1, "residual": 1.5,
                   "recurrent": 0.5, "delete": 2, "widen": 1, "narrow": 1, "widen_head": 1,
                   "add_head": 1}
_LAYER_WEIGHTS = {"conv": 3, "linear": 2, "pool": 1, "dropout": 1, "norm": 1}
_DEPTH_WEIGHTS = {"conv": 3, "linear": 2, "residual": 1}


def _one_of(weights: dict[str, float]) -> Edit:
    """An edit that tries kinds in a random weighted order until one applies."""

    def edit(net: _Net, ctx: _Ctx) -> str | None:
        for kind in ctx.order(list(weights), list(weights.values())):
            done = _ANY_EDITS[kind](net, ctx)
            if done:
                return done
        return None

    return edit


def _repeat(edit: Edit, base: int = 1, once: bool = False) -> Callable[[_Net, _Ctx], list[str]]:
    """Apply ``edit`` ``base + Binomial(2, temperature)`` times, stopping when it cannot.

    With ``once`` it is applied one time (edits that would only repeat themselves).
    """

    def run(net: _Net, ctx: _Ctx) -> list[str]:
        done: list[str] = []
        for _ in range(1 if once else ctx.n_edits(base)):
            d = edit(net, ctx)
            if d is None:
                break
            done.append(d)
        return done

    return run


_MUTATIONS: dict[str, Callable[[_Net, _Ctx], list[str]]] = {
    **{kind: _with_llm_fixes(_repeat(edit)) for kind, edit in _ADD_EDITS.items()},
    "residuals": _with_llm_fixes(_repeat(_add_residual, base=2)),
    "delete": _with_llm_fixes(_repeat(_delete)),
    "shallow": _with_llm_fixes(_repeat(_delete), bottlenecks=False),
    "deepen": _with_llm_fixes(_repeat(_one_of(_DEPTH_WEIGHTS))),
    "add": _with_llm_fixes(_repeat(_one_of(_LAYER_WEIGHTS))),
    "random": _with_llm_fixes(_repeat(_one_of(_RANDOM_WEIGHTS))),
    "drop_output_activation": _repeat(_drop_output_activation, base=1, once=True),
    "widen_head": _with_llm_fixes(_repeat(_widen_head, base=1, once=True)),
    "add_head": _with_llm_fixes(_repeat(_add_head)),
    "widen": _with_llm_fixes(_widen),
    "narrow": _with_llm_fixes(_narrow, bottlenecks=False),
    "grow": _with_llm_fixes(_grow),
    "shrink": _with_llm_fixes(_shrink, bottlenecks=False),
}
_WHY_NOT = {
    "conv": "no place before the flatten where a convolution keeps the shapes valid",
    "linear": "no place after the flatten where a linear layer keeps the shapes valid",
    "pool": f"no place where pooling keeps the shapes valid (or {_MAX_DOWNSAMPLES} pools already)",
    "dropout": "no place to insert dropout",
    "norm": "no place to insert normalisation that is not right next to another one",
    "residual": "no place where a residual block keeps the shapes valid",
    "residuals": "no place where a residual block keeps the shapes valid",
    "recurrent": "no place after the flatten where a recurrent layer keeps the shapes valid",
    "delete": "no layer can be deleted without breaking the network",
    "shallow": "no layer can be deleted without breaking the network",
    "widen": "no layer width can grow (all at the caps or not literal)",
    "narrow": "no layer width can shrink and no place to pool",
    "grow": "the network cannot grow (caps reached or no place to add layers)",
    "shrink": "the network cannot shrink any further",
    "drop_output_activation": "no activation is applied to the output logits (or the output "
    "cannot be followed)",
    "widen_head": "no plain linear or convolutional hidden layer before the classifier whose "
    "width can change",
    "add_head": "no place right before the classifier where a hidden linear layer fits",
}


def _mutate(source: str, kind: str, ctx: _Ctx) -> str:
    net = _load(source)
    done = _MUTATIONS[kind](net, ctx)
    if not done:
        reason = _WHY_NOT.get(kind, "no edit applies to this network")
        if _at_cap(net, ctx) and kind not in ("delete", "shallow", "narrow", "shrink"):
            reason = f"layer cap {ctx.max_layers} reached"
        raise _NoEdit(f"{kind}: {reason}")
    _prune(net)
    child = _render(net)
    if child == _render(_load(source)):
        # An edit that found nothing to change must say so: an unchanged copy would be
        # evaluated again as if it were a new network.
        raise _NoEdit(f"{kind}: the edit left the network unchanged ({'; '.join(done)})")
    return child
