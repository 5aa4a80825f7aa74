"""The NAS-Bench-201 cell space: operations, edges and the benchmark's arch strings.

A cell is a DAG of 4 nodes; node ``j`` sums ``op(node i)`` over the edges ``i -> j`` with
``i < j``, so a cell has 6 edges and ``5 ** 6 = 15,625`` variants. The benchmark names a cell
with an arch string, nodes 1..3 separated by ``+``, each listing its incoming edges as
``op~source``::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Here a cell is the tuple of its 6 operations in :data:`EDGES` order (the arch string's order).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: The five candidate operations, in the benchmark's order.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: The six edges ``(target, source)`` in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

#: Number of distinct cells.
NUM_ARCHS = len(OPS) ** len(EDGES)

Arch = tuple[str, ...]


class ArchStringError(ValueError):
    """An arch string that does not name a NAS-Bench-201 cell."""


def arch_string(ops: Sequence[str]) -> str:
    """The benchmark's arch string of a cell given as 6 operations in :data:`EDGES` order."""
    ops = tuple(ops)
    if len(ops) != len(EDGES):
        raise ArchStringError(f"a cell has {len(EDGES)} edges, got {len(ops)} operations")
    bad = [op for op in ops if op not in OPS]
    if bad:
        raise ArchStringError(f"unknown operation(s) {bad}; choose from {list(OPS)}")
    nodes = []
    for target in (1, 2, 3):
        parts = [f"{op}~{src}" for (tgt, src), op in zip(EDGES, ops, strict=True)
                 if tgt == target]
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)


def parse_arch_string(text: str) -> Arch:
    """The 6 operations of an arch string (strict: every edge exactly once, known ops)."""
    text = text.strip()
    nodes = text.split("+")
    if len(nodes) != 3:
        raise ArchStringError(
            f"{text!r}: expected 3 nodes separated by '+', e.g. "
            "'|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|'"
        )
    found: dict[tuple[int, int], str] = {}
    for target, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ArchStringError(f"{text!r}: node {target} must be written as |op~i|...|")
        for part in node.strip("|").split("|"):
            op, sep, src = part.partition("~")
            if not sep or not src.isdigit():
                raise ArchStringError(f"{text!r}: {part!r} is not 'op~source'")
            edge = (target, int(src))
            if edge not in EDGES:
                raise ArchStringError(f"{text!r}: no edge from node {src} to node {target}")
            if edge in found:
                raise ArchStringError(f"{text!r}: edge {src}->{target} appears twice")
            if op not in OPS:
                raise ArchStringError(
                    f"{text!r}: unknown operation {op!r}; choose from {list(OPS)}"
                )
            found[edge] = op
    missing = [f"{s}->{t}" for t, s in EDGES if (t, s) not in found]
    if missing:
        raise ArchStringError(f"{text!r}: missing edge(s) {missing}")
    return tuple(found[e] for e in EDGES)


def all_archs() -> Iterator[Arch]:
    """Every cell, in a fixed order (the first edge varies slowest)."""
    return itertools.product(OPS, repeat=len(EDGES))


def arch_index(ops: Sequence[str]) -> int:
    """The position of a cell in :func:`all_archs` (0 .. 15,624)."""
    index = 0
    for op in ops:
        index = index * len(OPS) + OPS.index(op)
    return index


def canonical_strings() -> dict[str, Arch]:
    """Every cell's canonical arch string -> its ops, in :func:`all_archs` order.

    Built once (~10 ms) and shared: callers must not modify the returned dict.
    """
    global _CANONICAL
    if _CANONICAL is None:
        _CANONICAL = {_ARCH_TEMPLATE.format(*ops): ops for ops in all_archs()}
    return _CANONICAL


# The benchmark's arch string as a format template over the 6 ops in EDGES order.
_ARCH_TEMPLATE = "+".join(
    "|" + "|".join(f"{{}}~{src}" for tgt, src in EDGES if tgt == target) + "|"
    for target in (1, 2, 3)
)
_CANONICAL: dict[str, Arch] | None = None


# -- one network, one class: pruning and isomorphism ------------------------------------------
# Swapping the intermediate nodes 1 and 2 maps edge k of EDGES to edge _SWAP[k]
# (0->1 <-> 0->2, 1->3 <-> 2->3; 0->3 stays). Edge 1->2 (index 2) has no image: a cell that
# keeps it fixes the order of nodes 1 and 2.
_SWAP: tuple[int, ...] = (1, 0, 2, 3, 5, 4)
_EDGE_1_2 = EDGES.index((2, 1))
#: The canonical form of every cell whose output does not depend on its input (all zero).
ZERO_ARCH: Arch = ("none",) * len(EDGES)


def prune_arch(ops: Sequence[str]) -> Arch:
    """The cell with its edges off every input-to-output path written as ``none``.

    An edge ``i -> j`` stays when node ``i`` is reached from the input (node 0) and node ``j``
    reaches the output (node 3); with no such path the output is zero: :data:`ZERO_ARCH`.
    """
    ops = tuple(ops)
    live = [(tgt, src) for (tgt, src), op in zip(EDGES, ops, strict=True) if op != "none"]
    forward = {0}  # reached from the input (edges are listed by target, sources first)
    for tgt, src in sorted(live, key=lambda e: (e[1], e[0])):
        if src in forward:
            forward.add(tgt)
    backward = {3}  # reaching the output
    for tgt, src in sorted(live, key=lambda e: (-e[0], -e[1])):
        if tgt in backward:
            backward.add(src)
    if 3 not in forward:
        return ZERO_ARCH
    return tuple(op if op != "none" and src in forward and tgt in backward else "none"
                 for (tgt, src), op in zip(EDGES, ops, strict=True))


def canonical_arch(ops: Sequence[str]) -> Arch:
    """The representative of a cell's class of cells that compute the same function.

    Two cells are one network when they are equal after (a) dropping ``none`` edges,
    (b) dropping edges off every input-to-output path (:func:`prune_arch`) and (c) relabelling
    the intermediate nodes 1 and 2, which may swap only when no edge 1 -> 2 is left. The
    representative is the pruned form that comes first in :func:`all_archs` order (pruned
    edges read ``none``); every cell with no input-to-output path is :data:`ZERO_ARCH`.
    """
    pruned = prune_arch(ops)
    if pruned[_EDGE_1_2] != "none":
        return pruned
    swapped = tuple(pruned[k] for k in _SWAP)
    return min(pruned, swapped, key=arch_index)


def canonical_key(ops: Sequence[str]) -> str:
    """The arch string of :func:`canonical_arch` (one string per network)."""
    return arch_string(canonical_arch(ops))


def distinct_archs() -> int:
    """How many networks the 15,625 cells compute (classes of :func:`canonical_arch`)."""
    return len({canonical_arch(ops) for ops in all_archs()})


def first_of_each_network(evaluated: Iterable[tuple[Arch | None, T]]) -> Iterator[tuple[Arch, T]]:
    """``(cell, value)`` pairs in order, keeping only the first cell of each network.

    Isomorphic cells (same :func:`canonical_arch`) are one network, so a later one is not a
    new query; ``None`` cells (failed candidates) are left out.
    """
    seen: set[Arch] = set()
    for cell, value in evaluated:
        if cell is None:
            continue
        network = canonical_arch(cell)
        if network not in seen:
            seen.add(network)
            yield cell, value
