"""NAS-Bench-201: the cell search space, benchmark tables and lookups.

``arch`` (arch strings, the 15,625 cells), ``cells`` (cells as Python source, read from the
syntax tree and never run), ``mutate`` (cell edits), ``table`` / ``tableformat`` /
``official`` / ``synthetic`` (benchmark tables: the compact CSV, the official files, a
synthetic landscape), ``evaluator`` (lookups), ``space`` (the search-space protocol for
cells), ``baselines`` (random search, REA), ``results`` (``nb201.json``) and ``report`` (the
paper's Table 1).
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "arch": ("all_archs", "arch_string", "ArchStringError", "parse_arch_string"),
        "baselines": ("local_search", "random_search", "regularized_evolution"),
        "cells": ("parse_cell", "read_cell", "render_cell"),
        "evaluator": ("TableEvaluator",),
        "official": ("export_table",),
        "results": ("finish_nb201", "RESULTS"),
        "space": ("NB201_SHAPES", "Nb201Space"),
        "synthetic": ("write_synthetic_table",),
        "table": ("BenchmarkTable", "load_table", "TableError"),
    },
)
