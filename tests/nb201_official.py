"""Tiny benchmark files in the official NATS-Bench / NAS-Bench-201 on-disk formats (for tests).

The files hold a few cells with made-up numbers, written as the real ones are, without using
``nats_bench`` to write them:

* NATS-Bench full mode: ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` -- a bz2-compressed pickle of
  ``{"meta_archs": [arch strings], "arch2infos": {index: {"12": ArchResults state,
  "200": ArchResults state}}, "evaluated_indexes": [...]}``;
* NATS-Bench fast mode: a directory with ``meta.pickle.pbz2`` (``{"meta_archs": [...]}``) and
  one ``{index:06d}.pickle.pbz2`` per cell holding ``{"12": state, "200": state}``;
* NAS-Bench-201: a ``torch.save``-d dict like the full mode whose ``arch2infos[index]`` is
  ``{"less": 12-epoch state, "full": 200-epoch state}``.

An ArchResults state is ``{"arch_index", "arch_str", "all_results": {(dataset, seed): ResultsCount
state}, "dataset_seed": {dataset: [seeds]}, "clear_net_done"}`` and a ResultsCount state is its
attribute dict (per-epoch ``train_acc1es`` / ``eval_acc1es["x-valid@199"]`` ..., ``flop``,
``params`` ...), as ``nats_bench.api_utils`` reads them.

Every number says where it comes from, so a test can tell which one a reader picked: the final
accuracy of set ``S`` of dataset ``D`` for cell ``k`` and seed ``s`` is ``BASE[D][S] + k +
SEED_OFFSET[s]`` (minus 20 for the 12-epoch schedule). Sets a correct reader must not use
(``cifar10-valid``'s ``ori-test``, ``ori-test`` of cifar100 / ImageNet16-120) are decoys.
"""

from __future__ import annotations

import bz2
import pickle
from pathlib import Path

#: The cells of the tiny benchmark, in file order (not all_archs order).
CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_1x1~2|",
)

#: Final-epoch accuracy by dataset and evaluation set (plus cell index and seed offset).
BASE = {
    "cifar10-valid": {"train": 95.0, "x-valid": 80.0, "ori-test": 81.0},
    "cifar10": {"train": 96.0, "ori-test": 90.0},
    "cifar100": {"train": 70.0, "x-valid": 60.0, "x-test": 61.0, "ori-test": 62.0},
    "ImageNet16-120": {"train": 40.0, "x-valid": 30.0, "x-test": 31.0, "ori-test": 32.0},
}
SEEDS_200 = (777, 888)
SEEDS_12 = (777,)
SEED_OFFSET = {777: 0.0, 888: 0.5, 999: 1.0}
LESS_PENALTY = 20.0
CLASSES = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}


def cost(cell: int, dataset: str) -> tuple[float, float]:
    """(MFLOPs, MB) of a cell on a dataset in the tiny benchmark."""
    scale = 0.25 if dataset == "ImageNet16-120" else 1.0
    flops = (10.0 + 30.0 * cell) * scale + CLASSES[dataset] / 1000
    params = 0.1 + 0.2 * cell + CLASSES[dataset] / 10000
    return flops, params


def final_accuracy(cell: int, dataset: str, setname: str, seed: int, epochs: int) -> float:
    """The made-up final accuracy (see the module docstring)."""
    penalty = LESS_PENALTY if epochs == 12 else 0.0
    return BASE[dataset][setname] + cell + SEED_OFFSET[seed] - penalty


def expected(cell: int, dataset: str) -> dict[str, float]:
    """The entry the documented protocol gives (hp 200, mean over seeds)."""
    mean = lambda d, s: sum(final_accuracy(cell, d, s, x, 200) for x in SEEDS_200) / len(  # noqa: E731
        SEEDS_200)
    if dataset == "cifar10":
        valid, test = mean("cifar10-valid", "x-valid"), mean("cifar10", "ori-test")
    else:
        valid, test = mean(dataset, "x-valid"), mean(dataset, "x-test")
    flops, params = cost(cell, dataset)
    return {"valid_accuracy": valid, "test_accuracy": test, "flops": flops, "params": params}


def _results_count(cell: int, dataset: str, seed: int, epochs: int) -> dict:
    """A ResultsCount state dict with per-epoch curves that end at the final accuracies."""
    sets = [s for s in BASE[dataset] if s != "train"]
    flops, params = cost(cell, dataset)

    def curve(setname: str) -> list[float]:
        final = final_accuracy(cell, dataset, setname, seed, epochs)
        return [final * (i + 1) / epochs for i in range(epochs)]

    train = curve("train")
    eval_acc, eval_loss, eval_time = {}, {}, {}
    for setname in sets:
        for i, acc in enumerate(curve(setname)):
            key = f"{setname}@{i}"
            eval_acc[key], eval_loss[key], eval_time[key] = acc, 2.0 - acc / 100, 0.5
    return {
        "name": dataset,
        "net_state_dict": None,
        "train_acc1es": dict(enumerate(train)),
        "train_acc5es": dict(enumerate(train)),
        "train_losses": {i: 2.0 - a / 100 for i, a in enumerate(train)},
        "train_times": dict.fromkeys(range(epochs), 10.0),
        "arch_config": {"name": "infer.tiny", "C": 16, "N": 5, "arch_str": CELLS[cell],
                        "class_num": CLASSES[dataset]},
        "params": params,
        "flop": flops,
        "seed": seed,
        "epochs": epochs,
        "latency": [0.01],
        "eval_names": sets,
        "eval_acc1es": eval_acc,
        "eval_times": eval_time,
        "eval_losses": eval_loss,
    }


def _arch_results(cell: int, epochs: int, datasets: tuple[str, ...]) -> dict:
    seeds = SEEDS_200 if epochs == 200 else SEEDS_12
    return {
        "arch_index": cell,
        "arch_str": CELLS[cell],
        "all_results": {(d, s): _results_count(cell, d, s, epochs) for d in datasets
                        for s in seeds},
        "dataset_seed": {d: list(seeds) for d in datasets},
        "clear_net_done": True,
    }


def _hp_results(cell: int) -> dict:
    return {hp: _arch_results(cell, int(hp), tuple(BASE)) for hp in ("12", "200")}


def _pickle_bz2(obj: object, path: Path) -> Path:
    with bz2.BZ2File(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=4)
    return path


def write_nats_full(folder: Path) -> Path:
    """``folder/NATS-tss-v1_0-3ffb9.pickle.pbz2`` (the API's non-fast mode)."""
    data = {
        "meta_archs": list(CELLS),
        "arch2infos": {i: _hp_results(i) for i in range(len(CELLS))},
        "evaluated_indexes": list(range(len(CELLS))),
    }
    return _pickle_bz2(data, folder / "NATS-tss-v1_0-3ffb9.pickle.pbz2")


def write_nats_fast(folder: Path) -> Path:
    """``folder/NATS-tss-v1_0-3ffb9-simple/`` (the API's fast mode: one file per cell)."""
    archive = folder / "NATS-tss-v1_0-3ffb9-simple"
    archive.mkdir()
    _pickle_bz2({"meta_archs": list(CELLS)}, archive / "meta.pickle.pbz2")
    for i in range(len(CELLS)):
        _pickle_bz2(_hp_results(i), archive / f"{i:06d}.pickle.pbz2")
    return archive


def write_nb201_pth(folder: Path) -> Path:
    """``folder/NAS-Bench-201-v1_0-e61699.pth`` ('less' = 12 epochs on cifar10-valid only)."""
    import torch

    data = {
        "meta_archs": list(CELLS),
        "arch2infos": {i: {"less": _arch_results(i, 12, ("cifar10-valid",)),
                           "full": _arch_results(i, 200, tuple(BASE))}
                       for i in range(len(CELLS))},
        "evaluated_indexes": list(range(len(CELLS))),
    }
    path = folder / "NAS-Bench-201-v1_0-e61699.pth"
    torch.save(data, path)
    return path
