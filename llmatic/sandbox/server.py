"""Run untrusted network code in fresh child processes with limits.

Design (METHOD.md §3.10): generated code never runs in the search process. A
*pre-warmed server* process (started once per run) imports torch, Lightning and the
worker, then ``fork()``s one fresh child per candidate, so a candidate pays milliseconds
instead of the ~10 s it takes a new interpreter to import Lightning. The server itself never
runs candidate code; each child runs exactly one candidate and exits.

Each child, before the candidate's code runs:

* starts a new session (its own process group), so a timeout kills it and anything it
  spawned with one ``SIGKILL`` to the group — a signal the code cannot catch;
* limits its data segment (``RLIMIT_DATA``) to the server's baseline + ``memory_mb``, its
  file sizes (``RLIMIT_FSIZE``) and core dumps;
* gets a scrubbed environment (no API keys), a private working directory, stdin from
  ``/dev/null`` and stdout/stderr redirected to capped files;
* installs an audit hook (``sys.addaudithook``) that refuses process creation, sockets,
  ``ctypes`` and writes outside its working directory.

DDP (``trainer=ddp`` with N > 1 devices, :func:`plan_ranks`): the server forks one
*supervisor* per candidate instead, which starts the session, binds a rendezvous socket on
127.0.0.1 only and forks N rank children before any audit hook exists; each rank then gets
the limits and the hook above (process creation stays refused) and Lightning joins the ranks
through ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_PORT`` instead of launching them. The
supervisor hosts the ranks' store itself, so they only connect to loopback; the process
group rendezvous and gloo / NCCL run in native code, which the audit hook does not see
(``torch.distributed`` is refused to the candidate by the static policy). Only rank 0
predicts and writes ``result.json``; when any rank fails the supervisor kills the others at
once and reports the first failure as the candidate's; a timeout kills the whole group.

Inside the child the candidate's imports are checked against ``sandbox.allowed_imports``
and the functions training relies on are compared with a snapshot after every stage
(``worker.TamperGuard``); the search process scores the returned logits itself. Before any of
this, ``llmatic.extract.policy`` rejects code statically.

Threat model. Protected: the search process and its results (code never runs there; fitness
is computed there), other candidates (one process each), the file system outside the
child's directory (writes, deletions, renames), the network, other processes, secrets in
the environment. NOT protected: a kernel or CPython exploit, reads of files the user can
read (the child runs as the same user), a determined attacker who escapes the Python-level
checks (e.g. through a native-code bug), CPU time stolen until the timeout fires, and GPU
memory shared with other jobs. For untrusted models, also run the search in a container or
VM as an unprivileged user without network, or under gVisor (``runsc``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmatic.train import (
    LOGITS_FILE,
    MEASURE_KEYS,
    MEASURES_FILE,
    RESULT_FILE,
    logits_file,
    result_file,
)
from llmatic.types import EvalResult, Status

#: DDP strategies whose ranks the sandbox forks and joins itself (others launch processes).
JOINABLE_DDP = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")

#: Largest file a child may write (its logs, result and logits).
MAX_FILE_BYTES = 256 * 2**20
#: How much of a child's stderr is kept in an error message.
STDERR_TAIL = 2000

_BLOCKED_EVENTS = frozenset(
    {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg",
        "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
        "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at",
        "os.chdir", "os.symlink", "os.link",
        "shutil.rmtree", "webbrowser.open",
    }
)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = frozenset(
    {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
     "os.utime", "os.listdir", "os.scandir"}
)


def _install_audit_hook(workdir: str) -> Callable[[], None]:
    """Refuse dangerous operations from here on (see the module docstring).

    Returns ``permit_fork``: the worker calls it right before forking the process that
    measures the network (one ``os.fork`` per call; any other fork is refused).
    """
    root = os.path.realpath(workdir)
    forks = [0]

    def permit_fork() -> None:
        forks[0] += 1

    def inside(path: Any) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return real == root or real.startswith(root + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event == "os.fork" and forks[0] > 0:
            forks[0] -= 1
            return
        if event in _BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} is not allowed")
        elif event in _PATH_EVENTS:
            if event in {"os.listdir", "os.scandir"}:
                return
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    raise PermissionError(f"sandbox: {event} on {path!r} is not allowed")

    sys.addaudithook(hook)
    return permit_fork


#: Memory a DDP supervisor may allocate for its rendezvous store (its clients are candidates).
SUPERVISOR_MEMORY_MB = 256


def _regular_file(path: Path) -> bool:
    """Whether ``path`` is a plain file (not a FIFO, device or link a candidate left there)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _vm_data_bytes() -> int:
    """This process's current data segment size (what RLIMIT_DATA measures)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the server dies (Linux prctl)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)


#: What the server applies to every child (set by :func:`serve` from ``--isolation``).
_ISOLATION: Any = None
#: The job directory's subdirectory a candidate may write (HOME, TMPDIR, Lightning's root).
SCRATCH = "scratch"


def _child(job_dir: str, memory_mb: int | None, torch_threads: int, server: int,
           timeout_s: float | None = None, cuda_devices: str | None = None,
           rank_env: dict[str, str] | None = None) -> None:
    """Body of a forked child: limits, then the worker. Never returns.

    ``rank_env`` (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_PORT``...) makes the child one DDP
    rank of a candidate: it stays in its supervisor's process group (``server`` is then the
    supervisor), writes ``*.rank<r>.*`` files unless it is rank 0, and exits with code 2
    when the candidate failed, so that the supervisor stops the other ranks at once.
    """
    code = 0
    rank = int(rank_env["RANK"]) if rank_env else 0
    iso = _ISOLATION
    try:
        _die_with_parent(server)
        if rank_env is None:
            os.setsid()
        os.chdir(job_dir)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        suffix = f".rank{rank}" if rank else ""
        out = os.open(f"stdout{suffix}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(f"stderr{suffix}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.closerange(3, 1024)  # the server's protocol pipes and anything else
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        if iso is not None and rank_env is None:  # a DDP supervisor already did this
            iso.enter()  # from here on: PID 1 of new user/pid/net/mount namespaces
        job = json.loads(Path("job.json").read_text())
        # The worker's reports are opened now: the candidate cannot write the job directory.
        outputs = {"result": os.open(result_file(rank), _NEW_FILE, 0o600)}
        if rank == 0:
            split = str(job.get("predict_split", "val"))
            outputs["logits"] = os.open(logits_file(split), _NEW_FILE, 0o600)
            outputs["measures"] = os.open(MEASURES_FILE, _NEW_FILE, 0o600)
        scratch = os.path.join(job_dir, SCRATCH)
        os.makedirs(scratch, exist_ok=True)
        os.chdir(scratch)
        if memory_mb:  # None / 0: no limit (e.g. if a CUDA driver refuses to start under one)
            limit = _vm_data_bytes() + int(memory_mb) * 2**20
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if timeout_s:  # CPU-time backstop: SIGXCPU, then SIGKILL five seconds later
            cpu = int(timeout_s * max(1, torch_threads) + 30)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        keep = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        os.environ.clear()
        os.environ.update(keep)
        os.environ.update(
            {"HOME": scratch, "TMPDIR": scratch, "OMP_NUM_THREADS": str(torch_threads)}
        )
        if cuda_devices is not None:  # the evaluator binds this child to its GPU(s)
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
        if rank_env:
            os.environ.update(rank_env)
        from llmatic.train import run_job

        job["torch_threads"] = torch_threads
        if rank_env:
            job["rank"], job["world_size"] = rank, int(rank_env["WORLD_SIZE"])
        if iso is not None:  # Landlock + seccomp: the last step before candidate code
            inputs = [job["data_dir"]] if job.get("data_dir") else []
            iso.restrict(job_dir=job_dir, inputs=inputs, writable=[scratch],
                         ddp=rank_env is not None)
        permit_fork = None
        if job.get("audit_hook", True):  # off only in tests of the kernel layers alone
            permit_fork = _install_audit_hook(job_dir)
        result = run_job(job, Path(job_dir), outputs=outputs, permit_fork=permit_fork)
        if rank_env and result.get("status") != Status.OK.value:
            code = 2  # the other ranks would wait for this one in a collective
    except BaseException:  # noqa: BLE001 - the result file says what happened
        code = 1
        try:
            import traceback

            traceback.print_exc()  # e.g. a layer that could not be applied: never silent
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # skip atexit handlers and finalizers inherited from the server


def _supervise(req: dict[str, Any], server: int) -> None:
    """Body of a forked DDP supervisor: ``world_size`` rank children in one group. Never returns.

    The supervisor runs no candidate code. It starts a session (the candidate's process
    group, as a single child's would be), forks the ranks before any of them installs the
    audit hook, and hosts their rendezvous store on a loopback socket it bound itself (the
    ranks only connect to it: ``TORCHELASTIC_USE_AGENT_STORE``). When a rank fails, the others
    are killed at once and the failure is written into rank 0's report.
    """
    code, in_session = 1, False
    try:
        _die_with_parent(server)
        os.setsid()
        in_session = True
        job_dir, world_size = req["job_dir"], int(req["world_size"])
        os.chdir(job_dir)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 1024)  # the server's protocol pipes
        if _ISOLATION is not None:  # the ranks share one set of namespaces (loopback up)
            _ISOLATION.enter(ddp_supervisor=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        me = os.getpid()
        ranks: dict[int, int] = {}
        for rank in range(world_size):
            env = {"LOCAL_RANK": str(rank), "RANK": str(rank), "WORLD_SIZE": str(world_size),
                   "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                   "TORCHELASTIC_USE_AGENT_STORE": "True",  # every rank a store client
                   "GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
            pid = os.fork()
            if pid == 0:
                _child(job_dir, req["memory_mb"], req["torch_threads"], me,
                       req.get("timeout_s"), req.get("cuda_devices"), rank_env=env)
            ranks[pid] = rank
        # Only now (after the forks) does this process start the store's threads. Its
        # clients are candidate code: cap what they can make it allocate or compute.
        limit = _vm_data_bytes() + SUPERVISOR_MEMORY_MB * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        if req.get("timeout_s"):
            cpu = int(float(req["timeout_s"]) + 30)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        from torch.distributed import TCPStore

        store = TCPStore("127.0.0.1", port, world_size, True, wait_for_workers=False,
                         master_listen_fd=listener.fileno())
        failed: tuple[int, int] | None = None
        while ranks:
            pid, status = os.waitpid(-1, 0)
            rank = ranks.pop(pid, None)
            exitcode = os.waitstatus_to_exitcode(status)
            if rank is not None and exitcode != 0 and failed is None:
                failed = (rank, exitcode)
                for other in ranks:  # they would wait for the failed rank until the timeout
                    os.kill(other, signal.SIGKILL)
        del store
        if failed is not None:
            _report_rank_failure(Path(job_dir), *failed)
        code = 0 if failed is None else 1
    except BaseException:  # noqa: BLE001 - never leave ranks behind
        if in_session:  # (before setsid, group 0 would be the server's and the search's)
            os.killpg(0, signal.SIGKILL)  # the whole candidate, this process included
    finally:
        os._exit(code)


def _report_rank_failure(job_dir: Path, rank: int, exitcode: int) -> None:
    """Make the first failed rank's status the candidate's; note it in ``stderr.txt``."""
    if exitcode < 0:
        how = f"killed by signal {_signal_name(-exitcode)}"
    else:
        how = f"exited with code {exitcode}"
    note = f"sandbox: DDP rank {rank} {how}; the other ranks were stopped"
    if rank > 0:  # rank 0 reports its own failure; the others' statuses are merged in
        main = _read_json(job_dir / RESULT_FILE) or {"timings": {}}
        own = _read_json(job_dir / result_file(rank)) or {}
        status = own.get("status")
        if status not in Status._value2member_map_ or status == Status.OK.value:
            status, error = Status.CRASHED.value, note
        else:
            error = f"rank {rank}: {own.get('error')}"[:STDERR_TAIL]
        main.update(status=status, error=error)
        (job_dir / RESULT_FILE).write_text(json.dumps(main))
        note += ": " + _tail(job_dir / f"stderr.rank{rank}.txt", 500).strip()
    with open(job_dir / "stderr.txt", "a") as fh:
        fh.write("\n" + note + "\n")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not _regular_file(path):
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def serve(isolation: str = "auto") -> None:
    """The pre-warmed server loop: read job lines on stdin, fork, report exits.

    Protocol (JSON lines): in ``{"id", "job_dir", "memory_mb", "torch_threads", "timeout_s",
    "cuda_devices"}`` and ``"world_size"`` for DDP (a supervisor, see :func:`_supervise`);
    out ``{"id", "pid"}`` after forking and ``{"id", "exitcode"}`` after the child is reaped
    (negative: killed by that signal).
    """
    # Keep the protocol on a private descriptor; stray prints from libraries go to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # Import everything a child needs once, here, before any fork (and never init CUDA).
    import warnings

    import lightning  # noqa: F401
    import thop  # noqa: F401
    import torch  # noqa: F401

    import llmatic.qd.descriptors  # noqa: F401 - the measuring fork needs it
    import llmatic.train.data  # noqa: F401
    import llmatic.train.module  # noqa: F401
    import llmatic.train.worker  # noqa: F401
    from llmatic.sandbox.isolation import IsolationError, probe

    for name in sorted(llmatic.train.worker._NATIVE_LAZY):  # imported here, never in a candidate
        with contextlib.suppress(ImportError), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy.core.* is numpy 1's name: deprecated
            importlib.import_module(name)

    global _ISOLATION
    try:  # which kernel layers every child gets; strict refuses to start without one
        iso = probe(isolation)
    except (IsolationError, ValueError) as exc:
        proto.write(json.dumps({"ready": False, "error": str(exc)}) + "\n")
        return
    _ISOLATION = iso if iso.active else None
    proto.write(json.dumps({"ready": True, "isolation": iso.report()}) + "\n")
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
                        _kill_group(pid)
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    req = json.loads(line)
                    server = os.getpid()
                    pid = os.fork()
                    if pid == 0:
                        if int(req.get("world_size") or 1) > 1:
                            _supervise(req, server)
                        _child(req["job_dir"], req["memory_mb"], req["torch_threads"], server,
                               req.get("timeout_s"), req.get("cuda_devices"))
                    children[pid] = req["id"]
                    if req.get("timeout_s"):  # a second guard in case the client is gone
                        deadlines[pid] = time.monotonic() + float(req["timeout_s"]) + 5.0
                    proto.write(json.dumps({"id": req["id"], "pid": pid}) + "\n")
        else:
            time.sleep(0.02)
        now = time.monotonic()
        for pid, deadline in list(deadlines.items()):
            if now > deadline:
                _kill_group(pid)
                del deadlines[pid]
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
            if job_id is not None:
                code = os.waitstatus_to_exitcode(status)
                proto.write(json.dumps({"id": job_id, "exitcode": code}) + "\n")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


#: DDP strategies whose ranks Lightning can join when they were started outside it. The
#: ``spawn`` / ``fork`` / ``notebook`` variants always start processes themselves.


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


@dataclass
class ChildOutcome:
    """What the search process learns about one child."""

    result: dict[str, Any] | None
    exitcode: int | None
    timed_out: bool
    stderr_tail: str
    seconds: float
    #: The logits the child predicted (read right after it exited), or None.
    logits: np.ndarray | None = None


class Sandbox:
    """Client of the pre-warmed server; thread-safe, one call to :meth:`run` per candidate.

    Args:
        timeout_s: Wall-clock limit per candidate; the child's process group is killed.
        memory_mb: Memory a candidate may allocate beyond the pre-warmed runtime.
        torch_threads: Intra-op threads inside each child.
    """

    def __init__(
        self, *, timeout_s: float, memory_mb: int | None, torch_threads: int = 1,
        isolation: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"sandbox.timeout_s must be > 0, got {timeout_s}")
        if memory_mb is not None and memory_mb < 64:
            raise ValueError(f"sandbox.memory_mb must be >= 64 or null, got {memory_mb}")
        self.timeout_s = float(timeout_s)
        self.memory_mb = None if memory_mb is None else int(memory_mb)
        self.torch_threads = max(1, int(torch_threads))
        from llmatic.sandbox.isolation import MODES, default_mode

        self.isolation = isolation or default_mode()
        if self.isolation not in MODES:
            raise ValueError(f"sandbox.isolation must be one of {MODES}, got {self.isolation!r}")
        #: The server's report of the layers each child gets (after the server started).
        self.isolation_report: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._waiters: dict[int, queue.Queue] = {}
        self._next_id = 0
        self._ready = False

    # -- server lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the server now (it imports torch and Lightning in the background)."""
        with self._lock:  # two searches starting at once must not start two servers
            self._start_unlocked()

    def _start_unlocked(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self.isolation == "python":
            import warnings

            warnings.warn("sandbox.isolation=python: candidates run without the kernel "
                          "boundary (namespaces, Landlock, seccomp)", stacklevel=3)
        env = server_environment(os.environ)
        # One thread per library pool in the server: forking a process with busy OpenMP /
        # OpenBLAS pools can deadlock the child.
        env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "PYTHONWARNINGS": "ignore"})
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llmatic.sandbox.server", "--isolation", self.isolation],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._ready = False

    def _ensure_server(self) -> subprocess.Popen:
        self._start_unlocked()  # the caller holds self._lock
        if not self._ready:
            ready = self._proc.stdout.readline()
            if not ready:
                raise RuntimeError(
                    "the sandbox server failed to start; run `python -m llmatic.sandbox.server` to "
                    "see why"
                )
            hello = json.loads(ready)
            if not hello.get("ready"):
                self._proc.wait(timeout=10)
                self._proc = None
                from llmatic.sandbox.isolation import IsolationError

                raise IsolationError(hello.get("error", "the sandbox server refused to start"))
            self.isolation_report = hello.get("isolation")
            self._ready = True
            threading.Thread(target=self._reader, args=(self._proc,), daemon=True).start()
        return self._proc

    def _reader(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            waiter = self._waiters.get(msg.get("id"))
            if waiter is not None:
                waiter.put(msg)
        # The server died: wake everyone still waiting.
        for waiter in list(self._waiters.values()):
            waiter.put({"exitcode": None, "server_died": True})

    def close(self) -> None:
        """Stop the server; children still running are killed by it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one candidate ------------------------------------------------------------------
    def run(self, job: dict[str, Any], job_dir: Path, *, cuda_devices: str | None = None
            ) -> ChildOutcome:
        """Run ``job`` in a fresh child with ``job_dir`` as its working directory.

        ``cuda_devices`` sets the child's ``CUDA_VISIBLE_DEVICES`` (its GPU binding). A DDP
        trainer config with several devices runs one rank per device (:func:`plan_ranks`).

        Raises:
            ValueError: for a DDP trainer config the sandbox cannot run.
        """
        world_size = 1
        trains = int(job.get("epochs", 0)) > 0 and job.get("data_dir")
        if trains and isinstance(job.get("trainer"), dict):
            world_size, trainer, cuda_devices = plan_ranks(job["trainer"], cuda_devices)
            if trainer is not job["trainer"]:
                job = {**job, "trainer": trainer}
        job_dir = Path(job_dir).resolve()
        job_dir.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT_FILE, LOGITS_FILE, MEASURES_FILE, logits_file("test"),
                      *(p.name for p in job_dir.glob("result.rank*.json"))):
            (job_dir / stale).unlink(missing_ok=True)
        (job_dir / "job.json").write_text(json.dumps(job))
        waiter: queue.Queue = queue.Queue()
        with self._lock:
            proc = self._ensure_server()  # may wait for the server's imports: not timed
            job_id = self._next_id
            self._next_id += 1
            self._waiters[job_id] = waiter
            request = {"id": job_id, "job_dir": str(job_dir), "memory_mb": self.memory_mb,
                       "torch_threads": self.torch_threads, "timeout_s": self.timeout_s,
                       "cuda_devices": cuda_devices}
            if world_size > 1:
                request["world_size"] = world_size
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        started = time.perf_counter()
        timed_out, exitcode, pid = False, None, None
        try:
            # The clock starts when the child exists (the server answers with its pid at
            # once); the server also kills children past their deadline on its own.
            pid_msg = waiter.get(timeout=60)
            if "pid" in pid_msg:
                pid = pid_msg["pid"]
                started = time.perf_counter()
            else:
                exitcode = pid_msg.get("exitcode")
            deadline = started + self.timeout_s
            while pid is not None:
                try:
                    msg = waiter.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    timed_out = True
                    _kill_group(pid)
                    try:  # the server reaps the killed child and reports it
                        waiter.get(timeout=10)
                    except queue.Empty:
                        pass
                    break
                exitcode = msg.get("exitcode")
                _kill_group(pid)  # anything the candidate left running in its group
                break
        except queue.Empty:  # the server never answered: it is wedged; start a new one
            self.close()
        finally:
            self._waiters.pop(job_id, None)
        result = None
        path = job_dir / RESULT_FILE
        if _regular_file(path):  # a FIFO left by the candidate would block the read
            try:
                result = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                result = None
        if result is not None and "params" in result:  # also a timed-out or crashed child's
            result = _with_measures(result, job_dir)
        logits = None
        logits_path = job_dir / logits_file(str(job.get("predict_split", "val")))
        if (result is not None and result.get("status") == "ok"
                and result.get("final") is True and _regular_file(logits_path)):
            try:  # the file is created (empty) before the candidate runs
                logits = np.load(logits_path, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                logits = None
        return ChildOutcome(
            result=result,
            exitcode=exitcode,
            timed_out=timed_out,
            stderr_tail=_tail(job_dir / "stderr.txt"),
            seconds=time.perf_counter() - started,
            logits=logits,
        )


def _with_measures(result: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    """``result`` with its descriptors taken from the measuring process's own file.

    The candidate's process could rewrite its report while it trains; ``measures.json`` was
    written by a fork that ran no training, through a descriptor the training process had
    closed. A final ok report with counts but no such file is a runtime error.
    """
    measures = _read_json(job_dir / MEASURES_FILE)
    if measures is None or not all(isinstance(measures.get(k), int) for k in MEASURE_KEYS):
        if result.get("status") != Status.OK.value or result.get("final") is not True:
            return result
        return {**result, "status": Status.RUNTIME_ERROR.value,
                "error": "the network's measured descriptors are missing (measures.json): "
                         "the measuring process did not report"}
    return {**result, **{k: measures[k] for k in MEASURE_KEYS}}


#: Environment variables the server keeps: no secrets (API keys, tokens) ever reach it,
#: so no child can read them in ``/proc/<server>/environ`` or its own initial environment.
_SERVER_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONHASHSEED",
               "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_DEVICE_ORDER",
               "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "VIRTUAL_ENV",
               "LLMATIC_ISOLATION", "TORCH_HOME", "XDG_CACHE_HOME")


def server_environment(environ: Any) -> dict[str, str]:
    """The sandbox server's whole environment: an allow-list of ``environ``."""
    env = {k: environ[k] for k in _SERVER_ENV if k in environ}
    env.update({k: v for k, v in environ.items() if k.startswith(("NCCL_", "GLOO_"))})
    env.setdefault("PATH", "/usr/bin:/bin")
    env["HOME"] = environ.get("HOME", "/nonexistent")
    return env


def _tail(path: Path, limit: int = STDERR_TAIL) -> str:
    if not _regular_file(path):
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def score_logits(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``logits`` against ``labels`` (in the parent)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    return accuracy, loss


def outcome_to_result(
    outcome: ChildOutcome,
    *,
    job_dir: Path,
    val_labels: np.ndarray | None,
    num_classes: int,
    fitness: str = "accuracy",
    split: str = "val",
) -> EvalResult:
    """Turn what a child left behind into an :class:`EvalResult`, scoring in the parent."""
    res = outcome.result or {}
    timings = dict(res.get("timings") or {})
    timings["sandbox"] = round(outcome.seconds, 4)
    fields = {k: res.get(k) for k in ("params", "flops", "width", "depth")}
    width, depth = fields["width"], fields["depth"]
    ratio = (width / depth) if width is not None and depth else None
    base = dict(**fields, width_to_depth=ratio, timings=timings)

    if outcome.timed_out:
        return EvalResult(Status.TIMEOUT, error="killed after the sandbox timeout", **base)
    status_text = res.get("status")
    unfinished = status_text == Status.OK.value and (outcome.exitcode != 0
                                                     or res.get("final") is not True)
    if outcome.result is None or unfinished:
        # No report, or the child died after writing a partial one.
        code = outcome.exitcode
        tail = outcome.stderr_tail.strip().splitlines()[-3:]
        if code is not None and code < 0:
            error = f"child killed by signal {_signal_name(-code)}"
        else:
            error = f"child exited with code {code} without a result"
        if tail:
            error += ": " + " | ".join(tail)
        status = Status.MEMORY_LIMIT if "memory" in error.lower() else Status.CRASHED
        return EvalResult(status, error=error, **base)
    status = Status(status_text)
    if status is not Status.OK:
        return EvalResult(status, error=res.get("error"), **base)
    if val_labels is None:  # a check-only job (no training)
        return EvalResult(Status.OK, **base)
    logits = outcome.logits
    if logits is None:
        return EvalResult(Status.CRASHED, error="the child returned no logits", **base)
    if logits.shape != (len(val_labels), num_classes) or not np.isfinite(logits).all():
        return EvalResult(Status.NON_FINITE, error="invalid validation logits", **base)
    accuracy, loss = score_logits(logits, val_labels)
    value = accuracy if fitness == "accuracy" else -loss
    return EvalResult(Status.OK, fitness=value, val_accuracy=accuracy, val_loss=loss, **base)


if __name__ == "__main__":
    serve(sys.argv[sys.argv.index("--isolation") + 1] if "--isolation" in sys.argv else "auto")
