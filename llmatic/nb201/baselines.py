"""Random search, regularized evolution (REA) and local search over NAS-Bench-201 cells.

All use the search's own evaluator (the same benchmark table), the same number of candidates
and a generator seeded from the run's seed, so ``experiment=paper_nb201`` compares LLMatic with
them in one sweep. REA follows Real et al. (2019) with NAS-Bench-201's settings (population 10,
tournament of 3, one edge mutated per child; the oldest member dies). Local search is White et
al.'s (2020, "Local search is state of the art for NAS benchmarks") best-improvement hill
climber with random restarts; unlike the other two it never pays twice for one network
(see :func:`local_search`).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from llmatic.nb201.arch import EDGES, OPS, Arch, canonical_arch, distinct_archs
from llmatic.nb201.mutate import mutate_one_edge

__all__ = ["local_search", "neighbours", "random_cell", "random_search",
           "regularized_evolution"]

#: A cell's fitness (validation accuracy) or None when it has none (not in the table).
Evaluate = Callable[[Arch], "float | None"]


def random_cell(rng: np.random.Generator) -> Arch:
    """A cell drawn uniformly from the 15,625."""
    return tuple(str(OPS[i]) for i in rng.integers(len(OPS), size=len(EDGES)))


def random_search(evaluate: Evaluate, budget: int, rng: np.random.Generator
                  ) -> list[tuple[Arch, float | None]]:
    """``budget`` uniformly random cells and their fitness, in evaluation order."""
    cells = [random_cell(rng) for _ in range(budget)]
    return [(cell, evaluate(cell)) for cell in cells]


def regularized_evolution(evaluate: Evaluate, budget: int, rng: np.random.Generator, *,
                          population: int = 10, sample_size: int = 3
                          ) -> list[tuple[Arch, float | None]]:
    """REA for ``budget`` evaluations; returns every cell evaluated with its fitness, in order."""
    if not 1 <= sample_size <= population:
        raise ValueError(f"need 1 <= sample_size <= population, got {sample_size}, {population}")
    history: list[tuple[Arch, float | None]] = []
    alive: deque[tuple[Arch, float]] = deque()

    def score(cell: Arch) -> float:
        fitness = evaluate(cell)
        history.append((cell, fitness))
        return -np.inf if fitness is None else float(fitness)

    while len(alive) < population and len(history) < budget:
        cell = random_cell(rng)
        alive.append((cell, score(cell)))
    while len(history) < budget:
        picks = rng.choice(len(alive), size=sample_size, replace=False)
        parent = max((alive[int(i)] for i in picks), key=lambda member: member[1])[0]
        child = mutate_one_edge(parent, rng)
        alive.append((child, score(child)))
        alive.popleft()
    return history


def neighbours(ops: Arch) -> list[Arch]:
    """The 24 cells one edge change away (6 edges x 4 other operations), in a fixed order."""
    return [ops[:edge] + (op,) + ops[edge + 1:]
            for edge in range(len(EDGES)) for op in OPS if op != ops[edge]]


@functools.cache
def _networks() -> int:
    return distinct_archs()


class _BudgetSpent(Exception):
    """Internal: the next query would exceed the budget."""


def local_search(evaluate: Evaluate, budget: int, rng: np.random.Generator, *,
                 trace: list[tuple[str, Arch, float]] | None = None
                 ) -> list[tuple[Arch, float | None]]:
    """Best-improvement local search with random restarts (White et al. 2020).

    Start from a uniformly random cell, evaluate its whole neighbourhood (:func:`neighbours`,
    24 cells, in a random order) and move to the best neighbour if it is strictly better than
    the current cell; at a local optimum (no better neighbour) restart from a new random cell.
    Stops once ``budget`` evaluations are spent (or every network has been evaluated).

    Budget: one evaluation per *network*. A cell whose network
    (:func:`~llmatic.nb201.arch.canonical_arch`) this run already evaluated -- the same cell
    again, or an isomorphic one -- reuses that fitness and spends no budget: local search
    revisits neighbours all the time, and a lookup it already made is not a new query.
    So, unlike :func:`random_search` and :func:`regularized_evolution`, whose histories
    count repeats, the history here lists only paid evaluations, each a new network.

    Args:
        evaluate: A cell's fitness (None: it has none).
        budget: How many networks to evaluate.
        rng: The generator (restarts and neighbourhood orders).
        trace: If given, gets ``("start", cell, fitness)`` at every (re)start and
            ``("move", cell, fitness)`` at every move, in order (for tests and plots).

    Returns:
        Every paid evaluation in order as ``(cell, fitness)`` (fitness None: not in the
        table, ranked below every number); at most ``budget`` entries.
    """
    history: list[tuple[Arch, float | None]] = []
    known: dict[Arch, float] = {}  # network -> fitness (-inf for None)

    def score(cell: Arch) -> float:
        key = canonical_arch(cell)
        if key not in known:
            if len(history) >= budget:
                raise _BudgetSpent
            fitness = evaluate(cell)
            history.append((cell, fitness))
            known[key] = -math.inf if fitness is None else float(fitness)
        return known[key]

    try:
        while len(known) < _networks():
            current = random_cell(rng)
            value = score(current)
            if trace is not None:
                trace.append(("start", current, value))
            while True:
                around = neighbours(current)
                best, best_value = None, value
                for i in rng.permutation(len(around)):
                    v = score(around[int(i)])
                    if v > best_value:
                        best, best_value = around[int(i)], v
                if best is None:
                    break  # a local optimum: restart
                current, value = best, best_value
                if trace is not None:
                    trace.append(("move", current, value))
    except _BudgetSpent:
        pass
    return history
