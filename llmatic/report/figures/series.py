"""Per-generation series of runs, grouped by ablation and aggregated over seeds.

Every series is indexed by generation 0..G (NaN where unknown) and computed from the run's
``history.jsonl``; only the filled archive cells come from ``metrics.csv`` (or, without it,
the per-generation checkpoints). :func:`figure_data` groups the runs (:func:`group_runs`),
and :func:`aggregate` gives each group's mean over seeds with a percentile-bootstrap interval of
that mean (inside the quantity's bounds: an accuracy stays in [0, 1], a count at or above 0; no
interval from fewer than :data:`MIN_SEEDS` seeds): the content of ``figures_data.json``
(:func:`write_data`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmatic.report.figures.runs import Run
from llmatic.rundir import read_checkpoint

#: Order of ablations in legends and in ``figures_data.json`` (others follow, sorted).
ABLATION_ORDER = (
    "llmatic",
    "mutation_only",
    "crossover_only",
    "network_archive_only",
    "prompt_archive_only",
    "random_generation",
)

#: Per-run series: name -> y-axis label.
SERIES = {
    "best_val_accuracy": "best validation accuracy",
    "best_val_loss": "lowest validation loss",
    "valid_fraction": "valid (trainable) fraction",
    "network_cells": "network archive: cells filled",
    "prompt_cells": "prompt archive: cells filled",
}

#: What each series can take: intervals are kept inside (an accuracy is never above 1, a
#: count never below 0).
BOUNDS = {
    "best_val_accuracy": (0.0, 1.0),
    "best_val_loss": (0.0, math.inf),
    "valid_fraction": (0.0, 1.0),
    "network_cells": (0.0, math.inf),
    "prompt_cells": (0.0, math.inf),
}
#: Fewer seeds than this get no interval (a band from two points says nothing).
MIN_SEEDS = 3
#: Bootstrap resamples per interval (seeded: the same runs give the same figure).
RESAMPLES = 4000


# --------------------------------------------------------------------------------------
# Per-run series (index = generation 0..G; NaN where unknown)
# --------------------------------------------------------------------------------------
def _ok(record: Mapping[str, Any]) -> bool:
    return record.get("status") == "ok"


def _per_generation(history: Sequence[Mapping[str, Any]], generations: int) -> list[list[dict]]:
    buckets: list[list[dict]] = [[] for _ in range(generations + 1)]
    for record in history:
        g = int(record["generation"])
        if 0 <= g <= generations:
            buckets[g].append(dict(record))
    return buckets


def running_best(values: Sequence[float], *, maximize: bool = True) -> list[float]:
    """Best value so far at each index, ignoring NaN (NaN until the first value).

    Args:
        values: One value per generation (NaN where a generation had none).
        maximize: Highest (True) or lowest (False) is best.
    """
    best, out = math.nan, []
    for v in values:
        if not math.isnan(v) and (math.isnan(best) or (v > best if maximize else v < best)):
            best = float(v)
        out.append(best)
    return out


def _generation_best(history: Sequence[Mapping[str, Any]], generations: int, key: str,
                     maximize: bool) -> list[float]:
    pick = max if maximize else min
    out = []
    for bucket in _per_generation(history, generations):
        vals = [float(r[key]) for r in bucket if _ok(r) and r.get(key) is not None]
        out.append(pick(vals) if vals else math.nan)
    return out


def best_accuracy_series(history: Sequence[Mapping[str, Any]], generations: int) -> list[float]:
    """Best validation accuracy of ok candidates up to each generation 0..G."""
    return running_best(_generation_best(history, generations, "val_accuracy", True))


def best_loss_series(history: Sequence[Mapping[str, Any]], generations: int) -> list[float]:
    """Lowest validation loss of ok candidates up to each generation 0..G."""
    return running_best(_generation_best(history, generations, "val_loss", False),
                        maximize=False)


def valid_fraction_series(history: Sequence[Mapping[str, Any]], generations: int) -> list[float]:
    """Fraction of candidates with status ``ok`` in each generation 0..G (0 is the seed)."""
    return [sum(map(_ok, b)) / len(b) if b else math.nan
            for b in _per_generation(history, generations)]


def _checkpoint_cells(run_dir: Path, generation: int) -> tuple[float, float]:
    state = read_checkpoint(run_dir, generation)
    if state is None:
        return math.nan, math.nan
    return float(len(state.network_archive)), float(len(state.prompt_archive))


def cells_series(run: Run) -> dict[str, list[float]]:
    """Network and prompt cells filled at each generation 0..G.

    Generation 0 holds the seed network only (1 network cell, 0 prompt cells); 1..G come
    from ``metrics.csv``, or from ``checkpoints/gen_NNNN.pkl`` where a row is missing.
    """
    rows = {int(r["generation"]): r for r in run.metrics}
    network, prompt = [1.0], [0.0]
    for g in range(1, run.generations + 1):
        row = rows.get(g, {})
        net, prm = row.get("network_cells"), row.get("prompt_cells")
        if (net is None or prm is None) and isinstance(run.path, Path):
            ck_net, ck_prm = _checkpoint_cells(run.path, g)
            net = ck_net if net is None else net
            prm = ck_prm if prm is None else prm
        network.append(math.nan if net is None else float(net))
        prompt.append(math.nan if prm is None else float(prm))
    return {"network_cells": network, "prompt_cells": prompt}


def _metrics_series(run: Run) -> dict[str, list[float]]:
    """Series of a run known only by its per-generation metrics (W&B); generation 0 is NaN."""
    rows = {int(r["generation"]): r for r in run.metrics}

    def column(key: str) -> list[float]:
        vals = [rows.get(g, {}).get(key) for g in range(run.generations + 1)]
        return [math.nan if v is None else float(v) for v in vals]

    accuracy = column("best_fitness")
    if run.fitness != "accuracy":  # best_fitness is then -loss
        accuracy = [math.nan] * len(accuracy)
    return {
        "best_val_accuracy": running_best(accuracy),
        "best_val_loss": running_best(column("best_val_loss"), maximize=False),
        "valid_fraction": column("valid_fraction"),
        "network_cells": column("network_cells"),
        "prompt_cells": column("prompt_cells"),
    }


def run_series(run: Run) -> dict[str, list[float]]:
    """Every series of :data:`SERIES` for one run, indexed by generation 0..G."""
    if not run.history:
        return _metrics_series(run)
    g = run.generations
    return {
        "best_val_accuracy": best_accuracy_series(run.history, g),
        "best_val_loss": best_loss_series(run.history, g),
        "valid_fraction": valid_fraction_series(run.history, g),
        **cells_series(run),
    }


# --------------------------------------------------------------------------------------
# Grouping and aggregation
# --------------------------------------------------------------------------------------
def _format_p(p: float | None) -> str:
    return "None" if p is None else f"{p:g}"


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by group: the ablation, its ``p_mutation`` and its dataset where these vary.

    ``p=...`` is added where an ablation's runs differ in ``p_mutation``, and the dataset
    where the runs searched more than one (seeds of different datasets are never averaged).
    Groups are ordered as :data:`ABLATION_ORDER` (others after, by name), then by ``p``.
    """
    p_values: dict[str, set] = {}
    for run in runs:
        p_values.setdefault(run.ablation, set()).add(run.p_mutation)
    datasets = sorted({run.dataset for run in runs})
    groups: dict[tuple, tuple[str, list[Run]]] = {}
    for run in runs:
        split = len(p_values[run.ablation]) > 1
        label = f"{run.ablation} p={_format_p(run.p_mutation)}" if split else run.ablation
        if len(datasets) > 1:
            label = f"{label} {run.dataset}"
        rank = ABLATION_ORDER.index(run.ablation) if run.ablation in ABLATION_ORDER else \
            len(ABLATION_ORDER)
        p_key = -1.0 if not split or run.p_mutation is None else run.p_mutation
        key = (rank, run.ablation, p_key, datasets.index(run.dataset), label)
        groups.setdefault(key, (label, []))[1].append(run)
    return {label: members for _, (label, members) in sorted(groups.items())}


def seed_keys(runs: Sequence[Run]) -> list[str]:
    """One key per run of a group: its seed, made unique (``3``, ``3_2``) if seeds repeat."""
    keys, seen = [], {}
    for run in runs:
        seen[run.seed] = seen.get(run.seed, 0) + 1
        keys.append(str(run.seed) if seen[run.seed] == 1 else f"{run.seed}_{seen[run.seed]}")
    return keys


def mean_ci(values: Iterable[float], confidence: float = 0.95,
            bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float]:
    """Mean and two-sided percentile-bootstrap interval of the mean of the finite values.

    The interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    means of :data:`RESAMPLES` resamples (with replacement, seeded), so it lies between the
    smallest and the largest value and never beyond what the quantity can take; it is
    clipped to ``bounds`` as well. A t interval from 2 seeds of an accuracy ran from -1 to 1.4.

    Args:
        values: One value per seed (NaN ignored).
        confidence: Coverage of the interval.
        bounds: The least and greatest value the quantity can take.

    Returns:
        ``(mean, low, high)``: NaN for no values; ``low`` and ``high`` NaN (no interval) for
        fewer than :data:`MIN_SEEDS` values.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < MIN_SEEDS:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, x.size, size=(RESAMPLES, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    lo_bound, hi_bound = bounds
    return mean, float(min(max(low, lo_bound), hi_bound)), float(max(min(high, hi_bound),
                                                                     lo_bound))


def aggregate(per_seed: Mapping[str, Sequence[float]], confidence: float = 0.95,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, Any]:
    """Mean and bootstrap interval per generation over seeds (runs may differ in length).

    Args:
        per_seed: seed key -> values for generations 0, 1, ...
        confidence: Coverage of the interval.
        bounds: The least and greatest value the quantity can take (see :func:`mean_ci`).

    Returns:
        ``{generations, mean, ci_low, ci_high, n, interval, per_seed}``: lists per
        generation (NaN where no seed has a value; ``ci_*`` NaN where fewer than
        :data:`MIN_SEEDS` seeds do), ``n`` the seeds behind each generation and
        ``interval`` what the band is.
    """
    length = max((len(v) for v in per_seed.values()), default=0)
    mean, low, high, count = [], [], [], []
    for g in range(length):
        values = [v[g] for v in per_seed.values()
                  if g < len(v) and v[g] is not None and math.isfinite(v[g])]
        m, lo, hi = mean_ci(values, confidence, bounds)
        mean.append(m)
        low.append(lo)
        high.append(hi)
        count.append(len(values))
    return {
        "generations": list(range(length)),
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "n": count,
        "interval": f"{confidence:.0%} percentile bootstrap of the mean over seeds "
                    f"({RESAMPLES} resamples; none from fewer than {MIN_SEEDS} seeds)",
        "per_seed": {k: [float(x) for x in v] for k, v in per_seed.items()},
    }


def figure_data(runs: Sequence[Run], confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Every plotted series: ``group -> metric -> aggregate`` (see :func:`aggregate`)."""
    data: dict[str, dict[str, Any]] = {}
    for label, members in group_runs(runs).items():
        series = [run_series(r) for r in members]
        keys = seed_keys(members)
        data[label] = {
            metric: aggregate({k: s[metric] for k, s in zip(keys, series, strict=True)},
                              confidence, BOUNDS[metric])
            for metric in SERIES
        }
    return data


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def write_data(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`figure_data` as strict JSON (NaN becomes ``null``)."""
    path = Path(path)
    path.write_text(json.dumps(_jsonable(data), indent=1, allow_nan=False))
    return path
