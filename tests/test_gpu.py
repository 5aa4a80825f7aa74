"""The GPU paths. CI has no GPU, so these skip there; `benchmarks/gpu_check.sh` runs the same
paths by hand on a GPU machine. The CPU check of the CUDA-only learner runs everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from llmatic.plan import seed_network
from llmatic.train import DeviceBatches, ReferenceBatches

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (CI machines have none)")

# A network that can learn only where its input lives on a CUDA device: on the CPU its output
# is a constant (zero) for every image, so it scores at chance. A candidate that silently
# trained and predicted on the CPU cannot pass a "well above chance" check with it.
CUDA_ONLY_LEARNER = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        h = self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))
        return h if x.is_cuda else h * 0.0
"""

NORM = {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


@needs_gpu
def test_device_batches_on_the_gpu_equal_the_cpu_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 10, size=40).astype(np.int64)
    kw = dict(batch_size=16, crop_pad=2, flip=True, seed=1, **NORM)
    gpu, ref = DeviceBatches(x, y, device="cuda", **kw), ReferenceBatches(x, y, **kw)
    for epoch in range(2):
        gpu.set_epoch(epoch)
        for (a, ya), (b, yb) in zip(gpu, ref.from_plan(gpu.plan(epoch)), strict=True):
            assert a.device.type == "cuda" and a.dtype == torch.float32
            np.testing.assert_array_equal(ya.cpu().numpy(), yb.numpy())
            np.testing.assert_allclose(a.cpu().numpy(), b.numpy(), rtol=0, atol=1e-5)


def _evaluate(tmp_path, *overrides, env=None, source=None):
    net = tmp_path / "net.py"
    net.write_text(source or seed_network((1, 8, 8), 10))
    proc = subprocess.run(
        [sys.executable, "-m", "llmatic.cli.evaluate", str(net), "budget.epochs=3",
         *overrides],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_gpu
def test_a_sandboxed_candidate_trains_on_the_gpu(tmp_path):
    result = _evaluate(tmp_path, "trainer=gpu", source=CUDA_ONLY_LEARNER)
    assert result["status"] == "ok", result
    # chance is 0.1; on the CPU this network's output is constant (see the test below)
    assert result["val_accuracy"] > 0.5, result


def test_the_cuda_only_learner_is_at_chance_off_the_gpu(tmp_path, shared_sandbox):
    """What the GPU test would see after a silent CPU fallback: a constant output."""
    from conftest import SMOKE, evaluate_source, val_label_shares

    result = evaluate_source(CUDA_ONLY_LEARNER, shared_sandbox, tmp_path, "trainer=cpu")
    assert result.status.value == "ok", result
    # One class predicted for every image: the accuracy is that class's share.
    assert min(abs(val_label_shares(*SMOKE) - result.val_accuracy)) < 1e-9, result
    assert result.val_accuracy < 0.125


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_on_two_gpus_inside_the_sandbox(tmp_path):
    result = _evaluate(tmp_path, "trainer=ddp", env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert result["status"] == "ok", result
