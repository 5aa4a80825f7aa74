"""What an LLM fixes while it edits, applied after the other edits with probability ``HEAD_FIX_P``.

An LLM that rewrites a network usually returns raw logits and rarely keeps a 1-unit layer;
:func:`_with_llm_fixes` gives a rule edit the same habits.
"""

from __future__ import annotations

from collections.abc import Callable

from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.edits.head import _drop_output_activation, _output_activations
from llmatic.llm.rules.edits.resize import _MIN_WIDTH, BOTTLENECK_WIDTH, _literal_widths
from llmatic.llm.rules.network import _Net

#: Chance that an edit (any kind but the head's own, and crossover) also drops an activation
#: applied to the logits. An activation there (the seed's ``relu(fc1(x))``) only hurts: with
#: it, 40% of trained children sat at chance (seed-0 benchmark run), without it 9%. An LLM
#: that rewrites a network almost always returns raw logits; this is that habit.
HEAD_FIX_P = 0.8


def _widen_bottlenecks(net: _Net, ctx: _Ctx) -> str | None:
    """Widen every hidden layer narrower than ``_MIN_WIDTH`` to ``BOTTLENECK_WIDTH``."""
    changed = []
    for arg, value, cap in _literal_widths(net, ctx):
        if value < _MIN_WIDTH:
            arg.value = min(cap, BOTTLENECK_WIDTH)
            changed.append(f"{value}->{arg.value}")
    if not changed:
        return None
    net.touch()
    return f"widen bottleneck {', '.join(changed)}"


def _llm_fixes(net: _Net, ctx: _Ctx, bottlenecks: bool = True) -> list[str]:
    """What an LLM fixes while it edits, each with probability ``HEAD_FIX_P``.

    Drop the logits' activation, and (``bottlenecks``) widen bottleneck layers.
    """
    done = []
    if _output_activations(net) and ctx.chance(HEAD_FIX_P):
        done.append(_drop_output_activation(net, ctx))
    if bottlenecks and ctx.chance(HEAD_FIX_P):
        done.append(_widen_bottlenecks(net, ctx))
    return [d for d in done if d]


def _with_llm_fixes(
    mutation: Callable[[_Net, _Ctx], list[str]], bottlenecks: bool = True
) -> Callable[[_Net, _Ctx], list[str]]:
    """Run ``mutation``, then (if it changed something) :func:`_llm_fixes`.

    ``bottlenecks=False`` for the edits that shrink the network.
    """

    def run(net: _Net, ctx: _Ctx) -> list[str]:
        done = mutation(net, ctx)
        return done + _llm_fixes(net, ctx, bottlenecks) if done else done

    return run
