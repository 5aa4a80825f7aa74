"""What runs inside a sandboxed child: build, check, measure and train one network.

This module is imported by the pre-warmed sandbox server (``llmatic.sandbox.server``) and runs
only in a forked child, never in the search process. :func:`run_job` turns a job
(the candidate's source plus the fixed training recipe) into a result dict and a file of
validation logits; the *search* process computes accuracy and loss from those logits with
labels the child never sees.

Order of stages (each timed): ``exec`` the module, ``instantiate`` the class, ``forward`` a
dummy batch and check its shape, ``count`` parameters / FLOPs / width / depth, ``train``
with a Lightning Trainer, ``predict`` logits on the validation inputs. Under DDP every rank
runs the stages up to ``train`` (Lightning joins the ranks the sandbox started); only rank 0
predicts. Each stage is one function below, in that order; :func:`_evaluate` calls them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmatic.train.artifacts import write_artifacts
from llmatic.train.failures import CandidateFailure, classify
from llmatic.train.guard import TamperGuard, guarded_builtins
from llmatic.train.measure import measure
from llmatic.train.protocol import logits_file, result_file, too_large_error
from llmatic.types import Status


def run_job(job: dict[str, Any], workdir: Path, outputs: dict[str, int] | None = None,
            permit_fork: Callable[[], None] | None = None) -> dict[str, Any]:
    """Evaluate one candidate and return the result dict (also written to ``result.json``).

    The dict has ``status``, ``error``, ``params``, ``flops``, ``width``, ``depth``,
    ``train_loss``, ``timings`` and ``final`` (true only in the record written after the
    last stage: a partial record left by a child that died, or exited early, never counts).
    On success, validation logits are in ``val_logits.npy``. ``outputs``: descriptors of the
    report and logits files, opened before the sandbox made the job directory read-only.
    """
    result: dict[str, Any] = {"status": Status.OK.value, "error": None, "timings": {}}
    # One of several DDP ranks (started by the sandbox): only rank 0 predicts and writes
    # result.json; the others report to result.rank<r>.json.
    rank, world_size = int(job.get("rank", 0)), int(job.get("world_size", 1))

    def save() -> None:
        data = json.dumps(result).encode()
        if outputs and "result" in outputs:
            os.ftruncate(outputs["result"], 0)
            os.pwrite(outputs["result"], data, 0)
        else:
            (workdir / result_file(rank)).write_bytes(data)

    try:
        _evaluate(job, workdir, result, save, outputs, permit_fork, rank, world_size)
    except CandidateFailure as failure:
        result["status"] = failure.status.value
        result["error"] = str(failure)
    except BaseException as exc:  # noqa: BLE001 - report, never propagate
        failure = classify(exc, Status.RUNTIME_ERROR)
        result["status"] = failure.status.value
        result["error"] = str(failure)
    finally:
        result["final"] = True
        save()
    return result


def _evaluate(job: dict[str, Any], workdir: Path, result: dict[str, Any],
              save: Callable[[], None], outputs: dict[str, int] | None,
              permit_fork: Callable[[], None] | None, rank: int, world_size: int) -> None:
    """The stages in order; each records its time in ``result["timings"]`` when it succeeds.

    Raises:
        CandidateFailure: the candidate failed at a known stage (any other exception is
            classified by :func:`run_job`).
    """
    timings: dict[str, float] = result["timings"]
    seed = _seed_everything(job)
    input_shape = tuple(job["input_shape"])
    num_classes = int(job["num_classes"])

    t = time.perf_counter()
    guard = TamperGuard()
    namespace = _exec_candidate(job)
    guard.check("exec")
    _stage(timings, "exec", t)

    t = time.perf_counter()
    net = _instantiate(namespace, job["class_name"])
    _stage(timings, "instantiate", t)

    t = time.perf_counter()
    example = _forward_dummy_batch(net, input_shape, num_classes)
    guard.check("forward")
    _stage(timings, "forward", t)

    # -- count: params, FLOPs, width, depth (descriptors come from these)
    t = time.perf_counter()
    # In a fork that reports to its own file (base-class walks over the real tensors:
    # overrides cannot change the numbers; the training below cannot either).
    report = outputs.pop("measures", None) if outputs else None
    result.update(measure(net, example[:1], guard, report, permit_fork))
    _stage(timings, "count", t)
    result["final"] = False
    save()  # partial result (not final): survives a crash during training
    cap = job.get("max_flops")
    if cap is not None and result["flops"] > int(cap):  # the search enforces it too
        raise CandidateFailure(Status.TOO_LARGE, too_large_error(result["flops"], int(cap)))

    if int(job.get("epochs", 0)) <= 0 or not job.get("data_dir"):
        result["status"] = Status.OK.value
        return

    t = time.perf_counter()
    split = str(job.get("predict_split", "val"))
    module, trainer, val_inputs = _train(job, net, workdir, seed, split)
    guard.check("training")
    result["train_loss"] = module.last_loss
    if world_size > 1:  # what each rank saw: the test of a real DDP run
        result["ddp"] = _ddp_report(net, trainer)
    _stage(timings, "train", t)
    if rank > 0:
        return

    # -- predict validation logits; the search process scores them
    t = time.perf_counter()
    logits = _predict(net, val_inputs, num_classes)
    guard.check("prediction")
    _write_logits(logits, outputs, workdir, split)
    _stage(timings, "predict", t)
    if outputs and ("weights" in outputs or "onnx" in outputs):  # the final retrain only
        t = time.perf_counter()
        write_artifacts(net, input_shape, outputs, result)
        _stage(timings, "artifacts", t)
    if result.get("train_loss") is not None and not math.isfinite(result["train_loss"]):
        raise CandidateFailure(Status.NON_FINITE, "training loss is not finite")


def _stage(timings: dict[str, float], name: str, started: float) -> None:
    """Record how long stage ``name`` took since ``started``."""
    timings[name] = round(time.perf_counter() - started, 4)


def _seed_everything(job: dict[str, Any]) -> int:
    """Set torch's thread count and seed torch, numpy and ``random``; return the seed."""
    import torch

    torch.set_num_threads(max(1, int(job.get("torch_threads", 1))))
    seed = int(job.get("seed", 0))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random

    random.seed(seed)
    return seed


def _exec_candidate(job: dict[str, Any]) -> dict[str, Any]:
    """``exec`` stage: run the candidate's module (defines its classes); its namespace.

    Nothing is imported into the search process: this runs in the sandboxed child.
    """
    namespace: dict[str, Any] = {"__name__": "candidate"}
    if job.get("allowed_imports") is not None:
        namespace["__builtins__"] = guarded_builtins(job["allowed_imports"])
    import linecache

    # Lets tracebacks quote the candidate's offending line in error messages.
    linecache.cache["candidate.py"] = (
        len(job["code"]), None, job["code"].splitlines(True), "candidate.py"
    )
    try:
        code = compile(job["code"], "candidate.py", "exec")
    except SyntaxError as exc:
        raise CandidateFailure(Status.SYNTAX_ERROR, f"SyntaxError: {exc}") from exc
    try:
        exec(code, namespace)  # noqa: S102 - this is the sandboxed child
    except BaseException as exc:  # noqa: BLE001 - any failure is the candidate's
        raise classify(exc, Status.INSTANTIATION_ERROR) from exc
    return namespace


def _instantiate(namespace: dict[str, Any], class_name: str) -> Any:
    """``instantiate`` stage: the network, an instance of the candidate's class."""
    import torch

    cls = namespace.get(class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise CandidateFailure(
            Status.NO_NETWORK, f"{class_name!r} is not an nn.Module subclass"
        )
    try:
        return cls()
    except BaseException as exc:  # noqa: BLE001
        raise classify(exc, Status.INSTANTIATION_ERROR) from exc


def _forward_dummy_batch(net: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """``forward`` stage: a random batch of two, shape-checked; also initialises lazy modules.

    Returns:
        The batch (the measurement uses its first input).
    """
    import torch

    example = torch.randn(2, *input_shape)
    try:
        net.eval()
        with torch.no_grad():
            out = net(example)
    except BaseException as exc:  # noqa: BLE001
        raise classify(exc, Status.RUNTIME_ERROR) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CandidateFailure(
            Status.BAD_OUTPUT_SHAPE, f"forward returned {got}, expected (2, {num_classes})"
        )
    return example


def _train(job: dict[str, Any], net: Any, workdir: Path, seed: int,
           split: str) -> tuple[Any, Any, Any]:
    """``train`` stage: fit ``net`` with the job's Lightning recipe; ``split`` is predicted.

    Returns:
        ``(module, trainer, val_inputs)``: the LightningModule (its ``last_loss``), the
        trainer (its ranks) and the inputs to predict (no labels).
    """
    from hydra.utils import instantiate

    from llmatic.train.data import batch_loader, load_child_arrays
    from llmatic.train.module import NetModule

    train_set, val_inputs = load_child_arrays(job["data_dir"], split)
    scheduler = job.get("scheduler")
    module = NetModule(net=net, optimizer=instantiate(job["optimizer"]),
                       scheduler=None if scheduler is None else instantiate(scheduler))
    trainer_cfg = {"_target_": "lightning.Trainer", **job["trainer"]}
    trainer = instantiate(trainer_cfg, max_epochs=int(job["epochs"]),
                          default_root_dir=str(workdir / "scratch"))
    if str(job["trainer"].get("accelerator")) in ("gpu", "cuda") and train_set.x.ndim == 4:
        # GPU-resident data: uint8 images on the device, normalised per batch there.
        from llmatic.train.device_data import DeviceBatches

        loader = DeviceBatches(
            train_set.x, train_set.y, batch_size=int(job["batch_size"]),
            scale=train_set.scale, mean=train_set.mean.flatten().tolist(),
            std=train_set.std.flatten().tolist(), device=trainer.strategy.root_device,
            shuffle=True, seed=seed, crop_pad=int(job.get("crop_pad", 0)),
            flip=bool(job.get("flip", False)),
            rank=trainer.global_rank, world_size=trainer.world_size)
    else:
        loader = batch_loader(train_set, int(job["batch_size"]), shuffle=True, seed=seed)
    net.train()
    try:
        trainer.fit(module, train_dataloaders=loader)
    except BaseException as exc:  # noqa: BLE001
        raise classify(exc, Status.RUNTIME_ERROR) from exc
    if getattr(trainer, "interrupted", False):
        raise CandidateFailure(Status.RUNTIME_ERROR, "training was interrupted")
    return module, trainer, val_inputs


def _ddp_report(net: Any, trainer: Any) -> dict[str, Any]:
    """What one DDP rank saw: its rank, the world size, its batches, a parameter checksum."""
    import torch

    with torch.no_grad():
        checksum = sum(float(p.double().sum()) for p in net.parameters()
                       if not torch.nn.parameter.is_lazy(p))
    return {"global_rank": trainer.global_rank, "world_size": trainer.world_size,
            "train_batches": trainer.num_training_batches, "param_checksum": checksum}


def _predict(net: Any, val_inputs: Any, num_classes: int) -> np.ndarray:
    """``predict`` stage: the logits of ``val_inputs``, checked for shape and finiteness."""
    import torch

    from llmatic.train.data import batch_loader

    net.eval()
    chunks = []
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            for x in batch_loader(val_inputs, 512, shuffle=False):
                chunks.append(net(x.to(device)).float().cpu().numpy())
    except BaseException as exc:  # noqa: BLE001
        raise classify(exc, Status.RUNTIME_ERROR) from exc
    logits = np.concatenate(chunks).astype(np.float32)
    if logits.shape != (len(val_inputs), num_classes):
        raise CandidateFailure(
            Status.BAD_OUTPUT_SHAPE,
            f"validation logits have shape {logits.shape}, expected "
            f"({len(val_inputs)}, {num_classes})",
        )
    if not np.isfinite(logits).all():
        raise CandidateFailure(Status.NON_FINITE, "validation logits contain NaN or inf")
    return logits


def _write_logits(logits: np.ndarray, outputs: dict[str, int] | None, workdir: Path,
                  split: str) -> None:
    """Save ``logits`` to the descriptor the sandbox opened (else ``<split>_logits.npy``)."""
    if outputs and "logits" in outputs:
        with os.fdopen(os.dup(outputs["logits"]), "wb") as fh:
            np.save(fh, logits)
    else:
        np.save(workdir / logits_file(split), logits)


def main(argv: list[str] | None = None) -> int:
    """Run one job file in *this* process (debugging aid; the search never does this)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0])
    job = json.loads((job_dir / "job.json").read_text())
    result = run_job(job, job_dir)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
