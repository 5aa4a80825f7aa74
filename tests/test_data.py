"""Datasets: digits offline; CIFAR-10 through torchvision on small files in the real format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from llmatic.errors import DatasetError
from llmatic.train import CIFAR10DataModule, DigitsDataModule, load_child_arrays


def write_fake_cifar(root, n_train=60, n_test=20, seed=0):
    """cifar-10-batches-py with the real file names and pickle layout, but few images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n, name):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as fh:
            # The official files are Python 2 pickles whose keys load as str with latin1.
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(n)]}, fh, protocol=2)
        return data, labels

    train = [batch(n_train // 5, f"data_batch_{i}") for i in range(1, 6)]
    test = batch(n_test, "test_batch")
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh, protocol=2)
    return train, test


def test_digits_splits_are_disjoint_and_fixed():
    a = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10, val_fraction=0.2, split_seed=0)
    a.setup()
    s = a.splits
    assert len(s["x_train"]) + len(s["x_val"]) + len(s["x_test"]) == 1797
    assert s["x_train"].shape[1:] == (1, 8, 8) and s["x_train"].dtype == np.uint8
    b = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10, val_fraction=0.2, split_seed=0)
    b.setup()
    assert np.array_equal(a.splits["y_val"], b.splits["y_val"])
    x, y = next(iter(a.train_dataloader()))
    assert x.dtype.is_floating_point and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert x.shape[1:] == (1, 8, 8) and y.shape == (x.shape[0],)


def test_child_arrays_have_no_validation_labels(tmp_path):
    dm = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10)
    dm.write_child_arrays(tmp_path)
    train, val = load_child_arrays(tmp_path)
    assert val.y is None
    assert len(val) == len(dm.splits["y_val"])
    x, y = train[[0, 1, 2]]
    assert x.shape == (3, 1, 8, 8)


def test_cifar10_loads_the_real_format_through_torchvision(tmp_path):
    train, test = write_fake_cifar(tmp_path)
    dm = CIFAR10DataModule(input_shape=(3, 32, 32), num_classes=10, data_dir=str(tmp_path),
                           download=False, verify_checksums=False, val_fraction=0.25)
    dm.prepare_data()
    dm.setup()
    assert len(dm.splits["x_train"]) + len(dm.splits["x_val"]) == 60
    assert len(dm.splits["x_test"]) == 20
    # The test split is torchvision's decoding of test_batch: HWC -> CHW, same pixels.
    expected = test[0].reshape(-1, 3, 32, 32)
    assert np.array_equal(dm.splits["x_test"], expected)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 32, 32)
    assert abs(float(x.mean())) < 1.0  # normalised per channel


def test_cifar10_checksums_are_verified_by_default(tmp_path):
    write_fake_cifar(tmp_path)
    dm = CIFAR10DataModule(input_shape=(3, 32, 32), num_classes=10, data_dir=str(tmp_path),
                           download=False)
    with pytest.raises(DatasetError, match="dataset.data_dir"):
        dm.prepare_data()


def test_cifar10_missing_dir_names_data_dir(tmp_path):
    dm = CIFAR10DataModule(input_shape=(3, 32, 32), num_classes=10,
                           data_dir=str(tmp_path / "missing"), download=False)
    with pytest.raises(DatasetError, match="dataset.data_dir.*dataset.download"):
        dm.prepare_data()


def test_wrong_input_shape_names_the_key():
    dm = DigitsDataModule(input_shape=(3, 8, 8), num_classes=10)
    with pytest.raises(DatasetError, match="dataset.input_shape"):
        dm.setup()


def test_a_failed_cifar10_download_says_what_to_do_and_leaves_no_empty_folder(tmp_path,
                                                                               monkeypatch):
    # The network cannot be used here: the download fails as it does offline.
    import urllib.error

    import torchvision.datasets.cifar as cifar

    def offline(url, download_root, **kwargs):  # noqa: ANN001, ANN003
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision does
        (Path(download_root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    root = tmp_path / "data"
    dm = CIFAR10DataModule(input_shape=(3, 32, 32), num_classes=10, data_dir=str(root),
                           download=True)
    with pytest.raises(DatasetError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "could not download CIFAR-10" in message and "dataset.download=false" in message
    assert "name resolution" in message
    assert "enable dataset.download" not in message and "set dataset.download=true" not in message
    assert not root.exists()  # the folder the download made is gone again
    # Files that are there but broken: the message is about the files, not the download.
    write_fake_cifar(tmp_path)
    broken = CIFAR10DataModule(input_shape=(3, 32, 32), num_classes=10, data_dir=str(tmp_path),
                               download=False)
    with pytest.raises(DatasetError, match="verify_checksums=false"):
        broken.prepare_data()
