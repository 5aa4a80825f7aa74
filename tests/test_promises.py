"""README promises run on the real path: the command line's final printout and resume, the
"Reproduce the paper" sweeps with the launchers, and a search on CIFAR-10 files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import SMOKE, compose_config
from omegaconf import OmegaConf

from llmatic.config import resume_config, run_search
from llmatic.rundir import read_history

#: The smallest search the command line runs: one generation of two candidates.
TINY = ("dataset=digits", "budget=smoke",
        "budget.generations=1", "budget.candidates_per_generation=2",
        "sandbox.workers=1", "sandbox.timeout_s=60")


def _llmatic(*args, cwd, timeout=400):
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "llmatic", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _strip(records):
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


@pytest.mark.slow  # an llmatic process, then its resume in this process
def test_llmatic_prints_its_elites_and_run_directory_then_resumes_with_allowed_changes(
        tmp_path, monkeypatch, capsys, shared_sandbox):
    from conftest import run_app

    run = tmp_path / "run"
    proc = _llmatic(*TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    out = proc.stdout
    # The final printout: the elites table (as summary.json has them), then the directory.
    assert (f"Elites of the network archive: {summary['network_archive']['cells_filled']} "
            f"cells filled, {summary['candidates']} candidates") in out
    rows = [line for line in out.splitlines() if re.match(r"^[│|┃]\s*\d+\s*[│|┃]", line)]
    assert len(rows) == len(summary["elites"]) >= 1
    for row, elite in zip(rows, summary["elites"], strict=True):
        cells = [c.strip() for c in re.split(r"[│|┃]", row) if c.strip()]
        assert cells[1] == str(elite["candidate_id"]) and cells[3] == f"{elite['fitness']:.4f}"
    assert out.strip().splitlines()[-1] == f"run directory: {run}"
    first = read_history(run)

    # Resume with what may change: more generations, another logger, moved data, workers.
    # The same command in this process (conftest.run_app): a second start of torch and of a
    # sandbox server adds nothing to what is checked here.
    moved = tmp_path / "moved_data"
    moved.mkdir()
    capsys.readouterr()
    code = run_app(f"resume={run}", "budget.generations=2", "logger=tensorboard",
                   f"dataset.data_dir={moved}", "sandbox.workers=2", cwd=tmp_path,
                   monkeypatch=monkeypatch)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    history = read_history(run)
    assert _strip(history[:len(first)]) == _strip(first)
    assert {r["generation"] for r in history} == {0, 1, 2}
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "metrics.csv").read_text().count("\n") == 1 + 2  # still written
    assert out.out.strip().splitlines()[-1] == f"run directory: {run}"


def test_resume_of_a_directory_that_is_not_a_run_is_a_named_error(tmp_path):
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "readme.txt").write_text("not a run")
    proc = _llmatic(f"resume={not_a_run}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("llmatic: error: ") and f"resume={not_a_run}" in last
    assert "not an llmatic run directory" in last and "Traceback" not in proc.stderr
    assert sorted(p.name for p in not_a_run.iterdir()) == ["readme.txt"]  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


@pytest.mark.slow  # three NAS-Bench-201 searches
def test_nb201_resume_after_the_table_moved_continues_identically(tmp_path):
    from llmatic.nb201.table import write_synthetic_table

    table = tmp_path / "tables" / "nb201.csv"
    table.parent.mkdir()
    write_synthetic_table(table, seed=0)
    base = ("experiment=paper_nb201", "nb201.baselines=[]",
            "budget.candidates_per_generation=10")
    full, part = tmp_path / "full", tmp_path / "part"
    run_search(compose_config(*base, f"nb201.table={table}", "budget.generations=2"), full,
               show_progress=False)
    run_search(compose_config(*base, f"nb201.table={table}", "budget.generations=1"), part,
               show_progress=False)
    moved = tmp_path / "elsewhere" / "nb201.csv"
    moved.parent.mkdir()
    shutil.move(table, moved)
    args = [f"resume={part}", "budget.generations=2", f"nb201.table={moved}"]
    cfg = resume_config(compose_config(*base, *args), args)
    assert cfg.nb201.table == str(moved)
    run_search(cfg, part, resume=True, show_progress=False)
    assert _strip(read_history(part)) == _strip(read_history(full))


# -------------------------------------------------------------- "Reproduce the paper"
def _sweep_runs(sweep_dir):
    runs = sorted(p.parent for p in sweep_dir.rglob("summary.json"))
    return runs, [json.loads((r / "summary.json").read_text()) for r in runs]


@pytest.mark.slow  # a 4-run sweep in two joblib processes, then its figures
def test_ratio_sweep_smoke_runs_with_the_parallel_launcher_and_draws_its_figures(tmp_path):
    """The README's operator-ratio commands at the smallest budget the preset allows, with
    hydra/launcher=parallel. One seed of the preset's two and two of its four ratios (the
    command line narrows the preset's sweep), to keep `make test` inside its budget;
    experiment=ablations_smoke is the same machinery (the preset composes in
    test_config.py, each ablation runs in test_ablations.py)."""
    sweep = tmp_path / "sweep"
    proc = _llmatic("-m", "experiment=ratio_sweep_smoke", "seed=0", "operators.p_mutation=0.3,0.85",
                    "hydra/launcher=parallel",
                    "hydra.launcher.n_jobs=2", "budget.generations=2",
                    "budget.candidates_per_generation=2", "budget.warmup_networks=1",
                    "sandbox.workers=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib" in proc.stderr + proc.stdout  # the parallel launcher ran the jobs
    runs, summaries = _sweep_runs(sweep)
    ratios = []
    for run_dir, summary in zip(runs, summaries, strict=True):
        saved = OmegaConf.load(run_dir / "config.yaml")
        assert saved.experiment_name == "ratio_sweep_smoke" and summary["seed"] == 0
        history = read_history(run_dir)
        assert summary["candidates"] == len(history) == 5
        ratios.append(float(saved.operators.p_mutation))
    assert sorted(ratios) == [0.3, 0.85]
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, "-m", "llmatic.cli.figures", str(sweep), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("best_fitness", "best_loss", "filled_niches", "valid_fraction"):
        assert (out / f"{name}.png").stat().st_size > 0
    data = json.loads((out / "figures_data.json").read_text())
    assert sorted(data) == [f"llmatic p={p}" for p in ("0.3", "0.85")]


# ------------------------------------------------------------------------- CIFAR-10
@pytest.mark.slow  # a search on 32x32x3 images
def test_a_search_on_cifar10_files_in_the_real_format(tmp_path, shared_sandbox):
    from conftest import val_labels
    from test_data import write_fake_cifar

    write_fake_cifar(tmp_path / "data", n_train=300, n_test=20)
    data = ("dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}",
            "dataset.download=false", "dataset.verify_checksums=false")
    cfg = compose_config(*SMOKE, *data, "budget.generations=1",
                         "budget.candidates_per_generation=2")
    summary = run_search(cfg, tmp_path / "run", show_progress=False, sandbox=shared_sandbox)
    assert summary["dataset"] == "cifar10"
    history = read_history(tmp_path / "run")
    seed = history[0]
    assert seed["status"] == "ok", seed
    assert "nn.Conv2d(3," in (tmp_path / "run" / seed["source_file"]).read_text()
    n_val = len(val_labels(*SMOKE, *data))
    assert n_val == 30  # dataset.val_fraction=0.1 of 300 training images
    for rec in (r for r in history if r["status"] == "ok"):
        assert abs(rec["val_accuracy"] * n_val - round(rec["val_accuracy"] * n_val)) < 1e-9
