"""One network, one query: NAS-Bench-201 cells that compute the same function are one class."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import compose_config

from llmatic.nb201.arch import (
    EDGES,
    ZERO_ARCH,
    all_archs,
    arch_string,
    canonical_arch,
    distinct_archs,
    parse_arch_string,
    prune_arch,
)
from llmatic.nb201.baselines import random_cell

E10, E20, E21, E30, E31, E32 = range(len(EDGES))  # edge i -> j is E{j}{i}


def _cell(**edges: str) -> tuple[str, ...]:
    """A cell from its non-``none`` edges, e.g. ``_cell(e10="skip_connect", e31=...)``."""
    ops = ["none"] * len(EDGES)
    for name, op in edges.items():
        ops[{"e10": E10, "e20": E20, "e21": E21, "e30": E30, "e31": E31, "e32": E32}[name]] = op
    return tuple(ops)


def _swap(ops):
    """Nodes 1 and 2 relabelled (only meaningful without an edge 1 -> 2)."""
    return (ops[E20], ops[E10], ops[E21], ops[E30], ops[E32], ops[E31])


def test_the_15625_cells_compute_8765_networks():
    # (a) drop none, (b) drop edges off every input->output path, (c) nodes 1 and 2 may swap
    # when no edge 1 -> 2 is left; every cell with no input->output path is the zero network.
    classes = {canonical_arch(ops) for ops in all_archs()}
    assert distinct_archs() == len(classes) == 8765
    assert ZERO_ARCH in classes
    # Every representative is a fixed point and the first of its class in all_archs order.
    members: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for ops in all_archs():
        members.setdefault(canonical_arch(ops), []).append(ops)
    for rep, cells in members.items():
        assert canonical_arch(rep) == rep
        assert rep == cells[0]


def test_canonical_arch_is_idempotent_and_a_class_invariant():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        ops = random_cell(rng)
        rep = canonical_arch(ops)
        assert canonical_arch(rep) == rep
        assert canonical_arch(prune_arch(ops)) == rep
        pruned = prune_arch(ops)
        if pruned[E21] == "none":  # nodes 1 and 2 may swap (a dead edge 1 -> 2 is gone)
            assert canonical_arch(_swap(pruned)) == rep
            if ops[E21] == "none":
                assert canonical_arch(_swap(ops)) == rep
        # The representative computes the same thing: same live edges, up to the swap.
        live = sorted(op for op in prune_arch(ops) if op != "none")
        assert sorted(op for op in rep if op != "none") == live


def test_swapping_the_intermediate_nodes_is_one_network():
    a = _cell(e10="nor_conv_3x3", e31="skip_connect", e20="avg_pool_3x3", e32="nor_conv_1x1")
    b = _cell(e20="nor_conv_3x3", e32="skip_connect", e10="avg_pool_3x3", e31="nor_conv_1x1")
    assert a != b and canonical_arch(a) == canonical_arch(b)
    # A single branch through node 1 or through node 2 is the same network.
    one = _cell(e10="nor_conv_3x3", e31="nor_conv_1x1", e30="skip_connect")
    two = _cell(e20="nor_conv_3x3", e32="nor_conv_1x1", e30="skip_connect")
    assert canonical_arch(one) == canonical_arch(two)
    # ... but the ops on a path keep their order: conv3 then conv1 is not conv1 then conv3.
    flipped = _cell(e10="nor_conv_1x1", e31="nor_conv_3x3", e30="skip_connect")
    assert canonical_arch(flipped) != canonical_arch(one)


def test_an_edge_from_node_1_to_node_2_fixes_their_order():
    chain = _cell(e10="nor_conv_3x3", e21="nor_conv_3x3", e32="nor_conv_3x3",
                  e20="skip_connect", e31="avg_pool_3x3")
    swapped_labels = _swap(chain)  # would need an edge 2 -> 1: a different network
    assert canonical_arch(chain) == chain
    assert canonical_arch(swapped_labels) != canonical_arch(chain)


def test_dead_branches_do_not_make_a_new_network():
    base = _cell(e10="nor_conv_3x3", e31="nor_conv_3x3")
    # node 2 is fed but never reaches the output: its edges are dead
    dead_end = _cell(e10="nor_conv_3x3", e31="nor_conv_3x3", e20="avg_pool_3x3",
                     e21="nor_conv_1x1")
    # node 2 reaches the output but is never fed from the input: edge 2 -> 3 carries zero
    unfed = _cell(e10="nor_conv_3x3", e31="nor_conv_3x3", e32="nor_conv_1x1")
    for cell in (dead_end, unfed):
        assert prune_arch(cell) == base
        assert canonical_arch(cell) == canonical_arch(base)
        assert arch_string(canonical_arch(cell)) == arch_string(canonical_arch(base))
    # A live branch is a different network.
    live = _cell(e10="nor_conv_3x3", e31="nor_conv_3x3", e20="avg_pool_3x3",
                 e32="nor_conv_1x1")
    assert canonical_arch(live) != canonical_arch(base)


def test_cells_cut_off_from_the_input_are_all_the_zero_network():
    cut = [_cell(), _cell(e10="nor_conv_3x3", e21="skip_connect"),
           _cell(e31="nor_conv_3x3", e32="skip_connect", e21="avg_pool_3x3"),
           parse_arch_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|"
                             "+|none~0|none~1|none~2|")]
    assert {canonical_arch(c) for c in cut} == {ZERO_ARCH}
    assert canonical_arch(_cell(e30="skip_connect")) != ZERO_ARCH


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    from llmatic.nb201.table import write_synthetic_table

    path = tmp_path_factory.mktemp("nb201") / "nb201_synthetic.csv"
    write_synthetic_table(path, seed=0)
    return path


def test_the_search_looks_each_network_up_once(tmp_path, synthetic_csv):
    from llmatic.config import run_search
    from llmatic.rundir import read_history

    cfg = compose_config("experiment=paper_nb201", "llm=rules", f"nb201.table={synthetic_csv}",
                         "budget.generations=3", "budget.candidates_per_generation=20",
                         # the paper's redraw and schedule: repeats happen and are marked
                         "redraw_repeats=0", "schedule=generational")
    summary = run_search(cfg, tmp_path / "run", show_progress=False)
    history = read_history(tmp_path / "run")
    by_id = {r["candidate_id"]: r for r in history}

    def cls(record):
        return canonical_arch(parse_arch_string(record["arch"]))

    dups = [r for r in history if r.get("duplicate_of") is not None]
    assert dups, "the rules mutator repeats networks; each repeat must be marked"
    for rec in dups:
        first = by_id[rec["duplicate_of"]]
        assert first.get("duplicate_of") is None and first["candidate_id"] < rec["candidate_id"]
        assert cls(rec) == cls(first) and rec["fitness"] == first["fitness"]
    # Repeats found only by isomorphism (a different arch string, the same network).
    assert any(rec["arch"] != by_id[rec["duplicate_of"]]["arch"] for rec in dups)
    queried = [cls(r) for r in history if r.get("duplicate_of") is None and r["arch"]]
    assert len(queried) == len(set(queried))  # no network was looked up twice

    nb = summary["nb201"]
    saved = json.loads((tmp_path / "run" / "nb201.json").read_text())
    assert saved["methods"] == nb["methods"]
    llmatic, *baselines = nb["methods"]
    assert llmatic["distinct_queries"] == len(queried) <= llmatic["unique_cells"]
    for m in nb["methods"]:
        assert {"candidates", "unique_cells", "arch", "distinct_queries",
                "distinct_queries_to_top_1_percent"} <= set(m)
        assert 1 <= m["distinct_queries"] <= m["unique_cells"] <= m["candidates"]
        top = m["distinct_queries_to_top_1_percent"]
        assert top is None or 1 <= top <= m["distinct_queries"]
    assert [m["method"] for m in baselines] == ["random", "rea"]
