"""The lineage tree of a network: how the search got to it, drawn from the run history.

One node per ancestor (candidate id inside; x: the generation it was made in), coloured by
fitness; one arrow per parent link, labelled with the instruction the generator was given
and the temperature it sampled at (``crossover`` for a crossover). The network itself is
outlined in red. ``llmatic-figures`` writes ``lineage_<group>_seed<k>`` for the best network
of each run; the search logs it to W&B at the end of a run; ``llmatic-export`` puts one in
each export (``lineage.png``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from llmatic.report.figures.plots import short_instruction
from llmatic.report.figures.runs import Run
from llmatic.report.lineage import LineageError, ancestry, best_candidate


def _positions(steps: Sequence[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    """x: generation; y: the order within a generation, centred on 0.

    Within a generation, nodes are ordered by the mean height of their parents (the seed's
    children by id), so chains stay level and edges rarely cross.
    """
    by_gen: dict[int, list[dict[str, Any]]] = {}
    for s in steps:
        by_gen.setdefault(int(s["generation"]), []).append(s)
    pos: dict[int, tuple[float, float]] = {}
    for gen in sorted(by_gen):
        def key(step: dict[str, Any]) -> tuple[float, int]:
            ys = [pos[int(p)][1] for p in step.get("parents") or [] if int(p) in pos]
            return (-sum(ys) / len(ys) if ys else 0.0, int(step["candidate_id"]))

        members = sorted(by_gen[gen], key=key)
        for i, step in enumerate(members):
            pos[int(step["candidate_id"])] = (float(gen), (len(members) - 1) / 2.0 - i)
    return pos


def _edge_label(step: dict[str, Any]) -> str:
    if step.get("operator") == "crossover":
        label = "crossover"
    else:
        text = str(step.get("instruction") or step.get("operator") or "")
        label = short_instruction(re.sub(r"\s*to improve the above cell\s*$", "", text), width=26)
    temperature = step.get("temperature")
    return label if temperature is None else f"{label}\nT={float(temperature):.2f}"


def plot_lineage(steps: Sequence[dict[str, Any]], *, title: str = "lineage") -> Figure:
    """Draw a lineage (:func:`llmatic.report.lineage.ancestry`), the last step outlined."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    pos = _positions(steps)
    fitness = [s["fitness"] for s in steps if s.get("fitness") is not None]
    lo, hi = (min(fitness), max(fitness)) if fitness else (0.0, 1.0)
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
    cmap = colormaps["viridis"]
    gens = {int(s["generation"]) for s in steps}
    height = max(len([s for s in steps if int(s["generation"]) == g]) for g in gens)
    fig = Figure(figsize=(max(6.0, 2.6 * len(gens)), max(3.0, 1.3 * height + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    target = int(steps[-1]["candidate_id"])
    for s in steps:
        x1, y1 = pos[int(s["candidate_id"])]
        for parent in s.get("parents") or []:
            x0, y0 = pos[int(parent)]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops={"arrowstyle": "-|>", "color": "0.45", "lw": 1.2,
                                    "shrinkA": 14, "shrinkB": 14})
            # Nearer the child than the parent: two edges into one generation seldom meet.
            ax.text(x0 + 0.6 * (x1 - x0), y0 + 0.6 * (y1 - y0) + 0.08, _edge_label(s),
                    ha="center", va="bottom", fontsize=7, color="0.15")
    for s in steps:
        cid = int(s["candidate_id"])
        x, y = pos[cid]
        value = s.get("fitness")
        color = cmap(norm(value)) if value is not None else "0.85"
        ax.scatter([x], [y], s=620, c=[color], zorder=3,
                   edgecolors="red" if cid == target else "0.2",
                   linewidths=2.5 if cid == target else 0.8)
        ax.text(x, y, str(cid), ha="center", va="center", fontsize=8, zorder=4,
                color="white" if value is not None and norm(value) < 0.6 else "black")
    ax.set_xticks(sorted(gens))
    ax.set_xlabel("generation")
    ax.set_yticks([])
    ax.set_xlim(min(gens) - 0.6, max(gens) + 0.6)
    ax.set_ylim(-height / 2 - 0.4, height / 2 + 0.6)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="fitness", shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def best_lineage_figure(run: Run, *, title: str | None = None) -> Figure:
    """The lineage tree of ``run``'s best network (highest fitness among those that trained).

    Raises:
        LineageError: No candidate trained, or the history is incomplete.
    """
    cid = best_candidate(run.history)
    steps = ancestry(run.history, cid)
    label = title or f"{run.ablation}, seed {run.seed}"
    return plot_lineage(steps, title=f"lineage of the best network (candidate {cid}), {label}")


def lineage_figures(runs: Sequence[Run], out: str | Path, *, first_only: bool = False
                    ) -> list[Path]:
    """``lineage_<group>_seed<k>`` (PNG, PDF) of each run's best network; the written paths.

    ``first_only``: only the first run of each group (as ``--heatmaps first``).
    """
    from llmatic.report.figures.make import save_figure, slug
    from llmatic.report.figures.series import group_runs, seed_keys

    written: list[Path] = []
    for label, members in group_runs(runs).items():
        chosen = list(zip(seed_keys(members), members, strict=True))
        for key, run in chosen[:1] if first_only else chosen:
            if not isinstance(run.path, Path) or not run.history:
                continue  # a W&B run: no history to walk
            try:
                fig = best_lineage_figure(run, title=f"{label}, seed {key}")
            except LineageError as exc:
                print(f"llmatic-figures: no lineage for {run.path}: {exc}", file=sys.stderr)
                continue
            written += save_figure(fig, out, f"lineage_{slug(label)}_seed{key}")
    return written
