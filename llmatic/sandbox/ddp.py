"""How many DDP ranks a trainer config asks for; which DDP strategies the sandbox can join.

The sandbox runs a DDP candidate as one process per rank, forked by a supervisor
(:func:`llmatic.sandbox.child.run_supervisor`); Lightning then joins those ranks instead of
launching its own processes, which the sandbox would refuse. :func:`plan_ranks` reads a job's
trainer config and says how many ranks to fork and on which GPUs.
"""

from __future__ import annotations

import os
from typing import Any

#: DDP strategies whose ranks the sandbox forks and joins itself (others launch processes):
#: Lightning can join ranks that were started outside it. The ``spawn`` / ``fork`` /
#: ``notebook`` variants always start processes themselves.
JOINABLE_DDP = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def _device_count(devices: Any, available: int | None) -> int:
    """How many devices a Lightning ``devices`` value asks for (``available``: -1 / auto)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text in ("-1", "auto"):
        if available is None:
            raise ValueError(f"trainer.devices={devices} needs an accelerator with devices "
                             "to count; give a number of CPU processes")
        return available
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"trainer.devices={devices!r} is not understood") from None


def plan_ranks(
    trainer: dict[str, Any], cuda_devices: str | None
) -> tuple[int, dict[str, Any], str | None]:
    """How many DDP rank processes a job's trainer config asks for, and what they are given.

    DDP (``strategy: ddp``) with N > 1 devices gets N ranks: N = the GPUs bound to the
    candidate (``cuda_devices``; else this process's ``CUDA_VISIBLE_DEVICES``; else all
    GPUs) for ``devices: -1``, or the number given (CPU ranks talk over gloo). DDP with one
    device runs the normal single-process path with ``strategy: auto``. Any other strategy
    is passed on unchanged.

    Returns:
        ``(world_size, trainer, cuda_devices)`` for the child(ren).

    Raises:
        ValueError: for a DDP config the sandbox cannot run (several nodes, a strategy that
            launches its own processes, more devices than are bound).
    """
    strategy = trainer.get("strategy", "auto")
    if not (isinstance(strategy, str) and strategy.startswith("ddp")):
        return 1, trainer, cuda_devices
    if int(trainer.get("num_nodes", 1)) != 1:
        raise ValueError("trainer.num_nodes must be 1 inside the sandbox (DDP on one machine)")
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    devices = trainer.get("devices", "auto")
    gpus: list[str] = []
    bound = cuda_devices
    if accelerator in ("gpu", "cuda", "auto"):
        bound = cuda_devices if cuda_devices is not None else os.environ.get(
            "CUDA_VISIBLE_DEVICES")
        if bound is not None:
            gpus = [g for g in bound.split(",") if g.strip()]
        else:
            import torch

            gpus = [str(i) for i in range(torch.cuda.device_count())]
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus)
    if on_gpu:
        world_size = _device_count(devices, len(gpus))
        if world_size > len(gpus):
            raise ValueError(f"trainer.devices={devices} asks for {world_size} GPUs but "
                             f"{len(gpus)} are bound to the candidate ({bound!r})")
    else:
        world_size = _device_count(1 if devices == "auto" else devices, None)
    if world_size < 1:
        raise ValueError(f"trainer.devices={devices} gives {world_size} DDP processes")
    if world_size == 1:  # no process group for one device: the normal path
        single = {**trainer, "strategy": "auto", "devices": 1}
        if "sync_batchnorm" in single:
            single["sync_batchnorm"] = False
        return 1, single, cuda_devices
    if strategy not in JOINABLE_DDP:
        raise ValueError(f"trainer.strategy={strategy} starts its own processes, which the "
                         f"sandbox refuses; use one of {sorted(JOINABLE_DDP)}")
    return world_size, {**trainer, "devices": world_size}, bound if on_gpu else cuda_devices
