"""kill -9 at several moments, then ``llmatic resume=RUN_DIR``: the final history (timings
aside) and both archives equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from llmatic.rundir import read_history

ARGS = ("budget=smoke", "budget.generations=3", "budget.candidates_per_generation=5",
        "seed=7")


def _llmatic(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "llmatic", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("timings",)} for r in records]


def _archives(run_dir):
    with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
        state = pickle.load(fh)
    net = state.network_archive.elites()
    prm = state.prompt_archive.archive.data()
    order = np.argsort(prm["index"])
    return (net["index"].tolist(), net["candidate_id"].tolist(), net["objective"].tolist(),
            prm["index"][order].tolist(), prm["objective"][order].tolist())


_REFERENCES: dict[tuple[str, ...], object] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run for a set of extra arguments (made once per module)."""

    def get(*extra):
        if extra not in _REFERENCES:
            root = tmp_path_factory.mktemp("reference")
            proc = _llmatic(*ARGS, *extra, f"hydra.run.dir={root / 'run'}", cwd=root)
            assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
            _REFERENCES[extra] = root / "run"
        return _REFERENCES[extra]

    return get


def _kill_at(proc, run_dir, lines):
    """SIGKILL ``proc`` once ``history.jsonl`` holds ``lines`` records."""
    history = run_dir / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and history.read_text().count("\n") >= lines:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()


@pytest.mark.parametrize(("kill_at_lines", "extra"), [
    # killed early, resumed, the resumed run killed again mid-search, resumed again
    ((1, 9), ()),
    # pipelined generations: the checkpoint also holds the next generation's plans
    ((9,), ("pipeline_generations=true",)),
])
def test_kill_9_then_resume_equals_an_uninterrupted_run(reference, tmp_path, kill_at_lines,
                                                       extra):
    reference = reference(*extra)
    run_dir = tmp_path / "run"
    proc = _llmatic(*ARGS, *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    for lines in kill_at_lines:
        _kill_at(proc, run_dir, lines)
        proc = _llmatic(f"resume={run_dir}", cwd=tmp_path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    assert _strip(read_history(run_dir)) == _strip(read_history(reference))
    assert _archives(run_dir) == _archives(reference)
