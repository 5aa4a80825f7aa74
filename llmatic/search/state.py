"""What a search remembers between generations, and what makes two candidates one network.

:class:`SearchState` is pickled after every generation (``llmatic.rundir``) and holds
everything needed to continue exactly: the RNG, both archives, the temperature schedule,
the counters and every result so far keyed by :func:`source_key`.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmatic.astparse import parse as parse_source

if TYPE_CHECKING:  # pyribs imports torch: the archives load when a search builds them
    from llmatic.qd import ElitistPopulation, NetworkArchive, PromptArchive


@dataclass
class SearchState:
    """Everything needed to continue a search exactly (pickled after each generation)."""

    generation: int
    next_candidate_id: int
    rng: np.random.Generator
    network_archive: NetworkArchive
    prompt_archive: PromptArchive
    temperature: Any
    best_fitness: float | None
    history_lines: int
    status_counts: Counter = field(default_factory=Counter)
    clipped: Counter = field(default_factory=Counter)
    llm_totals: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0
    #: Wall-clock seconds spent waiting for the generator (part of ``wall_seconds``).
    generate_seconds: float = 0.0
    #: Parents of the ``prompt_archive_only`` ablation (None: the network archive).
    population: ElitistPopulation | None = None
    #: The seed network as an elite record (the parent of ``random_generation``).
    seed_elite: dict[str, Any] | None = None
    #: ``pipeline_generations``: the plans of the next generation, made before this
    #: checkpoint's generation was told (None otherwise).
    pending_plans: list | None = None
    #: Normalised source key -> (candidate id, result) of every candidate evaluated so far:
    #: a repeated network is not trained again (docs/method.md §3.8).
    evaluated: dict = field(default_factory=dict)

    @property
    def parents(self) -> NetworkArchive | ElitistPopulation:
        """Where parents are selected from."""
        return self.network_archive if self.population is None else self.population


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _strip


def source_key(source: str) -> str:
    """A hash of the normalised source: the AST without comments, docstrings or layout.

    Two candidates with the same key are the same network; it names the training seed and
    lets a repeat reuse the first result. Unparseable text hashes as it stands.
    """
    try:
        text = ast.dump(_StripDocstrings().visit(parse_source(source)), annotate_fields=False)
    except (SyntaxError, ValueError, RecursionError):
        text = source
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
