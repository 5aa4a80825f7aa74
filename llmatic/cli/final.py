"""``llmatic-final RUN_DIR``: retrain the best elites over several seeds, report test accuracy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmatic.errors import ConfigError, DatasetError
from llmatic.report.final import COLUMNS, HEADERS, cell, final_evaluation


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(
        prog="llmatic-final",
        description="Retrain the best elites of a run with a longer recipe over several "
        "seeds and report test accuracy (mean ± std), parameters and FLOPs (CSV, Markdown "
        "and final.json in RUN_DIR/final/, with each seed's trained weights for "
        "llmatic-export).",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--top-k", type=int, default=5, help="elites to retrain (default 5)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the run's budget.epochs)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds per elite (default 3): test accuracy is "
                             "reported as mean ± std over them")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("overrides", nargs="*",
                        help="dotlist overrides of the run's config, e.g. trainer.accelerator=gpu")
    args = parser.parse_args(argv)

    def progress(done: int, total: int, line: str) -> None:
        if not args.quiet:
            prefix = f"[{done}/{total}] " if done else ""
            print(f"llmatic-final: {prefix}{line}", file=sys.stderr, flush=True)

    try:
        rows = final_evaluation(args.run_dir, top_k=args.top_k, epochs=args.epochs,
                                seeds=args.seeds, overrides=args.overrides, progress=progress)
    except (ConfigError, DatasetError) as exc:
        print(f"llmatic-final: error: {exc}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Final evaluation of {args.run_dir} (test split, {args.seeds} "
                        f"seed(s) per elite)")
    for col in COLUMNS:
        table.add_column(HEADERS.get(col, col), justify="right")
    for row in rows:
        table.add_row(*[cell(row, c) for c in COLUMNS])
    Console(width=160).print(table)
    final = Path(args.run_dir) / "final"
    print(f"written: {final / 'elites.csv'}, elites.md, final.json and weights/")
    print(f"export the best network: llmatic-export {args.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
