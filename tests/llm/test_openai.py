"""OpenAIGenerator with the real ``openai`` client against a local fake server.

All traffic goes to 127.0.0.1 (``tests/openai_server.py``); every request loop is bounded by
``max_retries`` and small timeouts, and backoffs are kept short so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest
import torch
from openai_server import (
    DEFAULT_NETWORK,
    FakeOpenAIServer,
    RandomFaults,
    cycling_responder,
    messy_network_answers,
)

from llmatic.extract import extract_network
from llmatic.llm.base import CodeGenerator
from llmatic.llm.openai_backend import MAX_STOP, OpenAIGenerator
from llmatic.types import GenerationRequest

MODEL = "fake-model"


def req(
    prompt: str = "p",
    temperature: float = 0.5,
    seed: int = 0,
    messages: tuple[dict[str, str], ...] | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        temperature=temperature,
        instruction="",
        parents=(),
        seed=seed,
        messages=messages,
    )


_OPEN: list[OpenAIGenerator] = []


def make(server: FakeOpenAIServer, **kw) -> OpenAIGenerator:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 2.0)  # also caps Retry-After: above the 1 s tested
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("max_retries", 3)
    # The start-up probe has its own tests; skipping it elsewhere saves a client per test.
    kw.setdefault("check_endpoint", False)
    gen = OpenAIGenerator(model=MODEL, base_url=server.base_url, **kw)
    _OPEN.append(gen)
    return gen


@pytest.fixture(autouse=True)
def close_generators():
    """Every generator a test made is closed after it (its loop thread stopped)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def echo(body: dict) -> str:
    """Answer with the prompt (completion mode) or the last message's content (chat)."""
    if "messages" in body:
        return body["messages"][-1]["content"]
    return body["prompt"]


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- basics
def test_chat_endpoint_sends_messages_and_returns_text(server):
    gen = make(server, check_endpoint=True)
    assert [r["path"] for r in server.requests] == ["/v1/models"]
    assert isinstance(gen, CodeGenerator) and gen.is_llm
    assert gen.name == f"openai:{MODEL}@{server.base_url}"
    messages = (
        {"role": "system", "content": "You write PyTorch."},
        {"role": "user", "content": "Go"},
    )
    [c] = gen.generate([req(prompt="ignored in chat", messages=messages)])
    assert c.ok and c.text == DEFAULT_NETWORK
    assert c.attempts == 1 and c.seconds > 0
    assert c.prompt_tokens > 0 and c.completion_tokens > 0  # from the server's usage
    [post] = server.completion_requests
    assert post["path"] == "/v1/chat/completions"
    assert post["body"]["messages"] == [dict(m) for m in messages]
    assert post["body"]["model"] == MODEL
    assert post["headers"]["authorization"] == "Bearer EMPTY"  # the dummy key
    gen.close()


def test_chat_without_messages_sends_prompt_as_user_message(server):
    [c] = make(server).generate([req(prompt="write a net")])
    assert c.ok
    assert server.completion_requests[0]["body"]["messages"] == [
        {"role": "user", "content": "write a net"}
    ]


def test_completion_endpoint_sends_raw_prompt():
    with FakeOpenAIServer(responder=echo) as server:
        gen = make(server, mode="completion")
        [c] = gen.generate(
            [req(prompt="class Net(nn.Module):", messages=({"role": "user", "content": "x"},))]
        )
        assert c.ok and c.text == "class Net(nn.Module):"
        [post] = server.completion_requests
        assert post["path"] == "/v1/completions"
        assert post["body"]["prompt"] == "class Net(nn.Module):"
        assert "messages" not in post["body"]


def test_api_key_argument_and_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    make(server).generate([req()])
    make(server, api_key="from-arg").generate([req()])
    keys = [r["headers"]["authorization"] for r in server.completion_requests]
    assert keys == ["Bearer from-env", "Bearer from-arg"]


def test_empty_input_makes_no_call(server):
    gen = make(server, check_endpoint=False)
    assert gen.generate([]) == []
    assert server.requests == []


# --------------------------------------------------------------------------- grouping
def test_identical_requests_share_one_call_with_n():
    with FakeOpenAIServer(responder=cycling_responder([f"answer {i}" for i in range(100)])) as s:
        gen = make(s)
        requests = [req("same", 0.7, seed=i) for i in range(5)] + [req("same", 0.2), req("other")]
        out = gen.generate(requests)
        assert all(c.ok for c in out)
        posts = s.completion_requests
        assert len(posts) == 3  # 5 identical -> one call; different temperature; other prompt
        by_n = sorted(p["body"]["n"] for p in posts)
        assert by_n == [1, 1, 5]
        grouped = next(p for p in posts if p["body"]["n"] == 5)
        assert grouped["body"]["temperature"] == 0.7
        # The 5 grouped requests got 5 different choices.
        assert len({c.text for c in out[:5]}) == 5
        # Usage is split over the choices: the shares add up to the call's totals.
        usage_prompt = len("same".split())
        assert sum(c.prompt_tokens for c in out[:5]) == usage_prompt


def test_fewer_choices_than_n_are_requested_one_by_one():
    # Like Ollama / llama.cpp: n is ignored, one choice comes back.
    def one_choice(body):
        return [f"seed {body['seed']}"]

    with FakeOpenAIServer(responder=one_choice) as s:
        out = make(s).generate([req("same", seed=i) for i in range(3)])
        assert [c.ok for c in out] == [True] * 3
        ns = [p["body"]["n"] for p in s.completion_requests]
        assert ns == [3, 1, 1]
        # The refills carry their own seeds, so a deterministic server does not repeat.
        assert [c.text for c in out] == ["seed 0", "seed 1", "seed 2"]
        assert [c.attempts for c in out] == [1, 2, 2]


def test_choices_still_missing_get_an_error():
    def stingy(body):
        return ["only one"] if body["n"] > 1 else []

    with FakeOpenAIServer(responder=stingy) as s:
        out = make(s, max_retries=1).generate([req("same")] * 3)
        assert out[0].ok and out[0].text == "only one"
        for c in out[1:]:
            assert not c.ok and c.text == ""
            assert "empty 'choices'" in c.error and "after 2 attempts" in c.error
        assert len(s.completion_requests) == 1 + 2 * 2  # the group + 2 refills x 2 attempts


def test_server_rejecting_n_gets_one_request_at_a_time():
    def no_n(index, path, body):
        return "400" if body["n"] > 1 else None

    with FakeOpenAIServer(faults=no_n) as s:
        gen = make(s)
        out = gen.generate([req("same", seed=i) for i in range(3)])
        assert all(c.ok for c in out)
        assert [p["body"]["n"] for p in s.completion_requests] == [3, 1, 1, 1]
        assert [c.attempts for c in out] == [2, 2, 2]
        # Remembered: the next identical requests go one by one straight away.
        assert all(c.ok for c in gen.generate([req("same")] * 2))
        assert [p["body"]["n"] for p in s.completion_requests][4:] == [1, 1]


def test_a_bad_request_does_not_turn_grouping_off():
    with FakeOpenAIServer(faults=lambda i, path, body: "400") as s:
        gen = make(s)
        out = gen.generate([req("too long")] * 3)
        assert all(not c.ok and "HTTP 400" in c.error for c in out)
        # The n=3 call, then each once alone (it might have been n); then no more.
        assert [p["body"]["n"] for p in s.completion_requests] == [3, 1, 1, 1]
        gen.generate([req("too long")] * 2)
        assert [p["body"]["n"] for p in s.completion_requests][4] == 2  # still grouping


# ----------------------------------------------------------------------- parameters
def test_parameters_are_forwarded():
    with FakeOpenAIServer(responder=lambda body: "code STOP5 rest") as s:
        stops = ["A1", "B2", "C3", "D4", "STOP5"]
        gen = make(
            s,
            max_new_tokens=123,
            top_p=0.9,
            stop=stops,
            seed=7,
            extra_body={"top_k": 40},
        )
        out = gen.generate([req("a", 0.3, seed=1), req("b", 0.9, seed=2)])
        bodies = {p["body"]["messages"][0]["content"]: p["body"] for p in s.completion_requests}
        assert bodies["a"]["temperature"] == 0.3 and bodies["b"]["temperature"] == 0.9
        for body in bodies.values():
            assert body["max_tokens"] == 123
            assert body["top_p"] == 0.9
            assert body["stop"] == stops[:MAX_STOP]  # the API takes four
            assert body["top_k"] == 40
            assert body["n"] == 1
        # The request seed with the generator's seed mixed in: distinct, deterministic.
        assert bodies["a"]["seed"] != bodies["b"]["seed"]
        gen2 = make(s, seed=7, stop=stops)
        gen2.generate([req("a", 0.3, seed=1)])
        assert s.completion_requests[-1]["body"]["seed"] == bodies["a"]["seed"]
        # The fifth stop string is applied client-side.
        assert [c.text for c in out] == ["code ", "code "]


def test_no_stop_field_without_stop_strings(server):
    make(server).generate([req()])
    assert "stop" not in server.completion_requests[0]["body"]


# ------------------------------------------------------------------ concurrency, order
def test_concurrency_is_bounded_and_overlaps():
    with FakeOpenAIServer(delay_s=0.3) as s:
        gen = make(s, max_concurrency=4)
        t0 = time.perf_counter()
        out = gen.generate([req(f"prompt {i}") for i in range(8)])
        wall = time.perf_counter() - t0
        assert all(c.ok for c in out)
        assert len(s.completion_requests) == 8
        assert s.max_in_flight <= 4
        assert s.max_in_flight >= 2  # they did overlap
        # Two waves of 0.3 s; sequential would take 2.4 s.
        assert 0.55 <= wall < 1.5, wall


def test_result_order_matches_request_order():
    def slow_echo(body):
        # Later prompts answer sooner, so completion order is the reverse of request order.
        i = int(body["messages"][0]["content"].split()[-1])
        time.sleep(0.02 * (6 - i))
        return body["messages"][0]["content"]

    with FakeOpenAIServer(responder=slow_echo) as s:
        out = make(s, max_concurrency=6).generate([req(f"prompt {i}") for i in range(6)])
        assert [c.text for c in out] == [f"prompt {i}" for i in range(6)]


def test_generate_from_a_plain_thread_and_inside_a_running_loop(server):
    gen = make(server)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", gen.generate([req()])))
    thread.start()
    thread.join(timeout=20)
    assert box["out"][0].ok

    async def caller():
        return gen.generate([req("from async code")])

    [c] = asyncio.run(caller())
    assert c.ok


def test_closed_generator_returns_errors(server):
    gen = make(server)
    gen.close()  # before any use: no thread was started
    [c] = gen.generate([req()])
    assert not c.ok and "closed" in c.error
    assert server.completion_requests == []


def test_close_during_generate_returns_errors_without_hanging():
    with FakeOpenAIServer(delay_s=5.0) as s:
        gen = make(s, timeout_s=10.0)
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("out", gen.generate([req()])))
        thread.start()
        deadline = time.monotonic() + 5
        while s.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.perf_counter()
        gen.close()
        thread.join(timeout=10)
        assert not thread.is_alive() and time.perf_counter() - t0 < 3
        [c] = box["out"]
        assert not c.ok and "closed during generation" in c.error


def test_client_and_loop_are_reused_then_closed(server):
    gen = make(server)
    gen.generate([req("one")])
    loop, client = gen._loop, gen._client
    gen.generate([req("two")])
    assert gen._loop is loop and gen._client is client  # one client, kept-alive connections
    assert loop.thread.is_alive()
    gen.close()
    gen.close()  # idempotent
    assert not loop.thread.is_alive()
    [c] = gen.generate([req("three")])
    assert not c.ok and "closed" in c.error
    assert len(server.completion_requests) == 2


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("fault", ["500", "503", "malformed", "empty"])
def test_transient_fault_is_retried(fault):
    with FakeOpenAIServer(faults=[fault], retry_after_s=0.05) as s:
        [c] = make(s).generate([req()])
        assert c.ok and c.text == DEFAULT_NETWORK
        assert c.attempts == 2
        assert [p["fault"] for p in s.completion_requests] == [fault, None]


def test_429_honours_retry_after():
    with FakeOpenAIServer(faults=["429"], retry_after_s=1) as s:
        t0 = time.perf_counter()
        [c] = make(s).generate([req()])
        elapsed = time.perf_counter() - t0
        assert c.ok and c.attempts == 2
        first, second = s.completion_requests
        assert second["time"] - first["time"] >= 0.95  # not the 0.01 s backoff
        assert elapsed < 3


def test_timeout_is_retried():
    with FakeOpenAIServer(faults=["timeout"], fault_delay_s=3.0) as s:
        t0 = time.perf_counter()
        [c] = make(s, timeout_s=0.5).generate([req()])
        assert c.ok and c.attempts == 2
        assert time.perf_counter() - t0 < 2.5  # abandoned at 0.5 s, not after 3 s


def test_persistent_500_gives_an_error_completion():
    with FakeOpenAIServer(faults=lambda i, path, body: "500") as s:
        out = make(s, max_retries=2).generate([req(), req("other")])
        for c in out:
            assert not c.ok and c.text == ""
            assert c.error.startswith("HTTP 500 after 3 attempts")
            assert c.attempts == 3
        assert len(s.completion_requests) == 2 * 3


@pytest.mark.parametrize("fault", ["400", "401", "404"])
def test_client_errors_are_not_retried(fault):
    with FakeOpenAIServer(faults=lambda i, path, body: fault) as s:
        [c] = make(s, max_retries=3).generate([req()])
        assert not c.ok and c.attempts == 1
        assert f"HTTP {fault}" in c.error and "not retried" in c.error
        assert len(s.completion_requests) == 1


def test_random_failures_never_raise_and_are_accounted():
    plan = RandomFaults(0.3, seed=3, kinds=("500", "503", "429", "malformed", "empty"))
    with FakeOpenAIServer(faults=plan, retry_after_s=0.05) as s:
        out = make(s, max_retries=5, max_concurrency=4).generate(
            [req(f"prompt {i}") for i in range(20)]
        )
        assert len(out) == 20
        faults = [p["fault"] for p in s.completion_requests]
        assert any(faults)  # the plan did inject failures
        # Every HTTP call is one attempt of exactly one request.
        assert sum(c.attempts for c in out) == len(faults)
        for c in out:
            assert c.ok or "after 6 attempts" in c.error
        # Per prompt: its completion is ok exactly when its last HTTP call was not a fault,
        # it made one attempt per call, and a failure means every one of its 6 calls failed.
        calls: dict[str, list] = {}
        for p in s.completion_requests:
            calls.setdefault(p["body"]["messages"][-1]["content"], []).append(p["fault"])
        for i, c in enumerate(out):
            mine = calls[f"prompt {i}"]
            assert c.attempts == len(mine)
            assert c.ok == (mine[-1] is None), (i, mine, c.error)
            assert all(mine[:-1])  # a success is never asked again
            if c.ok:
                assert "class Net" in c.text
            else:
                assert len(mine) == 6 and c.text == ""
        assert sum(c.ok for c in out) == faults.count(None) >= 1
        assert max(c.attempts for c in out) > 1


# ------------------------------------------------------------------------ start-up
def test_check_on_a_closed_port_names_base_url():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"llm\.base_url") as info:
        OpenAIGenerator(model=MODEL, base_url=url)
    assert time.perf_counter() - t0 < 6
    message = str(info.value)
    assert url in message and "unreachable" in message and "vllm serve" in message


def test_check_can_be_skipped_and_generate_then_reports_errors():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    gen = OpenAIGenerator(
        model=MODEL, base_url=url, check_endpoint=False, max_retries=1, backoff_base_s=0.01
    )
    [c] = gen.generate([req()])
    assert not c.ok and "connection error" in c.error and c.attempts == 2


def test_check_401_names_the_api_key():
    with FakeOpenAIServer(models_status=401) as s:
        with pytest.raises(ValueError, match=r"llm\.api_key") as info:
            make(s, check_endpoint=True)
        assert "OPENAI_API_KEY" in str(info.value)


def test_check_tolerates_a_missing_models_route():
    with FakeOpenAIServer(models_status=404) as s:
        [c] = make(s, check_endpoint=True).generate([req()])
        assert c.ok


def test_check_warns_about_an_unlisted_model(caplog):
    with FakeOpenAIServer(models=("some-other-model",)) as s, caplog.at_level(logging.WARNING):
        make(s, check_endpoint=True)
    assert "does not list model" in caplog.text and "some-other-model" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "edit"}, "llm.mode"),
        ({"base_url": "localhost:8000/v1"}, "llm.base_url"),
        ({"max_concurrency": 0}, "llm.max_concurrency"),
        ({"max_retries": -1}, "llm.max_retries"),
        ({"top_p": 0.0}, "llm.top_p"),
        ({"timeout_s": 0}, "llm.timeout_s"),
    ],
)
def test_invalid_arguments(kwargs, field):
    kwargs = {"model": MODEL, "check_endpoint": False, **kwargs}
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        OpenAIGenerator(**kwargs)


# ------------------------------------------------------------------- messy answers
@pytest.mark.parametrize("index", range(len(messy_network_answers(usable=True))))
def test_messy_usable_answers_extract_and_run(index):
    answer = messy_network_answers(usable=True)[index]
    extraction = extract_network(answer)
    assert extraction.ok, extraction.error
    namespace: dict = {}
    exec(extraction.source, namespace)  # our own fixture text, not model output
    net = namespace[extraction.class_name]()
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(3, 1, 8, 8))
    assert tuple(out.shape) == (3, 10)


def test_messy_unusable_answers_do_not_extract():
    unusable = messy_network_answers(usable=False)
    assert 1 <= len(unusable) <= 2
    for answer in unusable:
        assert not extract_network(answer).ok
    assert messy_network_answers() == messy_network_answers(True) + unusable


def test_messy_answers_through_the_generator():
    answers = messy_network_answers()
    with FakeOpenAIServer(responder=cycling_responder(answers)) as s:
        out = make(s).generate([req(f"p{i}") for i in range(len(answers))])
        assert sorted(c.text for c in out) == sorted(answers)
