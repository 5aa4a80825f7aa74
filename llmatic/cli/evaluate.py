"""``llmatic-evaluate FILE [overrides]``: evaluate one network file as the search would.

The file is extracted, run in a sandboxed child, trained with the configured recipe and
scored on the validation split, exactly like a search candidate. The last line of stdout is
one JSON object (``status``, ``fitness``, ``val_accuracy``, ``params``, ``flops``,
``width_to_depth``, ``error``, ...). The exit code is 0 whenever an evaluation happened,
whatever its status; 2 for a bad file path or config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmatic.config import evaluate_file


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(
        prog="llmatic-evaluate",
        description="Evaluate one network file exactly as the search evaluates a candidate.",
    )
    parser.add_argument("file", nargs="?",
                        help="a Python file (or an LLM answer) defining an nn.Module")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides, e.g. dataset=cifar10 budget.epochs=2")
    parser.add_argument("--isolation-report", nargs="?", const="auto", metavar="MODE",
                        choices=("auto", "strict", "python"),
                        help="print (JSON) the kernel layers a candidate gets on this machine "
                             "in MODE (default auto) and exit; strict exits 2 naming a "
                             "missing layer")
    args = parser.parse_args(argv)
    from llmatic.errors import ConfigError, DatasetError

    if args.isolation_report:
        from llmatic.sandbox import IsolationError, isolation_report

        try:
            print(json.dumps(isolation_report(args.isolation_report), indent=1))
        except IsolationError as exc:
            print(f"llmatic-evaluate: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.file is None:
        parser.error("a network file is required (or --isolation-report)")

    if not Path(args.file).is_file():
        print(f"llmatic-evaluate: error: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        out = evaluate_file(args.file, args.overrides)
    except (ConfigError, DatasetError) as exc:
        print(f"llmatic-evaluate: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # hydra override errors and the like
        name = type(exc).__name__
        if name in ("ConfigCompositionException", "OverrideParseException",
                    "ConfigAttributeError", "ConfigKeyError", "MissingConfigException"):
            print(f"llmatic-evaluate: error: {exc}", file=sys.stderr)
            return 2
        raise
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
