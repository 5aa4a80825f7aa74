"""The plain, frozen settings the search core receives (no omegaconf here).

``llmatic.config`` reads the composed Hydra config once, checks it, and turns it into these
dataclasses; everything below the config package sees only them and built objects. Their
defaults are not defaults of the product: those live in ``conf/`` (one place). A test that
builds a search by hand states every value it relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptSelection:
    """How a mutation's (instruction, temperature) cell is drawn from the prompt archive.

    Attributes:
        strategy: ``softmax`` (by curiosity), ``top_k`` or ``uniform``.
        k: Cells ``top_k`` draws from.
        softmax_tau: Temperature of the softmax over curiosity.
        explore: Share of mutations that draw a uniform instruction instead.
        level: ``instruction`` (draw the instruction, then one of its cells) or ``cell``.
    """

    strategy: str
    k: int
    softmax_tau: float
    explore: float = 0.0
    level: str = "cell"


@dataclass(frozen=True)
class ArchiveSettings:
    """The network archive's shape (pyribs CVT or grid) and the prompt archive's step."""

    kind: str
    network_cells: int
    network_dims: tuple[int, ...]
    centroid_samples: int
    centroid_seed: int
    temperature_min: float
    temperature_max: float
    temperature_step: float
    #: The network archive's fitness floor for its QD score (0 for accuracy).
    qd_score_offset: float = 0.0


@dataclass(frozen=True)
class SearchSettings:
    """Everything the search loop decides with, besides its built parts.

    Attributes:
        seed: The run seed (parent selection, prompts, training seeds).
        generations: Generations after the seed's (generation 0).
        candidates_per_generation: Candidates planned per generation.
        warmup_networks: Warm-up lasts while the network archive has fewer elites ...
        warmup_prompts: ... and the prompt archive fewer cells than this.
        p_mutation: Probability of a mutation (else crossover), after the ablation's say.
        instructions: The mutation instructions (their index is the prompt archive's row).
        crossover_instruction: The instruction of every crossover.
        tournament: 1 draws a uniform random elite as parent; k > 1 the fittest of k.
        selection: How prompts are drawn.
        random_generation: Ablation: every child mutates the seed, nothing evolves.
        prompt_archive: Ablation switch: curiosity-driven prompts (else uniform).
        network_archive: Ablation switch: parents from the archive (else an elitist list).
        curiosity: Curiosity increments (added, not_added, untrainable, no_network).
        pipeline_generations: Plan generation g+1 before g is told (``schedule=pipelined``).
        overlap_chunk: Generate and submit in chunks of this size (0: whole generation).
        archive: The archives' shapes.
        ablation: The ablation's name (summary only).
        dataset: The dataset's name (summary only).
        schedule: ``generational`` (the paper), ``pipelined`` or ``steady``.
        steady_lag: ``steady``: candidate i is planned from the archives after every
            candidate before i - steady_lag was told.
        redraw_repeats: A completion whose network was already evaluated or is pending is
            drawn again (new sampling seed) up to this many times (0: never, the paper).
    """

    seed: int
    generations: int
    candidates_per_generation: int
    warmup_networks: int
    warmup_prompts: int
    p_mutation: float
    instructions: tuple[str, ...]
    crossover_instruction: str
    tournament: int
    selection: PromptSelection
    random_generation: bool
    prompt_archive: bool
    network_archive: bool
    curiosity: Mapping[str, float]
    pipeline_generations: bool
    overlap_chunk: int
    archive: ArchiveSettings
    ablation: str
    dataset: str
    schedule: str = "generational"
    steady_lag: int = 0
    redraw_repeats: int = 0


@dataclass(frozen=True)
class JobRecipe:
    """How the sandboxed child trains a candidate network (the same for every candidate).

    Attributes:
        epochs: Training epochs.
        batch_size: Batch size.
        trainer: ``lightning.Trainer`` keyword arguments.
        optimizer: The optimizer spec (``_target_`` + arguments, a plain dict).
        scheduler: The learning-rate scheduler spec, or None.
        allowed_imports: Modules a candidate may import (None: any the policy allows).
        static_policy: Whether the static policy screens sources before they run.
        max_flops: FLOPs per input above which a network is measured, not trained.
        fitness: ``accuracy`` or ``loss``.
    """

    epochs: int
    batch_size: int
    trainer: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    scheduler: Mapping[str, Any] | None
    allowed_imports: tuple[str, ...] | None
    static_policy: bool = True
    max_flops: int | None = None
    fitness: str = "accuracy"


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of every sandboxed child (``sandbox.*``)."""

    timeout_s: float
    memory_mb: int | None
    torch_threads: int
    isolation: str | None = "auto"
    #: ``sandbox.max_processes`` / ``scratch_mb`` / ``scratch_inodes`` / ``cpus`` (absent: the
    #: defaults of :class:`llmatic.sandbox.caps.Caps`).
    caps: dict[str, Any] | None = None


@dataclass(frozen=True)
class Nb201Settings:
    """A NAS-Bench-201 search: the table, dataset, seed cell and baselines."""

    table: str
    dataset: str
    seed_cell: str
    baselines: tuple[str, ...] = ()
    rea_population: int = 10
    rea_sample_size: int = 3
