"""``llmatic-final RUN_DIR``: retrain a run's best elites longer and report test accuracy.

The paper's final table (METHOD.md §5, figure 6): the top-k networks of the network archive
are retrained from scratch with a longer recipe (same sandbox, same Lightning path as the
search) and scored once on the test split, which the search never saw. Test labels stay in
this process; the child only predicts unlabelled test inputs. Writes ``final/elites.csv`` and
``final/elites.md`` in the run directory and prints the table.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from llmatic.errors import ConfigError
from llmatic.rundir import CONFIG, checkpoint_path, read_checkpoint


def final_evaluation(run_dir: str | Path, *, top_k: int = 5, epochs: int | None = None,
                     overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Retrain the ``top_k`` elites of ``run_dir``; return one row per elite, best first."""
    from llmatic.config import build_space, final_config
    from llmatic.sandbox import outcome_to_result

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} has no {CONFIG}: pass an llmatic run directory")
    if not checkpoint_path(run_dir).exists():
        raise ConfigError(f"{run_dir} has no checkpoint yet: run or resume the search first")
    run_config, epochs = final_config(run_dir, epochs=epochs, overrides=overrides)
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    elites = read_checkpoint(run_dir).network_archive.top(top_k)

    out_dir = run_dir / "final"
    out_dir.mkdir(exist_ok=True)
    space = build_space(run_config, out_dir)
    test_dir = space.datamodule.write_child_arrays(out_dir / "data", include_test=True)
    test_labels = space.datamodule.splits["y_test"]
    rows = []
    try:
        for rank, elite in enumerate(elites, 1):
            cid = int(elite["candidate_id"])
            job = space.job(str(elite["solution"]), _class_name(str(elite["solution"])))
            job["data_dir"] = str(test_dir.resolve())
            job["predict_split"] = "test"
            job_dir = out_dir / "jobs" / f"{cid:06d}"
            outcome = space.evaluator.submit(job, job_dir).result()
            result = outcome_to_result(outcome, job_dir=job_dir, val_labels=test_labels,
                                       num_classes=space.num_classes, split="test")
            test_acc = result.val_accuracy  # scored against the *test* labels here
            test_loss = result.val_loss
            shutil.rmtree(job_dir, ignore_errors=True)
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
        space.close()
    _write_tables(out_dir, rows)
    return rows


def _class_name(source: str) -> str:
    from llmatic.extract import extract_network

    ext = extract_network(source)
    return ext.class_name or "Net"


COLUMNS = ("rank", "candidate_id", "generation", "search_val_accuracy", "test_accuracy",
           "test_loss", "params", "flops", "epochs", "status")


def fmt(value: Any) -> str:
    """One table cell: 4 decimals, thousands separators for large counts, - for none."""
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
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    (out_dir / "elites.md").write_text("\n".join(lines) + "\n")
