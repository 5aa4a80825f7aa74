"""Local search over NAS-Bench-201 cells (White et al. 2020), on hand-made landscapes.

The landscapes are functions of a cell's network (:func:`canonical_arch`), as a benchmark
table read through the search is: isomorphic cells score the same.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import compose_config

from llmatic.nb201.arch import all_archs, canonical_arch
from llmatic.nb201.baselines import local_search, neighbours, random_search

pytestmark = pytest.mark.timeout(120)  # a search that never stops fails, not hangs

CONV = ("nor_conv_3x3",) * 6  # the optimum of both landscapes
POOL = ("avg_pool_3x3",) * 6  # a strict local optimum of the two-peak one


def _distance(a, b) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def smooth(cell) -> float:
    """Minus the edges the cell's network differs from CONV on (max 0 at CONV only)."""
    return -float(_distance(canonical_arch(cell), CONV))


def two_peaks(cell) -> float:
    """CONV is the optimum (10); POOL, every edge different, a lower peak (9.5)."""
    net = canonical_arch(cell)
    return max(10.0 - _distance(net, CONV), 9.5 - _distance(net, POOL))


class Trace(list):
    """A trace that fails once the search makes many more moves than a climb can need."""

    def append(self, event):
        assert len(self) < 5_000, "moving on and on without evaluating: not a hill climb"
        super().append(event)


def test_neighbourhood_is_every_single_edge_change():
    around = neighbours(CONV)
    assert len(around) == len(set(around)) == 24
    assert all(_distance(n, CONV) == 1 for n in around)


def test_reaches_the_optimum_of_a_smooth_landscape_quickly():
    for seed in range(10):
        history = local_search(smooth, 1000, np.random.default_rng(seed))
        first = next(i for i, (_, f) in enumerate(history) if f == 0.0) + 1
        assert first <= 150, (seed, first)  # a few climbs of <= 25 lookups each
        # Random search, for scale: CONV is 1 of 15,625 cells.
        assert max(f for _, f in random_search(smooth, first,
                                               np.random.default_rng(seed))) < 0.0


@pytest.mark.parametrize("budget", [0, 1, 7, 24, 25, 26, 300, 1200])
def test_never_exceeds_the_budget_and_never_pays_twice(budget):
    calls = []

    def evaluate(cell):
        calls.append(cell)
        return two_peaks(cell)

    history = local_search(evaluate, budget, np.random.default_rng(budget))
    assert len(history) == len(calls) == budget  # every paid query, and only those
    assert [c for c, _ in history] == calls
    networks = [canonical_arch(c) for c, _ in history]
    assert len(set(networks)) == len(networks)  # a revisited network was not re-paid


def test_deterministic_for_a_seed():
    one = local_search(two_peaks, 400, np.random.default_rng(7))
    assert one == local_search(two_peaks, 400, np.random.default_rng(7))
    assert one != local_search(two_peaks, 400, np.random.default_rng(8))


def test_evaluates_the_whole_neighbourhood_then_moves_only_to_the_best_better_one():
    for seed in range(5):
        trace = Trace()
        history = local_search(two_peaks, 500, np.random.default_rng(seed), trace=trace)
        # The start and its whole neighbourhood come first (each network once).
        start = trace[0][1]
        first = {canonical_arch(c) for c in (start, *neighbours(start))}
        assert {canonical_arch(c) for c, _ in history[:len(first)]} == first
        for before, (kind, cell, value) in zip(trace, trace[1:], strict=False):
            if kind != "move":
                continue
            assert cell in neighbours(before[1])
            assert value > before[2]  # strictly better than the current cell
            assert value == max(two_peaks(n) for n in neighbours(before[1]))  # the best


def test_restarts_at_a_local_optimum():
    stuck_at_pool = 0
    for seed in range(10):
        trace = Trace()
        history = local_search(two_peaks, 600, np.random.default_rng(seed), trace=trace)
        assert len(history) == 600  # it kept searching after its first local optimum
        assert sum(kind == "start" for kind, _, _ in trace) >= 2
        for before, (kind, _, _) in zip(trace, trace[1:], strict=False):
            if kind == "start":  # only at a local optimum: no neighbour is better
                assert all(two_peaks(n) <= before[2] for n in neighbours(before[1]))
        pool = [i for i, (_, cell, _) in enumerate(trace) if cell == POOL]
        if pool:
            stuck_at_pool += 1
            assert trace[pool[0] + 1][0] == "start"  # climbed to the lower peak: restart
        assert max(f for _, f in history) == 10.0  # and found the optimum after all
    assert stuck_at_pool >= 3  # the test saw the lower peak, not only lucky starts


def test_unknown_cells_rank_below_every_number():
    def partial(cell):
        return None if "avg_pool_3x3" in cell else smooth(cell)

    history = local_search(partial, 300, np.random.default_rng(0))
    assert len(history) == 300 and max(f for _, f in history if f is not None) == 0.0


def test_stops_when_every_network_is_evaluated():
    networks = len({canonical_arch(c) for c in all_archs()})
    history = local_search(lambda cell: 1.0, 20_000, np.random.default_rng(0))
    assert len(history) == networks  # flat: every cell a local optimum, restarts until done


# ------------------------------------------------------------------ in an nb201 run
def test_nb201_runs_local_search_as_a_baseline(tmp_path):
    from llmatic.config import ConfigError, run_search, validate_config
    from llmatic.nb201.table import load_table, write_synthetic_table

    csv = tmp_path / "nb201.csv"
    write_synthetic_table(csv, seed=0)
    base = ("experiment=paper_nb201", f"nb201.table={csv}", "seed=4")
    with pytest.raises(ConfigError, match="choose from random, rea, local"):
        validate_config(compose_config(*base, "nb201.baselines=[random,bohb]"))
    cfg = compose_config(*base, "budget.generations=2", "nb201.baselines=[random,rea,local]")
    nb = run_search(cfg, tmp_path / "run", show_progress=False)["nb201"]
    assert [m["method"] for m in nb["methods"]] == ["llmatic", "random", "rea", "local"]
    local = nb["methods"][3]
    assert local["candidates"] == local["distinct_queries"] == nb["budget"]
    # Seeded by name, like the others: the same as a direct call.
    table = load_table(csv, "cifar10")
    rng = np.random.default_rng([4, 201, zlib.crc32(b"local")])
    direct = local_search(lambda c: table.lookup(c).valid_accuracy, nb["budget"], rng)
    best = max(direct, key=lambda cf: cf[1])[0]
    assert local["valid_accuracy"] == pytest.approx(table.lookup(best).valid_accuracy)
