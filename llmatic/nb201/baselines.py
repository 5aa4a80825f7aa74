"""Random search and regularized evolution (REA) over NAS-Bench-201 cells.

Both use the search's own evaluator (the same benchmark table), the same number of candidates
and a generator seeded from the run's seed, so ``experiment=paper_nb201`` compares LLMatic with
them in one sweep. REA follows Real et al. (2019) with NAS-Bench-201's settings (population 10,
tournament of 3, one edge mutated per child; the oldest member dies).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from llmatic.nb201.arch import EDGES, OPS, Arch
from llmatic.nb201.mutate import mutate_one_edge

__all__ = ["random_cell", "random_search", "regularized_evolution"]

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
