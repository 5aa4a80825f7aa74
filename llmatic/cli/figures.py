"""``llmatic-figures DIR... [--out OUT]``: the paper's figures of runs, multiruns, W&B runs.

A thin argparse over :func:`llmatic.report.make_figures` (see :mod:`llmatic.report.figures`
for what is written). The exit code is 0 when the figures were written, 2 for bad input (no
run found, a missing path, a damaged history, an unreadable W&B project).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llmatic.errors import RunDirectoryError
from llmatic.report import (
    FiguresError,
    group_runs,
    lineage_figures,
    load_runs,
    load_wandb_runs,
    make_figures,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``llmatic-figures`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="llmatic-figures",
        description="Plot LLMatic runs: best fitness / loss, filled niches and valid fraction "
                    "per generation (mean and 95% CI over seeds per ablation), both "
                    "archive heatmaps of each run and the lineage tree of its best network.",
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
    parser.add_argument("--lineage", choices=("all", "first", "none"), default="all",
                        help="lineage tree of the best network (nodes coloured by fitness, "
                             "edges labelled with the instruction) for every run, the first "
                             "run of each group, or none")
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
    except (FiguresError, RunDirectoryError) as exc:
        print(f"llmatic-figures: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (Path(args.dirs[0]) / "figures" if args.dirs
                                           else Path("figures"))
    written = make_figures(runs, out, heatmaps=args.heatmaps, confidence=args.confidence)
    if args.lineage != "none":
        written += lineage_figures(runs, out, first_only=args.lineage == "first")
    groups = group_runs(runs)
    print(f"{len(runs)} run(s) in {len(groups)} group(s): "
          + ", ".join(f"{g} (n={len(m)})" for g, m in groups.items()))
    print(f"wrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
