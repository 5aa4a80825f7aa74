"""Each ablation changes the algorithm the way docs/method.md §4 says (checked on real runs)."""

from __future__ import annotations

import pickle

import pytest
from conftest import FAST, compose_config

from llmatic.config import run_search
from llmatic.rundir import read_history

pytestmark = pytest.mark.slow  # five real searches, one per ablation

@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_sandbox, random_generation_run):
    out = {}
    for name, extra in (
        ("mutation_only", ()),
        ("crossover_only", ()),
        ("network_archive_only", ()),
        ("prompt_archive_only", ("archive.network_cells=2",)),
    ):
        run_dir = tmp_path_factory.mktemp(name)
        summary = run_search(compose_config(*FAST, f"ablation={name}", *extra), run_dir,
                             show_progress=False,
                sandbox=shared_sandbox)
        with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
            state = pickle.load(fh)
        out[name] = (read_history(run_dir), summary, state)
    run_dir, summary, _ = random_generation_run  # shared with the duplicate tests
    with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
        out["random_generation"] = (read_history(run_dir), summary, pickle.load(fh))
    return out


def evolved(history):
    return [r for r in history if r["operator"] != "seed" and not r["warmup"]]


def test_mutation_only_makes_only_mutations(runs):
    history, summary, _ = runs["mutation_only"]
    assert summary["ablation"] == "mutation_only"
    assert evolved(history) and {r["operator"] for r in evolved(history)} == {"mutation"}


def test_crossover_only_makes_only_crossovers(runs):
    history, _, _ = runs["crossover_only"]
    assert evolved(history) and {r["operator"] for r in evolved(history)} == {"crossover"}
    # warm-up (mutations of the seed) ran only until two networks existed
    assert all(r["operator"] == "mutation" for r in history if r["warmup"])


def test_network_archive_only_never_uses_the_prompt_archive(runs):
    history, summary, state = runs["network_archive_only"]
    assert len(state.prompt_archive) == 0
    assert summary["prompt_archive"]["cells_filled"] == 0
    assert summary["network_archive"]["cells_filled"] >= 2
    mutations = [r for r in evolved(history) if r["operator"] == "mutation"]
    assert len({r["instruction_id"] for r in mutations}) > 1  # uniform draws, not one prompt


def test_prompt_archive_only_selects_from_an_elitist_population(runs):
    history, _, state = runs["prompt_archive_only"]
    ok = [r for r in history if r["status"] == "ok"]
    best_two = sorted(ok, key=lambda r: -r["fitness"])[:2]
    assert sorted(m["candidate_id"] for m in state.population.members) == sorted(
        r["candidate_id"] for r in best_two)
    # parents of generation g are in the top two of what was known before g
    for g in (2,):
        known = [r for r in ok if r["generation"] < g]
        pool = set()
        members = []
        for r in known:  # replay the elitist rule in tell order
            if len(members) < 2:
                members.append(r)
            else:
                worst = min(members, key=lambda m: m["fitness"])
                if r["fitness"] > worst["fitness"]:
                    members.remove(worst)
                    members.append(r)
        pool = {m["candidate_id"] for m in members}
        for r in history:
            if r["generation"] == g:
                assert set(r["parents"]) <= pool
    assert len(state.prompt_archive) > 0  # the prompt archive is still used


def test_random_generation_always_mutates_the_seed(runs):
    history, _, state = runs["random_generation"]
    children = [r for r in history if r["operator"] != "seed"]
    assert children and all(r["operator"] == "mutation" and r["parents"] == [0]
                            for r in children)
    assert len(state.prompt_archive) == 0
