"""The end of an nb201 search: the pick, its test accuracy, the baselines, ``nb201.json``.

Each method (LLMatic, random search, REA, local search) is summarised the same way: the cell
with the best validation accuracy among the candidates it evaluated, that cell's test accuracy
(looked up only now, as the paper reports it), where the validation accuracy ranks in the
table, and the same for the first 500 candidates. Queries are counted per network: cells that
compute the same function (:func:`~llmatic.nb201.arch.canonical_arch`) are one query.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmatic.nb201.arch import (
    Arch,
    arch_string,
    canonical_arch,
    first_of_each_network,
    parse_arch_string,
)

__all__ = ["RESULTS", "finish_nb201", "summarise_method"]

#: Written in every nb201 run directory; read by ``llmatic-nb201 report``.
RESULTS = "nb201.json"
#: The candidate count of the "first N" figures (issue 7: the best of the first 500).
FIRST = 500


def summarise_method(name: str, evaluated: Sequence[tuple[Arch | None, float | None]],
                     table: Any, *, distinct_queries: int | None = None) -> dict[str, Any]:
    """One method's row: best by validation, its test accuracy, ranks, anytime curve.

    ``evaluated`` lists every candidate in order as ``(cell, validation accuracy in [0, 1])``;
    a failed candidate is ``(None, None)`` and still counts towards the budget.
    ``distinct_queries`` is the number of different networks looked up (None: the canonical
    classes among ``evaluated``'s cells).
    """
    best: tuple[float, Arch] | None = None
    best_first: tuple[float, Arch] | None = None
    curve: list[float | None] = []
    for i, (cell, fitness) in enumerate(evaluated):
        if cell is not None and fitness is not None and (best is None or fitness > best[0]):
            best = (float(fitness), cell)
        if i < FIRST:
            best_first = best
        curve.append(None if best is None else best[0])
    unique = len({cell for cell, _ in evaluated if cell is not None})
    if distinct_queries is None:
        distinct_queries = len({canonical_arch(cell) for cell, _ in evaluated if cell is not None})
    row: dict[str, Any] = {"method": name, "candidates": len(evaluated), "unique_cells": unique,
                           "distinct_queries": int(distinct_queries),
                           "distinct_queries_to_top_1_percent": _queries_to_top(evaluated, table)}
    if best is None:
        return {**row, "arch": None, "valid_accuracy": None, "test_accuracy": None}
    entry = table.lookup(best[1])
    row.update(
        arch=arch_string(best[1]),
        valid_accuracy=float(entry.valid_accuracy),
        test_accuracy=float(entry.test_accuracy),
        valid_percentile=float(table.valid_percentile(entry.valid_accuracy)),
    )
    if best_first is not None and len(evaluated) >= FIRST:
        first = table.lookup(best_first[1])
        row["first_500"] = {
            "arch": arch_string(best_first[1]),
            "valid_accuracy": float(first.valid_accuracy),
            "valid_percentile": float(table.valid_percentile(first.valid_accuracy)),
            "in_top_1_percent": bool(table.valid_percentile(first.valid_accuracy) < 0.01),
        }
    # Best validation accuracy (percent) after every 100 candidates: an anytime curve.
    row["curve_every_100"] = [None if v is None else round(100 * v, 4)
                              for v in curve[99::100]]
    return row


def _queries_to_top(evaluated: Sequence[tuple[Arch | None, float | None]],
                    table: Any) -> int | None:
    """Distinct networks queried until one is in the table's top 1% by validation (or None).

    A network's first cell stands for it: a repeat (or an isomorphic cell) is not a new query.
    """
    for queries, (cell, fitness) in enumerate(first_of_each_network(evaluated), 1):
        entry = table.lookup(cell) if fitness is not None else None
        if entry is not None and table.valid_percentile(entry.valid_accuracy) < 0.01:
            return queries
    return None


def finish_nb201(space: Any, state: Any, *, generator: str,
                 console: Any = None) -> dict[str, Any]:
    """Summarise the search, run the configured baselines, write ``nb201.json``.

    Args:
        space: The run's :class:`~llmatic.nb201.space.Nb201Space` (table, settings, seed).
        state: The search state after the last generation.
        generator: The generator's name.
        console: Where the comparison table is printed (None: nowhere).
    """
    from llmatic.nb201.baselines import local_search, random_search, regularized_evolution
    from llmatic.rundir import atomic_write_bytes, read_history

    nb = space.settings
    table = space.lookup.table
    records = read_history(space.run_dir)
    evaluated = [
        (parse_arch_string(r["arch"]), r["fitness"]) if r["status"] == "ok" and r.get("arch")
        else (None, None)
        for r in records
    ]
    # Wall-clock time waiting for the generator (concurrent requests overlap, so the sum of
    # per-request seconds would overstate it); checkpoints before this field count 0.
    generate_seconds = float(getattr(state, "generate_seconds", 0.0))
    search_seconds = max(float(state.wall_seconds) - generate_seconds, 1e-3)
    # The search looks a network up once: its repeats (isomorphic cells too) are marked.
    looked_up = sum(1 for r in records if r.get("arch") and r.get("duplicate_of") is None)
    methods = [summarise_method("llmatic", evaluated, table, distinct_queries=looked_up)]
    methods[0]["generator"] = generator
    budget = len(records)

    def fitness(cell: Arch) -> float | None:
        result = space.lookup.evaluate(cell)
        return result.fitness

    for name in nb.baselines:
        # Seeded by name: a baseline's result does not depend on which others run.
        rng = np.random.default_rng([space.seed, 201, zlib.crc32(name.encode())])
        if name == "random":
            history = random_search(fitness, budget, rng)
        elif name == "local":  # `budget` distinct networks: a repeat is not re-paid
            history = local_search(fitness, budget, rng)
        else:
            history = regularized_evolution(fitness, budget, rng,
                                            population=nb.rea_population,
                                            sample_size=nb.rea_sample_size)
        methods.append(summarise_method(name, history, table))
    result = {
        "dataset": nb.dataset,
        "table": str(table.source),
        "table_cells": len(table),
        "table_complete": bool(table.complete),
        "table_synthetic": bool(getattr(table, "synthetic", False)),
        "optimum_test_accuracy": float(table.optimum_test()),
        "seed": space.seed,
        "budget": budget,
        "search_seconds_excluding_llm": round(search_seconds, 3),
        "candidates_per_second_excluding_llm": round(budget / search_seconds, 1),
        "methods": methods,
    }
    atomic_write_bytes(space.run_dir / RESULTS, json.dumps(result, indent=2).encode())
    if console is not None:
        _print(result, console)
    return result


def _print(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    view = Table(title=f"NAS-Bench-201 {result['dataset']} (seed {result['seed']}, "
                       f"{result['budget']} candidates each)")
    for column in ("method", "valid acc (%)", "test acc (%)", "valid rank", "best of first 500",
                   "distinct queries"):
        view.add_column(column)
    for m in result["methods"]:
        first = m.get("first_500") or {}
        view.add_row(
            m["method"],
            "-" if m["valid_accuracy"] is None else f"{m['valid_accuracy']:.2f}",
            "-" if m["test_accuracy"] is None else f"{m['test_accuracy']:.2f}",
            "-" if m.get("valid_percentile") is None else f"top {100 * m['valid_percentile']:.2f}%",
            "-" if not first else f"top {100 * first['valid_percentile']:.2f}%",
            str(m.get("distinct_queries", "-")),
        )
    console.print(view)
    if result["table_synthetic"]:
        console.print("[bold red]SYNTHETIC table: made-up numbers for trying things out, not "
                      "NAS-Bench-201 results[/]")
    console.print(f"evaluation rate {result['candidates_per_second_excluding_llm']:.0f} "
                  f"candidates/s excluding LLM time; table optimum (test) "
                  f"{result['optimum_test_accuracy']:.2f}%")
