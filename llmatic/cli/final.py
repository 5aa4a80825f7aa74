"""``llmatic-final RUN_DIR``: retrain the best elites longer and report test accuracy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmatic.errors import ConfigError, DatasetError
from llmatic.report.final import COLUMNS, final_evaluation, fmt


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(
        prog="llmatic-final",
        description="Retrain the best elites of a run with a longer recipe and report test "
        "accuracy, parameters and FLOPs (CSV + Markdown in RUN_DIR/final/).",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--top-k", type=int, default=5, help="elites to retrain (default 5)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the run's budget.epochs)")
    parser.add_argument("overrides", nargs="*",
                        help="dotlist overrides of the run's config, e.g. trainer.accelerator=gpu")
    args = parser.parse_args(argv)
    try:
        rows = final_evaluation(args.run_dir, top_k=args.top_k, epochs=args.epochs,
                                overrides=args.overrides)
    except (ConfigError, DatasetError) as exc:
        print(f"llmatic-final: error: {exc}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Final evaluation of {args.run_dir} (test split)")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*[fmt(row[c]) for c in COLUMNS])
    Console(width=160).print(table)
    print(f"written: {Path(args.run_dir) / 'final' / 'elites.csv'} and elites.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
