"""``llmatic-final RUN_DIR``: retrain a run's best elites over several seeds, report test accuracy.

The paper's final table (docs/method.md §5, figure 6): the top-k networks of the network archive
are retrained from scratch with a longer recipe (same sandbox, same Lightning path as the
search) and scored once on the test split, which the search never saw. Test labels stay in
this process; the child only predicts unlabelled test inputs.

The top networks of a search differ by less than seed noise, so each elite is retrained
with ``seeds`` training seeds (default 3) and its test accuracy reported as mean ± standard
deviation. Seed 0 is the seed the search trained the network with; seed k > 0 is mixed from
it and k. Every retrain also leaves the trained network behind as data: its ``state_dict``
as safetensors and, where it traces and the ``onnx`` package is installed, an ONNX graph
(written by the sandboxed child, see :mod:`llmatic.train.artifacts`); ``llmatic-export``
ships them.

Writes, in ``RUN_DIR/final/``: ``elites.csv`` and ``elites.md`` (the table),
``final.json`` (every seed's numbers, the recipe, each elite's source: what
``llmatic-export`` reads) and ``weights/cXXXXXX_sK.safetensors`` / ``.onnx``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import stat
import statistics
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

from llmatic.errors import ConfigError
from llmatic.rundir import CONFIG, atomic_write_bytes, checkpoint_path, read_checkpoint

#: What ``llmatic-export`` reads: every seed's result, the recipe and each elite's source.
FINAL_JSON = "final.json"
FINAL_DIR = "final"
WEIGHTS_DIR = "weights"
STAGING_DIR = ".weights.new"

#: ``progress(done, total, line)``: called once before the first job (done = 0) and once
#: per finished retrain.
Progress = Callable[[int, int, str], None]


def final_evaluation(run_dir: str | Path, *, top_k: int = 5, epochs: int | None = None,
                     seeds: int = 3, overrides: list[str] | None = None,
                     progress: Progress | None = None) -> list[dict[str, Any]]:
    """Retrain the ``top_k`` elites of ``run_dir`` with ``seeds`` seeds each; rows, best first.

    Each row has the elite's search numbers, ``test_accuracy`` (the mean over the seeds that
    trained), ``test_accuracy_std`` (None with fewer than two), ``test_loss`` (mean) and
    ``runs``: one dict per seed (``seed``, ``status``, ``test_accuracy``, ``test_loss``,
    ``weights``, ``onnx``, ``notes``).

    Raises:
        ConfigError: Not a run directory, no checkpoint, a NAS-Bench-201 run, a bad
            ``top_k`` / ``seeds`` / override. Checked before any training.
    """
    from llmatic.config import build_space, final_config

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} has no {CONFIG}: pass an llmatic run directory")
    if not checkpoint_path(run_dir).exists():
        raise ConfigError(f"{run_dir} has no checkpoint yet: run or resume the search first")
    run_config, epochs = final_config(run_dir, epochs=epochs, overrides=overrides)
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    elites = read_checkpoint(run_dir).network_archive.top(top_k)
    say = progress or (lambda done, total, line: None)
    say(0, len(elites) * seeds, f"preparing the data of {run_dir} ...")

    out_dir = run_dir / FINAL_DIR
    out_dir.mkdir(exist_ok=True)
    # New weights are staged and swapped in with final.json at the end: an interrupted
    # retrain leaves the previous weights and final.json as they were (and consistent).
    shutil.rmtree(out_dir / STAGING_DIR, ignore_errors=True)
    space = build_space(run_config, out_dir)
    try:
        test_dir = space.datamodule.write_child_arrays(out_dir / "data", include_test=True)
        plans = [_plan(space, elite, rank, seeds, test_dir) for rank, elite in
                 enumerate(elites, 1)]
        runs = _retrain(space, plans, out_dir, epochs, say)
    finally:
        space.close()
    rows = [_row(plan, runs[plan["candidate_id"]], epochs) for plan in plans]
    shutil.rmtree(out_dir / WEIGHTS_DIR, ignore_errors=True)
    (out_dir / STAGING_DIR).mkdir(exist_ok=True)
    os.replace(out_dir / STAGING_DIR, out_dir / WEIGHTS_DIR)
    _write_tables(out_dir, rows)
    recipe = recipe_of(plans[0]["jobs"][0]) if plans else {}
    _write_final_json(out_dir, rows, space, recipe, epochs, seeds)
    return rows


def _plan(space: Any, elite: dict[str, Any], rank: int, seeds: int,
          test_dir: Path) -> dict[str, Any]:
    """One elite's retrain: its source, class, and one job per seed."""
    import numpy as np

    source = str(elite["solution"])
    job = space.job(source, _class_name(source))
    job.update(data_dir=str(test_dir.resolve()), predict_split="test", save_weights=True)
    base = int(job["seed"])
    seed_values = [base] + [int(np.random.SeedSequence([base, k]).generate_state(1)[0])
                            for k in range(1, seeds)]
    return {"rank": rank, "candidate_id": int(elite["candidate_id"]),
            "generation": int(elite["generation"]), "source": source,
            "class_name": job["class_name"],
            "search_val_accuracy": float(elite["val_accuracy"]),
            "params": int(elite["params"]), "flops": int(elite["flops"]),
            "jobs": [{**job, "seed": value} for value in seed_values]}


def _retrain(space: Any, plans: list[dict[str, Any]], out_dir: Path, epochs: int,
             say: Progress) -> dict[int, list[dict[str, Any]]]:
    """Every (elite, seed) job at once in the evaluator's slots; per-seed results by id."""
    futures = {}
    total = sum(len(p["jobs"]) for p in plans)
    workers = getattr(space.evaluator, "workers", None)
    say(0, total, f"retraining {len(plans)} elite(s) x {len(plans[0]['jobs']) if plans else 0}"
        f" seed(s) = {total} job(s) of {epochs} epoch(s)"
        + (f", {workers} at a time" if workers else ""))
    started = time.perf_counter()
    for plan in plans:
        for k, job in enumerate(plan["jobs"]):
            job_dir = out_dir / "jobs" / f"{plan['candidate_id']:06d}_s{k}"
            futures[space.evaluator.submit(job, job_dir)] = (plan, k, job_dir)
    runs: dict[int, list[dict[str, Any]]] = {p["candidate_id"]: [] for p in plans}
    for done, future in enumerate(as_completed(futures), 1):
        plan, k, job_dir = futures[future]
        run = _score(space, future.result(), plan, k, job_dir, out_dir)
        runs[plan["candidate_id"]].append(run)
        acc = fmt(run["test_accuracy"])
        say(done, total, f"rank {plan['rank']} (candidate {plan['candidate_id']}) seed "
            f"{k + 1}/{len(plan['jobs'])}: {run['status']}, test accuracy {acc}"
            f"  [{time.perf_counter() - started:.0f} s]")
    for seed_runs in runs.values():
        seed_runs.sort(key=lambda r: r["seed_index"])
    return runs


def _score(space: Any, outcome: Any, plan: dict[str, Any], k: int, job_dir: Path,
           out_dir: Path) -> dict[str, Any]:
    """One seed's result, scored here against the test labels; its artifacts kept."""
    from llmatic.sandbox import outcome_to_result

    result = outcome_to_result(outcome, job_dir=job_dir,
                               val_labels=space.datamodule.splits["y_test"],
                               num_classes=space.num_classes, split="test")
    ok = result.status.value == "ok"
    run = {"seed_index": k, "seed": int(plan["jobs"][k]["seed"]),
           "status": result.status.value,
           "test_accuracy": result.val_accuracy,  # scored against the *test* labels here
           "test_loss": result.val_loss, "params": result.params, "flops": result.flops,
           "error": result.error, "weights": None, "onnx": None,
           "notes": dict((outcome.result or {}).get("artifacts") or {}) if ok else {}}
    if ok:
        _keep_artifacts(run, plan["candidate_id"], job_dir, out_dir)
    shutil.rmtree(job_dir, ignore_errors=True)
    return run


def _keep_artifacts(run: dict[str, Any], candidate_id: int, job_dir: Path,
                    out_dir: Path) -> None:
    """Move the child's weights (once parsed here as safetensors) and ONNX graph to weights/."""
    from llmatic.train import ONNX_FILE, WEIGHTS_FILE

    target = out_dir / STAGING_DIR  # becomes weights/ when every retrain is done
    target.mkdir(exist_ok=True)
    stem = f"c{candidate_id:06d}_s{run['seed_index']}"
    notes = run["notes"]
    weights = job_dir / WEIGHTS_FILE
    if notes.get("weights") == "ok" and regular_file(weights):
        try:
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as fh:  # data only: no pickle
                list(fh.keys())
            shutil.move(str(weights), target / f"{stem}.safetensors")
            run["weights"] = f"{WEIGHTS_DIR}/{stem}.safetensors"
        except Exception as exc:  # noqa: BLE001 - the file came from candidate code
            notes["weights"] = f"unreadable safetensors file: {exc}"
    onnx = job_dir / ONNX_FILE
    if notes.get("onnx") == "ok" and regular_file(onnx) and onnx.stat().st_size > 0:
        shutil.move(str(onnx), target / f"{stem}.onnx")
        run["onnx"] = f"{WEIGHTS_DIR}/{stem}.onnx"


def regular_file(path: Path) -> bool:
    """A plain file, not a link or a FIFO (the child's directory is the candidate's too)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _row(plan: dict[str, Any], runs: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """One elite's table row: mean ± std over the seeds that trained."""
    ok = [r for r in runs if r["status"] == "ok"]
    accs = [float(r["test_accuracy"]) for r in ok]
    losses = [float(r["test_loss"]) for r in ok if r["test_loss"] is not None]
    failed = [r for r in runs if r["status"] != "ok"]
    measured = next((r for r in ok if r["params"] is not None), None)
    return {
        "rank": plan["rank"], "candidate_id": plan["candidate_id"],
        "generation": plan["generation"], "search_val_accuracy": plan["search_val_accuracy"],
        "status": "ok" if ok and not failed else (failed[0]["status"] if failed else "ok"),
        "test_accuracy": statistics.fmean(accs) if accs else None,
        "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
        "test_loss": statistics.fmean(losses) if losses else None,
        "params": measured["params"] if measured else plan["params"],
        "flops": measured["flops"] if measured else plan["flops"],
        "epochs": epochs, "seeds": len(runs), "seeds_ok": len(ok),
        "error": failed[0]["error"] if failed else None,
        "class_name": plan["class_name"], "source": plan["source"], "runs": runs,
    }


def _class_name(source: str) -> str:
    from llmatic.extract import extract_network

    ext = extract_network(source)
    return ext.class_name or "Net"


COLUMNS = ("rank", "candidate_id", "generation", "search_val_accuracy", "test_accuracy",
           "test_loss", "params", "flops", "epochs", "seeds", "status")
#: Column headers of the printed and Markdown tables.
HEADERS = {"search_val_accuracy": "search val acc", "test_accuracy": "test acc (mean ± std)",
           "candidate_id": "candidate", "test_loss": "test loss"}


def fmt(value: Any) -> str:
    """One number, formatted the same everywhere.

    Fractions and losses with 4 decimals, counts with thousands separators, ``-`` for none.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cell(row: dict[str, Any], column: str) -> str:
    """A table cell of ``row``: test accuracy as mean ± std, the rest through :func:`fmt`."""
    if column == "test_accuracy" and row.get("test_accuracy_std") is not None:
        return f"{fmt(row['test_accuracy'])} ± {fmt(row['test_accuracy_std'])}"
    if column == "seeds" and row.get("seeds_ok", row.get("seeds")) != row.get("seeds"):
        return f"{row['seeds_ok']}/{row['seeds']}"
    return fmt(row.get(column))


def _write_tables(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    fields = [*COLUMNS[:5], "test_accuracy_std", "test_accuracies", *COLUMNS[5:], "error"]
    with open(out_dir / "elites.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            accs = ";".join(f"{r['test_accuracy']:.6f}" for r in row["runs"]
                            if r["test_accuracy"] is not None)
            writer.writerow({**row, "test_accuracies": accs})
    headers = [HEADERS.get(c, c) for c in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    (out_dir / "elites.md").write_text("\n".join(lines) + "\n")


def _write_final_json(out_dir: Path, rows: list[dict[str, Any]], space: Any,
                      recipe: dict[str, Any], epochs: int, seeds: int) -> None:
    data = {
        "epochs": epochs, "seeds": seeds, "dataset": space.dataset,
        "input_shape": list(space.input_shape), "num_classes": space.num_classes,
        "normalization": dict(space.datamodule.normalization),
        "test_size": int(len(space.datamodule.splits["y_test"])),
        "recipe": recipe, "rows": rows,
    }
    atomic_write_bytes(out_dir / FINAL_JSON, json.dumps(data, indent=1, default=_plain).encode())


def recipe_of(job: dict[str, Any]) -> dict[str, Any]:
    """The training recipe of a job (what every seed shares): no code, data or seed."""
    keep = ("epochs", "batch_size", "optimizer", "scheduler", "trainer", "max_flops")
    recipe = {k: job.get(k) for k in keep}
    # The job's ``epochs`` is what the trainer runs (its own max_epochs is replaced).
    recipe["trainer"] = {k: v for k, v in (recipe["trainer"] or {}).items()
                         if k not in ("max_epochs", "_target_")}
    return recipe


def _plain(value: Any) -> Any:
    """Numpy scalars and arrays in ``final.json``."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
