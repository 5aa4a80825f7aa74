"""SYNTHETIC NAS-Bench-201-like tables, for trying things out: NOT benchmark data.

:func:`write_synthetic_table` writes a compact CSV (the format of
:mod:`llmatic.nb201.table`) over all 15,625 cells x the three datasets, its numbers made up
by a simple model of the benchmark: a quality score per cell (``prior``: more and bigger
convolutions on live input->output paths score higher; ``random``: edge operations and their
pairwise interactions of random value), mapped onto each dataset's accuracy range, plus
seeded per-cell noise; flops and params follow the benchmark's conv-count costs. The file's
first line says it is SYNTHETIC, and :func:`~llmatic.nb201.table.load_table` marks the
table so.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from llmatic.nb201.arch import EDGES, Arch, canonical_strings
from llmatic.nb201.tableformat import DATASETS, SYNTHETIC_MARK, write_csv

# Input->output paths of the cell, as indices into EDGES: 0->3, 0->1->3, 0->2->3, 0->1->2->3.
_PATHS: tuple[tuple[int, ...], ...] = tuple(
    tuple(EDGES.index(edge) for edge in path)
    for path in (((3, 0),), ((1, 0), (3, 1)), ((2, 0), (3, 2)), ((1, 0), (2, 1), (3, 2)))
)
# How much an operation on a live path adds to the cell's capacity.
_CAPACITY = {"none": 0.0, "skip_connect": 0.08, "nor_conv_1x1": 0.6, "nor_conv_3x3": 1.0,
             "avg_pool_3x3": 0.25}
_CONVS = ("nor_conv_1x1", "nor_conv_3x3")
# dataset: (chance, valid max, test max, floor of a connected cell (fraction of the range),
#           valid noise sd) -- ranges roughly those of the real benchmark.
_SYNTH_DATASETS = {
    "cifar10": (10.0, 91.6, 94.4, 0.60, 0.15),
    "cifar100": (1.0, 73.5, 73.5, 0.45, 0.30),
    "ImageNet16-120": (100.0 / 120.0, 46.7, 47.3, 0.40, 0.30),
}
_TEST_NOISE_SD = 0.2


def _synthetic_quality(ops: Arch) -> float:
    """A SYNTHETIC, NAS-Bench-201-like quality score (0 = output cut off from the input).

    Capacity: the operations on input->output paths without ``none`` (3x3 conv > 1x1 conv >
    pool > skip), saturating; depth: the most conv capacity on one live path; a skip connection
    on a live path helps a bit once there is a deep conv path, most as the 0->3 residual.
    """
    alive = [path for path in _PATHS if all(ops[e] != "none" for e in path)]
    if not alive:
        return 0.0
    live_edges = {e for path in alive for e in path}
    capacity = sum(_CAPACITY[ops[e]] for e in live_edges)
    depth = max(sum(_CAPACITY[ops[e]] for e in path if ops[e] in _CONVS) for path in alive)
    residual = 0.0
    if depth >= 1.5:
        if ops[_PATHS[0][0]] == "skip_connect":
            residual = 0.04
        elif any(ops[e] == "skip_connect" for e in live_edges):
            residual = 0.02
    return 1.0 - math.exp(-0.75 * capacity) + 0.12 * min(depth, 3.0) / 3.0 + residual


def _hash_normals(seed: int, dataset: str, text: str) -> tuple[float, float]:
    """Two standard normals from a hash of (seed, dataset, cell): per-cell, order-independent."""
    digest = hashlib.blake2b(f"{seed}|{dataset}|{text}".encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64
    u2 = (int.from_bytes(digest[8:], "big") + 0.5) / 2.0**64
    radius = math.sqrt(-2.0 * math.log(u1))
    return radius * math.cos(2.0 * math.pi * u2), radius * math.sin(2.0 * math.pi * u2)


def _synthetic_costs(ops: Arch, dataset: str) -> tuple[float, float]:
    """NAS-Bench-201-like (MFLOPs, MB) from the conv counts (every op counts, live or not).

    The network has 5 cells at each of 16, 32 and 64 channels; a 3x3 conv edge adds 35.39
    MFLOPs and 0.24304 MB over all 15 cells on 32x32 inputs, a 1x1 conv about a ninth.
    """
    n3 = ops.count("nor_conv_3x3")
    n1 = ops.count("nor_conv_1x1")
    flops = 7.78 + 35.39 * n3 + 3.93 * n1
    params = 0.0734 + 0.24304 * n3 + 0.028 * n1
    if dataset == "cifar100":  # a 64 -> 100 classifier instead of 64 -> 10
        flops, params = flops + 0.00576, params + 0.00585
    elif dataset == "ImageNet16-120":  # 16x16 inputs, a 64 -> 120 classifier
        flops, params = flops / 4.0 + 0.00704, params + 0.00715
    return flops, params


def _random_qualities(cells: Sequence[tuple[Arch, str]], key: int) -> list[float]:
    """A landscape no prior guesses: random edge-operation values and pairwise interactions.

    From ``key``: a value per (edge, operation) and per pair of (edge, operation)s, both
    standard normal (the pairs scaled so each part has similar spread); a cell scores their
    sum, mapped onto (0, 1]. A cell cut off from its input still scores 0.
    """
    import numpy as np

    rng = np.random.default_rng(int(key))
    n_edges, op_index = 6, {op: i for i, op in enumerate(_OP_ORDER)}
    single = rng.normal(size=(n_edges, len(_OP_ORDER)))
    pairs = rng.normal(size=(n_edges, len(_OP_ORDER), n_edges, len(_OP_ORDER))) / math.sqrt(7.5)
    raw = []
    for ops, _ in cells:
        idx = [op_index[o] for o in ops]
        s = sum(single[e, idx[e]] for e in range(n_edges))
        s += sum(pairs[e, idx[e], f, idx[f]] for e in range(n_edges) for f in range(e + 1, n_edges))
        raw.append(float(s))
    lo, hi = min(raw), max(raw)
    alive = [_synthetic_quality(ops) > 0.0 for ops, _ in cells]
    return [0.01 + 0.99 * (r - lo) / (hi - lo) if a else 0.0
            for r, a in zip(raw, alive, strict=True)]


#: Operation order of the random landscape's value tables.
_OP_ORDER = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def write_synthetic_table(out_csv: str | os.PathLike[str], seed: int = 0, *,
                          landscape: str = "prior", key: int = 0) -> int:
    """Write a SYNTHETIC, NAS-Bench-201-like table: NOT benchmark data, for trying things out.

    All 15,625 cells x :data:`DATASETS`, deterministic in ``seed`` (same bytes every time). A
    cell whose output is cut off from its input (every path has a ``none``) gets chance
    accuracy; otherwise the accuracy grows, saturating, with the number and kind of operations on
    the live input->output paths (3x3 conv > 1x1 conv > pool > skip), with deeper conv paths and
    with skips next to them, between a per-dataset floor and roughly the real benchmark's best
    (valid / test: cifar10 91.6 / 94.4, cifar100 73.5 / 73.5, ImageNet16-120 46.7 / 47.3). A
    hash of (seed, dataset, cell) adds small noise (breaking ties); test = valid (shifted to the
    test range) + N(0, 0.2). flops/params follow the benchmark's conv-count costs.

    Args:
        out_csv: The CSV to write (atomically).
        seed: The noise seed.
        landscape: ``prior`` (the model above: "more 3x3 convolutions" wins, which a
            mutator's prior finds at once) or ``random`` (edge operations and their pairwise
            interactions of random value from ``key``: an optimum no prior guesses).
        key: The random landscape's seed.

    Returns:
        The number of rows written (46,875).
    """
    if landscape not in ("prior", "random"):
        raise ValueError(f"landscape must be prior or random, got {landscape!r}")
    cells = [(ops, text) for text, ops in canonical_strings().items()]  # all_archs order
    quality = ([_synthetic_quality(ops) for ops, _ in cells] if landscape == "prior"
               else _random_qualities(cells, key))
    top = max(quality)

    def rows() -> Iterator[tuple[str, ...]]:
        # SYNTHETIC numbers, not benchmark data.
        for dataset in DATASETS:
            chance, valid_max, test_max, floor, sd = _SYNTH_DATASETS[dataset]
            for (ops, text), q in zip(cells, quality, strict=True):
                if q <= 0.0:
                    valid = test = chance
                else:
                    level = floor + (1.0 - floor) * q / top
                    z_valid, z_test = _hash_normals(seed, dataset, text)
                    noise = sd * z_valid
                    valid = chance + (valid_max - chance) * level + noise
                    test = chance + (test_max - chance) * level + noise + _TEST_NOISE_SD * z_test
                    valid = min(max(valid, chance), 100.0)
                    test = min(max(test, chance), 100.0)
                flops, params = _synthetic_costs(ops, dataset)
                yield (text, dataset, f"{valid:.4f}", f"{test:.4f}", f"{flops:.4f}",
                       f"{params:.6f}")

    return write_csv(Path(out_csv), rows(), comment=(
        f"{SYNTHETIC_MARK} NAS-Bench-201-like table written by `llmatic-nb201 synthetic "
        f"--seed {seed} --landscape {landscape} --key {key}`: made-up numbers for trying "
        "things out, NOT benchmark data"))

