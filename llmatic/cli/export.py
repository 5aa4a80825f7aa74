"""``llmatic-export RUN_DIR``: a folder with the network, its weights, card and lineage.

A thin argparse over :func:`llmatic.export.export`. Exit code 0 when the folder was written,
2 for bad input (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmatic.errors import ConfigError, RunDirectoryError
from llmatic.export import ExportError, export


def build_parser() -> argparse.ArgumentParser:
    """The ``llmatic-export`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="llmatic-export",
        description="Export a network a search found: model.py (standalone, torch only), "
                    "weights.safetensors and model.onnx from `llmatic-final`, card.md "
                    "(metrics, recipe, lineage with code diffs), lineage.json and "
                    "lineage.png. A NAS-Bench-201 run exports its cell (no weights). "
                    "model.py is code a code generator wrote: read it before running it.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, default=None,
                       help="rank in the final retrain's table (NAS-Bench-201: in the "
                            "archive); default 1, the best")
    which.add_argument("--candidate", type=int, default=None,
                       help="candidate id (one of the retrained elites)")
    parser.add_argument("--seed-index", type=int, default=0,
                        help="which seed of the final retrain to ship the weights of "
                             "(default 0: the search's own training seed)")
    parser.add_argument("--out", default=None,
                        help="output folder (default RUN_DIR/export/cXXXXXX)")
    parser.add_argument("--force", action="store_true", help="replace an existing folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llmatic-export``; returns the exit status (2: bad input)."""
    args = build_parser().parse_args(argv)
    try:
        folder = export(args.run_dir, rank=args.rank, candidate=args.candidate,
                        seed_index=args.seed_index, out=args.out, force=args.force)
    except (ExportError, ConfigError, RunDirectoryError) as exc:
        print(f"llmatic-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported to {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    print(f"read {folder / 'card.md'}; model.py runs generated code: read it before importing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
