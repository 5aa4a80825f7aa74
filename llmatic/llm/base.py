"""The interface every code generator implements (batched ``generate``), and shared helpers."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from llmatic.types import Completion, GenerationRequest


def mix_seeds(a: int, b: int, *, modulus: int) -> int:
    """Combine two seeds into one in ``[0, modulus)``.

    Backends accept different seed ranges, so each names its own ``modulus``: the same pair
    of seeds mixes to different values under different moduli.

    Args:
        a: The generator's seed.
        b: The request's seed.
        modulus: One above the largest seed the backend accepts.

    Returns:
        ``(a * 1_000_003 + b) % modulus``.
    """
    return (a * 1_000_003 + b) % modulus


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Return ``text`` up to (not including) the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class CodeGenerator(abc.ABC):
    """Turns prompts into completions, one per request, in order.

    Implementations never raise for a single bad request: they return a
    :class:`~llmatic.types.Completion` whose ``error`` says what went wrong, so the search
    records the candidate as ``llm_error`` and goes on.
    """

    #: Human-readable name used in logs and the run summary.
    name: str = "generator"
    #: False for generators that are not language models (the rule-based mutator).
    is_llm: bool = True

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Return one completion per request, in the same order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (models, connections). Default: nothing."""


class NullGenerator(CodeGenerator):
    """Generates nothing (every request fails). Used where no generation is wanted."""

    name = "none"
    is_llm = False

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One error completion per request."""
        return [Completion(text="", error="no generator configured") for _ in requests]
