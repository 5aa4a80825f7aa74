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
predicts.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmatic.types import Status

RESULT_FILE = "result.json"
LOGITS_FILE = "val_logits.npy"
#: The measured descriptors, written by the counting process only (see :func:`measure`).
MEASURES_FILE = "measures.json"
#: The keys of :data:`MEASURES_FILE` (what the search's descriptors are computed from).
MEASURE_KEYS = ("params", "flops", "width", "depth")


def result_file(rank: int = 0) -> str:
    """Where a child leaves its report: ``result.json`` for rank 0 (or no DDP)."""
    return RESULT_FILE if rank == 0 else f"result.rank{rank}.json"


def logits_file(split: str) -> str:
    """Where a child leaves the logits it predicted for ``split`` (unlabelled inputs)."""
    return f"{split}_logits.npy"


class CandidateFailure(Exception):
    """A candidate failed at a known stage; carries its status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def too_large_error(flops: int, cap: int) -> str:
    """Why a network above the compute cap was not trained."""
    return (f"{flops:,} FLOPs per input is above dataset.max_flops = {cap:,}: measured, not "
            "trained (raise the cap, or set it to null, to train it)")


def _short_traceback(exc: BaseException, limit: int = 1500) -> str:
    """The exception and the innermost frames that belong to the candidate's file."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename == "candidate.py"]
    where = f" (candidate.py line {own[-1].lineno}: {own[-1].line})" if own else ""
    text = f"{type(exc).__name__}: {exc}{where}"
    return text[:limit]


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(
        needle in text
        for needle in ("out of memory", "can't allocate memory", "cannot allocate memory",
                       "defaultcpuallocator")
    )


def _classify(exc: BaseException, default: Status) -> CandidateFailure:
    if isinstance(exc, CandidateFailure):
        return exc
    if _is_memory_error(exc):
        return CandidateFailure(Status.MEMORY_LIMIT, _short_traceback(exc))
    from llmatic.train.module import NonFiniteLossError

    if isinstance(exc, NonFiniteLossError):
        return CandidateFailure(Status.NON_FINITE, str(exc))
    return CandidateFailure(default, _short_traceback(exc))


def _guarded() -> dict[str, tuple[Any, str]]:
    """Functions that training and scoring rely on: a candidate must not replace them."""
    import builtins
    import json as json_module

    import torch
    import torch.nn.functional as F  # noqa: N812

    guarded = {
        "torch.nn.functional.cross_entropy": (F, "cross_entropy"),
        "torch.nn.Module.__call__": (torch.nn.Module, "__call__"),
        "torch.nn.Module.train": (torch.nn.Module, "train"),
        "torch.nn.Module.eval": (torch.nn.Module, "eval"),
        "torch.nn.Module.parameters": (torch.nn.Module, "parameters"),
        "torch.Tensor.backward": (torch.Tensor, "backward"),
        "torch.Tensor.numpy": (torch.Tensor, "numpy"),
        "torch.Tensor.float": (torch.Tensor, "float"),
        "torch.Tensor.cpu": (torch.Tensor, "cpu"),
        "torch.autograd.backward": (torch.autograd, "backward"),
        "torch.no_grad": (torch, "no_grad"),
        "torch.isfinite": (torch, "isfinite"),
        "torch.optim.Optimizer.step": (torch.optim.Optimizer, "step"),
        "torch.optim.Optimizer.zero_grad": (torch.optim.Optimizer, "zero_grad"),
        "numpy.save": (np, "save"),
        "numpy.concatenate": (np, "concatenate"),
        "numpy.isfinite": (np, "isfinite"),
        "json.dumps": (json_module, "dumps"),
        "builtins.open": (builtins, "open"),
    }
    for name in ("Adam", "AdamW", "SGD"):
        cls = getattr(torch.optim, name)
        # torch wraps a class's step() with a profiling hook at its first instantiation;
        # do that now so the snapshot holds the wrapped function.
        cls([torch.zeros(1, requires_grad=True)], lr=0.1)
        guarded[f"torch.optim.{name}.step"] = (cls, "step")
    return guarded


class TamperGuard:
    """Remembers the guarded functions; :meth:`check` fails if any was replaced."""

    def __init__(self) -> None:
        self.targets = _guarded()
        self.originals = {k: getattr(obj, attr) for k, (obj, attr) in self.targets.items()}

    def check(self, stage: str) -> None:
        """Raise a TAMPERING failure naming every replaced function."""
        changed = [k for k, (obj, attr) in self.targets.items()
                   if getattr(obj, attr, None) is not self.originals[k]]
        if changed:
            raise CandidateFailure(
                Status.TAMPERING, f"replaced {', '.join(changed)} (detected after {stage})"
            )


#: Modules that torch's C++ dispatcher and numpy's C core import lazily in the candidate's
#: frame (``ndarray.mean`` imports ``numpy._core._methods``; see :func:`guarded_builtins`);
#: the sandbox server imports them before any fork.
_NATIVE_LAZY = frozenset({"torch._library.simple_registry", "torch._library",
                          "torch._library.utils", "torch._library.fake_impl",
                          "numpy._core._methods", "numpy._core._exceptions",
                          "numpy._core._internal", "numpy._core._dtype",
                          "numpy._core.arrayprint", "numpy._core._ufunc_config",
                          "numpy.core._methods", "numpy.core._exceptions",
                          "numpy.core._internal", "numpy.core._dtype"})


def guarded_builtins(allowed: Any) -> dict[str, Any]:
    """The candidate's ``__builtins__``: the real ones, with imports limited to ``allowed``.

    The static policy already rejects such imports; this is the runtime layer (it also
    covers ``eval`` / ``exec`` / ``__import__`` spelled in ways the policy cannot see, and
    imports of modules the server process already holds, which the audit hook never sees).
    """
    import builtins
    import types

    allowed = frozenset(allowed)
    real_import = builtins.__import__

    import sys

    def check(name: str) -> None:
        # torch's dispatcher and numpy's core import a few of their own modules from native
        # code (FlopCounterMode, ndarray.mean), which Python attributes to the calling
        # frame: the candidate's.
        # Those already loaded are handed back; nothing new is ever loaded that way.
        if name not in allowed and not (name in _NATIVE_LAZY and name in sys.modules):
            raise ImportError(f"sandbox: import of {name!r} is not allowed")

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, ANN001, ANN202
        if level:
            raise ImportError("sandbox: relative imports are not allowed")
        check(name)
        module = real_import(name, globals, locals, fromlist, level)
        for item in fromlist or ():
            value = getattr(module, item, None)
            if isinstance(value, types.ModuleType):
                check(value.__name__)
        return module

    table = dict(builtins.__dict__)
    table["__import__"] = guarded_import
    return table


def count_flops(net: Any, example: Any) -> int:
    """Multiply-accumulate count of one forward pass of ``example``.

    Two counts: thop's module hooks and ``torch.utils.flop_counter.FlopCounterMode`` at the
    dispatcher, which sees every matmul / convolution however the candidate calls it
    (FLOPs / 2 = MACs). The larger is kept, so a network cannot look cheaper by hiding work
    from module hooks. thop leaves hooks and buffers on ``net``: :func:`measure` calls this
    in a throwaway fork, on the real network.
    """
    import contextlib
    import io

    import thop
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with contextlib.redirect_stdout(io.StringIO()):
        macs, _ = thop.profile(net, inputs=(example,), verbose=False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        torch.nn.Module.__call__(net, example)
    return max(int(macs), int(counter.get_total_flops()) // 2)


def used_parameters(net: Any, example: Any) -> dict[int, int]:
    """``{id: numel}`` of every parameter a forward of ``example`` reads.

    Seen at ``__torch_function__`` (any ``nn.Parameter`` or grad-requiring leaf passed to a
    torch function), so weights kept outside ``_parameters`` (an ``object.__setattr__``,
    a plain list, a closure) are counted too.
    """
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten

    seen: dict[int, int] = {}

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            for value in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(value, torch.Tensor) and (
                        isinstance(value, torch.nn.Parameter)
                        or (value.requires_grad and value.is_leaf)):
                    seen.setdefault(id(value), int(torch.Tensor.numel(value)))
            return func(*args, **(kwargs or {}))

    with Reads(), torch.enable_grad():
        torch.nn.Module.__call__(net, example)
    return seen


def _measure(net: Any, example: Any) -> dict[str, int]:
    """Parameters (registered or read by the forward), FLOPs, width and depth of ``net``."""
    from llmatic.qd import parameter_sizes
    from llmatic.train.module import width_and_depth

    sizes = {**used_parameters(net, example), **parameter_sizes(net)}
    width, depth = width_and_depth(net)
    return {"params": sum(sizes.values()), "flops": count_flops(net, example),
            "width": width, "depth": depth}


def measure(net: Any, example: Any, guard: TamperGuard | None = None,
            report_fd: int | None = None,
            permit_fork: Callable[[], None] | None = None) -> dict[str, int]:
    """The descriptors of ``net``, measured in a forked process that trains nothing.

    The fork starts with only the calling thread (a candidate's threads do not follow), no
    trace or profile function, and the guarded functions checked again; it walks the real
    network (no deep copy a ``__deepcopy__`` could fake) and writes its numbers to
    ``report_fd`` itself. The caller closes its copy of ``report_fd`` once the fork exists:
    what the candidate does afterwards (training, prediction) cannot change them.

    Raises:
        CandidateFailure: when the measurement failed or was tampered with.
    """
    import sys

    read, write = os.pipe()
    if permit_fork is not None:  # the sandbox's audit hook refuses every other fork
        permit_fork()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read)
        os.close(write)
        raise CandidateFailure(Status.RUNTIME_ERROR, f"measuring the network: {exc}") from exc
    if pid == 0:  # the measuring process
        code = 0
        try:
            os.close(read)
            sys.settrace(None)
            sys.setprofile(None)
            import torch

            torch.set_num_threads(1)
            try:
                if guard is not None:
                    guard.check("forward")
                out: dict[str, Any] = {"ok": True, **_measure(net, example)}
            except CandidateFailure as failure:
                out = {"ok": False, "status": failure.status.value, "error": str(failure)}
            except BaseException as exc:  # noqa: BLE001 - the candidate's failure
                failure = _classify(exc, Status.RUNTIME_ERROR)
                out = {"ok": False, "status": failure.status.value, "error": str(failure)}
            data = json.dumps(out).encode()
            if report_fd is not None and out["ok"]:
                os.ftruncate(report_fd, 0)
                os.pwrite(report_fd, data, 0)
            while data:
                data = data[os.write(write, data[:65536]):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    if report_fd is not None:
        os.close(report_fd)  # from here on only the measuring process holds it
    chunks = []
    with os.fdopen(read, "rb") as fh:
        while chunk := fh.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    try:
        out = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        out = {}
    if not out:
        raise CandidateFailure(Status.RUNTIME_ERROR, "measuring the network failed (exit "
                               f"status {os.waitstatus_to_exitcode(status)})")
    if not out.get("ok"):
        raise CandidateFailure(Status(out["status"]), out["error"])
    return {k: int(out[k]) for k in MEASURE_KEYS}


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
    timings: dict[str, float] = result["timings"]
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

    def stage(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 4)

    try:
        import torch

        torch.set_num_threads(max(1, int(job.get("torch_threads", 1))))
        seed = int(job.get("seed", 0))
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        import random

        random.seed(seed)
        input_shape = tuple(job["input_shape"])
        num_classes = int(job["num_classes"])

        # -- exec: defines the classes. Nothing is imported into the search process.
        t = time.perf_counter()
        guard = TamperGuard()
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
            raise _classify(exc, Status.INSTANTIATION_ERROR) from exc
        guard.check("exec")
        stage("exec", t)

        # -- instantiate
        t = time.perf_counter()
        cls = namespace.get(job["class_name"])
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise CandidateFailure(
                Status.NO_NETWORK, f"{job['class_name']!r} is not an nn.Module subclass"
            )
        try:
            net = cls()
        except BaseException as exc:  # noqa: BLE001
            raise _classify(exc, Status.INSTANTIATION_ERROR) from exc
        stage("instantiate", t)

        # -- forward a dummy batch; also initialises lazy modules
        t = time.perf_counter()
        example = torch.randn(2, *input_shape)
        try:
            net.eval()
            with torch.no_grad():
                out = net(example)
        except BaseException as exc:  # noqa: BLE001
            raise _classify(exc, Status.RUNTIME_ERROR) from exc
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CandidateFailure(
                Status.BAD_OUTPUT_SHAPE, f"forward returned {got}, expected (2, {num_classes})"
            )
        guard.check("forward")
        stage("forward", t)

        # -- count: params, FLOPs, width, depth (descriptors come from these)
        t = time.perf_counter()
        # In a fork that reports to its own file (base-class walks over the real tensors:
        # overrides cannot change the numbers; the training below cannot either).
        report = outputs.pop("measures", None) if outputs else None
        result.update(measure(net, example[:1], guard, report, permit_fork))
        stage("count", t)
        result["final"] = False
        save()  # partial result (not final): survives a crash during training
        cap = job.get("max_flops")
        if cap is not None and result["flops"] > int(cap):  # the search enforces it too
            raise CandidateFailure(Status.TOO_LARGE, too_large_error(result["flops"], int(cap)))

        if int(job.get("epochs", 0)) <= 0 or not job.get("data_dir"):
            result["status"] = Status.OK.value
            return result

        # -- train with Lightning
        t = time.perf_counter()
        from hydra.utils import instantiate

        from llmatic.train.data import batch_loader, load_child_arrays
        from llmatic.train.module import NetModule

        split = str(job.get("predict_split", "val"))
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
            raise _classify(exc, Status.RUNTIME_ERROR) from exc
        if getattr(trainer, "interrupted", False):
            raise CandidateFailure(Status.RUNTIME_ERROR, "training was interrupted")
        guard.check("training")
        result["train_loss"] = module.last_loss
        if world_size > 1:  # what each rank saw: the test of a real DDP run
            with torch.no_grad():
                checksum = sum(float(p.double().sum()) for p in net.parameters()
                               if not torch.nn.parameter.is_lazy(p))
            result["ddp"] = {"global_rank": trainer.global_rank,
                             "world_size": trainer.world_size,
                             "train_batches": trainer.num_training_batches,
                             "param_checksum": checksum}
        stage("train", t)
        if rank > 0:
            return result

        # -- predict validation logits; the search process scores them
        t = time.perf_counter()
        net.eval()
        chunks = []
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        try:
            with torch.no_grad():
                for x in batch_loader(val_inputs, 512, shuffle=False):
                    chunks.append(net(x.to(device)).float().cpu().numpy())
        except BaseException as exc:  # noqa: BLE001
            raise _classify(exc, Status.RUNTIME_ERROR) from exc
        logits = np.concatenate(chunks).astype(np.float32)
        if logits.shape != (len(val_inputs), num_classes):
            raise CandidateFailure(
                Status.BAD_OUTPUT_SHAPE,
                f"validation logits have shape {logits.shape}, expected "
                f"({len(val_inputs)}, {num_classes})",
            )
        if not np.isfinite(logits).all():
            raise CandidateFailure(Status.NON_FINITE, "validation logits contain NaN or inf")
        guard.check("prediction")
        if outputs and "logits" in outputs:
            with os.fdopen(os.dup(outputs["logits"]), "wb") as fh:
                np.save(fh, logits)
        else:
            np.save(workdir / logits_file(split), logits)
        stage("predict", t)
        if result.get("train_loss") is not None and not math.isfinite(result["train_loss"]):
            raise CandidateFailure(Status.NON_FINITE, "training loss is not finite")
    except CandidateFailure as failure:
        result["status"] = failure.status.value
        result["error"] = str(failure)
    except BaseException as exc:  # noqa: BLE001 - report, never propagate
        failure = _classify(exc, Status.RUNTIME_ERROR)
        result["status"] = failure.status.value
        result["error"] = str(failure)
    finally:
        result["final"] = True
        save()
    return result


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
