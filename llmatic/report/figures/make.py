"""Every figure of a set of runs, written to one directory (what ``llmatic-figures`` does).

Written into the output directory, each figure as PNG and PDF:

* ``best_fitness``: best validation accuracy so far, per generation;
* ``best_loss``: lowest validation loss so far, per generation;
* ``filled_niches``: cells filled in the network and the prompt archive;
* ``valid_fraction``: fraction of candidates that trained (status ``ok``);
* ``network_heatmap_<group>_seed<k>``: network-archive cells coloured by fitness;
* ``prompt_heatmap_<group>_seed<k>``: prompt archive, instruction x temperature, coloured by
  curiosity;
* ``figures_data.json``: every plotted series, ``group -> metric -> {generations, mean,
  ci_low, ci_high, per_seed}``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from llmatic.report.figures.plots import (
    plot_filled_niches,
    plot_metric,
    plot_network_heatmap,
    plot_prompt_heatmap,
)
from llmatic.report.figures.runs import Run, load_state
from llmatic.report.figures.series import figure_data, group_runs, seed_keys, write_data
from llmatic.rundir import SUMMARY

DATA_FILE = "figures_data.json"
FORMATS = ("png", "pdf")


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
