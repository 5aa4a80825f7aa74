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
        """A uniformly random elite (METHOD.md §3.6)."""
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

    Args:
        num_instructions: Number of mutation instructions (ids 0 .. n-1).
        t_min: Lowest temperature (normalises the temperature axis).
        t_max: Highest temperature.
        kind: ``cvt`` or ``grid``; ``cells`` for CVT, ``temperature_bins`` for grid.
    """

    def __init__(
        self,
        *,
        num_instructions: int,
        t_min: float,
        t_max: float,
        kind: str = "cvt",
        cells: int = 100,
        temperature_bins: int = 10,
        centroid_samples: int = 20000,
        centroid_seed: int = 0,
    ) -> None:
        if num_instructions < 1:
            raise ValueError("operators.mutation_instructions must not be empty")
        self.num_instructions = num_instructions
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.archive = _make(
            kind=kind,
            solution_dim=2,
            solution_dtype=np.float64,
            cells=cells,
            dims=(num_instructions, temperature_bins),
            centroid_samples=centroid_samples,
            centroid_seed=centroid_seed,
            extra_fields={"uses": ((), np.int64), "children_added": ((), np.int64)},
            qd_score_offset=-1e9,  # curiosity is unbounded below; QD score unused here
        )

    def __len__(self) -> int:
        return len(self.archive)

    def measures(self, instruction_id: int, temperature: float) -> list[float]:
        """Normalised (instruction, temperature) coordinates in [0, 1]^2."""
        x = instruction_id / max(1, self.num_instructions - 1)
        span = self.t_max - self.t_min
        t = 0.0 if span <= 0 else (temperature - self.t_min) / span
        return [float(x), float(min(1.0, max(0.0, t)))]

    def credit(self, instruction_id: int, temperature: float, delta: float, added: bool) -> float:
        """Add ``delta`` to the curiosity of the cell of (instruction, temperature).

        pyribs only replaces an elite by a better one, so a decrease rebuilds the archive
        (at most a few hundred cells). Returns the new curiosity.
        """
        m = self.measures(instruction_id, temperature)
        found, elite = self.archive.retrieve_single(m)
        old = float(elite["objective"]) if found else 0.0
        uses = int(elite["uses"]) + 1 if found else 1
        kids = (int(elite["children_added"]) if found else 0) + int(bool(added))
        new = old + float(delta)
        if found and new <= old:
            data = self.archive.data()
            cell = self.archive.index_of_single(m)
            keep = data["index"] != cell
            self.archive.clear()
            if keep.any():
                self.archive.add(
                    solution=data["solution"][keep],
                    objective=data["objective"][keep],
                    measures=data["measures"][keep],
                    uses=data["uses"][keep],
                    children_added=data["children_added"][keep],
                )
        self.archive.add_single(
            [float(instruction_id), float(temperature)], new, m, uses=uses, children_added=kids
        )
        return new

    def offer(self, instruction_id: int, temperature: float) -> bool:
        """Insert an untried prompt with curiosity 0 if its cell is empty."""
        m = self.measures(instruction_id, temperature)
        found, _ = self.archive.retrieve_single(m)
        if found:
            return False
        self.archive.add_single(
            [float(instruction_id), float(temperature)], 0.0, m, uses=0, children_added=0
        )
        return True

    def select(
        self, rng: np.random.Generator, *, strategy: str = "top_k", k: int = 3, tau: float = 1.0
    ) -> tuple[int, float] | None:
        """Pick a prompt biased to high curiosity; None if the archive is empty."""
        data = self.archive.data()
        if len(data["index"]) == 0:
            return None
        order = np.argsort(data["index"], kind="stable")
        sols, cur = data["solution"][order], data["objective"][order]
        if strategy == "top_k":
            best = np.argsort(-cur, kind="stable")[: max(1, int(k))]
            i = int(best[rng.integers(len(best))])
        elif strategy == "softmax":
            z = (cur - cur.max()) / max(float(tau), 1e-8)
            p = np.exp(z) / np.exp(z).sum()
            i = int(rng.choice(len(cur), p=p))
        elif strategy == "uniform":
            i = int(rng.integers(len(cur)))
        else:
            raise ValueError(
                f"prompt_selection.strategy must be top_k, softmax or uniform, got {strategy!r}"
            )
        return int(round(sols[i][0])), float(sols[i][1])

    def stats(self) -> dict[str, float | int]:
        """Cells filled, coverage and the highest curiosity."""
        s = self.archive.stats
        return {
            "cells_filled": int(s.num_elites),
            "coverage": float(s.coverage),
            "max_curiosity": None if s.obj_max is None else float(s.obj_max),
        }


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
