"""A search driven by a real transformers model: a tiny random GPT-2 built in the test.

Random weights mean nearly every completion is unusable; the search must still complete
and record failure statuses, through the same from_pretrained path a real model uses.
"""

from __future__ import annotations

import csv

from conftest import SMOKE, compose_config

from llmatic.config import run_search
from llmatic.rundir import read_history


def test_hf_search_on_a_random_tiny_model_completes(tiny_gpt2_dir, tmp_path, shared_sandbox):
    cfg = compose_config(*SMOKE, "llm=hf", f"llm.model={tiny_gpt2_dir}",
                         "llm.max_new_tokens=48", "llm.batch_size=3", "budget.generations=2")
    summary = run_search(cfg, tmp_path, show_progress=False,
                sandbox=shared_sandbox)
    history = read_history(tmp_path)
    assert len(history) == 1 + 2 * cfg.budget.candidates_per_generation
    generated = history[1:]
    assert all(r["status"] != "llm_error" for r in generated)
    failures = [r for r in generated if r["status"] != "ok"]
    assert len(failures) >= len(generated) - 1  # gibberish rarely defines a network
    assert all(r["error"] for r in failures)
    assert summary["generator"] == f"hf:{tiny_gpt2_dir}" and summary["generator_is_llm"]
    assert summary["llm"]["completion_tokens"] > 0
    assert all(0 < r["llm"]["completion_tokens"] <= 48 for r in generated)
    # The archive holds exactly the ok candidates that were added: the seed (gibberish
    # rarely adds a network), with the fitness its history record has.
    ok = {r["candidate_id"]: r for r in history if r["status"] == "ok"}
    elites = {e["candidate_id"]: e for e in summary["elites"]}
    assert 0 in elites and elites[0]["fitness"] == history[0]["fitness"]
    assert set(elites) <= set(ok)
    assert summary["network_archive"]["cells_filled"] == len(elites) <= 1 + sum(
        r["added"] for r in generated)
    assert summary["network_archive"]["best_fitness"] == max(r["fitness"] for r in ok.values())
    # The LLM counters recomputed from the history: summary.json and metrics.csv agree.
    fresh = [r for r in generated if not r["llm"]["cached"]]
    llm = summary["llm"]
    assert llm["requests"] == len(generated)
    assert llm["completion_tokens"] == sum(r["llm"]["completion_tokens"] for r in fresh)
    assert llm["prompt_tokens"] == sum(r["llm"]["prompt_tokens"] for r in fresh) > 0
    assert llm.get("cache_hits", 0) == len(generated) - len(fresh)
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["generation"]) for r in rows] == [1, 2]
    for row in rows:
        mine = [r for r in generated if r["generation"] == int(row["generation"])]
        assert int(row["llm_requests"]) == len(mine)
        assert int(row["llm_completion_tokens"]) == sum(
            r["llm"]["completion_tokens"] for r in mine if not r["llm"]["cached"])
        assert int(row["llm_failures"]) == sum(r["status"] == "llm_error" for r in mine)
