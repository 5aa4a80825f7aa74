"""NAS-Bench-201 benchmark tables: load, look up, export and (for trying things out) synthesise.

A search evaluates a cell by looking it up in a :class:`BenchmarkTable` for one dataset. The
fitness is the benchmark's validation accuracy after the 200-epoch schedule; the test accuracy
is only reported at the end (the paper's Table 1: CIFAR-10 / CIFAR-100 / ImageNet16-120, optimum
94.37 / 73.51 / 47.31).

Formats read by :func:`load_table` (chosen from the path):

* ``*.csv`` -- the compact table (:data:`CSV_HEADER`): one row per (arch, dataset), accuracies in
  percent, flops in MFLOPs and params in MB, exactly as the benchmark's API reports them. Make it
  once with ``llmatic-nb201 export PATH --out nb201.csv`` (minutes) and load it in well under a
  second; ``llmatic-nb201 synthetic --out nb201_synthetic.csv`` writes a SYNTHETIC one.
* the official NATS-Bench topology benchmark (https://github.com/D-X-Y/NATS-Bench): the
  directory ``NATS-tss-v1_0-3ffb9-simple`` (extracted from ``NATS-tss-v1_0-3ffb9-simple.tar``;
  read in the API's fast mode, one file per cell) or the single file
  ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` (full mode);
* the original NAS-Bench-201 file (https://github.com/D-X-Y/NAS-Bench-201):
  ``NAS-Bench-201-v1_0-e61699.pth`` or ``NAS-Bench-201-v1_1-096897.pth``.

The official files are read through the ``nats_bench`` API. Reading them takes minutes and
gigabytes, so export the compact CSV once rather than pointing a search at them. They are
pickles (bz2-compressed, or saved with ``torch.save`` and read with
``torch.load(..., weights_only=False)``): loading one runs code from the file, so only load
files you downloaded from the benchmark's authors yourself.

Protocol for the official files -- the common NAS-Bench-201 protocol, the one the API itself
uses: ``nats_bench.api_utils.remap_dataset_set_names`` maps CIFAR-10 "valid" to
``("cifar10-valid", "x-valid")`` and "test" to ``("cifar10", "ori-test")``, and CIFAR-100 /
ImageNet16-120 "valid" / "test" to ``x-valid`` / ``x-test``; ``simulate_train_eval`` searches
CIFAR-10 on ``cifar10-valid``. Every number is from the 200-epoch schedule (``hp="200"``) and
averaged over the benchmark's seeds (``is_random=False``); ``i`` is the file's index of the cell:

* cifar10: ``valid_accuracy`` = ``get_more_info(i, "cifar10-valid", hp="200",
  is_random=False)["valid-accuracy"]`` (trained on the train split, evaluated on the held-out
  valid split); ``test_accuracy`` = ``get_more_info(i, "cifar10", ...)["test-accuracy"]``
  (trained on train+valid, evaluated on the CIFAR-10 test set, ``ori-test``);
* cifar100, ImageNet16-120: ``valid_accuracy`` / ``test_accuracy`` = ``get_more_info(i, ds,
  ...)["valid-accuracy"]`` / ``["test-accuracy"]``: the ``x-valid`` / ``x-test`` halves of the
  original test set (not ``ori-test``, which is both halves);
* ``flops`` / ``params`` = ``get_cost_info(i, ds, hp="200")["flops"]`` / ``["params"]`` (MFLOPs,
  MB) with ``ds`` the dataset itself (``cifar10`` for CIFAR-10), read with the method
  ``get_cost_info`` calls (``ArchResults.get_compute_costs``) but without its deep copy of the
  cell's results (15 ms a call).

The NAS-Bench-201 ``.pth`` stores the 200-epoch results under ``"full"`` and the 12-epoch ones
under ``"less"`` (its own API, ``nas_201_api.NASBench201API``, maps them to ``hp="200"`` /
``"12"``); they are read the same way. Cells are matched by arch string, never by the file's
index. With the real benchmark the optima are 91.61 / 94.37 (CIFAR-10 valid / test), 73.49 /
73.51 (CIFAR-100) and 46.77 / 47.31 (ImageNet16-120).
"""

from __future__ import annotations

import bisect
import collections
import csv
import hashlib
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmatic.nb201.arch import (
    EDGES,
    NUM_ARCHS,
    Arch,
    ArchStringError,
    all_archs,
    arch_index,
    arch_string,
    parse_arch_string,
)

log = logging.getLogger(__name__)

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

_HP = "200"  # the 200-epoch schedule
_PICKLE_EXT = ".pickle.pbz2"


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
        self._canonical = _canonical_strings()
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


# --------------------------------------------------------------------------------------------
# Loading


def _missing_message(path: Path, key: str | None) -> str:
    what = f"{key}: benchmark table" if key else "benchmark file"
    return (
        f"{what} {str(path)!r} does not exist. Get the NATS-Bench topology file "
        f"from {NATS_URL} (NATS-tss-v1_0-3ffb9-simple.tar, extract it) or the NAS-Bench-201 "
        f"file from {NB201_URL} (NAS-Bench-201-v1_1-096897.pth), export it once with "
        f"`{EXPORT_HINT}` and set {CONFIG_KEY}=nb201.csv; to try things out without the "
        f"benchmark, write a SYNTHETIC table with `{SYNTHETIC_HINT}`"
    )


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise TableError(f"unknown dataset {dataset!r}; choose from {list(DATASETS)}")


def load_table(path: str | os.PathLike[str], dataset: str) -> BenchmarkTable:
    """Read the table of ``dataset`` from a compact CSV or an official benchmark file.

    The format follows from the path: ``*.csv`` is the compact format; a directory is the
    NATS-Bench fast-mode archive (``NATS-tss-v1_0-3ffb9-simple``); ``*.pickle.pbz2`` is the
    NATS-Bench full file; ``*.pth`` is the NAS-Bench-201 file. Official files are read through
    ``nats_bench`` (see the module docstring for the protocol), which is slow: export once.

    Args:
        path: The table's path (the config key ``nb201.table``).
        dataset: One of :data:`DATASETS`.

    Returns:
        The table.

    Raises:
        TableError: If the file is missing, of an unknown kind, or malformed.
    """
    _check_dataset(dataset)
    path = Path(path).expanduser()
    if not path.exists():
        raise TableError(_missing_message(path, CONFIG_KEY))
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_csv(path, dataset)
    log.warning("reading the official benchmark %s directly takes minutes; export it once with "
                "`llmatic-nb201 export %s --out nb201.csv` and set %s=nb201.csv", path, path,
                CONFIG_KEY)
    tables = _read_official(path, (dataset,), progress=False)
    return BenchmarkTable(dataset, path, tables[dataset])


def _canonical_strings() -> dict[str, Arch]:
    """Every cell's canonical arch string -> its ops (built once, ~10 ms)."""
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
    canonical = _canonical_strings()
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


# --------------------------------------------------------------------------------------------
# Official files (through the nats_bench API)


def _official_kind(path: Path) -> str:
    """'fast' (NATS directory), 'full' (NATS .pickle.pbz2) or 'pth' (NAS-Bench-201)."""
    name = path.name.lower()
    if path.is_dir():
        if (path / f"meta{_PICKLE_EXT}").is_file():
            return "fast"
        raise TableError(
            f"{path} is a directory without meta{_PICKLE_EXT}: expected the NATS-Bench topology "
            f"archive NATS-tss-v1_0-3ffb9-simple (from {NATS_URL}), a compact *.csv, a "
            "*.pickle.pbz2 or a NAS-Bench-201 *.pth file")
    if name.endswith(".pbz2"):
        return "full"
    if name.endswith(".pth"):
        return "pth"
    if name.endswith(".tar"):
        raise TableError(f"{path} is an archive: extract it first (tar xf {path}) and pass the "
                         "extracted directory, e.g. NATS-tss-v1_0-3ffb9-simple")
    raise TableError(
        f"{path}: unknown table format; expected a compact *.csv (`{EXPORT_HINT}`), the "
        f"NATS-Bench topology directory NATS-tss-v1_0-3ffb9-simple or *.pickle.pbz2 file "
        f"({NATS_URL}), or a NAS-Bench-201 *.pth file ({NB201_URL})")


def _open_official(path: Path) -> Any:
    """The ``nats_bench`` topology API over an official file (trusted: it unpickles)."""
    from nats_bench.api_topology import NATStopology

    kind = _official_kind(path)
    try:
        if kind == "fast":
            return NATStopology(str(path), fast_mode=True, verbose=False)
        if kind == "full":
            return NATStopology(str(path), fast_mode=False, verbose=False)
        return _open_nb201_pth(path)
    except TableError:
        raise
    except Exception as exc:  # the API raises anything for a bad file
        raise TableError(f"{path}: cannot read it as a NATS-Bench / NAS-Bench-201 topology file "
                         f"({type(exc).__name__}: {exc})") from exc


def _open_nb201_pth(path: Path) -> Any:
    """The NAS-Bench-201 ``.pth`` in the NATS-Bench topology API ('full' -> hp '200').

    The file is a torch-saved dict ``{"meta_archs", "arch2infos", "evaluated_indexes"}`` whose
    ``arch2infos[i]`` is ``{"less": ArchResults state, "full": ArchResults state}``. The API is
    built with an empty skeleton and filled with the ``full`` results, as its constructor does,
    without deep-copying the (multi-gigabyte) dict.
    """
    import torch
    from nats_bench.api_topology import NATStopology
    from nats_bench.api_utils import ArchResults

    # weights_only=False unpickles arbitrary objects: the file must come from a trusted source.
    data = torch.load(str(path), map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or not {"meta_archs", "arch2infos",
                                          "evaluated_indexes"} <= set(data):
        raise TableError(f"{path}: not a NAS-Bench-201 file (expected a dict with meta_archs, "
                         f"arch2infos and evaluated_indexes); get it from {NB201_URL}")
    api = NATStopology({"meta_archs": data["meta_archs"], "arch2infos": {},
                        "evaluated_indexes": []}, fast_mode=False, verbose=False)
    arch2infos = data["arch2infos"]
    for index in sorted(arch2infos):
        infos = arch2infos.pop(index)
        hp2results = collections.OrderedDict()
        for key, results in infos.items():
            hp = {"full": _HP, "less": "12"}.get(str(key), str(key))
            hp2results[hp] = ArchResults.create_from_state_dict(results)
        api.arch2infos_dict[index] = hp2results
        api._avaliable_hps.update(hp2results)  # as the API's constructor does
    api.evaluated_indexes = set(data["evaluated_indexes"])
    return api


def _official_entry(api: Any, index: int, dataset: str) -> Entry:
    """One cell's entry by the documented protocol (hp 200, mean over seeds)."""
    if dataset == "cifar10":
        valid = api.get_more_info(index, "cifar10-valid", hp=_HP, is_random=False)
        test = api.get_more_info(index, "cifar10", hp=_HP, is_random=False)
    else:
        valid = test = api.get_more_info(index, dataset, hp=_HP, is_random=False)
    # = api.get_cost_info(index, dataset, hp=_HP), which returns this after deep-copying all of
    # the cell's results (~15 ms a call, a quarter of an hour for the whole benchmark).
    cost = api.arch2infos_dict[index][_HP].get_compute_costs(dataset)
    if "valid-accuracy" not in valid or "test-accuracy" not in test:
        raise KeyError("the validation or test accuracy")
    return Entry(float(valid["valid-accuracy"]), float(test["test-accuracy"]),
                 float(cost["flops"]), float(cost["params"]))


def _read_official(path: Path, datasets: Sequence[str],
                   progress: bool) -> dict[str, dict[Arch, Entry]]:
    """Every cell's entries for ``datasets`` from an official file, keyed by dataset."""
    if not path.exists():
        raise TableError(_missing_message(path, None))
    api = _open_official(path)
    fast = bool(api.fast_mode)
    indexes = range(len(api)) if fast else sorted(api.evaluated_indexes)
    tables: dict[str, dict[Arch, Entry]] = {d: {} for d in datasets}
    total = len(indexes)
    if total == 0:
        raise TableError(f"{path}: the benchmark file has no evaluated cells")
    for done, index in enumerate(indexes, start=1):
        text = api.meta_archs[index]
        try:
            ops = parse_arch_string(text)
        except (ArchStringError, AttributeError) as exc:
            raise TableError(f"{path}: cell {index} ({text!r}) is not a NAS-Bench-201 topology "
                             f"cell ({exc}); pass the topology (tss) benchmark, not the size "
                             "(sss) one") from exc
        for dataset in datasets:
            try:
                entry = _official_entry(api, index, dataset)
            except (KeyError, ValueError, AssertionError, OSError, TypeError) as exc:
                hps = list(getattr(api, "arch2infos_dict", {}).get(index, {}))
                raise TableError(
                    f"{path}: cell {index} ({text}) lacks 200-epoch (hp='200') results for "
                    f"{dataset} ({type(exc).__name__}: {exc}; the cell has hp {hps})") from exc
            if ops in tables[dataset]:
                raise TableError(f"{path}: cell {text} appears twice (index {index})")
            tables[dataset][ops] = entry
        if fast:  # drop the loaded per-cell file again, or the archive fills memory
            api.arch2infos_dict.pop(index, None)
            api.evaluated_indexes.discard(index)
        if progress and (done % 1000 == 0 or done == total):
            print(f"llmatic-nb201: read {done}/{total} cells", file=sys.stderr, flush=True)
    return tables


def export_table(source: str | os.PathLike[str], out_csv: str | os.PathLike[str],
                 datasets: Iterable[str] = DATASETS, progress: bool = True) -> int:
    """Export an official benchmark file to the compact CSV (see the module's protocol).

    Args:
        source: The NATS-Bench topology directory / ``*.pickle.pbz2`` or NAS-Bench-201 ``*.pth``
            (trusted files: reading them unpickles).
        out_csv: The CSV to write (atomically: a temporary file renamed into place).
        datasets: The datasets to export.
        progress: Print progress to stderr every 1,000 cells.

    Returns:
        The number of rows written.

    Raises:
        TableError: If the source is missing or not a readable topology benchmark.
    """
    datasets = tuple(datasets)
    if not datasets:
        raise TableError(f"no datasets to export; choose from {list(DATASETS)}")
    for dataset in datasets:
        _check_dataset(dataset)
    datasets = tuple(dict.fromkeys(datasets))
    tables = _read_official(Path(source).expanduser(), datasets, progress)
    rows = ((arch_string(ops), dataset, repr(e.valid_accuracy), repr(e.test_accuracy),
             repr(e.flops), repr(e.params))
            for dataset in datasets
            for ops, e in sorted(tables[dataset].items(), key=lambda item: arch_index(item[0])))
    return _write_csv(Path(out_csv), rows)


def _write_csv(out_csv: Path, rows: Iterable[Sequence[str]], comment: str | None = None) -> int:
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


# --------------------------------------------------------------------------------------------
# SYNTHETIC tables (for trying things out; NOT benchmark data)

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
    cells = [(ops, text) for text, ops in _canonical_strings().items()]  # all_archs order
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

    return _write_csv(Path(out_csv), rows(), comment=(
        f"{SYNTHETIC_MARK} NAS-Bench-201-like table written by `llmatic-nb201 synthetic "
        f"--seed {seed} --landscape {landscape} --key {key}`: made-up numbers for trying "
        "things out, NOT benchmark data"))
