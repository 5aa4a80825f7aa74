"""NAS-Bench-201 benchmark tables: the compact CSV, loading, and fast lookups.

A search evaluates a cell by looking it up in a :class:`BenchmarkTable` for one dataset. The
fitness is the benchmark's validation accuracy after the 200-epoch schedule; the test accuracy
is only reported at the end (the paper's Table 1: CIFAR-10 / CIFAR-100 / ImageNet16-120, optimum
94.37 / 73.51 / 47.31).

Formats read by :func:`load_table` (chosen from the path):

* ``*.csv`` -- the compact table (:data:`CSV_HEADER`): one row per (arch, dataset), accuracies in
  percent, flops in MFLOPs and params in MB, exactly as the benchmark's API reports them. Make it
  once with ``llmatic-nb201 export PATH --out nb201.csv`` (minutes) and load it in well under a
  second; ``llmatic-nb201 synthetic --out nb201_synthetic.csv`` writes a SYNTHETIC one. Comment
  lines (``# ...``) may precede the header; one containing :data:`SYNTHETIC_MARK` marks a
  synthetic table.
* the official NATS-Bench topology benchmark (a ``NATS-tss-v1_0-3ffb9-simple`` directory or a
  ``*.pickle.pbz2`` file) or the original NAS-Bench-201 ``*.pth``: read through ``nats_bench``
  by :mod:`llmatic.nb201.official` (minutes and gigabytes: export the compact CSV once; the
  files are pickles, so only load files from the benchmark's authors).

The shared pieces (:class:`Entry`, :class:`TableError`, :data:`DATASETS`, the CSV header) live
in :mod:`llmatic.nb201.tableformat`, the official files in :mod:`llmatic.nb201.official` and the
SYNTHETIC tables in :mod:`llmatic.nb201.synthetic`; this module re-exports the names that
callers import from it.
"""

from __future__ import annotations

import bisect
import collections
import csv
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from llmatic.nb201.arch import (
    NUM_ARCHS,
    Arch,
    ArchStringError,
    arch_index,
    arch_string,
    canonical_strings,
    parse_arch_string,
)
from llmatic.nb201.official import export_table, read_official
from llmatic.nb201.synthetic import write_synthetic_table
from llmatic.nb201.tableformat import (
    CONFIG_KEY,
    CSV_HEADER,
    DATASETS,
    EXPORT_HINT,
    NATS_URL,
    NB201_URL,
    SYNTHETIC_HINT,
    SYNTHETIC_MARK,
    Entry,
    TableError,
    check_dataset,
    missing_message,
)

__all__ = [
    "CONFIG_KEY",
    "CSV_HEADER",
    "DATASETS",
    "EXPORT_HINT",
    "NATS_URL",
    "NB201_URL",
    "SYNTHETIC_HINT",
    "SYNTHETIC_MARK",
    "BenchmarkTable",
    "Entry",
    "TableError",
    "export_table",
    "load_table",
    "write_synthetic_table",
]

log = logging.getLogger(__name__)


class BenchmarkTable:
    """The benchmark numbers of (some or all) cells on one dataset, for fast lookups.

    Attributes:
        dataset: The dataset, one of :data:`DATASETS`.
        source: The file the table was read from.
    """

    def __init__(self, dataset: str, source: str | os.PathLike[str],
                 entries: dict[Arch, Entry], *, synthetic: bool = False) -> None:
        """Wrap ``entries`` (cell ops tuple -> :class:`Entry`); raises TableError if empty."""
        if not entries:
            raise TableError(f"{source}: no cells for dataset {dataset!r}")
        self.dataset = dataset
        #: Made by ``llmatic-nb201 synthetic``: made-up numbers, never to be reported.
        self.synthetic = bool(synthetic)
        self.source = Path(source)
        self._entries = dict(entries)
        self._canonical = canonical_strings()
        self._sorted_valid: list[float] | None = None

    def __len__(self) -> int:
        """The number of cells in the table."""
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"BenchmarkTable(dataset={self.dataset!r}, cells={len(self)}, "
                f"source={str(self.source)!r})")

    @property
    def complete(self) -> bool:
        """Whether the table covers all 15,625 cells."""
        return len(self._entries) == NUM_ARCHS

    def lookup(self, ops_or_arch_string: Sequence[str] | str) -> Entry | None:
        """A cell's numbers, or None when the cell is not in the table.

        Args:
            ops_or_arch_string: The cell as its 6 operations (in ``EDGES`` order) or as an
                arch string.

        Returns:
            The cell's :class:`Entry`, or None if the table does not have the cell.

        Raises:
            ArchStringError: If the argument does not name a NAS-Bench-201 cell.
        """
        if isinstance(ops_or_arch_string, str):
            ops = self._canonical.get(ops_or_arch_string)
            if ops is None:
                ops = parse_arch_string(ops_or_arch_string)
            return self._entries.get(ops)
        ops = ops_or_arch_string if isinstance(ops_or_arch_string, tuple) else tuple(
            ops_or_arch_string)
        entry = self._entries.get(ops)
        if entry is None:
            arch_string(ops)  # raises ArchStringError for something that is not a cell
        return entry

    def items(self) -> Iterator[tuple[Arch, Entry]]:
        """The table's (ops, entry) pairs in :func:`~llmatic.nb201.arch.all_archs` order."""
        return iter(sorted(self._entries.items(), key=lambda item: arch_index(item[0])))

    def valid_percentile(self, valid_accuracy: float) -> float:
        """The fraction of the table's cells with a strictly higher validation accuracy.

        0.0 means nothing in the table is better; "top 1%" means a value below 0.01.
        """
        if self._sorted_valid is None:
            self._sorted_valid = sorted(e.valid_accuracy for e in self._entries.values())
        higher = len(self._sorted_valid) - bisect.bisect_right(self._sorted_valid,
                                                               valid_accuracy)
        return higher / len(self._sorted_valid)

    def best_by_valid(self) -> tuple[str, Entry]:
        """The cell with the highest validation accuracy (ties: first in ``all_archs`` order)."""
        ops, entry = min(self._entries.items(),
                         key=lambda item: (-item[1].valid_accuracy, arch_index(item[0])))
        return arch_string(ops), entry

    def optimum_test(self) -> float:
        """The highest test accuracy of any cell in the table."""
        return max(e.test_accuracy for e in self._entries.values())


def load_table(path: str | os.PathLike[str], dataset: str) -> BenchmarkTable:
    """Read the table of ``dataset`` from a compact CSV or an official benchmark file.

    The format follows from the path: ``*.csv`` is the compact format; a directory is the
    NATS-Bench fast-mode archive (``NATS-tss-v1_0-3ffb9-simple``); ``*.pickle.pbz2`` is the
    NATS-Bench full file; ``*.pth`` is the NAS-Bench-201 file. Official files are read through
    ``nats_bench`` (see :mod:`llmatic.nb201.official` for the protocol), which is slow: export
    once.

    Args:
        path: The table's path (the config key ``nb201.table``).
        dataset: One of :data:`DATASETS`.

    Returns:
        The table.

    Raises:
        TableError: If the file is missing, of an unknown kind, or malformed.
    """
    check_dataset(dataset)
    path = Path(path).expanduser()
    if not path.exists():
        raise TableError(missing_message(path, CONFIG_KEY))
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_csv(path, dataset)
    log.warning("reading the official benchmark %s directly takes minutes; export it once with "
                "`llmatic-nb201 export %s --out nb201.csv` and set %s=nb201.csv", path, path,
                CONFIG_KEY)
    tables = read_official(path, (dataset,), progress=False)
    return BenchmarkTable(dataset, path, tables[dataset])


def _bad_value(row: Sequence[str]) -> str:
    """Which number of a CSV row is out of range or not a number, and why."""
    for field, raw in zip(CSV_HEADER[2:], row[2:], strict=True):
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        accuracy = field.endswith("accuracy")
        if not math.isfinite(value) or value < 0 or (accuracy and value > 100):
            unit = "a percentage in [0, 100]" if accuracy else "a non-negative number"
            return f"{field} must be {unit}, got {raw!r}"
    return "bad number"  # pragma: no cover - only called for a bad row


def _load_csv(path: Path, dataset: str) -> BenchmarkTable:
    """Read and validate the compact CSV; the whole file is checked, one dataset is kept."""
    canonical = canonical_strings()
    parsed: dict[str, Arch] = {}
    first_line: dict[tuple[str, Arch], int] = {}
    counts: collections.Counter[str] = collections.Counter()
    entries: dict[Arch, Entry] = {}
    fix = f"rewrite it with `{EXPORT_HINT}` (or `{SYNTHETIC_HINT}` for a SYNTHETIC table)"
    width = len(CSV_HEADER)
    inf = math.inf
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise TableError(f"{CONFIG_KEY}: cannot read {path}: {exc}") from exc
    with handle:
        # Comment lines may precede the header; a synthetic table says so in one of them.
        skipped, synthetic = 0, False
        while True:
            mark = handle.tell()
            line = handle.readline()
            if not line.startswith("#"):
                handle.seek(mark)
                break
            skipped += 1
            synthetic = synthetic or SYNTHETIC_MARK in line
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise TableError(f"{path} is empty; expected the header "
                                 f"{','.join(CSV_HEADER)}; {fix}")
            if tuple(header) != CSV_HEADER:
                raise TableError(f"{path}: line {skipped + 1}: expected the header "
                                 f"{','.join(CSV_HEADER)}, "
                                 f"got {','.join(header)!r}; {fix}")
            for row in reader:
                line = reader.line_num + skipped
                if len(row) != width:
                    if not row:
                        continue
                    raise TableError(f"{path}: line {line}: expected {width} fields "
                                     f"({','.join(CSV_HEADER)}), got {len(row)}")
                text, name, valid, test, flops, params = row
                if name not in DATASETS:
                    raise TableError(f"{path}: line {line}: unknown dataset "
                                     f"{name!r}; expected one of {list(DATASETS)}")
                ops = canonical.get(text) or parsed.get(text)
                if ops is None:
                    try:
                        ops = parse_arch_string(text)
                    except ArchStringError as exc:
                        raise TableError(f"{path}: line {line}: bad arch string: "
                                         f"{exc}") from exc
                    parsed[text] = ops
                key = (name, ops)
                if key in first_line:
                    raise TableError(f"{path}: line {line}: duplicate row for {name} "
                                     f"{arch_string(ops)} (first at line {first_line[key]})")
                first_line[key] = line
                try:
                    v, t, f, p = float(valid), float(test), float(flops), float(params)
                    ok = 0 <= v <= 100 and 0 <= t <= 100 and 0 <= f < inf and 0 <= p < inf
                except ValueError:
                    ok = False
                if not ok:
                    raise TableError(f"{path}: line {line}: {_bad_value(row)}")
                counts[name] += 1
                if name == dataset:
                    entries[ops] = Entry(v, t, f, p)
        except csv.Error as exc:
            raise TableError(f"{path}: line {line}: {exc}; {fix}") from exc
        except UnicodeDecodeError as exc:
            raise TableError(f"{path}: not a UTF-8 text file ({exc}); {fix}") from exc
    if not entries:
        have = [d for d in DATASETS if counts[d]]
        raise TableError(
            f"{path} has no rows for dataset {dataset!r}; it has "
            f"{', '.join(f'{d} ({counts[d]} cells)' for d in have) if have else 'no rows'}; "
            f"choose one of those or export the dataset with `{EXPORT_HINT}`")
    return BenchmarkTable(dataset, path, entries, synthetic=synthetic)

