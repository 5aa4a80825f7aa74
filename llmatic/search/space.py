"""What a candidate is: the :class:`SearchSpace` protocol and the network space.

The search loop is the same for every space; a space says how a completion becomes a
candidate, how a candidate is evaluated and what its record adds. Two spaces exist:

* :class:`NetworkSpace` (``space=network``): a PyTorch network written by the generator,
  trained in a sandboxed child and scored here on the validation split;
* :class:`llmatic.nb201.space.Nb201Space` (``space=nb201``): a NAS-Bench-201 cell, read from
  its syntax tree (never run) and looked up in a benchmark table.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmatic.extract import DEFAULT_ALLOWED_IMPORTS, Extraction, extract_network, policy_error
from llmatic.rundir import DATA
from llmatic.sandbox import outcome_to_result
from llmatic.search.state import source_key
from llmatic.settings import JobRecipe
from llmatic.train import too_large_error
from llmatic.types import EvalResult, Status


class SearchSpace(Protocol):
    """How candidates of one kind are read, evaluated and recorded."""

    #: ``network`` or ``nb201`` (in the summary).
    name: str
    #: The dataset's name (in the summary).
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    #: Generation 0: its source and the name of its class.
    seed_source: str
    seed_class: str
    #: The status of a completion :meth:`extract` could not read at all.
    unreadable: Status

    def extract(self, text: str) -> Extraction:
        """The candidate in a completion (no code runs)."""

    def check_policy(self, source: str) -> EvalResult | None:
        """A ``forbidden`` result when the static policy rejects ``source``, else None."""

    def key(self, source: str) -> str:
        """One key per network: a candidate whose key was evaluated reuses that result."""

    def submit(self, source: str, class_name: str, candidate_id: int) -> Future:
        """Start evaluating a candidate; the future holds its :class:`EvalResult`."""

    def judge(self, result: EvalResult) -> EvalResult:
        """The result as the search counts it (e.g. over the compute cap: too large)."""

    def keeps_text(self, extraction: Extraction | None) -> bool:
        """Whether a candidate's text is written under ``candidates/``."""

    def annotate(self, record: dict[str, Any], source: str | None) -> None:
        """Add the space's own keys to a history record (at its end)."""

    def at_chance(self, record: dict[str, Any]) -> bool | None:
        """Whether a trained candidate is no better than guessing (None: not meaningful)."""

    def finish(self, search: Any, state: Any, console: Any) -> dict[str, Any] | None:
        """Work after the last generation; its result joins the summary under the name."""

    def close(self) -> None:
        """Release what the space started."""


def capped(result: EvalResult, cap: int | None) -> EvalResult:
    """``result``, or ``too_large`` when its measured FLOPs exceed ``cap`` (dataset.max_flops).

    The worker stops such a network before training; this holds whatever the child did
    (a network that timed out or crashed while too large is too large, on any machine).
    """
    if cap is None or result.flops is None or result.flops <= cap:
        return result
    return replace(result, status=Status.TOO_LARGE, fitness=None, val_accuracy=None,
                   val_loss=None, error=too_large_error(result.flops, cap))


def at_chance(val_accuracy: float | None, num_classes: int) -> bool:
    """A trained network no better than guessing (validation accuracy < 1.25 / classes)."""
    return val_accuracy is not None and val_accuracy < 1.25 / max(2, int(num_classes))


class NetworkSpace:
    """Networks written as PyTorch code, trained in sandboxed children.

    Args:
        evaluator: Started evaluator (local, pool or Ray) that runs jobs in sandboxed children.
        datamodule: The dataset, already set up; its child arrays are written under the run.
        recipe: How every candidate is trained.
        seed: The run seed (with the normalised source, it names a candidate's training seed).
        run_dir: The run directory (jobs and the child's data files live there).
        seed_source: The network of generation 0.
        dataset: The dataset's name.
    """

    name = "network"
    seed_class = "Net"
    unreadable = Status.SYNTAX_ERROR

    def __init__(self, *, evaluator: Any, datamodule: Any, recipe: JobRecipe, seed: int,
                 run_dir: Path, seed_source: str, dataset: str) -> None:
        # The child's data files are written here, before the generator loads.
        self.evaluator = evaluator
        self.datamodule = datamodule
        self.recipe = recipe
        self.seed = int(seed)
        self.run_dir = Path(run_dir)
        self.seed_source = seed_source
        self.dataset = dataset
        self.input_shape = tuple(int(v) for v in datamodule.input_shape)
        self.num_classes = int(datamodule.num_classes)
        self.val_labels = datamodule.splits["y_val"]
        self.data_dir = datamodule.write_child_arrays(self.run_dir / DATA)
        self.sandbox = getattr(evaluator, "sandbox", None)

    @property
    def isolation_report(self) -> dict[str, Any] | None:
        """The kernel layers every candidate got (None: a Ray evaluator's own servers)."""
        return getattr(self.sandbox, "isolation_report", None)

    def job(self, source: str, class_name: str) -> dict[str, Any]:
        """The child's job for ``source`` (the same recipe for every candidate)."""
        # One network, one fitness: the seed follows the run seed and the normalised source.
        key = source_key(source)  # parses the source: once per candidate
        words = [int(key[i:i + 8], 16) for i in range(0, 32, 8)]
        seed = int(np.random.SeedSequence([self.seed, *words]).generate_state(1)[0])
        r = self.recipe
        return {
            "code": source,
            "class_name": class_name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "data_dir": str(self.data_dir.resolve()),
            "epochs": int(r.epochs),
            "batch_size": int(r.batch_size),
            "trainer": dict(r.trainer),
            "optimizer": dict(r.optimizer),
            "scheduler": None if r.scheduler is None else dict(r.scheduler),
            "seed": seed,
            "allowed_imports": None if r.allowed_imports is None else list(r.allowed_imports),
            "max_flops": r.max_flops,
        }

    def extract(self, text: str) -> Extraction:
        """The network class in a completion."""
        return extract_network(text)

    def check_policy(self, source: str) -> EvalResult | None:
        """A ``forbidden`` result if the static policy rejects ``source`` (nothing runs)."""
        if not self.recipe.static_policy:
            return None
        allowed = self.recipe.allowed_imports
        error = policy_error(source, list(allowed) if allowed else DEFAULT_ALLOWED_IMPORTS)
        return None if error is None else EvalResult(Status.FORBIDDEN, error=error)

    def key(self, source: str) -> str:
        """The normalised source (comments, docstrings and layout ignored)."""
        return source_key(source)

    def submit(self, source: str, class_name: str, candidate_id: int) -> Future:
        """Train ``source`` in a sandboxed child; the future holds its scored result."""
        job_dir = self.run_dir / "jobs" / f"{candidate_id:06d}"
        inner = self.evaluator.submit(self.job(source, class_name), job_dir)
        outer: Future = Future()

        def done(f: Future) -> None:
            try:
                outer.set_result(self.score(f.result(), job_dir))
            except BaseException as exc:  # noqa: BLE001 - surfaced by outer.result()
                outer.set_exception(exc)

        inner.add_done_callback(done)
        return outer

    def score(self, outcome: Any, job_dir: Path) -> EvalResult:
        """Score what a child left in ``job_dir`` here, in the parent; then remove the job."""
        result = outcome_to_result(outcome, job_dir=job_dir, val_labels=self.val_labels,
                                   num_classes=self.num_classes, fitness=self.recipe.fitness)
        shutil.rmtree(job_dir, ignore_errors=True)  # its source is kept under candidates/
        return result

    def judge(self, result: EvalResult) -> EvalResult:
        """Over the compute cap, a network is too large whatever the child reported."""
        return capped(result, self.recipe.max_flops)

    def keeps_text(self, extraction: Extraction | None) -> bool:
        """Every candidate's text is kept."""
        return True

    def annotate(self, record: dict[str, Any], source: str | None) -> None:
        """Networks add nothing to their records."""

    def at_chance(self, record: dict[str, Any]) -> bool | None:
        """Validation accuracy below 1.25 / classes."""
        return at_chance(record.get("val_accuracy"), self.num_classes)

    def finish(self, search: Any, state: Any, console: Any) -> dict[str, Any] | None:
        """Nothing after the last generation."""
        return None

    def close(self) -> None:
        """Stop the evaluator (and the servers it started)."""
        self.evaluator.close()
