"""``llmatic-final RUN_DIR``: retrain a run's best elites longer and report test accuracy.

The paper's final table (METHOD.md §5, figure 6): the top-k networks of the network archive
are retrained from scratch with a longer recipe (same sandbox, same Lightning path as the
search) and scored once on the test split, which the search never saw. Test labels stay in
this process; the child only predicts unlabelled test inputs. Writes ``final/elites.csv`` and
``final/elites.md`` in the run directory and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import pickle
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from llmatic.config import CONFIG, validate_config
from llmatic.errors import ConfigError, DatasetError


def final_evaluation(run_dir: str | Path, *, top_k: int = 5, epochs: int | None = None,
                     overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Retrain the ``top_k`` elites of ``run_dir``; return one row per elite, best first."""
    from llmatic.sandbox import outcome_to_result
    from llmatic.search.engine import Search, _clean_job_dir

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} has no {CONFIG}: pass an llmatic run directory")
    checkpoint = run_dir / "checkpoints" / "latest.pkl"
    if not checkpoint.exists():
        raise ConfigError(f"{run_dir} has no checkpoint yet: run or resume the search first")
    cfg = OmegaConf.load(run_dir / CONFIG)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    if cfg.get("space", "network") == "nb201":
        raise ConfigError(
            f"{run_dir} is a NAS-Bench-201 search: its cells are not retrained, their test "
            f"accuracies are looked up in the benchmark ({run_dir / 'nb201.json'}); for the "
            "Table-1 comparison run `llmatic-nb201 report` on the run or sweep directory"
        )
    cfg.llm = {"_target_": "llmatic.llm.base.NullGenerator"}  # no generation here
    epochs = int(epochs if epochs is not None else cfg.budget.epochs)
    cfg.budget.epochs = epochs
    validate_config(cfg)
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    with open(checkpoint, "rb") as fh:
        state = pickle.load(fh)
    elites = state.network_archive.top(top_k)

    out_dir = run_dir / "final"
    out_dir.mkdir(exist_ok=True)
    search = Search(cfg, out_dir)
    test_dir = search.datamodule.write_child_arrays(out_dir / "data", include_test=True)
    test_labels = search.datamodule.splits["y_test"]
    rows = []
    try:
        for rank, elite in enumerate(elites, 1):
            cid = int(elite["candidate_id"])
            job = search._job(str(elite["solution"]), _class_name(str(elite["solution"])), cid)
            job["data_dir"] = str(test_dir.resolve())
            job["predict_split"] = "test"
            job_dir = out_dir / "jobs" / f"{cid:06d}"
            outcome = search.evaluator.submit(job, job_dir).result()
            result = outcome_to_result(outcome, job_dir=job_dir, val_labels=test_labels,
                                       num_classes=search.num_classes, split="test")
            test_acc = result.val_accuracy  # scored against the *test* labels here
            test_loss = result.val_loss
            _clean_job_dir(job_dir)
            rows.append({
                "rank": rank,
                "candidate_id": cid,
                "generation": int(elite["generation"]),
                "search_val_accuracy": float(elite["val_accuracy"]),
                "status": result.status.value,
                "test_accuracy": test_acc,
                "test_loss": test_loss,
                "params": result.params if result.params is not None else int(elite["params"]),
                "flops": result.flops if result.flops is not None else int(elite["flops"]),
                "epochs": epochs,
                "error": result.error,
            })
    finally:
        search.close()
    _write_tables(out_dir, rows)
    return rows


def _class_name(source: str) -> str:
    from llmatic.extract import extract_network

    ext = extract_network(source)
    return ext.class_name or "Net"


COLUMNS = ("rank", "candidate_id", "generation", "search_val_accuracy", "test_accuracy",
           "test_loss", "params", "flops", "epochs", "status")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return str(value)


def _write_tables(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    with open(out_dir / "elites.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, [*COLUMNS, "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    (out_dir / "elites.md").write_text("\n".join(lines) + "\n")


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
        table.add_row(*[_fmt(row[c]) for c in COLUMNS])
    Console(width=160).print(table)
    print(f"written: {Path(args.run_dir) / 'final' / 'elites.csv'} and elites.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
