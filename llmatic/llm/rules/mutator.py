"""The generator itself: :class:`RuleBasedMutator`, which answers requests with edited parents.

It seeds one random generator per request from its content, classifies the instruction,
and runs crossover, an edit from the registry, or (for NAS-Bench-201 cells) the cell edits of
:mod:`llmatic.nb201.mutate`. Whatever goes wrong becomes the completion's ``error``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence

import numpy as np

from llmatic.llm.base import CodeGenerator
from llmatic.llm.rules.crossover import _crossover
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.edits.registry import _mutate
from llmatic.llm.rules.errors import _NoEdit
from llmatic.llm.rules.instructions import classify_instruction
from llmatic.types import Completion, GenerationRequest


class RuleBasedMutator(CodeGenerator):
    """Rule-based AST mutator: NOT a language model; the non-LLM baseline (``llm=rules``).

    It reads each request's ``instruction``, ``parents``, ``temperature`` and ``seed``, edits
    the parent's syntax tree, and returns the child's source. The same request and constructor
    seed always give byte-identical output. A parent it cannot edit yields a completion with
    ``error`` set (prefixed ``rules:``); ``generate`` never raises for a bad parent.

    Args:
        seed: Seed of the mutator; mixed with each request's seed and content.
        max_channels: Largest channel count an edit creates (convolutions, conv blocks).
        max_features: Largest feature count an edit creates (linear, recurrent blocks).
        max_layers: No layer is added once the network has this many.
    """

    name = "rules (rule-based AST mutator, not an LLM)"
    is_llm = False

    def __init__(
        self,
        *,
        seed: int = 0,
        max_channels: int = 128,
        max_features: int = 512,
        max_layers: int = 24,
    ) -> None:
        if min(max_channels, max_features, max_layers) < 1:
            raise ValueError("max_channels, max_features and max_layers must be >= 1")
        self.seed = int(seed)
        self.max_channels = int(max_channels)
        self.max_features = int(max_features)
        self.max_layers = int(max_layers)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Return one child per request, in order (see the class docstring)."""
        return [self._complete(request) for request in requests]

    def _complete(self, request: GenerationRequest) -> Completion:
        start = time.perf_counter()
        try:
            text = self._child(request)
        except _NoEdit as exc:
            return Completion(text="", error=f"rules: {exc}", seconds=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - a strange parent must never stop the search
            error = f"rules: cannot edit this parent ({type(exc).__name__}: {exc})"
            return Completion(text="", error=error, seconds=time.perf_counter() - start)
        return Completion(text=text, seconds=time.perf_counter() - start)

    def _child(self, request: GenerationRequest) -> str:
        parents = tuple(request.parents)
        if not parents:
            raise _NoEdit("the request has no parent network")
        if "edge_" in parents[0] or "~0|" in parents[0]:
            cell = self._cell_child(request)
            if cell is not None:
                return cell
        kind = classify_instruction(request.instruction, len(parents))
        ctx = _Ctx(self._rng(request), _temperature(request.temperature),
                   self.max_channels, self.max_features, self.max_layers)
        if kind == "crossover":
            return _crossover(parents[0], parents[1], ctx)
        return _mutate(parents[0], kind, ctx)

    def _cell_child(self, request: GenerationRequest) -> str | None:
        """A NAS-Bench-201 cell child (``space=nb201``); None if the parents are not cells."""
        from llmatic.nb201.cells import CellError, parse_cell, render_cell
        from llmatic.nb201.mutate import classify_cell_instruction, crossover_cells, edit_cell

        try:
            parents = [parse_cell(p) for p in request.parents]
        except CellError:
            return None
        rng = self._rng(request)
        kind = classify_cell_instruction(request.instruction, len(parents))
        if kind == "crossover":
            child = crossover_cells(parents[0], parents[1], rng)
        else:
            child = edit_cell(parents[0], kind, _temperature(request.temperature), rng)
        return render_cell(child)

    def _rng(self, request: GenerationRequest) -> np.random.Generator:
        """A generator seeded by the mutator seed, the request seed and the request content."""
        digest = hashlib.sha256()
        parts = (self.seed, request.seed, repr(float(request.temperature)),
                 request.instruction, len(request.parents), *request.parents)
        for part in parts:
            digest.update(str(part).encode("utf-8", "surrogatepass") + b"\0")
        return np.random.default_rng(int.from_bytes(digest.digest(), "big"))


def _temperature(value: float) -> float:
    """The temperature as a probability: clipped to [0, 1]; 0.5 when not a number."""
    t = float(value)
    return 0.5 if not math.isfinite(t) else min(1.0, max(0.0, t))
