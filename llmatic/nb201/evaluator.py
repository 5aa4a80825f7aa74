"""Benchmark lookups as the evaluator of the ``nb201`` space (no code runs, microseconds each).

The search sees only the benchmark's validation accuracy (200-epoch schedule) as fitness; the
test accuracy of the final pick is looked up once, at the end (:mod:`llmatic.nb201.results`),
as the paper reports it.
"""

from __future__ import annotations

from collections import Counter

from llmatic.nb201.arch import Arch, arch_string
from llmatic.types import EvalResult, Status

__all__ = ["TableEvaluator", "cell_features"]


def cell_features(ops: Arch) -> dict[str, float]:
    """Counts of each kind of operation in a cell (the ``nb201_ops`` descriptors)."""
    counts = Counter(ops)
    return {
        "conv_ops": float(counts["nor_conv_1x1"] + counts["nor_conv_3x3"]),
        "conv3x3_ops": float(counts["nor_conv_3x3"]),
        "skip_ops": float(counts["skip_connect"]),
        "pool_ops": float(counts["avg_pool_3x3"]),
        "none_ops": float(counts["none"]),
    }


class TableEvaluator:
    """Fitness of a cell from a :class:`~llmatic.nb201.table.BenchmarkTable`.

    Args:
        table: The benchmark table of one dataset.
    """

    def __init__(self, table: object) -> None:
        self.table = table
        self.lookups = 0

    def evaluate(self, ops: Arch) -> EvalResult:
        """The validation accuracy (as a fraction) and costs of one cell."""
        self.lookups += 1
        entry = self.table.lookup(ops)
        if entry is None:
            return EvalResult(
                Status.NOT_IN_BENCHMARK,
                error=f"{arch_string(ops)} is not in the benchmark table {self.table.source} "
                      f"({len(self.table)} cells for {self.table.dataset})",
            )
        accuracy = float(entry.valid_accuracy) / 100.0
        return EvalResult(
            Status.OK, fitness=accuracy, val_accuracy=accuracy,
            params=int(round(float(entry.params) * 1e6)),
            flops=int(round(float(entry.flops) * 1e6)),
            features=cell_features(ops),
        )
