"""Chat-format requests go through the tokenizer's chat template (instruct models)."""

from __future__ import annotations

import pytest

from llmatic.types import GenerationRequest


@pytest.fixture(scope="module")
def generator(tiny_gpt2_dir):
    from llmatic.llm.hf import HFGenerator

    gen = HFGenerator(model=str(tiny_gpt2_dir), max_new_tokens=8, batch_size=2)
    yield gen
    gen.close()


def _request(messages=None):
    return GenerationRequest(prompt="plain prompt", temperature=0.5, instruction="i",
                             parents=("p",), seed=0, messages=messages)


def test_plain_prompt_without_messages(generator):
    assert generator.prompt_text(_request()) == "plain prompt"


def test_messages_use_the_chat_template(generator):
    messages = ({"role": "system", "content": "S"}, {"role": "user", "content": "U"})
    # A base model without a template falls back to the flat prompt.
    generator.tokenizer.chat_template = None
    assert generator.prompt_text(_request(messages)) == "plain prompt"
    generator.tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    try:
        text = generator.prompt_text(_request(messages))
        assert text == "<system>S\n<user>U\n<assistant>"
        out = generator.generate([_request(messages), _request()])
        assert len(out) == 2 and all(c.ok for c in out)
    finally:
        generator.tokenizer.chat_template = None
