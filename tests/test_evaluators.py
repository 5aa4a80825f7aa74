"""Evaluators: local, pool and Ray give the same search for the same seed."""

from __future__ import annotations

import pickle

import pytest
from conftest import SMOKE, compose_config

from llmatic.search import read_history, run_search

ARGS = (*SMOKE, "budget.generations=2", "budget.candidates_per_generation=5", "seed=3")


def _result(run_dir):
    with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
        state = pickle.load(fh)
    net = state.network_archive.elites()
    history = [{k: v for k, v in r.items() if k != "timings"} for r in read_history(run_dir)]
    return history, net["index"].tolist(), net["candidate_id"].tolist(), net["objective"].tolist()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("local")
    run_search(compose_config(*ARGS, "evaluator=local"), run_dir, show_progress=False)
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
