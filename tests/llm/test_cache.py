"""The completion cache: keys, hits, concurrent writers, and a rerun with zero model calls."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from llmatic.llm.base import CodeGenerator
from llmatic.llm.cache import CachedGenerator, CompletionCache, request_key
from llmatic.types import Completion, GenerationRequest


class CountingGenerator(CodeGenerator):
    """A stand-in model that numbers its answers (no model can run this fast here)."""

    name = "counting"

    def __init__(self, fail_every: int = 0) -> None:
        self.calls = 0
        self.fail_every = fail_every

    def generate(self, requests):
        out = []
        for req in requests:
            self.calls += 1
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(Completion(text="", error="boom"))
            else:
                out.append(Completion(text=f"answer {self.calls} to {req.prompt}",
                                      completion_tokens=3))
        return out


def req(prompt="p", temperature=0.5, seed=1):
    return GenerationRequest(prompt=prompt, temperature=temperature, instruction="i",
                             parents=("x",), seed=seed)


def test_key_covers_what_determines_a_completion():
    ident = {"model": "m", "top_p": 1.0}
    base = request_key(ident, req(), 0)
    assert base == request_key(dict(ident), req(), 0)
    assert base != request_key(ident, req(prompt="q"), 0)
    assert base != request_key(ident, req(temperature=0.55), 0)
    assert base != request_key(ident, req(seed=2), 0)
    assert base != request_key(ident, req(), 1)
    assert base != request_key({"model": "m", "top_p": 0.9}, req(), 0)


def test_second_call_is_served_from_the_cache(tmp_path):
    inner = CountingGenerator()
    gen = CachedGenerator(inner, CompletionCache(tmp_path / "c.sqlite"), {"model": "m"})
    first = gen.generate([req("a"), req("b"), req("a")])  # identical requests: samples 0, 1
    assert inner.calls == 3 and first[0].text != first[2].text
    second = gen.generate([req("a"), req("b"), req("a")])
    assert inner.calls == 3
    assert [c.text for c in second] == [c.text for c in first]
    assert all(c.cached for c in second)
    # a fresh object on the same file (a rerun) also hits
    again = CachedGenerator(CountingGenerator(), CompletionCache(tmp_path / "c.sqlite"),
                            {"model": "m"})
    assert [c.text for c in again.generate([req("b")])] == [first[1].text]
    assert again.inner.calls == 0


def test_errors_are_not_cached(tmp_path):
    inner = CountingGenerator(fail_every=2)
    gen = CachedGenerator(inner, CompletionCache(tmp_path / "c.sqlite"), {"model": "m"})
    out = gen.generate([req("a"), req("b")])
    assert out[1].error == "boom"
    gen.generate([req("a"), req("b")])
    assert inner.calls == 3  # only the failed one was asked again


def _writer(path, worker, n):
    cache = CompletionCache(path)
    for i in range(n):
        cache.put_many([(f"{worker}-{i}", Completion(text=f"t{worker}-{i}"))])


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "c.sqlite"
    CompletionCache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(CompletionCache(path)) == 200


@pytest.mark.slow  # two searches
def test_rerun_of_an_hf_search_makes_zero_model_calls(tiny_gpt2_dir, tmp_path, shared_sandbox):
    from conftest import SMOKE, compose_config

    from llmatic.config import run_search
    from llmatic.rundir import read_history

    overrides = (*SMOKE, "llm=hf", f"llm.model={tiny_gpt2_dir}", "llm.max_new_tokens=32",
                 f"llm.cache_path={tmp_path / 'cache.sqlite'}", "budget.generations=2")
    first = run_search(compose_config(*overrides), tmp_path / "a", show_progress=False,
                sandbox=shared_sandbox)
    second = run_search(compose_config(*overrides), tmp_path / "b", show_progress=False,
                sandbox=shared_sandbox)
    n = 2 * 6
    assert first["llm"]["requests"] == n and first["llm"].get("cache_hits", 0) == 0
    assert second["llm"]["cache_hits"] == n  # every completion came from the cache
    assert second["llm"].get("completion_tokens", 0) == 0

    def strip(records):
        return [{k: v for k, v in r.items() if k not in ("timings", "llm")} for r in records]

    assert strip(read_history(tmp_path / "a")) == strip(read_history(tmp_path / "b"))
