"""benchmarks/bench_search.py, the README's results tables: its numbers and its labels.

A tiny NAS-Bench-201 part (2 seeds, one random key, 41 candidates per run) is run once; every
number the report gives for llmatic and random search is recomputed here from the run
histories and the table, independently of the benchmark's own helpers.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ("budget.generations=2", "budget.candidates_per_generation=20")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search",
                                                  ROOT / "benchmarks" / "bench_search.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(bench, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_nb201")
    return tmp, bench.nb201(2, tmp, random_keys=1, overrides=OVERRIDES)


def _distinct(cells_and_vals):
    """First cell of each network, in order (written out here, not the benchmark's helper)."""
    from llmatic.nb201.arch import canonical_arch

    seen, out = set(), []
    for cell, val in cells_and_vals:
        if cell is not None and canonical_arch(cell) not in seen:
            seen.add(canonical_arch(cell))
            out.append((cell, val))
    return out


def _expected(distinct, table, thresholds, n):
    vals = [v for _, v in distinct]
    first = {name: next((i + 1 for i, v in enumerate(vals) if v >= t), None)
             for name, t in thresholds.items()}
    head = distinct[:n]
    best_cell, best_val = max(head, key=lambda cv: cv[1])
    return first, best_val, table.lookup(best_cell).test_accuracy


@pytest.mark.slow
def test_nb201_report_numbers_are_those_of_the_histories(bench, tiny):
    from llmatic.nb201.arch import parse_arch_string
    from llmatic.nb201.baselines import random_search
    from llmatic.nb201.table import load_table
    from llmatic.rundir import read_history

    tmp, result = tiny
    for landscape, nb in result.items():
        assert nb["overrides"] == list(OVERRIDES)
        assert len(nb["runs"]) == 2 and len(nb["tables"]) == 1
        key = nb["tables"][0]["key"]
        table = load_table(tmp / f"nb201_{landscape}_{key}.csv", "cifar10")
        vals = np.array([e.valid_accuracy for _, e in table.items()])
        thresholds = nb["tables"][0]["thresholds_val_accuracy"]
        assert thresholds["top_1_percent"] == pytest.approx(np.quantile(vals, 0.99))
        per_method = {"llmatic": [], "random": []}
        for run in nb["runs"]:
            history = read_history(tmp / f"nb201_{landscape}_{key}_{run['seed']}")
            assert run["budget"] == len(history) == 41
            llmatic = [(parse_arch_string(r["arch"]), 100 * r["val_accuracy"]) for r in history]
            rng = np.random.default_rng([run["seed"], key, bench.zlib.crc32(b"random")])
            rand = random_search(lambda c, t=table: t.lookup(c).valid_accuracy, len(history),
                                 rng)
            for method, evaluated in (("llmatic", llmatic), ("random", rand)):
                distinct = _distinct(evaluated)
                got = run["methods"][method]
                assert got["distinct_queries"] == len(distinct)
                for n in bench.NB201_AT:  # fewer than n distinct: the best over all of them
                    first, best, test = _expected(distinct, table, thresholds, n)
                    assert got["at"][str(n)]["val"] == pytest.approx(best)
                    assert got["at"][str(n)]["test"] == pytest.approx(test)
                    assert got["at"][str(n)]["short"] == (len(distinct) < n)
                for name, q in first.items():
                    assert got[f"queries_to_{name}"] == q
                per_method[method].append(got)
        for method, rows in per_method.items():
            agg = nb["summary"][method]
            assert agg["runs"] == 2
            mean100 = statistics.fmean(r["at"]["100"]["val"] for r in rows)
            assert agg["at"]["100"]["mean_best_val_accuracy"] == pytest.approx(mean100)
            found = [r["queries_to_top_1_percent"] for r in rows]
            assert agg["reached_top_1_percent"] == sum(q is not None for q in found)
            if None not in found:
                assert agg["median_queries_to_top_1_percent"] == statistics.median(found)
        # The Markdown table shows the summary's numbers and says what ran.
        text = "\n".join(bench.nb201_markdown(landscape, nb, 2))
        assert " ".join(OVERRIDES) in text
        llm = nb["summary"]["llmatic"]["at"]["300"]["mean_best_val_accuracy"]
        assert f"{llm:.2f} / " in text


def test_a_variant_is_labelled_by_its_overrides_and_never_overwrites_the_default(bench):
    label = bench.setup_label(("budget=smoke",))
    assert "budget=smoke" in label and "budget=default" not in label
    assert "(2 generations x" in label  # the smoke budget's size, read from its YAML
    assert "budget=default" in bench.setup_label(())
    default = bench.out_path(None, [])
    assert default.name == "search.json"
    for variant in (["budget=smoke"], ["parent_selection.tournament=3"]):
        path = bench.out_path(None, variant)
        assert path != default and path.parent == default.parent
    assert bench.out_path(None, ["budget=smoke"]).name == "search_budget-smoke.json"
    explicit = Path("/somewhere/else.json")
    assert bench.out_path(explicit, ["budget=smoke"]) == explicit


@pytest.mark.slow
def test_main_writes_the_variant_where_asked_with_its_label(bench, tmp_path):
    out = tmp_path / "variant.json"
    assert bench.main(["--seeds", "0", "--nb201-seeds", "1", "--random-keys", "1",
                       "--nb201-set", "budget.generations=1", "budget.candidates_per_generation=5",
                       "--set", "dataset=digits", "budget=smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["overrides"] == ["dataset=digits", "budget=smoke"]
    assert "budget=smoke" in result["setup"]
    assert result["nb201"]["prior"]["runs"][0]["budget"] == 6
    assert "budget.generations=1" in out.with_suffix(".md").read_text()
    assert (tmp_path / "sample_efficiency_nb201_variant.png").stat().st_size > 0
