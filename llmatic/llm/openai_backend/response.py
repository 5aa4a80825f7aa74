"""Reading an OpenAI-compatible response: the choices' texts and the token usage.

Servers differ in what they send back; :func:`parse_response` accepts what the API allows
(choices in any order, a chat message without content) and raises
:class:`~llmatic.llm.openai_backend.errors.RetryableError` for a malformed body.
:func:`share` splits a call's token counts over the requests it answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmatic.llm.base import cut_at_stop
from llmatic.llm.openai_backend.errors import RetryableError, shorten

#: The OpenAI API accepts at most four stop sequences; extra ones are applied client-side.
MAX_STOP = 4


def parse_response(
    response: Any, mode: str, stop: Sequence[str]
) -> tuple[list[str], tuple[int, int]]:
    """Texts and token counts of a parsed response; malformed ones are retryable.

    Args:
        response: What the client returned for ``/chat/completions`` or ``/completions``.
        mode: ``"chat"`` or ``"completion"``: where a choice keeps its text.
        stop: The generator's stop strings; when there are more than :data:`MAX_STOP`
            (the server applied only the first ones), each text is cut at all of them.

    Returns:
        The choices' texts in choice order, and (prompt, completion) token counts (0 when
        the server did not report them).

    Raises:
        RetryableError: If the body is not JSON, has no or an empty ``choices`` list, or a
            choice without text.
    """
    if isinstance(response, str | bytes):
        # The client returns the raw body when the server did not label it JSON.
        raise RetryableError(f"malformed response (not JSON): {shorten(str(response))}")
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        raise RetryableError("malformed response: no 'choices' list")
    if not choices:
        raise RetryableError("empty 'choices' in the response")
    # Servers answer n>1 in any order; 'index' says which choice is which.
    ordered = sorted(
        enumerate(choices),
        key=lambda p: (
            getattr(p[1], "index", None)
            if isinstance(getattr(p[1], "index", None), int)
            else p[0]
        ),
    )
    texts = []
    for _, choice in ordered:
        text = choice_text(choice, mode)
        if text is None:
            raise RetryableError("malformed response: a choice without text")
        texts.append(cut_at_stop(text, stop) if len(stop) > MAX_STOP else text)
    usage = getattr(response, "usage", None)
    prompt_tokens = non_negative_int(getattr(usage, "prompt_tokens", 0))
    completion_tokens = non_negative_int(getattr(usage, "completion_tokens", 0))
    return texts, (prompt_tokens, completion_tokens)


def choice_text(choice: Any, mode: str) -> str | None:
    """The text of one choice, ``""`` for a chat answer without content, None if malformed."""
    if mode == "chat":
        message = getattr(choice, "message", None)
        if message is None:
            return None
        content = getattr(message, "content", None)
        # A refusal or a tool call has no content: an empty answer, not a bad body.
        return content if isinstance(content, str) else ("" if content is None else None)
    text = getattr(choice, "text", None)
    return text if isinstance(text, str) else None


def share(total: int, k: int, slot: int) -> int:
    """Slot ``slot`` of ``total`` split evenly over ``k`` (the shares sum to ``total``)."""
    base, extra = divmod(max(0, total), k)
    return base + (1 if slot < extra else 0)


def non_negative_int(value: Any) -> int:
    """``value`` if it is a non-negative int, else 0 (a server's missing or odd count)."""
    return value if isinstance(value, int) and value >= 0 else 0
