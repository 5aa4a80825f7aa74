"""The official NATS-Bench / NAS-Bench-201 files, read through ``nats_bench``, and the export.

Accepted files (see :func:`read_official`):

* the official NATS-Bench topology benchmark (https://github.com/D-X-Y/NATS-Bench): the
  directory ``NATS-tss-v1_0-3ffb9-simple`` (extracted from ``NATS-tss-v1_0-3ffb9-simple.tar``;
  read in the API's fast mode, one file per cell) or the single file
  ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` (full mode);
* the original NAS-Bench-201 file (https://github.com/D-X-Y/NAS-Bench-201):
  ``NAS-Bench-201-v1_0-e61699.pth`` or ``NAS-Bench-201-v1_1-096897.pth``.

:func:`export_table` writes them to the compact CSV of :mod:`llmatic.nb201.table`.

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

import collections
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmatic.nb201.arch import Arch, ArchStringError, arch_index, arch_string, parse_arch_string
from llmatic.nb201.tableformat import (
    DATASETS,
    EXPORT_HINT,
    NATS_URL,
    NB201_URL,
    Entry,
    TableError,
    check_dataset,
    missing_message,
    write_csv,
)

_HP = "200"  # the 200-epoch schedule
_PICKLE_EXT = ".pickle.pbz2"


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


def read_official(path: Path, datasets: Sequence[str],
                   progress: bool) -> dict[str, dict[Arch, Entry]]:
    """Every cell's entries for ``datasets`` from an official file, keyed by dataset.

    Args:
        path: The NATS-Bench topology directory / ``*.pickle.pbz2`` or NAS-Bench-201 ``*.pth``
            (trusted files: reading them unpickles).
        datasets: Datasets of :data:`~llmatic.nb201.tableformat.DATASETS` to read.
        progress: Print progress to stderr every 1,000 cells.

    Returns:
        ``{dataset: {cell ops: Entry}}`` for every cell the file evaluated.

    Raises:
        TableError: If the file is missing, of an unknown kind, not a topology benchmark, or
            lacks a cell's 200-epoch results.
    """
    if not path.exists():
        raise TableError(missing_message(path, None))
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
        check_dataset(dataset)
    datasets = tuple(dict.fromkeys(datasets))
    tables = read_official(Path(source).expanduser(), datasets, progress)
    rows = ((arch_string(ops), dataset, repr(e.valid_accuracy), repr(e.test_accuracy),
             repr(e.flops), repr(e.params))
            for dataset in datasets
            for ops, e in sorted(tables[dataset].items(), key=lambda item: arch_index(item[0])))
    return write_csv(Path(out_csv), rows)

