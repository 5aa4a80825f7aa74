"""The two quality-diversity archives, both pyribs archives.

* :class:`NetworkArchive` keeps the best network per cell of the normalised descriptor
  space; the solution is the network's *source code* (``solution_dtype=object``) and the
  objective is its fitness.
* :class:`PromptArchive` keeps (instruction id, temperature) pairs per cell of
  instruction x temperature; the objective is the cell's *accumulated curiosity*.

Expensive work (generation, training) never happens here: the search asks for parents,
evaluates elsewhere, then tells the archives what happened.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from ribs.archives import CVTArchive, GridArchive, k_means_centroids


@functools.lru_cache(maxsize=8)
def cvt_centroids(cells: int, samples: int, seed: int, dims: int = 2) -> np.ndarray:
    """k-means centroids over [0, 1]^dims; fixed by ``seed`` so runs share one tessellation."""
    centroids, _ = k_means_centroids(
        centroids=cells, ranges=[(0.0, 1.0)] * dims, samples=samples, seed=seed
    )
    return centroids


def _make(
    *,
    kind: str,
    solution_dim: int | tuple[()],
    solution_dtype: Any,
    cells: int,
    dims: Sequence[int],
    centroid_samples: int,
    centroid_seed: int,
    extra_fields: dict[str, tuple[tuple[int, ...], Any]],
    qd_score_offset: float,
):
    ranges = [(0.0, 1.0)] * len(dims)
    common = dict(
        solution_dim=solution_dim,
        ranges=ranges,
        solution_dtype=solution_dtype,
        extra_fields=extra_fields,
        qd_score_offset=qd_score_offset,
    )
    if kind == "cvt":
        centroids = cvt_centroids(int(cells), int(centroid_samples), int(centroid_seed), len(dims))
        return CVTArchive(centroids=centroids, **common)
    if kind == "grid":
        return GridArchive(dims=[int(d) for d in dims], **common)
    raise ValueError(f"archive.kind must be 'cvt' or 'grid', got {kind!r}")


class NetworkArchive:
    """Best network per cell of the (normalised) descriptor space.

    Args:
        kind: ``cvt`` (the paper) or ``grid``.
        cells: Number of CVT cells.
        dims: Grid cells per descriptor (grid only; its length is the descriptor count).
        centroid_samples: Samples for the k-means CVT.
        centroid_seed: Seed of the CVT centroids (shared by every run).
        qd_score_offset: Subtracted from fitness in the QD score (use a lower bound of the
            fitness: 0 for accuracy).
    """

    def __init__(
        self,
        *,
        kind: str = "cvt",
        cells: int = 100,
        dims: Sequence[int] = (10, 10),
        centroid_samples: int = 20000,
        centroid_seed: int = 0,
        qd_score_offset: float = 0.0,
        measure_dim: int = 2,
    ) -> None:
        if kind == "cvt":
            dims = (0,) * measure_dim
        self.kind = kind
        self.archive = _make(
            kind=kind,
            solution_dim=(),
            solution_dtype=object,
            cells=cells,
            dims=dims,
            centroid_samples=centroid_samples,
            centroid_seed=centroid_seed,
            extra_fields={
                "candidate_id": ((), np.int64),
                "generation": ((), np.int64),
                "val_accuracy": ((), np.float64),
                "val_loss": ((), np.float64),
                "params": ((), np.int64),
                "flops": ((), np.int64),
                "raw_measures": ((measure_dim,), np.float64),
            },
            qd_score_offset=qd_score_offset,
        )

    def __len__(self) -> int:
        return len(self.archive)

    def add(
        self,
        *,
        source: str,
        fitness: float,
        measures: Sequence[float],
        raw_measures: Sequence[float],
        candidate_id: int,
        generation: int,
        val_accuracy: float,
        val_loss: float,
        params: int,
        flops: int,
    ) -> bool:
        """Offer one evaluated network; True if it entered the archive (new or better)."""
        add_info = self.archive.add_single(
            source,
            float(fitness),
            list(measures),
            candidate_id=candidate_id,
            generation=generation,
            val_accuracy=val_accuracy,
            val_loss=val_loss,
            params=params,
            flops=flops,
            raw_measures=list(raw_measures),
        )
        return int(add_info["status"]) > 0

    def elites(self) -> dict[str, np.ndarray]:
        """All elites as columns, ordered by cell index so selection is reproducible.

        Columns: ``solution``, ``objective``, ``measures``, the extra fields and ``index``.
        """
        data = self.archive.data()
        order = np.argsort(data["index"], kind="stable")
        return {k: np.asarray(v)[order] for k, v in data.items()}

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly random elite (docs/method.md §3.6)."""
        data = self.elites()
        i = int(rng.integers(len(data["index"])))
        return {k: v[i] for k, v in data.items()}

    def nearest(self, elite: dict[str, Any]) -> dict[str, Any] | None:
        """The elite nearest to ``elite`` in descriptor space (another cell), or None."""
        data = self.elites()
        others = data["index"] != elite["index"]
        if not others.any():
            return None
        dist = np.linalg.norm(data["measures"] - np.asarray(elite["measures"]), axis=1)
        dist[~others] = np.inf
        i = int(np.argmin(dist))
        return {k: v[i] for k, v in data.items()}

    def stats(self) -> dict[str, float | int | None]:
        """Cells filled, coverage, QD score and best fitness."""
        s = self.archive.stats
        return {
            "cells_filled": int(s.num_elites),
            "coverage": float(s.coverage),
            "qd_score": float(s.qd_score),
            "best_fitness": None if s.obj_max is None else float(s.obj_max),
        }

    def top(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` best elites, best first."""
        data = self.elites()
        order = np.argsort(-data["objective"], kind="stable")[:k]
        return [{key: col[i] for key, col in data.items()} for i in order]


class PromptArchive:
    """Curiosity per (instruction, temperature) cell; curiosity *accumulates*.

    A grid with one row per instruction (categorical: a cell never holds two instructions)
    and one column per temperature step over [t_min, t_max] (docs/method.md §3.4). The solution
    of a cell is its (instruction id, temperature); the objective its curiosity.

    Args:
        num_instructions: Number of mutation instructions (ids 0 .. n-1).
        t_min: Lowest temperature.
        t_max: Highest temperature.
        t_step: Width of one temperature bin (the adaptive schedule's step).
    """

    def __init__(self, *, num_instructions: int, t_min: float, t_max: float,
                 t_step: float = 0.05) -> None:
        if num_instructions < 1:
            raise ValueError("operators.mutation_instructions must not be empty")
        if not t_step > 0:
            raise ValueError(f"prompt_archive.temperature_step must be > 0, got {t_step}")
        self.num_instructions = int(num_instructions)
        self.t_min, self.t_max, self.t_step = float(t_min), float(t_max), float(t_step)
        self.bins = int(round((self.t_max - self.t_min) / self.t_step)) + 1
        half = self.t_step / 2
        self.archive = GridArchive(
            solution_dim=2,
            dims=[self.num_instructions, self.bins],
            ranges=[(-0.5, self.num_instructions - 0.5),
                    (self.t_min - half, self.t_min + (self.bins - 1) * self.t_step + half)],
            solution_dtype=np.float64,
            extra_fields={"uses": ((), np.int64), "children_added": ((), np.int64)},
            qd_score_offset=-1e9,  # curiosity is unbounded below; QD score unused here
        )

    def __len__(self) -> int:
        return len(self.archive)

    def temperatures(self) -> np.ndarray:
        """The temperature of each column (bin centres)."""
        return np.round(self.t_min + self.t_step * np.arange(self.bins), 6)

    def snap(self, temperature: float) -> float:
        """The bin centre nearest to ``temperature`` (clipped to the range)."""
        k = int(round((float(temperature) - self.t_min) / self.t_step))
        return float(self.temperatures()[min(self.bins - 1, max(0, k))])

    def measures(self, instruction_id: int, temperature: float) -> list[float]:
        """Grid coordinates of (instruction, temperature): the id and the snapped temperature."""
        if not 0 <= int(instruction_id) < self.num_instructions:
            raise ValueError(
                f"instruction id {instruction_id} outside 0..{self.num_instructions - 1}")
        return [float(int(instruction_id)), self.snap(temperature)]

    def get(self, instruction_id: int, temperature: float) -> dict[str, Any] | None:
        """The cell of (instruction, temperature), or None when it is empty."""
        found, elite = self.archive.retrieve_single(self.measures(instruction_id, temperature))
        return dict(elite) if found else None

    def _put(self, m: list[float], curiosity: float, uses: int, kids: int) -> None:
        """Write a cell whatever it held (pyribs only replaces an elite by a better one)."""
        found, elite = self.archive.retrieve_single(m)
        if found and curiosity <= float(elite["objective"]):
            data = self.archive.data()
            keep = data["index"] != self.archive.index_of_single(m)
            self.archive.clear()
            if keep.any():
                self.archive.add(solution=data["solution"][keep],
                                 objective=data["objective"][keep],
                                 measures=data["measures"][keep], uses=data["uses"][keep],
                                 children_added=data["children_added"][keep])
        self.archive.add_single(m, float(curiosity), m, uses=int(uses), children_added=int(kids))

    def credit(self, instruction_id: int, temperature: float, delta: float, added: bool) -> float:
        """Add ``delta`` to the curiosity of the cell of (instruction, temperature).

        A decrease rebuilds the archive (at most a few hundred cells). Returns the new
        curiosity.
        """
        m = self.measures(instruction_id, temperature)
        elite = self.get(instruction_id, temperature)
        old = float(elite["objective"]) if elite else 0.0
        uses = int(elite["uses"]) + 1 if elite else 1
        kids = (int(elite["children_added"]) if elite else 0) + int(bool(added))
        self._put(m, old + float(delta), uses, kids)
        return old + float(delta)

    def spread(self, instruction_id: int, t_from: float, t_to: float) -> bool:
        """Create the cell (instruction, ``t_to``) with the curiosity of (instruction, ``t_from``).

        The adapted temperature reaches a cell of its own that selection can pick at once
        (docs/method.md §3.5). An existing cell keeps its own curiosity. Returns whether a cell
        was created.
        """
        if self.get(instruction_id, t_to) is not None:
            return False
        source = self.get(instruction_id, t_from)
        curiosity = float(source["objective"]) if source else 0.0
        self._put(self.measures(instruction_id, t_to), curiosity, 0, 0)
        return True

    def offer(self, instruction_id: int, temperature: float) -> bool:
        """Insert an untried prompt with curiosity 0 if its cell is empty."""
        if self.get(instruction_id, temperature) is not None:
            return False
        self._put(self.measures(instruction_id, temperature), 0.0, 0, 0)
        return True

    def select(
        self, rng: np.random.Generator, *, strategy: str = "softmax", k: int = 3,
        tau: float = 1.0, explore: float = 0.0, level: str = "cell",
    ) -> tuple[int, float] | None:
        """Pick a prompt biased to high curiosity; None if the archive is empty.

        With probability ``explore`` the instruction and temperature are drawn uniformly
        instead (over every row and column, filled or not), so every instruction keeps a
        chance however its curiosity stands.

        ``level="instruction"`` (softmax and uniform) draws the instruction first, each
        scored by its most curious cell, then one of that instruction's cells. Drawn over
        cells (``"cell"``), an instruction's chance grows with the number of temperature
        cells it has spread into, i.e. with how often it was used, whatever its curiosity.
        ``top_k`` always ranks cells.
        """
        if strategy not in ("top_k", "softmax", "uniform"):
            raise ValueError(
                f"prompt_selection.strategy must be top_k, softmax or uniform, got {strategy!r}"
            )
        if level not in ("cell", "instruction"):
            raise ValueError(f"prompt_selection.level must be cell or instruction, got {level!r}")
        data = self.archive.data()
        if len(data["index"]) == 0:
            return None
        if rng.random() < float(explore):
            iid = int(rng.integers(self.num_instructions))
            return iid, float(self.temperatures()[int(rng.integers(self.bins))])
        order = np.argsort(data["index"], kind="stable")
        sols, cur = data["solution"][order], data["objective"][order]
        if level == "instruction" and strategy != "top_k":
            rows = np.rint(sols[:, 0]).astype(int)
            ids = np.unique(rows)  # instructions with a cell, in id order
            if strategy == "softmax":
                best = np.array([cur[rows == i].max() for i in ids])
                iid = int(ids[rng.choice(len(ids), p=_softmax(best, tau))])
            else:
                iid = int(ids[rng.integers(len(ids))])
            mine = np.flatnonzero(rows == iid)
            p = _softmax(cur[mine], tau) if strategy == "softmax" else None
            i = int(mine[rng.choice(len(mine), p=p)])
            return iid, float(sols[i][1])
        if strategy == "top_k":
            best = np.argsort(-cur, kind="stable")[: max(1, int(k))]
            i = int(best[rng.integers(len(best))])
        elif strategy == "softmax":
            i = int(rng.choice(len(cur), p=_softmax(cur, tau)))
        else:
            i = int(rng.integers(len(cur)))
        return int(round(sols[i][0])), float(sols[i][1])

    def stats(self) -> dict[str, float | int]:
        """Cells filled, coverage and the highest curiosity."""
        s = self.archive.stats
        return {
            "cells_filled": int(s.num_elites),
            "coverage": float(s.coverage),
            "max_curiosity": None if s.obj_max is None else float(s.obj_max),
        }


def _softmax(values: np.ndarray, tau: float) -> np.ndarray:
    """Probabilities proportional to ``exp(values / tau)``."""
    z = np.exp((values - values.max()) / max(float(tau), 1e-8))
    return z / z.sum()


class ElitistPopulation:
    """A plain elitist population: the ``size`` best networks, whatever their descriptors.

    The ``prompt_archive_only`` ablation selects parents from this instead of the network
    archive, so diversity is not maintained. Same interface as :class:`NetworkArchive`.
    """

    def __init__(self, *, size: int) -> None:
        if size < 1:
            raise ValueError(f"population size must be >= 1, got {size}")
        self.size = int(size)
        self.members: list[dict[str, Any]] = []
        self._next_index = 0

    def __len__(self) -> int:
        return len(self.members)

    def add(self, *, source: str, fitness: float, measures: Sequence[float], **extra: Any) -> bool:
        """Insert if the population has room or ``fitness`` beats the worst member."""
        if len(self.members) >= self.size:
            worst = min(range(len(self.members)), key=lambda i: self.members[i]["objective"])
            if fitness <= self.members[worst]["objective"]:
                return False
            del self.members[worst]
        member = {"solution": source, "objective": float(fitness),
                  "measures": np.asarray(measures, dtype=float), "index": self._next_index,
                  **extra}
        self._next_index += 1
        self.members.append(member)
        return True

    def elites(self) -> dict[str, np.ndarray]:
        """Members as columns, in insertion order."""
        if not self.members:
            return {"index": np.zeros(0, dtype=int)}
        keys = self.members[0].keys()
        return {k: np.asarray([m[k] for m in self.members],
                              dtype=object if k == "solution" else None) for k in keys}

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly random member."""
        return dict(self.members[int(rng.integers(len(self.members)))])

    def nearest(self, elite: dict[str, Any]) -> dict[str, Any] | None:
        """The member nearest to ``elite`` in descriptor space, or None."""
        others = [m for m in self.members if m["index"] != elite["index"]]
        if not others:
            return None
        target = np.asarray(elite["measures"], dtype=float)
        return dict(min(others, key=lambda m: float(np.linalg.norm(m["measures"] - target))))

    def top(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` best members, best first."""
        return [dict(m) for m in sorted(self.members, key=lambda m: -m["objective"])[:k]]
