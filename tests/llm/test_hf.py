"""HFGenerator on a tiny random GPT-2 saved to disk (no model can be downloaded here).

The model's text is gibberish; what is tested is the real loading and generation path:
``from_pretrained`` from a directory, left-padded batches, per-row temperature, stop strings,
seeding, token counts, truncation and error handling.
"""

from __future__ import annotations

import logging
import time

import pytest
import torch

from llmatic.llm.base import CodeGenerator, cut_at_stop
from llmatic.llm.hf import HFGenerator, RowTemperature
from llmatic.types import GenerationRequest

# A prompt along whose greedy path the tiny model's top-1 token leads the runner-up by
# > 0.3 logits at every step, so temperature 0.01 samples the greedy path (odds ~e^-30).
NET = "class Net(nn.Module):\n    def __init__(self):\n"
SHORT = "import torch\n"
LONG = NET + "        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)\n" * 4
COLD, HOT = 0.01, 1.0


def req(prompt: str = NET, temperature: float = HOT, seed: int = 0) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, temperature=temperature, instruction="", parents=(), seed=seed
    )


def reqs(n: int, temperature: float = HOT, prompt: str = NET) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            prompt=prompt, temperature=temperature, instruction="", parents=(), seed=i
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 32-wide model gains nothing from threads; on a busy 2-core machine they cost."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gen(tiny_gpt2_dir) -> HFGenerator:
    return HFGenerator(model=str(tiny_gpt2_dir), max_new_tokens=16, batch_size=2, device="cpu")


def greedy(g: HFGenerator, prompt: str, n: int) -> str:
    """The model's greedy continuation, straight from ``model.generate``."""
    ids = g.tokenizer(prompt, return_tensors="pt")
    out = g.model.generate(**ids, do_sample=False, max_new_tokens=n, pad_token_id=g.pad_id)
    return g.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_loads_from_directory_through_from_pretrained(gen, tiny_gpt2_dir):
    assert isinstance(gen, CodeGenerator) and gen.is_llm
    assert gen.name == f"hf:{tiny_gpt2_dir}"
    assert type(gen.model).__name__ == "GPT2LMHeadModel"
    assert gen.model.config.n_layer == 2
    assert gen.context_length == 1024 and gen.max_prompt_tokens == 1024 - 16
    assert gen.tokenizer.padding_side == "left" and gen.pad_id is not None


def test_wrong_model_path_raises_value_error_naming_the_config_key(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"llm\.model") as info:
        HFGenerator(model=str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(info.value) and "config.json" in str(info.value)
    # An existing directory without a checkpoint fails the same way.
    with pytest.raises(ValueError, match=r"llm\.model"):
        HFGenerator(model=str(tmp_path))
    # A hub id that is not in the cache: no minute of hub retries when offline.
    with pytest.raises(ValueError, match=r"llm\.model='llmatic-tests/no-such-model'"):
        HFGenerator(model="llmatic-tests/no-such-model")
    assert time.perf_counter() - t0 < 15  # fails before any search work


def test_batched_generation_returns_one_completion_per_request(gen):
    out = gen.generate(reqs(5))
    assert len(out) == 5
    for c in out:
        assert c.ok and isinstance(c.text, str)
        assert 0 < c.completion_tokens <= 16
        assert c.prompt_tokens == len(gen.tokenizer(NET)["input_ids"])
        assert c.seconds > 0
    assert len({c.text for c in out}) > 1  # temperature 1.0, different seeds
    assert gen.generate([]) == []


def test_batched_and_one_by_one_agree_on_counts_and_bounds(gen):
    requests = [req(NET), req(SHORT), req(LONG), req(NET), req(SHORT)]
    batched = gen.generate(requests)
    single = [gen.generate([r])[0] for r in requests]
    assert len(batched) == len(single) == len(requests)
    for b, s in zip(batched, single, strict=True):
        assert b.ok and s.ok
        assert b.prompt_tokens == s.prompt_tokens  # padding is not counted
        assert 0 < b.completion_tokens <= 16 and 0 < s.completion_tokens <= 16


def test_left_padding_with_attention_mask(gen, monkeypatch):
    ids, mask, n = gen.encode([SHORT, LONG])
    assert n[0] < n[1] == ids.shape[1]
    pad = ids.shape[1] - n[0]
    assert mask[0, :pad].sum() == 0 and mask[0, pad:].all()  # zeros on the left
    assert (ids[0, :pad] == gen.pad_id).all()
    assert mask[1].all()

    seen = {}
    real = gen.model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "generate", spy)
    gen.generate([req(SHORT), req(LONG)])
    assert seen["attention_mask"][0, 0] == 0 and seen["attention_mask"][:, -1].all()
    assert seen["do_sample"] is True and seen["temperature"] == 1.0


def test_padding_does_not_change_a_rows_greedy_output(gen):
    alone = gen.generate([req(NET, COLD)])[0].text
    in_batch = gen.generate([req(NET, COLD), req(LONG, COLD)])[0].text
    assert alone == in_batch == greedy(gen, NET, 16)


def test_row_temperature_divides_each_row_by_its_own_temperature():
    scores = torch.randn(3, 7)
    out = RowTemperature([0.5, 1.0, 2.0])(torch.zeros(3, 1, dtype=torch.long), scores)
    torch.testing.assert_close(out, scores / torch.tensor([[0.5], [1.0], [2.0]]))
    # Zero is clamped, not a division by zero; half-precision scores do not overflow.
    half = RowTemperature([0.0])(torch.zeros(1, 1, dtype=torch.long), scores[:1].half())
    assert torch.isfinite(half).all() and half.dtype == torch.float32


def test_low_temperature_is_greedy_and_high_temperature_varies(gen):
    cold = [c.text for c in gen.generate(reqs(4, COLD))]
    hot = [c.text for c in gen.generate(reqs(4, HOT))]
    assert set(cold) == {greedy(gen, NET, 16)}
    assert len(set(hot)) > 1 and greedy(gen, NET, 16) not in hot


def test_each_row_of_a_batch_uses_its_own_temperature(tiny_gpt2_dir):
    g = HFGenerator(model=str(tiny_gpt2_dir), max_new_tokens=16, batch_size=4, device="cpu")
    out = g.generate([req(NET, COLD), req(NET, HOT), req(NET, COLD), req(NET, HOT)])
    g_text = greedy(g, NET, 16)
    assert out[0].text == out[2].text == g_text
    assert out[1].text != g_text and out[3].text != g_text and out[1].text != out[3].text


def test_same_seed_same_outputs_and_callers_rng_untouched(gen):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = [c.text for c in gen.generate(reqs(3))]
    assert torch.equal(torch.rand(1), expected_next)  # generate forks the RNG
    assert [c.text for c in gen.generate(reqs(3))] == first
    other = GenerationRequest(prompt=NET, temperature=HOT, instruction="", parents=(), seed=99)
    assert gen.generate([other])[0].text != first[0]


def pick_stop(text: str) -> str:
    """A printable two-character piece from the middle of ``text``."""
    for i in range(len(text) // 3, len(text) - 1):
        if text[i : i + 2].isascii() and text[i : i + 2].isalnum():
            return text[i : i + 2]
    raise AssertionError(f"no printable pair in {text!r}")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_stop_strings_cut_the_text_and_end_generation_early(tiny_gpt2_dir, batch_size):
    kwargs = dict(model=str(tiny_gpt2_dir), max_new_tokens=32, batch_size=batch_size, device="cpu")
    base = HFGenerator(**kwargs).generate(reqs(3))
    text = base[0].text
    stop = pick_stop(text)
    cut = HFGenerator(**kwargs, stop=[stop, "never-generated"]).generate(reqs(3))
    assert all(stop not in c.text for c in cut)
    # Same seeds, so the same tokens up to the stop string, then nothing; in a batch, a row
    # that meets its stop string finishes alone and the other rows go on unchanged.
    for b, c in zip(base, cut, strict=True):
        assert c.text == cut_at_stop(b.text, [stop])
        assert c.completion_tokens <= b.completion_tokens
    if text.index(stop) + len(stop) < len(text) - 20:  # stop well before the end
        assert cut[0].completion_tokens < base[0].completion_tokens


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("abc\n\n\nclass X", ["class", "\n\n\n"]) == "abc"
    assert cut_at_stop("abc", ["zz", ""]) == "abc"


def test_long_prompts_are_left_truncated_not_fatal(gen, caplog):
    huge = "x = nn.Linear(16, 16)\n" * 400 + NET  # well over 1024 tokens
    assert len(gen.tokenizer(huge)["input_ids"]) > 1024
    with caplog.at_level(logging.WARNING, logger="llmatic.llm.hf"):
        (c,) = gen.generate([req(huge)])
    assert c.ok and 0 < c.completion_tokens <= 16
    assert c.prompt_tokens == gen.max_prompt_tokens
    assert "left-truncated" in caplog.text
    ids, _, _ = gen.encode([huge])
    assert ids[0, -5:].tolist() == gen.tokenizer(huge)["input_ids"][-5:]  # the end is kept


def test_a_failing_batch_gives_errors_not_exceptions(gen, monkeypatch):
    real = gen.model.generate
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "generate", flaky)
    out = gen.generate(reqs(5))  # batches of 2, 2, 1: the second fails
    assert [c.ok for c in out] == [True, True, False, False, True]
    assert out[2].text == "" and "out of memory" in out[2].error


def test_closed_generator_returns_errors(tiny_gpt2_dir):
    g = HFGenerator(model=str(tiny_gpt2_dir), max_new_tokens=4, device="cpu")
    g.close()
    (c,) = g.generate([req()])
    assert not c.ok and "closed" in c.error
