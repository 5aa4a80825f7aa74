"""The pre-warmed fork server: ``python -m llmatic.sandbox.server --isolation MODE``.

Started once per run by the client (:class:`llmatic.sandbox.client.Sandbox`), with a
scrubbed environment. It imports torch, Lightning and the worker once, probes the kernel
isolation, then forks one fresh child per job line it reads on stdin
(:func:`llmatic.sandbox.child.run_child`, or a DDP supervisor) and reports each child's pid
and exit code on stdout. The server itself never runs candidate code, and never imports
the config stack (Hydra, OmegaConf): the child imports Hydra only to build its trainer.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import sys
import time
from typing import Any

from llmatic.sandbox.child import run_child, run_supervisor
from llmatic.sandbox.common import kill_group


def serve(isolation: str = "auto", caps: dict[str, Any] | None = None) -> None:
    """The pre-warmed server loop: read job lines on stdin, fork, report exits.

    Protocol (JSON lines): in ``{"id", "job_dir", "memory_mb", "torch_threads", "timeout_s",
    "cuda_devices"}`` and ``"world_size"`` for DDP (a supervisor, see
    :func:`~llmatic.sandbox.child.run_supervisor`); out ``{"ready", "isolation"}`` once, then
    ``{"id", "pid"}`` after forking and ``{"id", "exitcode", "events"}`` after the child is
    reaped (negative: killed by that signal; ``events``: the caps it ran into, e.g.
    ``{"oom_kill": 1}``).
    """
    # Keep the protocol on a private descriptor; stray prints from libraries go to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    _preload()
    from llmatic.sandbox.caps import Caps
    from llmatic.sandbox.isolation import IsolationError, probe

    try:  # which kernel layers every child gets; strict refuses to start without one
        probed = probe(isolation, caps=Caps.from_dict(caps), keep=True)
    except (IsolationError, ValueError, TypeError) as exc:
        proto.write(json.dumps({"ready": False, "error": str(exc)}) + "\n")
        return
    iso = probed if probed.active else None
    try:
        proto.write(json.dumps({"ready": True, "isolation": probed.report()}) + "\n")
        _loop(iso, proto)
    finally:
        if probed.cgroups is not None:
            probed.cgroups.close()


def _loop(iso: Any, proto: Any) -> None:
    """Fork a child per job line until stdin closes and every child is reaped."""
    groups = iso.cgroups if iso is not None else None
    children: dict[int, Any] = {}
    deadlines: dict[int, float] = {}  # pid -> monotonic time after which it is killed
    buffer = b""
    stdin_open = True
    while stdin_open or children:
        if stdin_open:
            ready, _, _ = select.select([0], [], [], 0.02)
            if ready:
                data = os.read(0, 65536)
                if not data:
                    stdin_open = False  # the search process is gone: kill what is left
                    for pid in list(children):
                        kill_group(pid)
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    req = json.loads(line)
                    pid = _fork_job(req, iso)
                    children[pid] = req["id"]
                    if req.get("timeout_s"):  # a second guard in case the client is gone
                        deadlines[pid] = time.monotonic() + float(req["timeout_s"]) + 5.0
                    proto.write(json.dumps({"id": req["id"], "pid": pid}) + "\n")
        else:
            time.sleep(0.02)
        _kill_overdue(deadlines)
        _reap(children, deadlines, proto, groups)


def _preload() -> None:
    """Import everything a child needs once, here, before any fork (and never init CUDA)."""
    import warnings

    import lightning  # noqa: F401
    import thop  # noqa: F401
    import torch  # noqa: F401

    import llmatic.qd.descriptors  # noqa: F401 - the measuring fork needs it
    import llmatic.train.data  # noqa: F401
    import llmatic.train.module  # noqa: F401
    import llmatic.train.worker  # noqa: F401
    from llmatic.train import NATIVE_LAZY

    for name in sorted(NATIVE_LAZY):  # imported here, never in a candidate
        with contextlib.suppress(ImportError), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy.core.* is numpy 1's name: deprecated
            importlib.import_module(name)


def _fork_job(req: dict[str, Any], iso: Any) -> int:
    """Fork the process for one job line (a child, or a DDP supervisor); its pid."""
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        if int(req.get("world_size") or 1) > 1:
            run_supervisor(req, server, iso)
        run_child(req["job_dir"], req["memory_mb"], req["torch_threads"], server,
                  req.get("timeout_s"), req.get("cuda_devices"), iso=iso)
    return pid


def _kill_overdue(deadlines: dict[int, float]) -> None:
    """Kill the process group of every child past its deadline (once)."""
    now = time.monotonic()
    for pid, deadline in list(deadlines.items()):
        if now > deadline:
            kill_group(pid)
            del deadlines[pid]


def _reap(children: dict[int, Any], deadlines: dict[int, float], proto: Any,
          groups: Any = None) -> None:
    """Reap every child that exited (without waiting); report its job's exit code.

    A child's cgroups (``groups``) are emptied and removed once it is gone.
    """
    if groups is not None and groups.pending:
        groups.sweep()
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            break
        if pid == 0:
            break
        job_id = children.pop(pid, None)
        deadlines.pop(pid, None)
        events = groups.release(pid) if groups is not None else {}
        if job_id is not None:
            code = os.waitstatus_to_exitcode(status)
            proto.write(json.dumps({"id": job_id, "exitcode": code, "events": events}) + "\n")


def _arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


if __name__ == "__main__":
    serve(_arg("--isolation", "auto"), json.loads(_arg("--caps", "null")))
