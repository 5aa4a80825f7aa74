"""End-to-end searches on digits with the real configs, sandbox and archives."""

from __future__ import annotations

import json
import pickle

import pytest
from conftest import SMOKE, compose_config

from llmatic.config import run_search
from llmatic.errors import ConfigError
from llmatic.rundir import HISTORY, read_history

REQUIRED = {"generation", "operator", "instruction", "temperature", "parents", "status",
            "fitness", "val_accuracy", "params", "flops", "width_to_depth", "added", "timings"}


def test_search_fills_both_archives_and_writes_the_run_directory(smoke_run):
    run_dir, summary, cfg = smoke_run
    history = read_history(run_dir)
    per_gen = cfg.budget.candidates_per_generation
    assert len(history) == 1 + 3 * per_gen  # the seed network, then 3 generations
    assert all(REQUIRED <= set(rec) for rec in history)
    assert history[0]["operator"] == "seed" and history[0]["status"] == "ok"
    assert summary["candidates"] == len(history)
    assert sum(summary["status_counts"].values()) == len(history)
    net = summary["network_archive"]
    assert net["cells_filled"] >= 3
    # every filled cell was filled by an added candidate (later ones may replace earlier)
    assert 0 < net["cells_filled"] <= sum(r["added"] for r in history)
    assert all(r["status"] == "ok" for r in history if r["added"])
    assert summary["prompt_archive"]["cells_filled"] >= 3
    assert net["best_fitness"] == max(r["fitness"] for r in history if r["status"] == "ok")
    assert summary["generator_is_llm"] is False and "not an LLM" in summary["generator"]
    # every candidate's source is on disk, one checkpoint per generation, a summary file
    for rec in history:
        assert (run_dir / rec["source_file"]).exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("gen_*.pkl")) == [
        f"gen_{g:04d}.pkl" for g in range(4)]
    assert json.loads((run_dir / "summary.json").read_text())["candidates"] == len(history)
    assert (run_dir / "metrics.csv").read_text().count("\n") == 1 + 3


def test_curiosity_accumulates_and_spreads_to_the_adapted_temperature(smoke_run):
    """Replaying the history (paper increments; the adapted temperature's cell inherits the
    curiosity it came from) rebuilds the run's prompt archive exactly."""
    from llmatic.qd import PromptArchive

    run_dir, _, cfg = smoke_run
    history = read_history(run_dir)
    with open(run_dir / "checkpoints" / "latest.pkl", "rb") as fh:
        state = pickle.load(fh)
    replay = PromptArchive(num_instructions=len(cfg.operators.mutation_instructions),
                           t_min=cfg.temperature.min, t_max=cfg.temperature.max,
                           t_step=cfg.prompt_archive.temperature_step)
    no_network = {"llm_error", "syntax_error", "no_network", "forbidden"}
    for rec in history:
        if rec["operator"] != "mutation":
            continue
        if rec["status"] == "ok":
            delta = 1.0 if rec["added"] else -0.5
        else:
            delta = cfg.curiosity.no_network if rec["status"] in no_network else -1.0
        replay.credit(rec["instruction_id"], rec["temperature"], delta, rec["added"])
        if replay.snap(rec["next_temperature"]) != replay.snap(rec["temperature"]):
            replay.spread(rec["instruction_id"], rec["temperature"], rec["next_temperature"])

    def cells(archive):
        data = archive.archive.data()
        return {int(i): (float(o), tuple(s)) for i, o, s in
                zip(data["index"], data["objective"], data["solution"], strict=True)}

    assert cells(state.prompt_archive) == cells(replay)
    # One instruction per row: a cell's index is (instruction, temperature bin).
    archive = state.prompt_archive
    for index, (_, (iid, t)) in cells(archive).items():
        assert index == int(iid) * archive.bins + int(round((t - archive.t_min) / archive.t_step))


def test_adaptive_temperature_moves_by_step_after_each_child(smoke_run):
    run_dir, _, cfg = smoke_run
    step = cfg.temperature.step
    for rec in read_history(run_dir):
        if rec["operator"] == "seed":
            continue
        expected = rec["temperature"] + (step if rec["improved"] else -step)
        expected = min(cfg.temperature.max, max(cfg.temperature.min, expected))
        assert rec["next_temperature"] == pytest.approx(expected)


def test_warmup_then_both_operators(smoke_run):
    run_dir, _, _ = smoke_run
    history = read_history(run_dir)
    assert history[1]["warmup"] is True
    assert any(not r["warmup"] for r in history[1:])
    warm = [r for r in history[1:] if r["warmup"]]
    after = [r for r in history[1:] if not r["warmup"]]
    # The warm-up ends at a generation boundary and makes only mutations of one parent.
    assert {r["generation"] for r in warm}.isdisjoint({r["generation"] for r in after})
    assert all(r["operator"] == "mutation" and len(r["parents"]) == 1 for r in warm)
    ops = {r["operator"] for r in after}
    assert ops == {"mutation", "crossover"}  # p_mutation=0.7: both, in this seeded run
    for rec in after:
        assert len(rec["parents"]) == (2 if rec["operator"] == "crossover" else 1)
        assert all(p < rec["candidate_id"] for p in rec["parents"])


def test_crossover_parents_are_nearest_neighbours(tmp_path, shared_sandbox):
    cfg = compose_config(*SMOKE, "operators.p_mutation=0.0", "budget.warmup_networks=1",
                         "budget.warmup_prompts=1", "budget.generations=2")
    run_search(cfg, tmp_path, show_progress=False,
                sandbox=shared_sandbox)
    history = read_history(tmp_path)
    crossovers = [r for r in history if r["operator"] == "crossover"]
    assert crossovers, "p_mutation=0 after warm-up must give crossovers"
    assert all(len(r["parents"]) == 2 and r["parents"][0] != r["parents"][1] for r in crossovers)
    # The second parent is the elite nearest to the first in the archive they were drawn
    # from (the checkpoint of the generation before).
    for rec in crossovers:
        with open(tmp_path / "checkpoints" / f"gen_{rec['generation'] - 1:04d}.pkl", "rb") as fh:
            elites = pickle.load(fh).network_archive.elites()
        ids = [int(c) for c in elites["candidate_id"]]
        first = elites["measures"][ids.index(rec["parents"][0])]
        dist = {c: float(((m - first) ** 2).sum()) for c, m in zip(ids, elites["measures"],
                                                                   strict=True)
                if c != rec["parents"][0]}
        assert dist[rec["parents"][1]] == pytest.approx(min(dist.values()))
    assert all(r["instruction"].startswith("Combine the above two") for r in crossovers)


@pytest.mark.slow  # two searches
def test_resume_continues_identically(tmp_path, shared_sandbox):
    full = tmp_path / "full"
    part = tmp_path / "part"
    run_search(compose_config(*SMOKE, "budget.generations=2"), full, show_progress=False,
                sandbox=shared_sandbox)
    run_search(compose_config(*SMOKE, "budget.generations=1"), part, show_progress=False,
                sandbox=shared_sandbox)
    # A half-written second generation, as after a kill: resume must discard it.
    with open(part / HISTORY, "a") as fh:
        fh.write(json.dumps({"generation": 2, "partial": True}) + "\n")
    cfg = compose_config(*SMOKE, "budget.generations=2")
    run_search(cfg, part, resume=True, show_progress=False,
                sandbox=shared_sandbox)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "timings"} for r in records]

    assert strip(read_history(part)) == strip(read_history(full))


def test_refuses_to_overwrite_an_existing_run(smoke_run, shared_sandbox):
    run_dir, _, cfg = smoke_run
    with pytest.raises(ConfigError, match="resume="):
        run_search(cfg, run_dir, show_progress=False,
                sandbox=shared_sandbox)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from llmatic import rundir
    from llmatic.errors import RunDirectoryError
    from llmatic.rundir import read_checkpoint, save_checkpoint

    state_path = tmp_path / "checkpoints" / "latest.pkl"
    from types import SimpleNamespace

    state = SimpleNamespace(generation=1)  # any picklable object stands in for the state
    save_checkpoint(tmp_path, state)
    before = state_path.read_bytes()

    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".tmp"):
            fh = real_open(path, mode, *args, **kwargs)
            fh.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left"))
            return fh
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rundir, "open", full_disk_open, raising=False)
    state.generation = 2
    with pytest.raises(RunDirectoryError, match="previous checkpoint .* is intact"):
        save_checkpoint(tmp_path, state)
    assert state_path.read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert read_checkpoint(tmp_path).generation == 1


@pytest.mark.slow  # its own search (shared with test_ablations.py)
def test_one_network_one_fitness(random_generation_run, tmp_path, shared_sandbox):
    """The training seed follows the normalised source, and a repeat is not trained again."""
    import csv

    from llmatic.config import build_search
    from llmatic.search import source_key

    run_dir, summary, cfg = random_generation_run
    search = build_search(cfg, tmp_path, sandbox=shared_sandbox)
    try:
        src = search.space.seed_source
        same = '"""The seed, reformatted."""\n' + src.replace("\n\n", "\n\n\n") + "\n# end\n"
        seeds = [search.space.job(s, "Net")["seed"] for s in (src, same)]
        other = search.space.job(src.replace("relu", "tanh", 1), "Net")["seed"]
    finally:
        search.close()
    assert seeds[0] == seeds[1] != other  # before: the seed followed the candidate id
    history = read_history(run_dir)
    by_id = {r["candidate_id"]: r for r in history}
    key = {r["candidate_id"]: source_key((run_dir / r["source_file"]).read_text())
           for r in history}
    dups = [r for r in history if r.get("duplicate_of") is not None]
    assert dups, "this seeded run repeats a network (candidate 10 repeats 9)"
    for rec in dups:
        first = by_id[rec["duplicate_of"]]
        assert first["candidate_id"] < rec["candidate_id"]
        assert first.get("duplicate_of") is None
        assert key[rec["candidate_id"]] == key[first["candidate_id"]]
        assert (rec["status"], rec["fitness"], rec["val_loss"], rec["params"]) == (
            first["status"], first["fitness"], first["val_loss"], first["params"])
        assert not rec["added"]
    # Every repeat of a network is marked, and every network has one fitness.
    fitness_of = {}
    for rec in history:
        k = key[rec["candidate_id"]]
        if k in fitness_of:
            assert rec["duplicate_of"] is not None, rec["candidate_id"]
        fitness_of.setdefault(k, rec["fitness"])
        assert rec["fitness"] == fitness_of[k]
    # The duplicate counts of metrics.csv and summary.json, recomputed from the history.
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        g = int(row["generation"])
        assert int(row["duplicates"]) == sum(r["generation"] == g for r in dups)
    children = len(history) - 1
    assert summary["search"]["duplicate_fraction"] == pytest.approx(len(dups) / children)
    assert summary["search"]["distinct_evaluations"] == len(history) - len(dups)


def test_the_compute_cap_holds_whatever_the_child_reported():
    # A network above dataset.max_flops that timed out (or crashed) is too large on every
    # machine: the search decides from the measured FLOPs, not from the wall clock.
    from llmatic.search import capped
    from llmatic.types import EvalResult, Status

    slow = EvalResult(Status.TIMEOUT, flops=5_000, params=10, error="killed")
    assert capped(slow, 1_000).status is Status.TOO_LARGE
    assert "dataset.max_flops" in capped(slow, 1_000).error
    fit = EvalResult(Status.OK, fitness=0.9, val_accuracy=0.9, flops=900)
    assert capped(fit, 1_000) is fit
    assert capped(slow, None) is slow
