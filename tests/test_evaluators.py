"""Evaluators: local, pool and Ray give the same search for the same seed."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from conftest import SMOKE, compose_config

from llmatic.config import run_search
from llmatic.rundir import read_history

pytestmark = pytest.mark.slow  # five real searches, one on Ray (about 1.5 min)

ARGS = (*SMOKE, "budget.generations=2", "budget.candidates_per_generation=5", "seed=3")


def _result(run_dir):
    with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
        state = pickle.load(fh)
    net = state.network_archive.elites()
    history = [{k: v for k, v in r.items() if k != "timings"} for r in read_history(run_dir)]
    return history, net["index"].tolist(), net["candidate_id"].tolist(), net["objective"].tolist()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, shared_sandbox):
    run_dir = tmp_path_factory.mktemp("local")
    run_search(compose_config(*ARGS, "evaluator=local"), run_dir, show_progress=False,
               sandbox=shared_sandbox)
    return _result(run_dir)


def test_pool_matches_local(local_run, tmp_path, shared_sandbox):
    run_search(compose_config(*ARGS, "evaluator=pool", "sandbox.workers=2"), tmp_path,
               show_progress=False, sandbox=shared_sandbox)
    assert _result(tmp_path) == local_run


def test_overlapping_generation_and_evaluation_matches(local_run, tmp_path, shared_sandbox):
    run_search(compose_config(*ARGS, "evaluator=pool", "sandbox.overlap_chunk=2"), tmp_path,
               show_progress=False, sandbox=shared_sandbox)
    assert _result(tmp_path) == local_run


def test_ray_matches_local(local_run, tmp_path):
    run_search(compose_config(*ARGS, "evaluator=ray", "evaluator.workers=2",
                              "evaluator.num_cpus=0.5"), tmp_path, show_progress=False)
    assert _result(tmp_path) == local_run


def test_searches_in_one_process_share_one_server_that_dies_with_the_process(tmp_path):
    """A sweep's jobs (Hydra's basic launcher: one process) pay the server's imports once,
    also when they differ in their timeout (it travels with each job)."""
    import json
    import os
    import subprocess
    import sys

    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import compose_config
from llmatic.sandbox import evaluators
from llmatic.config import run_search
from llmatic.rundir import read_history
out = []
for i in range(2):
    cfg = compose_config("dataset=digits", "budget=smoke", "budget.generations=1",
                         "budget.candidates_per_generation=2", f"seed={{i}}",
                         f"sandbox.timeout_s={{120 + 30 * i}}")
    s = run_search(cfg, {str(tmp_path)!r} + f"/r{{i}}", show_progress=False)
    out.append({{"ok": s["status_counts"].get("ok"),
                "servers": [b._proc.pid for b in evaluators._SHARED.values()]}})
print("RESULT " + json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ,
                                            "LLMATIC_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    first, second = json.loads(line[len("RESULT "):])
    assert first["ok"] == second["ok"] == 3
    assert first["servers"] == second["servers"] and len(first["servers"]) == 1
    assert not Path(f"/proc/{first['servers'][0]}").exists()  # stopped at exit
