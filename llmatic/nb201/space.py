"""``space=nb201``: NAS-Bench-201 cells as the search's candidates.

A cell is written as Python (:mod:`llmatic.nb201.cells`), read back from its syntax tree
(never run) and its fitness is looked up in a benchmark table. This is the search space
protocol of :mod:`llmatic.search.space` for cells.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from llmatic.extract import Extraction
from llmatic.nb201.arch import arch_string, canonical_key, parse_arch_string
from llmatic.nb201.cells import parse_cell, read_cell, render_cell
from llmatic.nb201.evaluator import TableEvaluator
from llmatic.nb201.results import finish_nb201
from llmatic.settings import Nb201Settings
from llmatic.types import EvalResult, Status

#: NAS-Bench-201 datasets -> (input shape, classes) (what prompts say about the task).
NB201_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "ImageNet16-120": ((3, 16, 16), 120),
}


class Nb201Space:
    """Cells looked up in a benchmark table (no sandbox: cells are read, never run).

    Args:
        lookup: The table's evaluator.
        settings: The nb201 settings (dataset, seed cell, baselines).
        seed: The run seed (the baselines are seeded from it).
        run_dir: The run directory (``nb201.json`` is written there).
    """

    name = "nb201"
    seed_class = "Cell"
    unreadable = Status.INVALID_CELL
    isolation_report = None

    def __init__(self, *, lookup: TableEvaluator, settings: Nb201Settings, seed: int,
                 run_dir: Path) -> None:
        self.lookup = lookup
        self.settings = settings
        self.seed = int(seed)
        self.run_dir = Path(run_dir)
        self.dataset = settings.dataset
        self.input_shape, self.num_classes = NB201_SHAPES[settings.dataset]
        self.seed_source = render_cell(parse_arch_string(settings.seed_cell))
        #: Canonical cell source -> its operations (filled as cells are read).
        self._cells: dict[str, tuple[str, ...]] = {}

    def extract(self, text: str) -> Extraction:
        """The cell in a completion, as canonical source."""
        ops, source, error = read_cell(text)
        if ops is None:
            return Extraction(source=source, class_name=None, status=Status.INVALID_CELL,
                              error=error)
        self._cells[source] = ops
        return Extraction(source=source, class_name="Cell", status=None, error=None)

    def check_policy(self, source: str) -> EvalResult | None:
        """Cells are read from the syntax tree, never executed: nothing to screen."""
        return None

    def key(self, source: str) -> str:
        """The arch string of the cell's class (:func:`~llmatic.nb201.arch.canonical_arch`).

        Cells that compute the same function share it, so a repeat is not looked up again.
        """
        return canonical_key(self.cell(source))

    def cell(self, source: str) -> tuple[str, ...]:
        """The operations of a canonical cell source (read once by :meth:`extract`)."""
        ops = self._cells.get(source)
        if ops is None:  # the seed cell, or a parent from a checkpoint
            ops = self._cells[source] = parse_cell(source)
        return ops

    def submit(self, source: str, class_name: str, candidate_id: int) -> Future:
        """Look the cell up (at once)."""
        started = time.perf_counter()
        result = self.lookup.evaluate(self.cell(source))
        result.timings["lookup"] = round(time.perf_counter() - started, 6)
        done: Future = Future()
        done.set_result(result)
        return done

    def judge(self, result: EvalResult) -> EvalResult:
        """A table's result stands as it is (no compute cap)."""
        return result

    def keeps_text(self, extraction: Extraction | None) -> bool:
        """A read cell is described by its arch string; keep only unreadable answers."""
        return extraction is None or not extraction.ok

    def annotate(self, record: dict[str, Any], source: str | None) -> None:
        """The cell's arch string (None when no cell was read)."""
        ops = self._cells.get(source) if source else None
        record["arch"] = arch_string(ops) if ops is not None else None

    def at_chance(self, record: dict[str, Any]) -> bool | None:
        """Not meaningful for table lookups."""
        return None

    def finish(self, search: Any, state: Any, console: Any) -> dict[str, Any]:
        """The pick, its test accuracy and the baselines on the same table: ``nb201.json``."""
        return finish_nb201(self, state, generator=search.generator.name, console=console)

    def close(self) -> None:
        """Nothing to release."""
