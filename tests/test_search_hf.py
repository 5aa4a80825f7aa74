"""A search driven by a real transformers model: a tiny random GPT-2 built in the test.

Random weights mean nearly every completion is unusable; the search must still complete
and record failure statuses, through the same from_pretrained path a real model uses.
"""

from __future__ import annotations

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
    # the seed network is still the elite; the run wrote its summary
    assert summary["network_archive"]["cells_filled"] >= 1
    assert (tmp_path / "summary.json").exists()
