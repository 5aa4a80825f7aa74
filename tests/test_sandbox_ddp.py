"""trainer=ddp inside the sandbox: one candidate trained by several rank processes.

The real server forks a supervisor for the candidate, which forks the ranks before any
audit hook is installed; Lightning only joins them. Here the ranks are two CPU processes
over gloo (the GPU config with ``accelerator: cpu``), so this runs on any machine.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from llmatic.sandbox import Sandbox, outcome_to_result, plan_ranks
from llmatic.train import DigitsDataModule
from llmatic.types import Status

pytestmark = pytest.mark.slow  # DDP ranks forked and joined in the sandbox

TIMEOUT = 8.0
BATCH = 64
NET = """
import os
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        if self.training and os.environ.get("RANK") == "{rank}":
            {action}
        return self.head(self.features(x).flatten(1))
"""
HONEST = NET.format(rank="none", action="pass")


def ddp_trainer(devices: int) -> dict:
    """The real ``trainer=ddp`` config, on CPU processes (gloo) in full precision."""
    cfg = compose_config("trainer=ddp", "budget=smoke")
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer["strategy"] == "ddp" and trainer["devices"] == -1
    trainer.update(accelerator="cpu", devices=devices, precision="32-true")
    return trainer


@pytest.fixture(scope="module")
def env(tmp_path_factory, unit_sandbox):
    root = tmp_path_factory.mktemp("sandbox_ddp")
    dm = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10)
    data_dir = dm.write_child_arrays(root / "data")
    return unit_sandbox, dm, data_dir, root  # its jobs bring TIMEOUT (see run)


def run(env, code, trainer, name):
    box, dm, data_dir, root = env
    job = {"code": code, "class_name": "Net", "input_shape": [1, 8, 8], "num_classes": 10,
           "data_dir": str(data_dir), "epochs": 2, "batch_size": BATCH, "seed": 0,
           "trainer": trainer,
           "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003}}
    job_dir = root / name
    started = time.perf_counter()
    outcome = box.run(job, job_dir, timeout_s=TIMEOUT)
    seconds = time.perf_counter() - started
    assert_nothing_left(box, job_dir)
    result = outcome_to_result(outcome, job_dir=job_dir, val_labels=dm.splits["y_val"],
                               num_classes=10)
    return result, job_dir, seconds


def assert_nothing_left(box: Sandbox, job_dir: Path) -> None:
    """No process of the candidate survives it: none in its directory, no server child."""
    server = box._proc.pid
    deadline = time.time() + 3
    while time.time() < deadline:  # the server reaps within milliseconds
        left = [pid for pid in _pids() if _cwd(pid).startswith(str(job_dir))
                or _ppid(pid) == server]
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes outlived the candidate: {left}")


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_two_cpu_ranks_train_one_candidate(env):
    result, job_dir, _ = run(env, HONEST, ddp_trainer(2), "two_ranks")
    assert result.status is Status.OK, result.error
    assert result.val_accuracy > 0.5  # chance is 0.1
    rank0 = json.loads((job_dir / "result.json").read_text())["ddp"]
    rank1 = json.loads((job_dir / "result.rank1.json").read_text())["ddp"]
    assert (rank0["global_rank"], rank1["global_rank"]) == (0, 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    # Each rank trained on half of the batches (DistributedSampler) ...
    n_train = len(env[1].splits["y_train"])
    assert rank0["train_batches"] == rank1["train_batches"] == math.ceil(
        math.ceil(n_train / BATCH) / 2)
    # ... and the gradients were averaged: the two copies of the network stayed identical.
    assert rank0["param_checksum"] == rank1["param_checksum"]
    # Only rank 0 predicted and reported.
    assert sorted(p.name for p in job_dir.glob("*.npy")) == ["val_logits.npy"]
    assert sorted(p.name for p in job_dir.glob("result*.json")) == [
        "result.json", "result.rank1.json"]


def test_ddp_with_one_device_is_the_normal_path(env):
    trainer = ddp_trainer(1)
    assert plan_ranks(trainer, None)[:2] == (1, {**trainer, "strategy": "auto"})
    single, job_dir, _ = run(env, HONEST, trainer, "one_rank")
    plain = {k: v for k, v in trainer.items() if k not in ("strategy", "sync_batchnorm")}
    reference, _, _ = run(env, HONEST, plain, "no_ddp")
    assert single.status is Status.OK, single.error
    assert single.val_loss == reference.val_loss
    assert "ddp" not in json.loads((job_dir / "result.json").read_text())
    assert not list(job_dir.glob("*rank*"))


@pytest.mark.parametrize(
    ("rank", "action", "status", "message"),
    [
        (1, "raise RuntimeError('rank one broke')", Status.RUNTIME_ERROR, "rank 1: RuntimeError"),
        (0, "raise RuntimeError('rank zero broke')", Status.RUNTIME_ERROR, "rank zero broke"),
        (1, "os._exit(3)", Status.CRASHED, "rank 1 exited with code 3"),
        (1, "while True: pass", Status.TIMEOUT, None),
    ],
    ids=["rank1-raises", "rank0-raises", "rank1-exits", "rank1-hangs"],
)
def test_a_failing_rank_fails_the_candidate(env, rank, action, status, message):
    code = NET.format(rank=rank, action=action)
    result, _, seconds = run(env, code, ddp_trainer(2), f"fail_{rank}_{abs(hash(action))}")
    assert result.status is status, result.error
    assert result.fitness is None
    if message is not None:
        assert message in result.error
        assert seconds < TIMEOUT / 2  # the other rank was stopped, not left waiting
    assert seconds < TIMEOUT + 5


@pytest.mark.parametrize(
    ("trainer", "cuda", "match"),
    [
        ({"strategy": "ddp", "accelerator": "cpu", "devices": -1}, None, "number of CPU"),
        ({"strategy": "ddp", "accelerator": "gpu", "devices": 4}, "0,1", "4 GPUs but 2"),
        ({"strategy": "ddp_spawn", "accelerator": "cpu", "devices": 2}, None, "own processes"),
        ({"strategy": "ddp", "accelerator": "cpu", "devices": 2, "num_nodes": 2}, None,
         "num_nodes"),
    ],
)
def test_ddp_configs_the_sandbox_cannot_run_are_rejected(trainer, cuda, match):
    with pytest.raises(ValueError, match=match):
        plan_ranks(trainer, cuda)


def test_ddp_rank_count_follows_the_bound_gpus():
    trainer = {"strategy": "ddp", "accelerator": "gpu", "devices": -1, "sync_batchnorm": True}
    assert plan_ranks(trainer, "2,3") == (2, {**trainer, "devices": 2}, "2,3")
    single = plan_ranks(trainer, "5")
    assert single == (1, {**trainer, "strategy": "auto", "devices": 1,
                          "sync_batchnorm": False}, "5")
    plain = {"accelerator": "gpu", "devices": 1}
    assert plan_ranks(plain, "1")[1] is plain  # no DDP: untouched


def test_pool_binds_gpu_groups_to_slots(env):
    from llmatic.sandbox import PoolEvaluator

    pool = PoolEvaluator(workers=3, gpus=[0, 1, 2, 3, 4], gpus_per_worker=2, sandbox=env[0])
    pool.start(timeout_s=TIMEOUT, memory_mb=1024, torch_threads=1)
    try:
        assert list(pool._free.queue) == ["0,1", "2,3", "0,1"]  # GPU 4 is left over
    finally:
        pool.close()
    with pytest.raises(ValueError, match="gpus_per_worker=2 but only 1"):
        PoolEvaluator(gpus=[0], gpus_per_worker=2, sandbox=env[0]).start(
            timeout_s=TIMEOUT, memory_mb=1024, torch_threads=1)
