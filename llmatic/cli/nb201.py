"""``llmatic-nb201``: make the NAS-Bench-201 benchmark table a search looks cells up in.

Subcommands (each a ``_add_*`` parser builder plus a handler in :data:`COMMANDS`):

* ``export SOURCE --out CSV`` -- read the official NATS-Bench / NAS-Bench-201 file once
  (minutes) and write the compact CSV that ``nb201.table`` loads in well under a second;
* ``synthetic --out CSV`` -- write a SYNTHETIC, NAS-Bench-201-like table for trying things out
  without the benchmark (NOT benchmark data);
* ``report DIR`` -- the paper's Table 1 beside the nb201 runs below DIR (a sweep directory).

Errors print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from llmatic.nb201.arch import ArchStringError
from llmatic.nb201.report import ReportError
from llmatic.nb201.table import (
    DATASETS,
    NATS_URL,
    NB201_URL,
    TableError,
    export_table,
    write_synthetic_table,
)

PROG = "llmatic-nb201"


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the official benchmark file to the compact CSV (once; takes minutes)",
        description=(
            "Read the official NAS-Bench-201 topology benchmark through the nats_bench API "
            "(200-epoch results, averaged over seeds; CIFAR-10 validation accuracy from "
            "cifar10-valid, test accuracy from cifar10) and write the compact CSV that "
            "nb201.table loads. SOURCE is the NATS-Bench directory NATS-tss-v1_0-3ffb9-simple "
            f"(extracted from NATS-tss-v1_0-3ffb9-simple.tar, {NATS_URL}), the file "
            "NATS-tss-v1_0-3ffb9.pickle.pbz2, or NAS-Bench-201-v1_[01]-*.pth "
            f"({NB201_URL}). These files are pickles: reading one runs code from it, so only "
            "export files you downloaded from the benchmark's authors."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="the official benchmark file or folder")
    parser.add_argument("--out", required=True, metavar="CSV", help="the CSV to write")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                        metavar="DATASET",
                        help=f"datasets to export (default: all of {', '.join(DATASETS)})")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _run_export(args: argparse.Namespace) -> int:
    rows = export_table(args.source, args.out, datasets=args.datasets, progress=not args.quiet)
    print(f"wrote {rows} rows ({', '.join(args.datasets)}) to {args.out}; "
          f"use it with nb201.table={args.out}")
    return 0


def _add_synthetic(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synthetic",
        help="write a SYNTHETIC table (NOT benchmark data) for trying things out",
        description=(
            "Write a SYNTHETIC, NAS-Bench-201-like table over all 15,625 cells x "
            f"{', '.join(DATASETS)}. Its numbers are made up by a simple model of the "
            "benchmark (cells cut off from their input at chance; more and bigger convs on "
            "input->output paths score higher, saturating; seeded per-cell noise): they are NOT "
            "benchmark data and must not be reported as NAS-Bench-201 results. For real numbers "
            "use `llmatic-nb201 export`."
        ),
    )
    parser.add_argument("--out", required=True, metavar="CSV", help="the CSV to write")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    parser.add_argument("--landscape", choices=("prior", "random"), default="prior",
                        help="prior: more and bigger convolutions score higher (default); "
                             "random: edge operations and their pairwise interactions of "
                             "random value (an optimum no prior guesses)")
    parser.add_argument("--key", type=int, default=0, help="seed of --landscape random")


def _run_synthetic(args: argparse.Namespace) -> int:
    rows = write_synthetic_table(args.out, seed=args.seed, landscape=args.landscape,
                                 key=args.key)
    print(f"wrote a SYNTHETIC table (not benchmark data): {rows} rows to {args.out}")
    return 0


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="print the paper's Table 1 beside this sweep's test accuracies",
        description="Gather the nb201.json of every run below DIR (e.g. "
                    "multirun/paper_nb201/DATE_TIME) and print test accuracy, mean ± std over "
                    "seeds, per method and dataset, beside the paper's LLMatic, REA, random "
                    "search and optimum rows. Writes DIR/nb201_table1.md and .json.",
    )
    parser.add_argument("dir", help="a sweep (or run) directory of experiment=paper_nb201")


def _run_report(args: argparse.Namespace) -> int:
    from llmatic.nb201.report import main_report

    main_report(args.dir)
    return 0


#: Subcommand name -> handler; each returns the exit status.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "export": _run_export,
    "synthetic": _run_synthetic,
    "report": _run_report,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; its subcommands' action is exposed as ``parser.subparsers``.

    A new subcommand adds a parser to ``parser.subparsers`` and a handler to :data:`COMMANDS`.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make the NAS-Bench-201 benchmark table that nb201.table points at.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.subparsers = subparsers  # type: ignore[attr-defined]
    _add_export(subparsers)
    _add_synthetic(subparsers)
    _add_report(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llmatic-nb201``; returns the exit status (2 on errors, with one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # usage errors (argparse prints them) and --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return COMMANDS[args.command](args)
    except (TableError, ArchStringError, ReportError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
