"""The network's descriptors (parameters, FLOPs, width, depth), measured so that it cannot lie.

:func:`measure` runs in a throwaway fork of the child that trains nothing and writes its
numbers to ``measures.json`` itself (:data:`~llmatic.train.protocol.MEASURES_FILE`); the
parent takes the descriptors from that file, not from the candidate's own report.
:func:`count_flops` and :func:`used_parameters` watch the forward pass at the dispatcher,
so work or weights hidden from module hooks are still counted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from llmatic.train.failures import CandidateFailure, classify
from llmatic.train.guard import TamperGuard
from llmatic.train.protocol import MEASURE_KEYS
from llmatic.types import Status


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
    read, write = os.pipe()
    if permit_fork is not None:  # the sandbox's audit hook refuses every other fork
        permit_fork()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read)
        os.close(write)
        raise CandidateFailure(Status.RUNTIME_ERROR, f"measuring the network: {exc}") from exc
    if pid == 0:
        _measuring_process(net, example, guard, report_fd, read, write)
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


def _measuring_process(net: Any, example: Any, guard: TamperGuard | None,
                       report_fd: int | None, read: int, write: int) -> None:
    """Body of the fork :func:`measure` starts: measure, report to both ends. Never returns."""
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
            failure = classify(exc, Status.RUNTIME_ERROR)
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
