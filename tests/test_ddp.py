"""trainer=ddp: Lightning DDP with 2 CPU processes over gloo trains NetModule consistently.

The training runs in subprocesses (this file is also the training script), never inside
pytest: Lightning's ``ddp`` launcher re-runs ``sys.argv`` for rank 1, which only works for a
real script. Two launches are tested:

* ``lightning``: one process; Lightning starts rank 1 itself (what ``trainer=ddp`` does in a
  normal process);
* ``external``: the test starts both ranks with ``LOCAL_RANK`` / ``MASTER_PORT`` set and
  Lightning only joins them (what the sandbox does, since its children may not create
  processes; tests/test_sandbox_ddp.py runs ``trainer=ddp`` through the real sandbox).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def train(out_dir: str) -> None:
    """One rank: a tiny MLP on a learnable random task, DeviceBatches sharded by rank."""
    import lightning as L
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from torch import nn

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_config

    from llmatic.train import DeviceBatches, NetModule

    torch.set_num_threads(1)
    cfg = compose_config("trainer=ddp", "budget=smoke")
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer_cfg["strategy"] == "ddp" and trainer_cfg["devices"] == -1
    # The GPU config on CPU: same strategy, 2 processes, full precision.
    trainer_cfg.update(accelerator="cpu", devices=2, precision="32-true", max_epochs=4,
                       default_root_dir=out_dir)
    trainer_cfg.pop("_target_", None)

    rng = np.random.default_rng(0)  # identical data on both ranks
    x = rng.integers(0, 256, size=(256, 1, 4, 4), dtype=np.uint8)
    y = (x.reshape(256, -1)[:, :8].mean(1) > x.reshape(256, -1)[:, 8:].mean(1)).astype(np.int64)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    batches = DeviceBatches(x, y, batch_size=16, scale=1 / 255, mean=[0.5], std=[0.25],
                            seed=0, rank=rank, world_size=2)
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    module = NetModule(net=net, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    losses: dict[int, list[float]] = {}

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.setdefault(trainer.current_epoch, []).append(float(outputs["loss"]))

        def on_train_end(self, trainer, pl_module):
            params = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
            Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps({
                "global_rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "backend": torch.distributed.get_backend(),
                "strategy": type(trainer.strategy).__name__,
                "batches": trainer.num_training_batches,
                "first_epoch_loss": float(np.mean(losses[0])),
                "last_epoch_loss": float(np.mean(losses[max(losses)])),
                "params": params.tolist(),
            }))

    trainer = L.Trainer(**trainer_cfg, callbacks=[Record()])
    trainer.fit(module, train_dataloaders=batches)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~30 s per launch on 2 cores: importing torch + Lightning per rank
@pytest.mark.parametrize("launch", ["lightning", "external"])
def test_ddp_two_cpu_ranks_train_in_sync(tmp_path, launch):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK"):
        env.pop(key, None)
    cmd = [sys.executable, str(Path(__file__).resolve()), str(tmp_path)]
    if launch == "lightning":
        procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)]
    else:
        procs = [subprocess.Popen(cmd, env={**env, "LOCAL_RANK": str(r), "NODE_RANK": "0"},
                                  cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["global_rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert all(r["strategy"] == "DDPStrategy" for r in ranks)
    assert all(r["batches"] == 8 for r in ranks)  # 256 samples / 2 ranks / 16 per batch
    assert ranks[0]["params"] == ranks[1]["params"]  # in sync despite different inits
    for r in ranks:
        assert r["last_epoch_loss"] < 0.8 * r["first_epoch_loss"], r


if __name__ == "__main__":
    train(sys.argv[1])
