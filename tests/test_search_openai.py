"""Searches driven by an OpenAI-compatible server (a small server on 127.0.0.1).

The server answers with realistic, messy model output (fences, prose, helper classes,
truncated code); a second one fails 30% of requests and answers slowly.
"""

from __future__ import annotations

from conftest import SMOKE, compose_config
from openai_server import FakeOpenAIServer, RandomFaults, cycling_responder, messy_network_answers

from llmatic.config import run_search
from llmatic.extract import extract_network
from llmatic.rundir import read_history


def _overrides(server, *extra):
    return (*SMOKE, "llm=openai", f"llm.base_url={server.base_url}", "llm.model=fake-model",
            "llm.cache=false", "llm.backoff_base_s=0.01", "llm.backoff_max_s=0.5",
            "budget.generations=2", *extra)


def test_every_usable_messy_completion_becomes_an_ok_candidate(tmp_path, shared_sandbox):
    answers = messy_network_answers()
    with FakeOpenAIServer(responder=cycling_responder(answers)) as server:
        summary = run_search(compose_config(*_overrides(server)), tmp_path,
                             show_progress=False, sandbox=shared_sandbox)
        calls = server.counts
    history = read_history(tmp_path)[1:]
    assert len(history) == 12
    usable = {extract_network(a).source for a in messy_network_answers(usable=True)}
    for rec in history:
        source = (tmp_path / rec["source_file"]).read_text()
        if source in usable:
            assert rec["status"] == "ok", (rec["status"], rec["error"])
        else:  # an unusable answer: the raw completion is kept for inspection
            assert rec["status"] in ("syntax_error", "no_network"), rec["status"]
            assert source in messy_network_answers(usable=False)
    assert sum(r["status"] == "ok" for r in history) >= 8
    assert summary["llm"]["requests"] == 12 and summary["llm"].get("failures", 0) == 0
    assert summary["llm"]["completion_tokens"] > 0
    assert sum(calls.values()) >= 1


def test_a_flaky_slow_server_does_not_stop_the_search(tmp_path, shared_sandbox):
    faults = RandomFaults(0.3, seed=1)
    with FakeOpenAIServer(faults=faults, delay_s=0.2) as server:
        summary = run_search(
            compose_config(*_overrides(server, "llm.max_retries=1", "llm.timeout_s=5")),
            tmp_path, show_progress=False, sandbox=shared_sandbox)
    history = read_history(tmp_path)[1:]
    assert len(history) == 12
    failed = [r for r in history if r["status"] == "llm_error"]
    assert summary["llm"].get("failures", 0) == len(failed)
    assert summary["status_counts"].get("llm_error", 0) == len(failed)
    assert all(r["llm"]["attempts"] >= 1 for r in history)
    assert any(r["llm"]["attempts"] > 1 for r in history)  # faults were retried
    assert summary["llm"]["attempts"] > summary["llm"]["requests"] - summary["llm"].get(
        "cache_hits", 0)


def test_unreachable_endpoint_fails_fast_before_any_candidate(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "llmatic", "llm=openai", f"llm.base_url=http://127.0.0.1:{port}/v1",
         "llm.model=x", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "llm.base_url" in proc.stderr
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "run" / "history.jsonl").exists()
