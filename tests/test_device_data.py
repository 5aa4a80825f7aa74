"""The device-resident image batches agree with the per-sample CPU reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from llmatic.train import BatchArrayDataset, DeviceBatches, ReferenceBatches, augment_one, crop_flip

NORM = {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


def images(n=24, c=3, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.int64))


def epoch_arrays(batches):
    xs, ys = zip(*list(batches), strict=True)
    return torch.cat(xs).cpu().numpy(), torch.cat(ys).cpu().numpy()


def test_no_augmentation_gives_the_same_multiset_as_batch_array_dataset():
    x, y = images()
    dev = DeviceBatches(x, y, batch_size=5, seed=3, **NORM)
    assert len(dev) == 5  # 24 samples -> 4 full batches + 4
    shapes = [tuple(b[0].shape) for b in dev]
    assert shapes == [(5, 3, 6, 5)] * 4 + [(4, 3, 6, 5)]
    ref = BatchArrayDataset(x, y, **NORM)[np.arange(len(x))]
    dx_, dy_ = epoch_arrays(dev)
    assert dx_.dtype == np.float32 and dy_.dtype == np.int64
    # Same samples (as (image, label) pairs), in another order: sort both by bytes.
    key = lambda xs, ys: sorted(a.tobytes() + bytes([b]) for a, b in zip(xs, ys, strict=True))  # noqa: E731
    got, want = key(dx_, dy_), key(ref[0].numpy(), ref[1].numpy())
    np.testing.assert_array_equal(np.frombuffer(b"".join(got), np.uint8),
                                  np.frombuffer(b"".join(want), np.uint8))
    # Epochs differ, set_epoch replays; no shuffle keeps the stored order.
    dev.set_epoch(0)
    first = epoch_arrays(dev)[1]
    second = epoch_arrays(dev)[1]
    dev.set_epoch(0)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, epoch_arrays(dev)[1])
    fixed = DeviceBatches(x, y, batch_size=7, shuffle=False, drop_last=True, **NORM)
    assert len(fixed) == 3
    np.testing.assert_array_equal(epoch_arrays(fixed)[1], y[:21])


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_vectorised_crop_flip_equals_per_sample_numpy(pad_mode):
    x, y = images(n=40)
    kw = dict(batch_size=16, crop_pad=3, flip=True, seed=1, pad_mode=pad_mode, **NORM)
    dev, ref = DeviceBatches(x, y, **kw), ReferenceBatches(x, y, **kw)
    for epoch in range(3):
        dev.set_epoch(epoch)
        for (a, ya), (b, yb) in zip(dev, ref.from_plan(dev.plan(epoch)), strict=True):
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
    # Hand-checked cases: zeros padding fills raw 0; reflect does not repeat the edge.
    img = np.arange(1, 1 + 9, dtype=np.uint8).reshape(1, 1, 3, 3)
    t = torch.from_numpy(img)
    one = lambda dy, dx, f: crop_flip(t, torch.tensor([dy]), torch.tensor([dx]),  # noqa: E731
                                      torch.tensor([f]), 1, pad_mode)[0, 0].numpy()
    top_left = [[0, 0, 0], [0, 1, 2], [0, 4, 5]] if pad_mode == "zeros" else \
        [[5, 4, 5], [2, 1, 2], [5, 4, 5]]
    np.testing.assert_array_equal(one(0, 0, False), top_left)
    np.testing.assert_array_equal(one(1, 1, True), img[0, 0, :, ::-1])
    np.testing.assert_array_equal(one(0, 0, True), augment_one(img[0], 0, 0, True, 1, pad_mode)[0])


def test_crop_flip_distribution_matches_the_reference():
    """Independent RNGs: per-pixel mean / variance and output frequencies agree."""
    x, _ = images(n=32, h=6, w=6, seed=5)
    ids = np.arange(32)  # labels = sample ids, to tell which image each output came from
    kw = dict(batch_size=32, crop_pad=2, flip=True, **NORM)
    dev, ref = DeviceBatches(x, ids, seed=11, **kw), ReferenceBatches(x, ids, seed=12, **kw)
    epochs = 300  # n = 9,600 augmented samples per path
    (a, ya), (b, yb) = (
        [np.concatenate(z) for z in zip(*[epoch_arrays(p) for _ in range(epochs)], strict=True)]
        for p in (dev, ref))
    n = len(a)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    # Per pixel, each path's mean has standard error sd / sqrt(n) (i.i.d. draws of offset and
    # flip; drawing images without replacement only lowers it, so this is conservative) and
    # its variance has standard error sqrt((m4 - var^2) / n). The difference of two
    # independent estimates has SE sqrt(se_a^2 + se_b^2). With 108 pixels, a 5-SE bound is
    # exceeded by chance with probability ~108 * 6e-7 < 1e-4.
    se_mean = np.sqrt(a64.var(0) / n + b64.var(0) / n)
    z_mean = np.abs(a64.mean(0) - b64.mean(0)) / se_mean
    m4 = lambda v: ((v - v.mean(0)) ** 4).mean(0)  # noqa: E731
    se_var = np.sqrt((m4(a64) - a64.var(0) ** 2) / n + (m4(b64) - b64.var(0) ** 2) / n)
    z_var = np.abs(a64.var(0) - b64.var(0)) / se_var
    assert z_mean.max() < 5, z_mean.max()
    assert z_var.max() < 5, z_var.max()

    # Flip rate and offsets of the plans: flip ~ Bernoulli(1/2) within 5 SE = 5 sqrt(.25 / n);
    # the 25 offsets (dy, dx) uniform by a chi-square goodness-of-fit test at p > 1e-3.
    plans = [dev.plan(e) for e in range(epochs)]
    flips = torch.cat([p.flip for p in plans]).double()
    assert abs(flips.mean().item() - 0.5) < 5 * np.sqrt(0.25 / n)
    cells = torch.cat([p.dy * 5 + p.dx for p in plans]).numpy()
    assert stats.chisquare(np.bincount(cells, minlength=25)).pvalue > 1e-3

    # The joint distribution of whole outputs: count each distinct (sample, augmented image)
    # in both paths (<= 32 x 50 cells, ~6 expected per cell); chi-square homogeneity p > 1e-3.
    def histogram(xs, ys):
        keys = [bytes([i]) + np.round(row, 4).tobytes() for i, row in zip(ys, xs, strict=True)]
        values, counts = np.unique(np.array(keys, dtype=object), return_counts=True)
        return dict(zip(values, counts, strict=True))

    hist_a, hist_b = histogram(a, ya), histogram(b, yb)
    keys = sorted(set(hist_a) | set(hist_b))
    assert len(keys) > 32 * 25  # crops and flips give many distinct outputs per image
    table = np.array([[hist_a.get(k, 0) for k in keys], [hist_b.get(k, 0) for k in keys]])
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_lightning_fit_accepts_device_batches():
    import lightning as L
    from torch import nn

    from llmatic.train import NetModule

    x, y = images(n=64, c=3, h=6, w=6, seed=2)
    y = (x.reshape(64, -1).mean(1) > x.mean()).astype(np.int64)  # learnable labels
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(108, 2))
    module = NetModule(net=net, optimizer=lambda params: torch.optim.SGD(params, lr=0.05))
    batches = DeviceBatches(x, y, batch_size=16, crop_pad=1, flip=True, **NORM)
    seen = []

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch[0].dtype, batch[0].device.type))

    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Count()])
    trainer.fit(module, train_dataloaders=batches)
    assert len(seen) == 3 * 4 and trainer.num_training_batches == 4
    assert {s[1] for s in seen} == {torch.float32}
    assert batches.epoch == 3  # one iter() per epoch, each a new permutation
    assert np.isfinite(module.last_loss)


def test_rank_shards_partition_the_permutation():
    x, y = images(n=25)
    shards = [DeviceBatches(x, y, batch_size=4, rank=r, world_size=2, seed=7, **NORM)
              for r in range(2)]
    orders = [s.plan(4).order for s in shards]
    assert len(shards[0]) == len(shards[1]) == 3  # 12 samples each, one dropped
    assert not set(orders[0].tolist()) & set(orders[1].tolist())
    assert len(set(torch.cat(orders).tolist())) == 24


def test_bad_arguments_are_rejected():
    x, y = images(n=4, h=3, w=3)
    with pytest.raises(ValueError, match="crop_pad"):
        DeviceBatches(x, y, batch_size=2, crop_pad=3, **NORM)
    DeviceBatches(x, y, batch_size=2, crop_pad=3, pad_mode="zeros", **NORM)
    with pytest.raises(ValueError, match="uint8"):
        DeviceBatches(x.astype(np.float32), y, batch_size=2, **NORM)
    with pytest.raises(ValueError, match="labels"):
        DeviceBatches(x, y[:3], batch_size=2, **NORM)
