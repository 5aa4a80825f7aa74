"""End-to-end plausibility: the numbers a run reports are the numbers its networks earned.

A network that cannot learn scores at chance through the whole path (sandbox -> logits ->
scoring -> history -> archive -> summary); the shared smoke search's fitness values lie
strictly between chance and 1.0; the metrics and figure data the README rests on are
recomputed here from ``history.jsonl`` and compared with what the run wrote.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
from collections import Counter

import numpy as np
import pytest
from conftest import SMOKE, compose_config, val_label_shares, val_labels

from llmatic.rundir import read_history

#: Its output is zero for every image: one class (the first) is predicted for all of them,
#: and its cross-entropy is exactly log(10) whatever it trained.
CONSTANT = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)) * 0.0
"""


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return {int(r["generation"]): r for r in csv.DictReader(fh)}


def _num(text):
    return None if text in ("", None) else float(text)


# ----------------------------------------------------------------------- the smoke search
def test_smoke_search_fitness_lies_between_chance_and_one(smoke_run):
    run_dir, summary, cfg = smoke_run
    shares = val_label_shares(*SMOKE)
    size = len(val_labels(*SMOKE))  # 288 images
    history = read_history(run_dir)
    ok = [r for r in history if r["status"] == "ok"]
    assert len(ok) >= len(history) - 2
    fitness = np.array([r["fitness"] for r in ok])
    # Accuracy on the validation split: a whole number of its images, never all of them here.
    assert all(abs(f * size - round(f * size)) < 1e-9 for f in fitness), fitness
    assert fitness.max() < 1.0 and fitness.min() > 0.0
    # Well above chance at the top, spread out below it: not one number for every network.
    assert fitness.max() > 0.8 > shares.max() and len(set(fitness)) >= len(fitness) // 2
    assert float(np.median(fitness)) > shares.max()
    for r in ok:
        assert r["fitness"] == r["val_accuracy"]  # fitness=accuracy
        assert 0.0 < r["val_loss"] < 10 and math.isfinite(r["val_loss"])
    assert summary["network_archive"]["best_fitness"] == fitness.max()


def test_metrics_and_summary_recomputed_from_the_history(smoke_run):
    """instruction_entropy, distinct_temperatures, duplicates, at-chance and the llm_*
    counters of metrics.csv (per generation) and summary.json (the run), from the history."""
    run_dir, summary, cfg = smoke_run
    history = read_history(run_dir)
    rows = _rows(run_dir)
    k = len(cfg.operators.mutation_instructions)
    chance = 1.25 / int(cfg.dataset.num_classes)

    def entropy(mutations):
        counts = np.array(list(Counter(r["instruction_id"] for r in mutations).values()))
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum() / np.log(k))

    assert sorted(rows) == list(range(1, cfg.budget.generations + 1))
    for g, row in rows.items():
        recs = [r for r in history if r["generation"] == g]
        ok = [r for r in recs if r["status"] == "ok"]
        muts = [r for r in recs if r["operator"] == "mutation"]
        assert int(row["candidates"]) == len(recs)
        assert _num(row["valid_fraction"]) == pytest.approx(len(ok) / len(recs))
        assert int(row["added"]) == sum(r["added"] for r in recs)
        assert _num(row["instruction_entropy"]) == pytest.approx(entropy(muts))
        assert int(row["distinct_temperatures"]) == len({r["temperature"] for r in muts})
        assert int(row["duplicates"]) == sum(r["duplicate_of"] is not None for r in recs)
        assert _num(row["at_chance"]) == pytest.approx(
            sum(r["val_accuracy"] < chance for r in ok) / len(ok))
        assert int(row["llm_requests"]) == len(recs)
        assert int(row["llm_failures"]) == sum(r["status"] == "llm_error" for r in recs)
        assert int(row["llm_completion_tokens"]) == sum(
            r["llm"]["completion_tokens"] for r in recs if not r["llm"]["cached"])
        assert _num(row["generation_best_fitness"]) == max(r["fitness"] for r in ok)
        best_so_far = max(r["fitness"] for r in history if r["status"] == "ok"
                          and r["generation"] <= g)
        assert _num(row["best_fitness"]) == best_so_far
        assert _num(row["mean_fitness"]) == pytest.approx(np.mean([r["fitness"] for r in ok]))
        assert _num(row["temperature_min"]) == min(r["temperature"] for r in recs)
        for status, n in Counter(r["status"] for r in recs).items():
            assert int(row[f"status_{status}"]) == n
    # The run: mutations after the warm-up.
    muts = [r for r in history if r["operator"] == "mutation" and not r["warmup"]]
    children = history[1:]
    ok = [r for r in history if r["status"] == "ok"]
    s = summary["search"]
    assert s["instruction_entropy"] == pytest.approx(entropy(muts))
    assert s["distinct_temperatures"] == len({r["temperature"] for r in muts})
    assert s["instructions_used"] == len({r["instruction_id"] for r in muts})
    dups = sum(r["duplicate_of"] is not None for r in children)
    assert s["duplicate_fraction"] == pytest.approx(dups / len(children))
    assert s["at_chance_fraction"] == pytest.approx(
        sum(r["val_accuracy"] < chance for r in ok) / len(ok))
    assert summary["status_counts"] == dict(Counter(r["status"] for r in history))
    assert summary["llm"]["requests"] == len(children)
    assert summary["llm"].get("failures", 0) == sum(r["status"] == "llm_error"
                                                    for r in children)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["search"] == pytest.approx(s) and on_disk["llm"] == summary["llm"]


def test_summary_records_the_isolation_every_candidate_got(smoke_run, shared_sandbox, tmp_path):
    from conftest import evaluate_source

    run_dir, summary, _ = smoke_run
    if shared_sandbox.isolation_report is None:  # the run was made by the other test process:
        evaluate_source(CONSTANT, shared_sandbox, tmp_path)  # this one's server says hello now
    report = json.loads((run_dir / "summary.json").read_text())["isolation"]
    assert report == summary["isolation"] == json.loads(json.dumps(
        shared_sandbox.isolation_report))
    assert report["mode"] == "auto"
    layers = {"namespaces", "private_proc", "landlock", "seccomp"}
    # Every kernel layer is either active or named as missing, with the reason.
    assert layers <= set(report["active"]) | set(report["missing"])
    assert not set(report["active"]) & set(report["missing"])
    assert all(isinstance(why, str) and why for why in report["missing"].values())


def test_figure_data_match_the_history_they_were_drawn_from(smoke_run, tmp_path):
    from llmatic.report.figures import load_runs, make_figures

    run_dir, _, cfg = smoke_run
    history = read_history(run_dir)
    make_figures(load_runs([run_dir]), tmp_path, heatmaps="none")
    data = json.loads((tmp_path / "figures_data.json").read_text())
    assert list(data) == ["llmatic"]
    series = {metric: d["per_seed"]["0"] for metric, d in data["llmatic"].items()}
    generations = cfg.budget.generations
    best_acc, best_loss, valid, cells = [], [], [], []
    for g in range(generations + 1):
        upto = [r for r in history if r["generation"] <= g and r["status"] == "ok"]
        mine = [r for r in history if r["generation"] == g]
        best_acc.append(max(r["val_accuracy"] for r in upto))
        best_loss.append(min(r["val_loss"] for r in upto))
        valid.append(sum(r["status"] == "ok" for r in mine) / len(mine))
        with open(run_dir / "checkpoints" / f"gen_{g:04d}.pkl", "rb") as fh:
            state = pickle.load(fh)
        cells.append((len(state.network_archive), len(state.prompt_archive)))
    assert series["best_val_accuracy"] == pytest.approx(best_acc)
    assert series["best_val_loss"] == pytest.approx(best_loss)
    assert series["valid_fraction"] == pytest.approx(valid)
    assert series["network_cells"] == [float(n) for n, _ in cells]
    assert series["prompt_cells"] == [float(p) for _, p in cells]


# ------------------------------------------------------------ a network that cannot learn
def test_a_constant_network_scores_at_chance_in_the_sandbox(tmp_path, shared_sandbox):
    from conftest import evaluate_source

    result = evaluate_source(CONSTANT, shared_sandbox, tmp_path)
    assert result.status.value == "ok", result
    assert result.val_accuracy == pytest.approx(val_label_shares(*SMOKE)[0], abs=1e-12)
    assert result.val_loss == pytest.approx(math.log(10), abs=1e-6)


@pytest.mark.slow  # its own (one-generation) search
def test_a_constant_seed_scores_at_chance_through_the_whole_search(tmp_path, shared_sandbox):
    """The seed of this search cannot learn: history, archive, metrics and summary all say
    chance, with the exact share of the class it predicts."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from rich.console import Console

    from llmatic.config import validate_config
    from llmatic.config.build import build_search
    from llmatic.search import run

    cfg = compose_config(*SMOKE, "budget.generations=1", "budget.candidates_per_generation=2")
    validate_config(cfg)
    search = build_search(cfg, tmp_path, sandbox=shared_sandbox)
    search.space.seed_source = CONSTANT
    summary = run(search, None, logger=instantiate(cfg.logger),
                  run_config=OmegaConf.to_container(cfg, resolve=True),
                  console=Console(stderr=True), show_progress=False)
    share = val_label_shares(*SMOKE)[0]
    history = read_history(tmp_path)
    seed = history[0]
    assert (tmp_path / seed["source_file"]).read_text() == CONSTANT
    assert seed["status"] == "ok" and seed["added"]
    assert seed["val_accuracy"] == seed["fitness"] == pytest.approx(share, abs=1e-12)
    assert seed["val_loss"] == pytest.approx(math.log(10), abs=1e-6)
    with open(tmp_path / "checkpoints" / "gen_0000.pkl", "rb") as fh:
        elites = pickle.load(fh).network_archive.elites()
    assert [int(c) for c in elites["candidate_id"]] == [0]
    assert float(elites["objective"][0]) == pytest.approx(share, abs=1e-12)
    [elite] = [e for e in summary["elites"] if e["candidate_id"] == 0] or [None]
    assert elite is not None and elite["fitness"] == pytest.approx(share, abs=1e-12)
    ok = [r for r in history if r["status"] == "ok"]
    at_chance = [r for r in ok if r["val_accuracy"] < 1.25 / 10]
    assert seed in at_chance
    assert summary["search"]["at_chance_fraction"] == pytest.approx(len(at_chance) / len(ok))
    row = _rows(tmp_path)[1]
    children = [r for r in ok if r["generation"] == 1]
    if children:
        assert _num(row["at_chance"]) == pytest.approx(
            sum(r in at_chance for r in children) / len(children))
