"""A device-resident image data path (airbench-style), and its per-sample CPU reference.

:class:`DeviceBatches` copies the whole training set to the device once, as uint8
``(N, C, H, W)``. Each epoch it draws, from a CPU ``torch.Generator`` seeded with
``(seed, epoch)``, a permutation and per-sample crop offsets and flips; these four vectors
(a few MB even for 50,000 images) move to the device once per epoch. Each batch is then
built on the device with no DataLoader and no worker processes: index the permutation, crop
by a vectorised gather on uint8, flip with ``torch.where``, convert to float32 and
normalise ``(x * scale - mean) / std`` per channel (the parameters of
:class:`llmatic.train.data.BatchArrayDataset`).

Drawing the randomness on the CPU makes a run's batches identical on CPU and GPU (only the
per-batch arithmetic runs on the device), so the tests here check the device code exactly.

Augmentation semantics (both paths):

* random crop: the image is padded by ``crop_pad`` pixels on every side, then an
  ``H x W`` window at offset ``(dy, dx)``, each uniform in ``0 .. 2 * crop_pad``, is cut out.
  ``pad_mode="reflect"`` (the default, as airbench) mirrors without repeating the edge pixel
  (``np.pad(mode="reflect")`` / ``F.pad(mode="reflect")``; needs ``crop_pad < H, W``);
  ``pad_mode="zeros"`` fills with raw pixel value 0 *before* normalisation (as torchvision's
  ``RandomCrop(padding=p)`` followed by ``Normalize``);
* random horizontal flip with probability 1/2, applied after the crop.

:class:`ReferenceBatches` is the slow reference: per-sample numpy (``np.pad``, slicing,
``[..., ::-1]``) and :class:`~llmatic.train.data.BatchArrayDataset`'s normalisation, with its own
numpy RNG, or replaying a :class:`DeviceBatches` epoch plan exactly.

Lightning accepts a :class:`DeviceBatches` directly as ``train_dataloaders`` (any iterable
with ``__len__``; no DataLoader wrapper is needed). Lightning calls ``set_epoch`` only on a
DataLoader's sampler, so each ``iter()`` advances the epoch by itself; ``set_epoch(e)``
makes the next ``iter()`` use epoch ``e``. Lightning does not shard a plain iterable under
DDP: pass ``rank`` / ``world_size`` so each rank takes its share of the same permutation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

PAD_MODES = ("reflect", "zeros")


class EpochPlan(NamedTuple):
    """The random choices of one epoch, for this rank, in batch order (CPU tensors)."""

    order: torch.Tensor  # (n,) int64 sample indices
    dy: torch.Tensor  # (n,) int64 crop row offsets in 0 .. 2 * crop_pad
    dx: torch.Tensor  # (n,) int64 crop column offsets in 0 .. 2 * crop_pad
    flip: torch.Tensor  # (n,) bool


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map padded coordinates (-size < i < 2 * size - 1) into 0..size-1, mirroring."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int, pad_mode: str = "reflect") -> torch.Tensor:
    """Vectorised crop-with-padding and horizontal flip of a uint8 batch ``(B, C, H, W)``.

    No padded copy is made: each output pixel gathers its source pixel by index arithmetic
    (reflected, or masked to 0 for ``"zeros"``).
    """
    b, c, h, w = x.shape
    device = x.device
    dy, dx, flip = dy.to(device), dx.to(device), flip.to(device)
    rows = dy[:, None] - pad + torch.arange(h, device=device)  # (B, H) padded -> source
    cols = dx[:, None] - pad + torch.arange(w, device=device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reverses the window
    if pad_mode == "reflect":
        rows_src, cols_src, inside = _reflect(rows, h), _reflect(cols, w), None
    else:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows_src, cols_src = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    out = x[torch.arange(b, device=device)[:, None, None, None],
            torch.arange(c, device=device)[None, :, None, None],
            rows_src[:, None, :, None], cols_src[:, None, None, :]]
    if inside is not None:
        out = out * inside[:, None].to(out.dtype)
    return out


class DeviceBatches:
    """Iterable of (x, y) batches from device-resident uint8 images.

    Args:
        x_uint8: ``(N, C, H, W)`` uint8 images (numpy, memory map or tensor).
        y: ``(N,)`` integer labels.
        batch_size: Samples per batch (per rank).
        scale, mean, std: Normalisation ``(x * scale - mean) / std`` per channel.
        device: Where the data lives and the batches are built.
        shuffle: A fresh permutation each epoch (else the stored order).
        crop_pad: Random-crop padding in pixels (0: no crop).
        flip: Random horizontal flips.
        seed: Base seed; epoch ``e`` uses a generator seeded from ``(seed, e)``.
        drop_last: Drop a last, smaller batch.
        pad_mode: ``"reflect"`` or ``"zeros"`` (see the module docstring).
        rank, world_size: Under DDP, each rank takes ``order[rank::world_size]`` of the
            same permutation, truncated so every rank gets the same number of samples.
    """

    def __init__(
        self,
        x_uint8: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        scale: float,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        crop_pad: int = 0,
        flip: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        pad_mode: str = "reflect",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.device = torch.device(device)
        x = x_uint8 if isinstance(x_uint8, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(x_uint8))
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x_uint8 must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        y = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
        if len(y) != len(x):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        h, w = x.shape[2:]
        if crop_pad < 0 or (pad_mode == "reflect" and crop_pad >= min(h, w)):
            raise ValueError(f"crop_pad={crop_pad} is invalid for {h}x{w} images ({pad_mode})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.x = x.to(self.device)
        self.y = y.to(device=self.device, dtype=torch.int64)
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)
        self.scale = float(scale)
        as_channels = lambda v: torch.tensor(  # noqa: E731
            list(v), dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.mean, self.std = as_channels(mean), as_channels(std)
        self.shuffle, self.crop_pad, self.flip = bool(shuffle), int(crop_pad), bool(flip)
        self.seed, self.pad_mode = int(seed), pad_mode
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples per epoch on this rank."""
        return len(self.x) // self.world_size

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` use ``epoch`` (later ones continue from it)."""
        self.epoch = int(epoch)

    def plan(self, epoch: int) -> EpochPlan:
        """The permutation, offsets and flips of ``epoch`` for this rank (CPU tensors)."""
        n_all = len(self.x)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(n_all, generator=g) if self.shuffle else torch.arange(n_all)
        span = 2 * self.crop_pad + 1
        dy = torch.randint(0, span, (n_all,), generator=g)
        dx = torch.randint(0, span, (n_all,), generator=g)
        flip = torch.randint(0, 2, (n_all,), generator=g).bool() if self.flip else \
            torch.zeros(n_all, dtype=torch.bool)
        keep = slice(self.rank, self.num_samples * self.world_size, self.world_size)
        return EpochPlan(order[keep], dy[keep], dx[keep], flip[keep])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        plan = EpochPlan(*(t.to(self.device, non_blocking=True) for t in self.plan(epoch)))
        augment = self.crop_pad > 0 or self.flip
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = plan.order[sl]
            x = self.x[idx]
            if augment:
                x = crop_flip(x, plan.dy[sl], plan.dx[sl], plan.flip[sl], self.crop_pad,
                              self.pad_mode)
            yield (x.float() * self.scale - self.mean) / self.std, self.y[idx]


def augment_one(img: np.ndarray, dy: int, dx: int, flip: bool, pad: int,
                pad_mode: str = "reflect") -> np.ndarray:
    """The reference augmentation of one uint8 image ``(C, H, W)`` with numpy."""
    if pad:
        mode = "reflect" if pad_mode == "reflect" else "constant"
        padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode=mode)
        img = padded[:, dy:dy + img.shape[1], dx:dx + img.shape[2]]
    if flip:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


class ReferenceBatches:
    """The CPU reference path: per-sample numpy augmentation + BatchArrayDataset's maths.

    Same arguments and semantics as :class:`DeviceBatches` (one rank); its randomness comes
    from ``np.random.default_rng((seed, epoch))``, independent of :class:`DeviceBatches`,
    unless :meth:`from_plan` replays a given plan.
    """

    def __init__(self, x_uint8: np.ndarray, y: np.ndarray, *, batch_size: int, scale: float,
                 mean: Sequence[float], std: Sequence[float], shuffle: bool = True,
                 crop_pad: int = 0, flip: bool = False, seed: int = 0,
                 drop_last: bool = False, pad_mode: str = "reflect") -> None:
        from llmatic.train.data import BatchArrayDataset

        self.x, self.y = np.asarray(x_uint8, dtype=np.uint8), np.asarray(y, dtype=np.int64)
        self.norm = BatchArrayDataset(self.x[:1], None, scale=scale, mean=list(mean),
                                      std=list(std))
        self.batch_size, self.drop_last, self.shuffle = batch_size, drop_last, shuffle
        self.crop_pad, self.flip, self.seed, self.pad_mode = crop_pad, flip, seed, pad_mode
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` use ``epoch``."""
        self.epoch = int(epoch)

    def _normalise(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images.astype(np.float32))
        return (x * self.norm.scale - self.norm.mean) / self.norm.std

    def from_plan(self, plan: EpochPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Replay a :class:`DeviceBatches` plan sample by sample."""
        order, dy, dx, flip = (t.cpu().numpy() for t in plan)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            images = np.stack([
                augment_one(self.x[j], int(a), int(b), bool(f), self.crop_pad, self.pad_mode)
                for j, a, b, f in zip(order[sl], dy[sl], dx[sl], flip[sl], strict=True)
            ])
            yield self._normalise(images), torch.from_numpy(self.y[order[sl]])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        rng = np.random.default_rng((self.seed, epoch))
        n, span = len(self.x), 2 * self.crop_pad + 1
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        plan = EpochPlan(*(torch.from_numpy(np.asarray(a)) for a in (
            order, rng.integers(0, span, n), rng.integers(0, span, n),
            rng.random(n) < 0.5 if self.flip else np.zeros(n, dtype=bool))))
        return self.from_plan(plan)
