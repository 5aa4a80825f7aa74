"""Figures of one or many runs (METHOD.md §5): ``llmatic-figures DIR... [--out OUT]``.

Every curve is computed from the run's ``history.jsonl`` (the source of truth); only the
number of filled archive cells comes from ``metrics.csv`` (or, without it, the per-generation
checkpoints). Runs are grouped by ablation (and by ``p_mutation`` where a sweep varies it
within an ablation), and each group is drawn as the mean over seeds with a 95% t-interval.

Written into ``--out`` (default ``<first DIR>/figures``), each figure as PNG and PDF:

* ``best_fitness``: best validation accuracy so far, per generation;
* ``best_loss``: lowest validation loss so far, per generation;
* ``filled_niches``: cells filled in the network and the prompt archive;
* ``valid_fraction``: fraction of candidates that trained (status ``ok``);
* ``network_heatmap_<group>_seed<k>``: network-archive cells coloured by fitness;
* ``prompt_heatmap_<group>_seed<k>``: prompt archive, instruction x temperature, coloured by
  curiosity;
* ``figures_data.json``: every plotted series, ``group -> metric -> {generations, mean,
  ci_low, ci_high, per_seed}``.

The module draws on :class:`matplotlib.figure.Figure` objects without pyplot, so it works
with any backend (the CLI selects Agg; a notebook displays the returned figures inline).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pickle
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

HISTORY = "history.jsonl"
CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
DATA_FILE = "figures_data.json"
FORMATS = ("png", "pdf")

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



class FiguresError(RuntimeError):
    """A problem with the inputs of the figures command (reported without a traceback)."""


# --------------------------------------------------------------------------------------
# Loading runs
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    """One search run, as read from its directory (or from W&B).

    Attributes:
        path: The run directory (or ``wandb:ENTITY/PROJECT/RUN_ID``).
        ablation: ``ablation.name`` of the config.
        seed: The run's seed.
        p_mutation: The effective mutation probability (``ablation.p_mutation`` when the
            ablation fixes it, else ``operators.p_mutation``).
        generator: The code generator (``summary.json``'s name, else ``llm._target_``).
        history: The candidate records of ``history.jsonl`` (empty for W&B runs).
        metrics: The rows of ``metrics.csv``, numbers parsed, one per generation 1..G.
        config: The resolved config as a plain dict.
    """

    path: Path | str
    ablation: str
    seed: int
    p_mutation: float | None
    generator: str
    history: list[dict[str, Any]] = field(repr=False)
    metrics: list[dict[str, Any]] = field(repr=False)
    config: dict[str, Any] = field(repr=False)

    @property
    def dataset(self) -> str:
        """The dataset searched (``nb201.dataset`` for NAS-Bench-201 cells)."""
        if _get(self.config, "space", "network") == "nb201":
            return str(_get(self.config, "nb201.dataset", "?"))
        return str(_get(self.config, "dataset.name", "?"))

    @property
    def generations(self) -> int:
        """The last completed generation (metrics rows; else the history's last)."""
        gens = [int(r["generation"]) for r in self.metrics if r.get("generation") is not None]
        if gens:
            return max(gens)
        return max((int(r["generation"]) for r in self.history), default=0)

    @property
    def fitness(self) -> str:
        """``accuracy`` or ``loss`` (what the network archive maximised)."""
        return str(self.config.get("fitness", "accuracy"))


def is_run_dir(path: Path) -> bool:
    """True if ``path`` holds ``history.jsonl`` and ``config.yaml``."""
    return (path / HISTORY).is_file() and (path / CONFIG).is_file()


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories at or below each path (a run, a multirun, any mix), deduplicated.

    Args:
        paths: Run directories or directories that contain runs at any depth.

    Returns:
        The run directories, in the order given, each path's runs sorted naturally
        (``2`` before ``10``).

    Raises:
        FiguresError: If a path does not exist.
    """
    found: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise FiguresError(f"{root} does not exist")
        for run_dir in sorted(_walk_runs(root), key=_natural_key):
            found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def _walk_runs(root: Path) -> list[Path]:
    if is_run_dir(root):
        return [root]
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            runs.append(here)
            dirnames[:] = []  # runs do not nest
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
    return runs


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _number(text: str | None) -> float | int | str | None:
    """A CSV cell as int, float, None (empty) or the text itself."""
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` rows with numbers parsed; the last row wins for a repeated generation."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    by_gen = {int(r["generation"]): r for r in rows if r.get("generation") is not None}
    return [by_gen[g] for g in sorted(by_gen)]


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """All candidate records of ``history.jsonl`` (a torn last line is ignored)."""
    records = []
    for line in (Path(run_dir) / HISTORY).read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; also accepts flattened ``"a.b"`` keys (W&B)."""
    if dotted in config:
        return config[dotted]
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def effective_p_mutation(config: Mapping[str, Any]) -> float | None:
    """The mutation probability a run used (the ablation's, if it fixes one)."""
    p = _get(config, "ablation.p_mutation")
    if p is None:
        p = _get(config, "operators.p_mutation")
    return None if p is None else float(p)


def load_run(path: str | os.PathLike) -> Run:
    """Read one run directory.

    Args:
        path: A directory with ``history.jsonl`` and ``config.yaml``.

    Returns:
        The run.
    """
    import yaml

    run_dir = Path(path)
    config = yaml.safe_load((run_dir / CONFIG).read_text()) or {}
    generator = str(_get(config, "llm._target_", "unknown")).rsplit(".", 1)[-1]
    summary_path = run_dir / SUMMARY
    if summary_path.is_file():
        try:
            generator = str(json.loads(summary_path.read_text()).get("generator", generator))
        except json.JSONDecodeError:
            pass
    return Run(
        path=run_dir,
        ablation=str(_get(config, "ablation.name", "llmatic")),
        seed=int(_get(config, "seed", 0)),
        p_mutation=effective_p_mutation(config),
        generator=generator,
        history=read_history(run_dir),
        metrics=read_metrics(run_dir),
        config=config,
    )


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Every run at or below ``paths`` (see :func:`find_run_dirs`).

    Raises:
        FiguresError: If a path is missing or no run directory is found.
    """
    paths = list(paths)
    dirs = find_run_dirs(paths)
    if not dirs:
        shown = ", ".join(str(p) for p in paths) or "(no paths)"
        raise FiguresError(
            f"no run directories (a directory with {HISTORY} and {CONFIG}) under {shown}"
        )
    return [load_run(d) for d in dirs]


def newest_run(root: str | os.PathLike = "outputs") -> Path:
    """The most recently modified run directory under ``root`` (e.g. Hydra's ``outputs/``).

    Raises:
        FiguresError: If ``root`` holds no run.
    """
    root = Path(root)
    runs = _walk_runs(root) if root.exists() else []
    if not runs:
        raise FiguresError(f"no run directories under {root}")
    return max(runs, key=lambda d: (d / HISTORY).stat().st_mtime)


# --------------------------------------------------------------------------------------
# W&B (untested against the real service: needs network and credentials)
# --------------------------------------------------------------------------------------
WANDB_KEYS = ("best_fitness", "best_val_loss", "network_cells", "prompt_cells",
              "valid_fraction")


def load_wandb_runs(project: str, *, api: Any = None) -> list[Run]:
    """Runs of a W&B project logged with ``logger=wandb``.

    Only the per-generation scalars are available there, so the curves start at
    generation 1, best accuracy is ``best_fitness`` (runs with ``fitness=accuracy`` only),
    best loss is the running minimum of the per-generation ``best_val_loss``, and there are
    no heatmaps.

    Args:
        project: ``ENTITY/PROJECT``.
        api: A ``wandb.Api``-like object (default: a new ``wandb.Api()``).

    Returns:
        The runs (with empty ``history``).

    Raises:
        FiguresError: If W&B is not installed, unreachable, or the project has no runs.
    """
    if project.count("/") != 1:
        raise FiguresError(f"--wandb expects ENTITY/PROJECT, got {project!r}")
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=30)
        remote_runs = list(api.runs(project))
    except ImportError as exc:
        raise FiguresError("--wandb needs the wandb package (pip install wandb)") from exc
    except Exception as exc:  # noqa: BLE001 - any client/network error ends the same way
        raise FiguresError(
            f"could not read runs of W&B project {project!r}: {type(exc).__name__}: {exc}. "
            "It needs network access and credentials (`wandb login` or WANDB_API_KEY); "
            "offline, plot the run directories instead"
        ) from exc
    runs = [_wandb_run(project, r) for r in remote_runs]
    if not runs:
        raise FiguresError(f"W&B project {project!r} has no runs")
    return runs


def _wandb_run(project: str, remote: Any) -> Run:
    config = dict(remote.config)
    rows: dict[int, dict[str, Any]] = {}
    for row in remote.scan_history():
        step = row.get("_step")
        if step is None:
            continue
        metrics = {k: row.get(k) for k in WANDB_KEYS}
        rows[int(step)] = {"generation": int(step), **metrics}
    return Run(
        path=f"wandb:{project}/{getattr(remote, 'id', '?')}",
        ablation=str(_get(config, "ablation.name", "llmatic")),
        seed=int(_get(config, "seed", 0)),
        p_mutation=effective_p_mutation(config),
        generator=str(_get(config, "llm._target_", "unknown")).rsplit(".", 1)[-1],
        history=[],
        metrics=[rows[s] for s in sorted(rows)],
        config=config,
    )


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
    path = run_dir / "checkpoints" / f"gen_{generation:04d}.pkl"
    if not path.is_file():
        return math.nan, math.nan
    with open(path, "rb") as fh:
        state = pickle.load(fh)
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


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t confidence interval of the finite values.

    Args:
        values: One value per seed (NaN ignored).
        confidence: Coverage of the interval.

    Returns:
        ``(mean, low, high)``: NaN for no values, ``low == high == mean`` for one.
    """
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1)
                 / math.sqrt(x.size))
    return mean, mean - half, mean + half


def aggregate(per_seed: Mapping[str, Sequence[float]],
              confidence: float = 0.95) -> dict[str, Any]:
    """Mean and confidence interval per generation over seeds (runs may differ in length).

    Args:
        per_seed: seed key -> values for generations 0, 1, ...
        confidence: Coverage of the interval.

    Returns:
        ``{generations, mean, ci_low, ci_high, per_seed}`` as lists (NaN where no seed
        has a value).
    """
    length = max((len(v) for v in per_seed.values()), default=0)
    mean, low, high = [], [], []
    for g in range(length):
        m, lo, hi = mean_ci([v[g] for v in per_seed.values() if g < len(v)], confidence)
        mean.append(m)
        low.append(lo)
        high.append(hi)
    return {
        "generations": list(range(length)),
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
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
                              confidence)
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


# --------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------
def _colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _draw_curves(ax: Any, data: Mapping[str, Mapping[str, Any]], metric: str) -> None:
    from matplotlib.ticker import MaxNLocator

    colors = _colors(list(data))
    for label, metrics in data.items():
        series = metrics[metric]
        gens = np.asarray(series["generations"])
        mean = np.asarray(series["mean"], dtype=float)
        if gens.size == 0 or np.isnan(mean).all():
            continue
        n = len(series["per_seed"])
        ax.plot(gens, mean, color=colors[label], marker="o", ms=3,
                label=f"{label} (n={n})")
        ax.fill_between(gens, np.asarray(series["ci_low"], dtype=float),
                        np.asarray(series["ci_high"], dtype=float),
                        color=colors[label], alpha=0.2, lw=0)
    ax.set_xlabel("generation")
    ax.set_ylabel(SERIES[metric])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def plot_metric(data: Mapping[str, Mapping[str, Any]], metric: str,
                title: str | None = None) -> Figure:
    """One curve per group (mean over seeds, shaded 95% interval) of one series.

    Args:
        data: :func:`figure_data` output.
        metric: A key of :data:`SERIES`.
        title: Figure title (default: the metric's label).
    """
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    _draw_curves(ax, data, metric)
    ax.set_title(title or f"{SERIES[metric]} (mean, 95% CI over seeds)")
    if metric == "valid_fraction":
        ax.set_ylim(-0.03, 1.03)
    return fig


def plot_filled_niches(data: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Cells filled per generation: network archive (left) and prompt archive (right)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    for ax, metric, title in zip(fig.subplots(1, 2), ("network_cells", "prompt_cells"),
                                 ("network archive", "prompt archive"), strict=True):
        _draw_curves(ax, data, metric)
        ax.set_ylabel("cells filled")
        ax.set_title(title)
    fig.suptitle("filled niches (mean, 95% CI over seeds)")
    return fig


# --------------------------------------------------------------------------------------
# Heatmaps (from the last checkpoint)
# --------------------------------------------------------------------------------------
def load_state(run: Run) -> Any | None:
    """The pickled ``SearchState`` of ``checkpoints/latest.pkl``, or None if absent.

    Unpickling runs code named in the file: read only checkpoints of your own runs.
    """
    if not isinstance(run.path, Path):
        return None
    path = run.path / "checkpoints" / "latest.pkl"
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _fitness_label(run: Run) -> str:
    return "validation accuracy" if run.fitness == "accuracy" else "fitness (-validation loss)"


def _raw_formatter(bounds: Sequence[float] | None) -> Any:
    from matplotlib.ticker import FuncFormatter

    lo, hi = (0.0, 1.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
    return FuncFormatter(lambda x, _pos: f"{lo + x * (hi - lo):.3g}")


def plot_network_heatmap(run: Run, state: Any = None, *, title: str | None = None) -> Figure:
    """Network-archive cells over the two descriptors, coloured by fitness.

    A 2-D CVT archive is drawn as its Voronoi cells (empty cells white; tick labels in
    descriptor units, mapped back through ``dataset.descriptor_bounds``); a grid archive,
    another descriptor count or a geometry error fall back to a scatter of the elites'
    raw descriptors coloured by fitness.

    Args:
        run: The run.
        state: Its ``SearchState`` (default: loaded from ``checkpoints/latest.pkl``).
        title: Which run this is (default: ``ablation, seed k``).
    """
    state = load_state(run) if state is None else state
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    names = list(_get(run.config, "descriptors.names", []) or [])
    title = f"network archive: {title or _label_of(run)}"
    if run.ablation == "prompt_archive_only":
        title += " (shadow archive)"
    ax.set_title(title)
    if state is None:
        _empty(ax, "no checkpoint (checkpoints/latest.pkl)")
        return fig
    archive = state.network_archive
    if len(archive) == 0:
        _empty(ax, "empty network archive")
        return fig
    if not _try_cvt_heatmap(ax, archive.archive, run, names):
        fig.clear()
        ax = fig.add_subplot()
        ax.set_title(title)
        _scatter_elites(ax, archive.elites(), run, names)
    return fig


def voronoi_cells(centroids: np.ndarray) -> list[np.ndarray]:
    """The polygon of each centroid's Voronoi cell (bounded by far-away corner points).

    Args:
        centroids: ``(n, 2)`` CVT centroids in the normalised space [0, 1]^2.

    Returns:
        One ``(k, 2)`` vertex array per centroid; the plot's limits clip them to [0, 1]^2.
    """
    from scipy.spatial import Voronoi

    far = np.array([[-100.0, -100.0], [-100.0, 100.0], [100.0, -100.0], [100.0, 100.0]])
    vor = Voronoi(np.vstack([np.asarray(centroids, dtype=float), far]))
    return [vor.vertices[vor.regions[vor.point_region[i]]] for i in range(len(centroids))]


def _try_cvt_heatmap(ax: Any, archive: Any, run: Run, names: Sequence[str]) -> bool:
    """Voronoi cells of a 2-D CVT archive, filled cells coloured by objective.

    (``ribs.visualize.cvt_archive_heatmap`` draws the same, but importing
    ``ribs.visualize`` needs seaborn and shapely, which are not dependencies.)
    """
    from matplotlib.collections import PolyCollection
    from ribs.archives import CVTArchive

    if not isinstance(archive, CVTArchive) or archive.measure_dim != 2 or len(names) != 2:
        return False
    try:
        cells = voronoi_cells(archive.centroids)
        data = archive.data()
        index = np.asarray(data["index"], dtype=int)
        objective = np.asarray(data["objective"], dtype=float)
    except Exception:  # noqa: BLE001 - any geometry problem: use the scatter instead
        return False
    ax.add_collection(PolyCollection(cells, facecolors="white", edgecolors="0.7", lw=0.3))
    filled = PolyCollection([cells[i] for i in index], array=objective, cmap="viridis",
                            edgecolors="k", lw=0.3)
    ax.add_collection(filled)
    ax.figure.colorbar(filled, ax=ax, label=_fitness_label(run))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    bounds = (_get(run.config, "descriptors.bounds", None)
              or _get(run.config, "dataset.descriptor_bounds", {}) or {})
    for axis, name in zip((ax.xaxis, ax.yaxis), names, strict=True):
        axis.set_major_formatter(_raw_formatter(bounds.get(name)))
    ax.set_xlabel(name_with_note(names[0], bounds))
    ax.set_ylabel(name_with_note(names[1], bounds))
    return True


def name_with_note(name: str, bounds: Mapping[str, Any]) -> str:
    """Axis label of a descriptor; says when ticks are normalised (no bounds known)."""
    return name if name in bounds else f"{name} (normalised)"


def _scatter_elites(ax: Any, elites: Mapping[str, np.ndarray], run: Run,
                    names: Sequence[str]) -> None:
    raw = np.asarray(elites.get("raw_measures", elites["measures"]), dtype=float)
    obj = np.asarray(elites["objective"], dtype=float)
    if raw.ndim == 1:
        raw = raw[:, None]
    y = raw[:, 1] if raw.shape[1] > 1 else np.zeros(len(raw))
    points = ax.scatter(raw[:, 0], y, c=obj, cmap="viridis", s=40, edgecolors="k", lw=0.3)
    ax.figure.colorbar(points, ax=ax, label=_fitness_label(run))
    ax.set_xlabel(names[0] if names else "descriptor 1")
    ax.set_ylabel(names[1] if len(names) > 1 else "")
    ax.grid(alpha=0.3)


def short_instruction(text: str, width: int = 30) -> str:
    """A short label of a mutation instruction (``Add a layer``, ``improve by ...``)."""
    s = re.sub(r"\s*to improve the above network\s*$", "", text.strip())
    s = re.sub(r"^improve the above network", "improve", s)
    return s if len(s) <= width else s[: width - 1] + "…"


def plot_prompt_heatmap(run: Run, state: Any = None, *, title: str | None = None) -> Figure:
    """Prompt-archive cells: instruction id x temperature, coloured by curiosity.

    Args:
        run: The run.
        state: Its ``SearchState`` (default: loaded from ``checkpoints/latest.pkl``).
        title: Which run this is (default: ``ablation, seed k``).
    """
    from matplotlib.colors import TwoSlopeNorm

    instructions = list(_get(run.config, "operators.mutation_instructions", []) or [])
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"prompt archive: {title or _label_of(run)}")
    ax.set_yticks(range(len(instructions)),
                  [f"{i}: {short_instruction(t)}" for i, t in enumerate(instructions)],
                  fontsize="small")
    ax.set_ylim(-0.5, max(len(instructions), 1) - 0.5)
    t_min = _get(run.config, "temperature.min")
    t_max = _get(run.config, "temperature.max")
    if t_min is not None and t_max is not None:
        pad = 0.03 * (float(t_max) - float(t_min))
        ax.set_xlim(float(t_min) - pad, float(t_max) + pad)
    ax.set_xlabel("temperature")
    ax.grid(alpha=0.3)
    state = load_state(run) if state is None else state
    if state is None:
        _empty(ax, "no checkpoint (checkpoints/latest.pkl)")
        return fig
    data = state.prompt_archive.archive.data()
    if len(data["objective"]) == 0:
        _empty(ax, "empty prompt archive (this ablation does not use one)")
        return fig
    sol = np.asarray(data["solution"], dtype=float)
    cur = np.asarray(data["objective"], dtype=float)
    lo, hi = float(cur.min()), float(cur.max())
    norm = TwoSlopeNorm(0.0, lo, hi) if lo < 0.0 < hi else None
    points = ax.scatter(sol[:, 1], sol[:, 0], c=cur, cmap="coolwarm", norm=norm, marker="s",
                        s=90, edgecolors="k", lw=0.3)
    fig.colorbar(points, ax=ax, label="curiosity")
    return fig


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


def _label_of(run: Run) -> str:
    return f"{run.ablation}, seed {run.seed}"


# --------------------------------------------------------------------------------------
# Writing everything
# --------------------------------------------------------------------------------------
def slug(text: str) -> str:
    """A file-name-safe form of a group label (``llmatic p=0.5`` -> ``llmatic_p_0.5``)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "group"


def save_figure(fig: Figure, out: str | os.PathLike, name: str) -> list[Path]:
    """Save ``fig`` as ``out/name.png`` and ``out/name.pdf``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=150 if fmt == "png" else None)
        paths.append(path)
    return paths


def make_figures(runs: Sequence[Run], out: str | os.PathLike, *, heatmaps: str = "all",
                 confidence: float = 0.95) -> list[Path]:
    """Draw and save every figure and ``figures_data.json``.

    Args:
        runs: The runs (see :func:`load_runs`).
        out: Output directory (created).
        heatmaps: ``all`` (every run), ``first`` (the first run of each group) or ``none``.
        confidence: Coverage of the shaded intervals.

    Returns:
        The written files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = figure_data(runs, confidence)
    written = [write_data(data, out / DATA_FILE)]
    written += save_figure(plot_metric(data, "best_val_accuracy"), out, "best_fitness")
    written += save_figure(plot_metric(data, "best_val_loss"), out, "best_loss")
    written += save_figure(plot_metric(data, "valid_fraction"), out, "valid_fraction")
    written += save_figure(plot_filled_niches(data), out, "filled_niches")
    if heatmaps != "none":
        for label, members in group_runs(runs).items():
            chosen = list(zip(seed_keys(members), members, strict=True))
            for key, run in chosen[:1] if heatmaps == "first" else chosen:
                written += _save_heatmaps(run, out, label, key)
    return written


def _save_heatmaps(run: Run, out: Path, label: str, key: str) -> list[Path]:
    if not isinstance(run.path, Path):  # a W&B run: no archives to draw
        return []
    try:
        state = load_state(run)
    except Exception as exc:  # noqa: BLE001 - e.g. a checkpoint of an older llmatic version
        print(f"llmatic-figures: no heatmaps for {run.path}: cannot read its checkpoint "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
        return []
    if state is None:
        print(f"llmatic-figures: no heatmaps for {run.path}: no checkpoints/latest.pkl",
              file=sys.stderr)
        return []
    name, title = f"{slug(label)}_seed{key}", f"{label}, seed {key}"
    return (save_figure(plot_network_heatmap(run, state, title=title), out,
                        f"network_heatmap_{name}")
            + save_figure(plot_prompt_heatmap(run, state, title=title), out,
                          f"prompt_heatmap_{name}"))


def elites_table(run: Run, k: int = 10) -> list[dict[str, Any]]:
    """The top ``k`` elites of ``summary.json`` as flat rows (descriptors as columns)."""
    if not isinstance(run.path, Path) or not (run.path / SUMMARY).is_file():
        return []
    summary = json.loads((run.path / SUMMARY).read_text())
    rows = []
    for rank, elite in enumerate(summary.get("elites", [])[:k], 1):
        row = {"rank": rank, **{key: v for key, v in elite.items() if key != "descriptors"}}
        row.update(elite.get("descriptors") or {})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``llmatic-figures`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="llmatic-figures",
        description="Plot LLMatic runs: best fitness / loss, filled niches and valid fraction "
                    "per generation (mean and 95% CI over seeds per ablation), and both "
                    "archive heatmaps of each run.",
    )
    parser.add_argument("dirs", nargs="*", metavar="DIR",
                        help="run directories, or directories holding runs at any depth "
                             "(e.g. a Hydra multirun directory)")
    parser.add_argument("--out", help="output directory (default: <first DIR>/figures, "
                                      "or ./figures with --wandb)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT",
                        help="also read runs of a W&B project (needs network; no heatmaps)")
    parser.add_argument("--heatmaps", choices=("all", "first", "none"), default="all",
                        help="heatmaps for every run, the first run of each group, or none")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="coverage of the shaded interval (default 0.95)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llmatic-figures``; returns the exit status (2: bad input)."""
    args = build_parser().parse_args(argv)
    if not args.dirs and not args.wandb:
        print("llmatic-figures: give at least one DIR or --wandb ENTITY/PROJECT",
              file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    try:
        runs = load_runs(args.dirs) if args.dirs else []
        if args.wandb:
            runs += load_wandb_runs(args.wandb)
    except FiguresError as exc:
        print(f"llmatic-figures: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (Path(args.dirs[0]) / "figures" if args.dirs
                                           else Path("figures"))
    written = make_figures(runs, out, heatmaps=args.heatmaps, confidence=args.confidence)
    groups = group_runs(runs)
    print(f"{len(runs)} run(s) in {len(groups)} group(s): "
          + ", ".join(f"{g} (n={len(m)})" for g, m in groups.items()))
    print(f"wrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
