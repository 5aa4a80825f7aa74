"""schedule=steady: one history per seed and lag whatever the workers; utilisation measured.

Steady-state evolution tells results in candidate order and plans candidate i after every
candidate before i - L was told; these tests run it on a simulated cluster (NAS-Bench-201
lookups that hold a worker for a drawn time, so candidates finish out of order), on real
sandboxed training with 1 and 2 workers, and through kill -9 and resume.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from conftest import compose_config

from llmatic.errors import ConfigError
from llmatic.rundir import read_history

NB = ("experiment=paper_nb201", "llm=rules", "nb201.baselines=[]", "seed=4",
      "budget.generations=4", "budget.candidates_per_generation=6")


def _strip(records):
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from llmatic.nb201.table import write_synthetic_table

    path = tmp_path_factory.mktemp("nb201") / "synthetic.csv"
    write_synthetic_table(path, seed=0)
    return path


def _nb_search(table, run_dir, *extra, workers=None, median_s=0.02):
    """An nb201 search; on a simulated cluster of ``workers`` when given (else lookups)."""
    from rich.console import Console

    from llmatic.config import validate_config
    from llmatic.config.build import build_search
    from llmatic.nb201.simulated import SleepingPool, simulated_search
    from llmatic.report.loggers import CSVLogger
    from llmatic.search import run

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_config(*NB, f"nb201.table={table}", *extra)
    validate_config(cfg)
    search = build_search(cfg, run_dir)
    if workers is not None:
        search = simulated_search(search, SleepingPool(workers), median_s=median_s, sigma=1.0)
    summary = run(search, None, logger=CSVLogger(), run_config={},
                  console=Console(file=open(os.devnull, "w")), show_progress=False)  # noqa: SIM115
    return summary, read_history(run_dir), search


@pytest.fixture(scope="module")
def steady_runs(table, tmp_path_factory):
    """steady_lag=5 on 1 and on 8 simulated workers, and with plain lookups."""
    out = {}
    for name, workers in (("w1", 1), ("w8", 8), ("lookup", None)):
        run_dir = tmp_path_factory.mktemp(name) / "run"
        out[name] = _nb_search(table, run_dir, "schedule=steady", "steady_lag=5",
                               workers=workers)
    return out


def test_same_seed_and_lag_give_the_same_history_with_1_and_8_workers(steady_runs):
    _, h1, _ = steady_runs["w1"]
    _, h8, _ = steady_runs["w8"]
    _, hl, _ = steady_runs["lookup"]
    assert len(h1) == 1 + 4 * 6
    # The 8 workers really finished candidates out of order (else the test proves nothing).
    ends = [r["timings"]["end_at"] for r in h8 if "end_at" in r["timings"]]
    assert any(b < a for a, b in zip(ends, ends[1:], strict=False))
    assert _strip(h1) == _strip(h8) == _strip(hl)
    # Generations are blocks of candidates, in candidate order.
    assert [r["generation"] for r in h8] == [0] + [g for g in range(1, 5) for _ in range(6)]


def test_steady_measures_utilisation_per_generation_and_for_the_run(steady_runs):
    summary, _, search = steady_runs["w8"]
    util = summary["utilisation"]
    assert util["workers"] == 8
    assert 0.0 < util["worker_utilisation"] <= 1.0
    parts = util["worker_busy_s"] + util["idle_straggler_s"] + util["idle_no_candidate_s"]
    assert parts == pytest.approx(8 * util["wall_s"], rel=1e-3, abs=1e-3)
    assert summary["worker_utilisation"] == util["worker_utilisation"]
    assert summary["time_to_first_result_s"] is None  # run() without run_search: unknown
    rows = list(csv.DictReader(open(search.run_dir / "metrics.csv")))  # noqa: SIM115
    assert [int(r["generation"]) for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert 0.0 < float(row["worker_utilisation"]) <= 1.0
        assert int(row["workers"]) == 8
    assert summary["schedule"] == "steady" and summary["steady_lag"] == 5


def test_lag_zero_is_one_candidate_at_a_time(table, tmp_path):
    """steady_lag=0 plans each candidate after every earlier one was told: with one
    candidate per generation that is exactly the generational schedule."""
    one = ("budget.candidates_per_generation=1", "budget.generations=10")
    _, steady, _ = _nb_search(table, tmp_path / "s", "schedule=steady", "steady_lag=0", *one,
                              workers=2)
    _, gen, _ = _nb_search(table, tmp_path / "g", *one)
    assert _strip(steady) == _strip(gen)


def test_utilisation_splits_worker_seconds():
    from llmatic.search.metrics import utilisation

    # Two workers over [0, 4]: both busy for 1 s, one waits for a straggler for 1 s, then
    # nothing runs for 2 s.
    u = utilisation([(0.0, 2.0), (0.0, 1.0), (5.0, 6.0)], 0.0, 4.0, 2)
    assert u["worker_busy_s"] == 3.0
    assert u["idle_straggler_s"] == 1.0
    assert u["idle_no_candidate_s"] == 4.0
    assert u["worker_utilisation"] == 3.0 / 8.0
    assert utilisation([], 1.0, 1.0, 4)["worker_utilisation"] is None


def test_dispatcher_keeps_at_most_workers_running_in_order():
    from llmatic.search.dispatch import Dispatcher, RunClock

    started, running, peak = [], [0], [0]
    lock = threading.Lock()
    inner: dict[int, Future] = {}

    def start(i):
        def go():
            with lock:
                started.append(i)
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            inner[i] = Future()
            return inner[i]
        return go

    d = Dispatcher(2, RunClock())
    proxies = [d.submit(i, start(i)) for i in range(5)]
    assert started == [0, 1]
    for i in (1, 0, 2, 3, 4):  # finish out of order
        with lock:
            running[0] -= 1
        inner[i].set_result(i * 10)
    assert started == [0, 1, 2, 3, 4] and peak[0] == 2
    assert [p.result() for p in proxies] == [0, 10, 20, 30, 40]
    start_0, end_0 = d.take(0)
    assert end_0 >= start_0 and d.take(0) is None


@pytest.mark.parametrize(("override", "key"), [
    ("schedule=sometimes", "schedule"),
    ("steady_lag=-1", "steady_lag"),
    ("steady_lag=two", "steady_lag"),
])
def test_bad_schedule_values_are_config_errors(override, key):
    from llmatic.config import validate_config

    with pytest.raises(ConfigError, match=key):
        validate_config(compose_config(override))


def test_pipeline_generations_is_the_old_name_of_schedule_pipelined():
    from llmatic.config import validate_config
    from llmatic.config.build import search_settings

    old = compose_config("pipeline_generations=true")
    validate_config(old)
    s = search_settings(old)
    assert s.schedule == "pipelined" and s.pipeline_generations
    steady = search_settings(compose_config("schedule=steady"))
    assert steady.steady_lag == steady.candidates_per_generation  # null: one generation
    assert not steady.pipeline_generations
    with pytest.raises(ConfigError, match="pipeline_generations.*schedule=pipelined"):
        validate_config(compose_config("pipeline_generations=true", "schedule=steady"))
    # A run saved before `schedule` existed resumes with its own schedule.
    from omegaconf import OmegaConf, open_dict

    saved = compose_config()
    with open_dict(saved):
        del saved["schedule"], saved["steady_lag"]
    assert search_settings(OmegaConf.create(saved)).schedule == "generational"


# -- real training ---------------------------------------------------------------------
SMOKE = ("dataset=digits", "budget=smoke", "budget.generations=3",
         "budget.candidates_per_generation=4",
         "seed=7", "schedule=steady", "steady_lag=3")


@pytest.fixture(scope="module")
def trained_steady(tmp_path_factory, shared_sandbox):
    """A steady search with real sandboxed training on 2 workers (the kill test's reference)."""
    from llmatic.config import run_search

    run_dir = tmp_path_factory.mktemp("steady2") / "run"
    summary = run_search(compose_config(*SMOKE, "sandbox.workers=2"), run_dir,
                         show_progress=False, sandbox=shared_sandbox)
    return run_dir, summary


@pytest.mark.slow
def test_real_training_same_history_with_1_and_2_workers(trained_steady, tmp_path,
                                                         shared_sandbox):
    from llmatic.config import run_search

    run_dir, summary = trained_steady
    one = tmp_path / "w1"
    run_search(compose_config(*SMOKE, "sandbox.workers=1"), one, show_progress=False,
               sandbox=shared_sandbox)
    assert _strip(read_history(one)) == _strip(read_history(run_dir))
    assert summary["utilisation"]["workers"] == 2
    assert summary["time_to_first_result_s"] > 0


def _llmatic(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "llmatic", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after_checkpoint(proc, run_dir: Path, generation: int) -> None:
    from llmatic.rundir import checkpoint_path

    done, latest = checkpoint_path(run_dir, generation), checkpoint_path(run_dir)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done.exists() and latest.exists() and latest.read_bytes() == done.read_bytes():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_killed_steady_run_resumes_to_the_same_result(trained_steady, tmp_path, monkeypatch,
                                                      shared_sandbox):
    """kill -9 after generation 1 (with generation 2's candidates running), resume: the same
    history and archives as the uninterrupted run.

    The killed run is a real ``llmatic`` process; the resume runs the same command in this
    process (``conftest.run_app``, on the session's server: the SMOKE limits)."""
    from conftest import run_app

    from llmatic.rundir import read_checkpoint

    reference, _ = trained_steady
    run_dir = tmp_path / "run"
    proc = _llmatic(*SMOKE, "sandbox.workers=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    _kill_after_checkpoint(proc, run_dir, 1)
    assert read_checkpoint(run_dir).pending_plans  # planned ahead, in flight when killed
    assert run_app(f"resume={run_dir}", cwd=tmp_path, monkeypatch=monkeypatch) == 0
    assert _strip(read_history(run_dir)) == _strip(read_history(reference))
    a, b = read_checkpoint(run_dir), read_checkpoint(reference)
    assert (a.network_archive.elites()["candidate_id"].tolist()
            == b.network_archive.elites()["candidate_id"].tolist())
    assert (a.prompt_archive.archive.data()["objective"].tolist()
            == b.prompt_archive.archive.data()["objective"].tolist())
