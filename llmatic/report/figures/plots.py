"""Figures of :mod:`llmatic.report.figures.series` data and of a run's two archives.

Curves: one line per group (mean over seeds) with its shaded bootstrap interval (none, and
the seeds drawn instead, below three seeds; the legend gives each group's seed count). Heatmaps,
from the run's last checkpoint: the network archive (a 2-D CVT archive as its Voronoi cells,
else a scatter of the elites' descriptors) and the prompt archive (instruction x
temperature, coloured by curiosity).

Everything is drawn on :class:`matplotlib.figure.Figure` objects without pyplot, so it works
with any backend (the CLI selects Agg; a notebook displays the returned figures inline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from llmatic.report.figures.runs import Run, config_value, load_state
from llmatic.report.figures.series import MIN_SEEDS, SERIES


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
        if n < MIN_SEEDS:  # too few for an interval: show the seeds themselves
            note = f"n={n} seed{'s' if n > 1 else ''}, too few for an interval"
            for values in series["per_seed"].values():
                ax.plot(gens[:len(values)], values, color=colors[label], lw=0.8, alpha=0.45)
        else:
            note = f"n={n} seeds"
        ax.plot(gens, mean, color=colors[label], marker="o", ms=3, label=f"{label} ({note})")
        ax.fill_between(gens, np.asarray(series["ci_low"], dtype=float),
                        np.asarray(series["ci_high"], dtype=float),
                        color=colors[label], alpha=0.2, lw=0)
    ax.set_xlabel("generation")
    ax.set_ylabel(SERIES[metric])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


#: What the shaded band is (figure titles).
BAND = f"mean over seeds; band: 95% bootstrap interval, from {MIN_SEEDS}+ seeds"


def plot_metric(data: Mapping[str, Mapping[str, Any]], metric: str,
                title: str | None = None) -> Figure:
    """One curve per group (mean over seeds, shaded 95% bootstrap interval) of one series.

    A group of fewer than :data:`~llmatic.report.figures.series.MIN_SEEDS` seeds has no band;
    its seeds are drawn as thin lines and its legend entry says so.

    Args:
        data: :func:`figure_data` output.
        metric: A key of :data:`SERIES`.
        title: Figure title (default: the metric's label).
    """
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    _draw_curves(ax, data, metric)
    ax.set_title(title or f"{SERIES[metric]}\n({BAND})", fontsize="medium")
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
    fig.suptitle(f"filled niches ({BAND})")
    return fig


# --------------------------------------------------------------------------------------
# Heatmaps (from the last checkpoint)
# --------------------------------------------------------------------------------------
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
    names = list(config_value(run.config, "descriptors.names", []) or [])
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
    bounds = (config_value(run.config, "descriptors.bounds", None)
              or config_value(run.config, "dataset.descriptor_bounds", {}) or {})
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

    instructions = list(config_value(run.config, "operators.mutation_instructions", []) or [])
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"prompt archive: {title or _label_of(run)}")
    ax.set_yticks(range(len(instructions)),
                  [f"{i}: {short_instruction(t)}" for i, t in enumerate(instructions)],
                  fontsize="small")
    ax.set_ylim(-0.5, max(len(instructions), 1) - 0.5)
    t_min = config_value(run.config, "temperature.min")
    t_max = config_value(run.config, "temperature.max")
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
