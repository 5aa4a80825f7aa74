"""Options the README offers, each run and checked by its effect (not only composed).

One tiny network search combines the options that do not interact (archive=grid,
descriptors=params_depth, temperature=linear_decay, fitness=loss, module=adam,
operators=extended); prompt selection runs in the NAS-Bench-201 space (the same planner and
prompt archive, at lookup cost); sandbox.allowed_imports is checked statically and in the
sandboxed child.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from conftest import FAST, compose_config, evaluate_source

from llmatic.config import build_search, run_search
from llmatic.rundir import read_history

OPTIONS = ("archive=grid", "descriptors=params_depth", "temperature=linear_decay",
           "fitness=loss", "module=adam", "operators=extended")


@pytest.fixture(scope="module")
def options_run(tmp_path_factory, shared_sandbox):
    run_dir = tmp_path_factory.mktemp("options")
    cfg = compose_config(*FAST, *OPTIONS)
    summary = run_search(cfg, run_dir, show_progress=False, sandbox=shared_sandbox)
    with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
        state = pickle.load(fh)
    return run_dir, summary, cfg, state, read_history(run_dir)


@pytest.mark.slow  # one search
def test_grid_archive_and_params_depth_descriptors(options_run):
    from ribs.archives import GridArchive

    _, summary, cfg, state, history = options_run
    archive = state.network_archive.archive
    assert isinstance(archive, GridArchive)
    assert list(archive.dims) == list(cfg.archive.network_dims) == [10, 10]
    bounds = {k: list(v) for k, v in cfg.dataset.descriptor_bounds.items()}
    assert list(cfg.descriptors.names) == ["log10_params", "depth"]
    for rec in (r for r in history if r["status"] == "ok"):
        raw = [math.log10(rec["params"]), float(rec["depth"])]
        assert rec["descriptors"] == pytest.approx(dict(zip(cfg.descriptors.names, raw,
                                                            strict=True)))
        lo, hi = zip(*(bounds[n] for n in cfg.descriptors.names), strict=True)
        expected = np.clip((np.array(raw) - lo) / (np.array(hi) - lo), 0.0, 1.0)
        assert rec["measures"] == pytest.approx(expected.tolist())
    # Each elite sits in the grid cell of its measures; coverage is cells / 100.
    data = archive.data()
    assert len(data["index"]) == summary["network_archive"]["cells_filled"] >= 2
    np.testing.assert_array_equal(archive.index_of(data["measures"]), data["index"])
    assert summary["network_archive"]["coverage"] == pytest.approx(len(data["index"]) / 100)


@pytest.mark.slow
def test_linear_decay_temperature_and_loss_fitness(options_run):
    _, summary, cfg, _, history = options_run
    generations = cfg.budget.generations
    t = cfg.temperature
    for rec in history[1:]:
        frac = (rec["generation"] - 1) / (generations - 1)
        assert rec["temperature"] == pytest.approx(t.start + (t.end - t.start) * frac)
    assert {r["temperature"] for r in history[1:]} == {1.0, 0.1}
    ok = [r for r in history if r["status"] == "ok"]
    for rec in ok:
        assert rec["fitness"] == pytest.approx(-rec["val_loss"])
        assert rec["fitness"] != rec["val_accuracy"]
    assert summary["network_archive"]["best_fitness"] == pytest.approx(
        max(r["fitness"] for r in ok))
    elite_ids = [e["candidate_id"] for e in summary["elites"]]
    best = max(ok, key=lambda r: r["fitness"])
    assert elite_ids[0] == best["candidate_id"]  # the lowest loss, not the best accuracy


@pytest.mark.slow
def test_extended_operators_reach_the_prompt_archive_and_the_mutator(options_run):
    _, _, cfg, state, history = options_run
    instructions = list(cfg.operators.mutation_instructions)
    assert len(instructions) == 17
    assert state.prompt_archive.num_instructions == 17
    mutations = [r for r in history if r["operator"] == "mutation"]
    assert all(r["instruction"] == instructions[r["instruction_id"]] for r in mutations)
    beyond = [r for r in mutations if r["instruction_id"] >= 13]  # the reference code's four
    assert beyond, "this seeded run draws one of the four extended instructions"


@pytest.mark.slow
def test_adam_is_the_recipe_that_trains(options_run, tmp_path, shared_sandbox):
    """module=adam reaches the child: with its learning rate set to 0 a network does not
    change (one epoch or two end at the same loss); at its own rate it learns."""
    run_dir, _, cfg, _, history = options_run
    search = build_search(cfg, tmp_path / "build", sandbox=shared_sandbox)
    try:
        job = search.space.job(search.space.seed_source, "Net")
    finally:
        search.close()
    assert job["optimizer"] == {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001}
    assert job["scheduler"] is None
    source = (run_dir / history[0]["source_file"]).read_text()
    frozen = evaluate_source(source, shared_sandbox, tmp_path / "a", "module=adam",
                             "module.optimizer.lr=0.0")
    frozen_longer = evaluate_source(source, shared_sandbox, tmp_path / "b", "module=adam",
                                    "module.optimizer.lr=0.0", "budget.epochs=2")
    trained = evaluate_source(source, shared_sandbox, tmp_path / "c", "module=adam")
    assert frozen.status.value == frozen_longer.status.value == trained.status.value == "ok"
    assert frozen.val_loss == pytest.approx(frozen_longer.val_loss, rel=1e-9)
    assert trained.val_loss < frozen.val_loss - 0.1


# ------------------------------------------------------------------- prompt selection
@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from llmatic.nb201.table import write_synthetic_table

    path = tmp_path_factory.mktemp("nb201") / "nb201_synthetic.csv"
    write_synthetic_table(path, seed=0)
    return path


def _selection_run(table, run_dir, strategy):
    cfg = compose_config("experiment=paper_nb201", f"nb201.table={table}",
                         "nb201.baselines=[]", "budget.generations=4",
                         "budget.candidates_per_generation=20",
                         f"prompt_selection.strategy={strategy}", "prompt_selection.k=3",
                         "prompt_selection.explore=0.0",
                         # each generation drawn from the archive after the one before (the
                         # checkpoint the test compares with), no redraw with another instruction
                         "schedule=generational", "redraw_repeats=0")
    run_search(cfg, run_dir, show_progress=False)
    return cfg, read_history(run_dir)


def _picks_against_the_archive(run_dir, history, k):
    """Each evolved mutation's (instruction, temperature cell), and whether that cell was
    among the k most curious of the prompt archive it was drawn from (the checkpoint of the
    generation before)."""
    picks = []
    for rec in history:
        if rec["operator"] != "mutation" or rec["warmup"]:
            continue
        with open(run_dir / "checkpoints" / f"gen_{rec['generation'] - 1:04d}.pkl", "rb") as fh:
            archive = pickle.load(fh).prompt_archive
        data = archive.archive.data()
        cells = {(int(round(s[0])), archive.snap(float(s[1]))): float(o)
                 for s, o in zip(data["solution"], data["objective"], strict=True)}
        kth = sorted(cells.values(), reverse=True)[min(k, len(cells)) - 1]
        cell = (rec["instruction_id"], archive.snap(rec["temperature"]))
        assert cell in cells, (rec["candidate_id"], cell)  # explore=0: a filled cell
        picks.append(cells[cell] >= kth)
    return picks


@pytest.mark.slow  # two NAS-Bench-201 searches
@pytest.mark.parametrize("strategy", ["top_k", "uniform"])
def test_prompt_selection_strategies(table, tmp_path, strategy):
    cfg, history = _selection_run(table, tmp_path, strategy)
    picks = _picks_against_the_archive(tmp_path, history, k=3)
    assert len(picks) >= 20
    if strategy == "top_k":
        assert all(picks)  # only the three most curious cells
    else:
        assert not all(picks)  # any filled cell, curious or not


# ------------------------------------------------------------------- allowed imports
USES_MATH = """import math

import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)) / math.sqrt(2.0)
"""
NO_MATH = "sandbox.allowed_imports=[torch,torch.nn,torch.nn.functional]"


@pytest.mark.slow  # two sandboxed candidates
def test_allowed_imports_are_enforced_before_and_inside_the_sandbox(tmp_path, shared_sandbox):
    # Statically, by the search's own space (nothing runs): math is in the default list.
    for overrides, refused in (((), False), ((NO_MATH,), True)):
        cfg = compose_config(*FAST, *overrides)
        search = build_search(cfg, tmp_path / f"s{len(overrides)}", sandbox=shared_sandbox)
        try:
            verdict = search.space.check_policy(USES_MATH)
        finally:
            search.close()
        assert (verdict is not None) == refused
        if refused:
            assert verdict.status.value == "forbidden" and "math" in verdict.error
    # In the child, where the static policy is off: the import itself is refused there.
    allowed = evaluate_source(USES_MATH, shared_sandbox, tmp_path / "a")
    assert allowed.status.value == "ok", allowed
    refused = evaluate_source(USES_MATH, shared_sandbox, tmp_path / "b", NO_MATH,
                              "sandbox.static_policy=false")
    assert refused.status.value != "ok" and "math" in (refused.error or ""), refused
