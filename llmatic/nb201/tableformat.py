"""The benchmark table's data: rows, datasets, the compact CSV's header and its writer.

What every reader and writer of a NAS-Bench-201 table shares: a cell's numbers on one
dataset (:class:`Entry`), the datasets (:data:`DATASETS`), the compact CSV's header
(:data:`CSV_HEADER`) and atomic writer (:func:`write_csv`), and the :class:`TableError` that
every reader raises, with the hints its messages give. Reading a table is
:mod:`llmatic.nb201.table`; the official files are :mod:`llmatic.nb201.official`; the
SYNTHETIC tables are :mod:`llmatic.nb201.synthetic`.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The datasets of a table, as the benchmark names them.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")

#: The compact CSV format's header.
CSV_HEADER: tuple[str, ...] = (
    "arch", "dataset", "valid_accuracy", "test_accuracy", "flops", "params",
)

#: The config key that names the table.
CONFIG_KEY = "nb201.table"

NATS_URL = "https://github.com/D-X-Y/NATS-Bench"
NB201_URL = "https://github.com/D-X-Y/NAS-Bench-201"
EXPORT_HINT = "llmatic-nb201 export PATH --out nb201.csv"
SYNTHETIC_HINT = "llmatic-nb201 synthetic --out nb201_synthetic.csv"

#: The word in a compact CSV's comment line that marks a synthetic (made-up) table.
SYNTHETIC_MARK = "SYNTHETIC"


class TableError(Exception):
    """A benchmark table that cannot be read; the message says what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One cell's benchmark numbers on one dataset.

    Attributes:
        valid_accuracy: Validation accuracy in percent (the search signal).
        test_accuracy: Test accuracy in percent (reported only).
        flops: MFLOPs of the whole network.
        params: Parameters of the whole network in MB (millions).
    """

    valid_accuracy: float
    test_accuracy: float
    flops: float
    params: float


def missing_message(path: Path, key: str | None) -> str:
    """The error for a table or benchmark file that does not exist: where to get one.

    Args:
        path: The missing path.
        key: The config key that named it, or None for a path given on the command line.
    """
    what = f"{key}: benchmark table" if key else "benchmark file"
    return (
        f"{what} {str(path)!r} does not exist. Get the NATS-Bench topology file "
        f"from {NATS_URL} (NATS-tss-v1_0-3ffb9-simple.tar, extract it) or the NAS-Bench-201 "
        f"file from {NB201_URL} (NAS-Bench-201-v1_1-096897.pth), export it once with "
        f"`{EXPORT_HINT}` and set {CONFIG_KEY}=nb201.csv; to try things out without the "
        f"benchmark, write a SYNTHETIC table with `{SYNTHETIC_HINT}`"
    )


def check_dataset(dataset: str) -> None:
    """Raise :class:`TableError` unless ``dataset`` is one of :data:`DATASETS`."""
    if dataset not in DATASETS:
        raise TableError(f"unknown dataset {dataset!r}; choose from {list(DATASETS)}")


def write_csv(out_csv: Path, rows: Iterable[Sequence[str]], comment: str | None = None) -> int:
    """Write the header and ``rows`` to ``out_csv`` atomically; returns the number of rows.

    ``comment`` becomes a ``# ...`` line above the header (the loader skips such lines).
    """
    out_csv = out_csv.expanduser()
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would stick to the table; this one follows the umask.
    tmp = out_csv.with_name(f".{out_csv.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    try:
        with open(tmp, "x", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if comment:
                handle.write(f"# {comment}\n")
            writer.writerow(CSV_HEADER)
            for row in rows:
                writer.writerow(row)
                count += 1
        os.replace(tmp, out_csv)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count

