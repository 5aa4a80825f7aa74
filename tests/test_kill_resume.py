"""kill -9 at several moments, then ``llmatic resume=RUN_DIR``: the final history (timings
aside) and both archives equal those of an uninterrupted run with the same seed.

Every run that is killed is a real ``llmatic`` process; the last resume, which is not
killed, runs the same command in this process (``conftest.run_app``: the console script's
``main``, on the session's sandbox server), which saves a start of torch and a server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from llmatic.rundir import read_checkpoint, read_history

pytestmark = pytest.mark.slow  # each case starts `llmatic` and kills it, once or twice

# History lines: the seed, then 4 per generation (1, 5, 9, 13): a kill at >= 9 lands in the
# last generation, a kill at >= 1 in the first.
ARGS = ("dataset=digits", "budget=smoke",
        "budget.generations=3", "budget.candidates_per_generation=4",
        "seed=7")


def _llmatic(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "llmatic", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("timings",)} for r in records]


def _archives(run_dir):
    state = read_checkpoint(run_dir)
    net = state.network_archive.elites()
    prm = state.prompt_archive.archive.data()
    order = np.argsort(prm["index"])
    return (net["index"].tolist(), net["candidate_id"].tolist(), net["objective"].tolist(),
            prm["index"][order].tolist(), prm["objective"][order].tolist())


_REFERENCES: dict[tuple[str, ...], object] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_sandbox):
    """The uninterrupted run for a set of extra arguments (made once per module).

    In this process, on the session's sandbox server: the same code path as the command
    line below ``run_search``, without a second start of torch and the server.
    """
    from conftest import compose_config

    from llmatic.config import run_search

    def get(*extra):
        if extra not in _REFERENCES:
            run_dir = tmp_path_factory.mktemp("reference") / "run"
            run_search(compose_config(*ARGS, *extra), run_dir, show_progress=False,
                       sandbox=shared_sandbox)
            _REFERENCES[extra] = run_dir
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
                                                       extra, monkeypatch, shared_sandbox):
    from conftest import run_app

    reference = reference(*extra)
    run_dir = tmp_path / "run"
    proc = _llmatic(*ARGS, *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    _kill_at(proc, run_dir, kill_at_lines[0])
    for lines in kill_at_lines[1:]:  # a resumed run killed again
        proc = _llmatic(f"resume={run_dir}", cwd=tmp_path)
        _kill_at(proc, run_dir, lines)
    assert run_app(f"resume={run_dir}", cwd=tmp_path, monkeypatch=monkeypatch) == 0
    assert not (tmp_path / "outputs").exists()  # the resume wrote into the run it continued
    assert _strip(read_history(run_dir)) == _strip(read_history(reference))
    assert _archives(run_dir) == _archives(reference)
