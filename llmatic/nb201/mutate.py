"""Edits of NAS-Bench-201 cells: the rule-based mutator's cell edits and REA's mutation.

``llm=rules`` (not a language model) edits a cell the way it edits a network: the instruction's
keywords pick the edit ("convolution" puts a 3x3 convolution on an edge, "residual" a skip
connection, "delete" an edge to ``none``, "reducing the size" swaps convolutions for cheaper
operations). An edit changes one edge, as REA's mutation does; only the instructions that ask
for several changes ("multiple residual connections", "drastically") change ``2 +
Binomial(1, t)`` edges at temperature ``t``. (Before, every edit changed ``1 + Binomial(2, t)``
edges: on a random landscape a 2- or 3-edge child beat its parent 12% / 8% of the time, a
one-edge child 18%.) Crossover takes each edge from one of the two parents at random. An edit
stops when it has nothing left to change (a cell without convolutions cannot shrink further); a
child that would equal its parent gets one random edge changed instead, so it is never a silent
copy.
"""

from __future__ import annotations

import numpy as np

from llmatic.nb201.arch import EDGES, OPS, Arch

__all__ = ["classify_cell_instruction", "crossover_cells", "edit_cell", "mutate_one_edge"]

_CHEAP = ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1")
_COST = {"none": 0, "skip_connect": 0, "avg_pool_3x3": 0, "nor_conv_1x1": 1, "nor_conv_3x3": 9}
#: Edits that ask for several changes ("multiple", "drastically"); every other edit is one.
_DRASTIC = ("skips", "shrink", "grow")

#: (keywords, edit) in priority order; the first whose keyword is in the instruction wins.
_KINDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("combine", "crossover", "two cells", "two neural networks"), "crossover"),
    (("multiple residual", "multiple skip", "residual connections", "skip connections"),
     "skips"),
    (("residual", "skip"), "skip"),
    (("reducing the size", "reduce the size", "smaller", "decrease"), "shrink"),
    (("increasing the size", "increase the size", "larger", "bigger"), "grow"),
    (("1x1", "fully connected", "pointwise"), "conv1x1"),
    (("convolution", "conv"), "conv3x3"),
    (("pool",), "pool"),
    (("delete", "remove", "prune"), "delete"),
    (("add",), "add"),
)


def classify_cell_instruction(instruction: str, n_parents: int = 1) -> str:
    """The edit an instruction asks for (``improve`` when no keyword matches)."""
    if n_parents >= 2:
        return "crossover"
    text = instruction.lower()
    for keywords, kind in _KINDS:
        if kind != "crossover" and any(k in text for k in keywords):
            return kind
    return "improve"


def mutate_one_edge(ops: Arch, rng: np.random.Generator) -> Arch:
    """REA's mutation: one random edge gets a different random operation."""
    child = list(ops)
    edge = int(rng.integers(len(EDGES)))
    child[edge] = str(rng.choice([op for op in OPS if op != ops[edge]]))
    return tuple(child)


def _set(child: list[str], rng: np.random.Generator, op: str, eligible: list[int]) -> bool:
    if not eligible:
        return False
    child[int(rng.choice(eligible))] = op
    return True


def edit_cell(ops: Arch, kind: str, temperature: float, rng: np.random.Generator) -> Arch:
    """A child of ``ops`` made by the edit ``kind`` (see the module docstring)."""
    t = min(1.0, max(0.0, float(temperature)))
    edits = 1 if kind not in _DRASTIC else 2 + int(rng.binomial(1, t))
    child = list(ops)
    for _ in range(edits):
        idx = range(len(EDGES))
        if kind == "conv3x3":
            done = _set(child, rng, "nor_conv_3x3", [i for i in idx if child[i] != "nor_conv_3x3"])
        elif kind == "conv1x1":
            done = _set(child, rng, "nor_conv_1x1", [i for i in idx if child[i] != "nor_conv_1x1"])
        elif kind == "pool":
            done = _set(child, rng, "avg_pool_3x3", [i for i in idx if child[i] != "avg_pool_3x3"])
        elif kind in ("skip", "skips"):
            done = _set(child, rng, "skip_connect", [i for i in idx if child[i] != "skip_connect"])
        elif kind == "delete":
            done = _set(child, rng, "none", [i for i in idx if child[i] != "none"])
        elif kind == "add":  # an operation where there was none
            op = str(rng.choice([o for o in OPS if o != "none"]))
            done = _set(child, rng, op, [i for i in idx if child[i] == "none"])
        elif kind == "grow":
            done = _set(child, rng, "nor_conv_3x3", [i for i in idx if child[i] != "nor_conv_3x3"])
        elif kind == "shrink":
            costly = [i for i in idx if _COST[child[i]] > 0]
            if costly:
                i = int(rng.choice(costly))
                child[i] = str(rng.choice([o for o in _CHEAP if _COST[o] < _COST[child[i]]]))
            done = bool(costly)
        else:
            done = False
        if not done:
            if kind != "improve":
                break  # the asked-for edit has nothing left to change
            child = list(mutate_one_edge(tuple(child), rng))
    if tuple(child) == tuple(ops):
        child = list(mutate_one_edge(ops, rng))
    return tuple(child)


def crossover_cells(a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    """Each edge from parent ``a`` or ``b`` with equal probability (uniform crossover)."""
    pick = rng.random(len(EDGES)) < 0.5
    child = tuple(x if p else y for x, y, p in zip(a, b, pick, strict=True))
    if child in (a, b) and a != b:  # make the child differ from both parents when it can
        differ = [i for i in range(len(EDGES)) if a[i] != b[i]]
        if len(differ) >= 2:
            j = int(rng.choice(differ))
            child = list(a)
            child[j] = b[j]
            child = tuple(child)
    return child
