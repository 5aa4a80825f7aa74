"""Outcomes and records shared by every stage of the search.

Data flows: a :class:`GenerationRequest` goes to a code generator, which returns a
:class:`Completion`; the completion's code is evaluated in a sandbox, which returns an
:class:`EvalResult`. Each candidate ends with exactly one :class:`Status`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """How a candidate ended. ``OK`` is the only status that carries a fitness."""

    OK = "ok"
    LLM_ERROR = "llm_error"  # the generator failed to return a completion
    SYNTAX_ERROR = "syntax_error"  # no parseable Python in the completion
    NO_NETWORK = "no_network"  # parseable, but no nn.Module class with forward()
    INSTANTIATION_ERROR = "instantiation_error"  # exec or Net() raised
    RUNTIME_ERROR = "runtime_error"  # forward or training raised
    BAD_OUTPUT_SHAPE = "bad_output_shape"  # forward did not return (batch, num_classes)
    NON_FINITE = "non_finite"  # loss or logits became NaN / inf
    TIMEOUT = "timeout"  # killed after sandbox.timeout_s
    TOO_LARGE = "too_large"  # FLOPs per input above dataset.max_flops: measured, not trained
    MEMORY_LIMIT = "memory_limit"  # hit sandbox.memory_mb (or CUDA OOM)
    CRASHED = "crashed"  # the child died without reporting (signal, os._exit)
    FORBIDDEN = "forbidden"  # the static policy rejected the code (never ran)
    TAMPERING = "tampering"  # the code replaced functions that training or scoring rely on
    INVALID_CELL = "invalid_cell"  # space=nb201: the text is not one NAS-Bench-201 cell
    NOT_IN_BENCHMARK = "not_in_benchmark"  # space=nb201: a valid cell the table lacks

    @property
    def trainable(self) -> bool:
        """Whether a network with this status trained to completion."""
        return self is Status.OK


class Operator(str, enum.Enum):
    """The variation operator that produced a candidate."""

    SEED = "seed"
    MUTATION = "mutation"
    CROSSOVER = "crossover"


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to produce.

    Attributes:
        prompt: The full text given to a language model.
        temperature: Sampling temperature for this completion.
        instruction: The instruction text alone (also embedded in ``prompt``).
        parents: Source code of the parent network(s): one for mutation, two for crossover.
        seed: Seed for this completion; the same request and seed give the same completion
            for deterministic generators.
        messages: The same prompt as chat messages (``{"role", "content"}`` dicts) when the
            configured prompt format is ``chat``; None for the code-completion format.
    """

    prompt: str
    temperature: float
    instruction: str
    parents: tuple[str, ...]
    seed: int = 0
    messages: tuple[dict[str, str], ...] | None = None


@dataclass
class Completion:
    """What a generator returned for one request."""

    text: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Whether the generator produced text."""
        return self.error is None


@dataclass
class EvalResult:
    """The outcome of evaluating one network's source code.

    ``fitness`` is set only for ``Status.OK``; the other numbers are filled as far as the
    evaluation got (e.g. ``params`` is known for a network that later failed to train).
    """

    status: Status
    fitness: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    params: int | None = None
    flops: int | None = None
    width: int | None = None
    depth: int | None = None
    width_to_depth: float | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: Extra descriptor inputs (space=nb201: counts of each operation in the cell).
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (``status`` as its string value)."""
        d = asdict(self)
        d["status"] = self.status.value
        return d
