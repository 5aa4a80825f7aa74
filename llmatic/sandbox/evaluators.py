"""Where candidates are evaluated (config group ``evaluator``).

Every evaluator keeps docs/method.md §3.10: generated code runs in a fresh child process per
candidate (forked by a pre-warmed sandbox server), never in a long-lived worker that later
runs another candidate. They differ in where those children are forked:

* ``local`` — one candidate at a time on this machine;
* ``pool`` — ``workers`` candidates at once on this machine, dispatched as workers free up;
  each worker slot is bound to one GPU (``CUDA_VISIBLE_DEVICES``; ``gpus_per_worker`` for
  ``trainer=ddp``) when there are GPUs, otherwise to a share of the CPU
  (``sandbox.torch_threads``);
* ``ray`` — each candidate a Ray task on an actor that holds its own pre-warmed sandbox
  server (``num_cpus`` / ``num_gpus`` per actor), on an existing Ray cluster
  (``evaluator.address``) or a local one. Run directories must be on a file system the
  Ray nodes share (the children read the data arrays from the run directory).

Results are always returned in submission order, so a search is identical whichever
evaluator ran it.
"""

from __future__ import annotations

import abc
import atexit
import json
import queue
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmatic.sandbox.client import ChildOutcome, Sandbox


class Evaluator(abc.ABC):
    """Runs sandboxed jobs; ``submit`` returns a future of the child's outcome."""

    @abc.abstractmethod
    def start(self, *, timeout_s: float, memory_mb: int | None, torch_threads: int,
              isolation: str | None = None, caps: dict[str, Any] | None = None) -> None:
        """Prepare (start servers); may return before they are ready."""

    @abc.abstractmethod
    def submit(self, job: dict[str, Any], job_dir: Path) -> Future:
        """Run one job in a fresh child; the future holds a :class:`ChildOutcome`."""

    def close(self) -> None:  # noqa: B027 - optional
        """Stop servers and workers."""

    def abort(self) -> None:
        """Stop at once (Ctrl-C): drop queued jobs, kill running children, then close."""
        self.close()


class _DispatchingEvaluator(Evaluator):
    """Dispatch threads that check out a resource (a GPU slot, an actor) per job."""

    def __init__(self) -> None:
        self._free: queue.Queue = queue.Queue()
        self._pool: ThreadPoolExecutor | None = None

    def _open(self, resources: list[Any], name: str) -> None:
        for resource in resources:
            self._free.put(resource)
        self._pool = ThreadPoolExecutor(max_workers=len(resources), thread_name_prefix=name)

    @abc.abstractmethod
    def _run_on(self, resource: Any, job: dict[str, Any], job_dir: Path) -> ChildOutcome:
        """Run one job with a checked-out resource."""

    def _run(self, job: dict[str, Any], job_dir: Path) -> ChildOutcome:
        resource = self._free.get()
        try:
            return self._run_on(resource, job, job_dir)
        finally:
            self._free.put(resource)

    def submit(self, job: dict[str, Any], job_dir: Path) -> Future:
        """Queue one job; it starts as soon as a resource is free."""
        assert self._pool is not None, "start() first"
        return self._pool.submit(self._run, job, job_dir)

    def _shutdown_pool(self, *, cancel: bool = False) -> None:
        """Wait for the jobs (``cancel``: drop the queued ones and do not wait)."""
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None


_SHARED: dict[tuple[Any, ...], Sandbox] = {}
_SHARED_LOCK = threading.Lock()


def process_sandbox(*, timeout_s: float, memory_mb: int | None, torch_threads: int,
                    isolation: str | None = None,
                    caps: dict[str, Any] | None = None) -> Sandbox:
    """This process's pre-warmed sandbox server for these limits (started on first use).

    Hydra's basic launcher runs the jobs of a sweep one after another in one process; they
    share one server instead of importing torch and Lightning again for every job (seconds
    each). The server never runs candidate code itself: every candidate still gets a fresh
    child forked from it. The servers stop when the process exits.

    The server is chosen by the limits it enforces when it forks (memory, threads,
    isolation, caps), not by ``timeout_s``: the timeout travels with each job
    (``Sandbox.run(timeout_s=...)``), so runs that differ only in their timeout share one.
    ``timeout_s`` is the default for callers that do not pass one.
    """
    key = (None if memory_mb is None else int(memory_mb), int(torch_threads),
           isolation, json.dumps(caps or {}, sort_keys=True))
    with _SHARED_LOCK:
        box = _SHARED.get(key)
        if box is None:
            if not _SHARED:
                atexit.register(_close_shared)
            box = _SHARED[key] = Sandbox(timeout_s=timeout_s, memory_mb=memory_mb,
                                         torch_threads=torch_threads, isolation=isolation,
                                         caps=caps)
    return box


def discard_process_sandbox(box: Sandbox) -> None:
    """Stop one of this process's servers and forget it.

    For a server started early for a config that then failed its checks: killed at once
    (:meth:`Sandbox.close`), not waited for while it imports.
    """
    with _SHARED_LOCK:
        for key, shared in list(_SHARED.items()):
            if shared is box:
                del _SHARED[key]
    box.close()


def _close_shared() -> None:
    with _SHARED_LOCK:
        boxes = list(_SHARED.values())
        _SHARED.clear()
    for box in boxes:
        box.close()


def _visible_gpus() -> list[str]:
    import glob
    import os

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() != ""]
    if not (os.path.exists("/proc/driver/nvidia") or glob.glob("/dev/nvidia[0-9]*")
            or os.path.exists("/dev/kfd")):
        return []  # no NVIDIA / ROCm driver: no GPU, and no torch import (seconds) to ask
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no CUDA: CPU only
        return []


class PoolEvaluator(_DispatchingEvaluator):
    """``workers`` children at once from one pre-warmed server on this machine.

    Args:
        workers: Candidates evaluated at once.
        gpus: ``auto`` (bind each worker slot to visible GPUs, round robin), ``none``
            (CPU only), or a list of GPU ids.
        gpus_per_worker: GPUs bound to each slot (``trainer=ddp`` trains one candidate on
            all of them, one rank each); the GPUs are split into groups of this size.
        sandbox: An already started sandbox server to use (it is not closed here); by
            default the process's own (:func:`process_sandbox`).
    """

    def __init__(self, *, workers: int = 2, gpus: Any = "auto", gpus_per_worker: int = 1,
                 sandbox: Sandbox | None = None) -> None:
        if int(workers) < 1:
            raise ValueError(f"evaluator.workers must be >= 1, got {workers}")
        if int(gpus_per_worker) < 1:
            raise ValueError(f"evaluator.gpus_per_worker must be >= 1, got {gpus_per_worker}")
        super().__init__()
        self.workers = int(workers)
        self.gpus_option = gpus
        self.gpus_per_worker = int(gpus_per_worker)
        self.sandbox = sandbox
        #: Each job's wall-clock limit (``start``'s ``timeout_s``; it travels with the job).
        self.timeout_s: float | None = None

    def start(self, *, timeout_s: float, memory_mb: int | None, torch_threads: int,
              isolation: str | None = None, caps: dict[str, Any] | None = None) -> None:
        """Start the sandbox server (in the background) and the dispatch threads.

        ``isolation``: ``sandbox.isolation`` (auto | strict | python; None: the
        ``LLMATIC_ISOLATION`` environment variable, else auto). After the server started,
        ``self.sandbox.isolation_report`` names the kernel layers every candidate gets.
        """
        self.timeout_s = float(timeout_s)
        if self.sandbox is None:  # the process's server: later runs here reuse it
            self.sandbox = process_sandbox(timeout_s=timeout_s, memory_mb=memory_mb,
                                           torch_threads=torch_threads, isolation=isolation,
                                           caps=caps)
        self.sandbox.start()
        if self.gpus_option == "auto":
            gpus = _visible_gpus()
        elif self.gpus_option in (None, "none", False):
            gpus = []
        else:
            gpus = [str(g) for g in self.gpus_option]
        # One slot per worker: its GPU group (round robin) or None for a CPU share.
        k = self.gpus_per_worker
        groups = [",".join(gpus[i:i + k]) for i in range(0, len(gpus) - k + 1, k)]
        if gpus and not groups:
            raise ValueError(f"evaluator.gpus_per_worker={k} but only {len(gpus)} GPUs: {gpus}")
        self._open([groups[i % len(groups)] if groups else None for i in range(self.workers)],
                   "llmatic-eval")

    def _run_on(self, gpu: str | None, job: dict[str, Any], job_dir: Path) -> ChildOutcome:
        return self.sandbox.run(job, job_dir, cuda_devices=gpu, timeout_s=self.timeout_s)

    def close(self) -> None:
        """Wait for running jobs.

        The server stays up for the process's next search (:func:`process_sandbox`), or
        with whoever lent it.
        """
        self._shutdown_pool()

    def abort(self) -> None:
        """Drop queued jobs and kill the running children (their threads then return)."""
        self._shutdown_pool(cancel=True)
        if self.sandbox is not None:
            kill_server_children(self.sandbox)


def kill_server_children(sandbox: Sandbox) -> None:
    """SIGKILL every child the sandbox server forked (its process group), not the server.

    The server reaps them and reports their exit, so the threads waiting on them return at
    once; the server itself stays up for whoever shares it.
    """
    import os
    import signal

    from llmatic.sandbox.common import kill_group

    proc = getattr(sandbox, "_proc", None)
    if proc is None or proc.poll() is not None:
        return  # no server (a dead one's children die with it: PR_SET_PDEATHSIG)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == proc.pid:  # field 4: the parent
            kill_group(int(entry))
            try:  # not yet a group leader (between fork and setsid)
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class LocalEvaluator(PoolEvaluator):
    """One candidate at a time on this machine."""

    def __init__(self, *, gpus: Any = "auto", gpus_per_worker: int = 1,
                 sandbox: Sandbox | None = None) -> None:
        super().__init__(workers=1, gpus=gpus, gpus_per_worker=gpus_per_worker,
                         sandbox=sandbox)


class _SandboxActor:
    """A Ray actor holding one pre-warmed sandbox server; runs one child per call."""

    def __init__(self, timeout_s: float, memory_mb: int | None, torch_threads: int,
                 isolation: str | None = None, caps: dict[str, Any] | None = None) -> None:
        self.sandbox = Sandbox(timeout_s=timeout_s, memory_mb=memory_mb,
                               torch_threads=torch_threads, isolation=isolation, caps=caps)
        self.sandbox.start()

    def run(self, job: dict[str, Any], job_dir: str) -> ChildOutcome:
        import os

        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")  # what Ray gave this actor
        try:
            directory = Path(job_dir)
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:  # the driver's directory is not shared with this node
            directory = Path(tempfile.mkdtemp(prefix="llmatic-job-"))
        return self.sandbox.run(job, directory, cuda_devices=gpus)

    def close(self) -> None:
        self.sandbox.close()


class RayEvaluator(_DispatchingEvaluator):
    """Each candidate a Ray task on one of ``workers`` sandbox actors.

    Args:
        address: A Ray cluster address (``auto``, ``ray://host:10001``); None starts a local
            Ray instance.
        workers: Number of actors (candidates at once).
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs reserved per actor (Ray sets the actor's ``CUDA_VISIBLE_DEVICES``).
    """

    def __init__(self, *, address: str | None = None, workers: int = 2, num_cpus: float = 1,
                 num_gpus: float = 0) -> None:
        if int(workers) < 1:
            raise ValueError(f"evaluator.workers must be >= 1, got {workers}")
        super().__init__()
        self.address = address
        self.workers = int(workers)
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self._all: list[Any] = []
        self._started_ray = False
        self._aborting = False

    def start(self, *, timeout_s: float, memory_mb: int | None, torch_threads: int,
              isolation: str | None = None, caps: dict[str, Any] | None = None) -> None:
        """Connect to (or start) Ray and create the actors."""
        try:
            import ray
        except ImportError as exc:
            raise ValueError("evaluator=ray needs the ray package: pip install 'ray>=2.9'") from exc
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "ignore_reinit_error": True}
            if self.address:
                kwargs["address"] = self.address
            ray.init(**kwargs)
            self._started_ray = True
        actor_cls = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_SandboxActor)
        self._all = [actor_cls.remote(timeout_s, memory_mb, torch_threads, isolation, caps)
                     for _ in range(self.workers)]
        self._open(list(self._all), "llmatic-ray")

    def _run_on(self, actor: Any, job: dict[str, Any], job_dir: Path) -> ChildOutcome:
        import ray

        return ray.get(actor.run.remote(job, str(job_dir)))

    def close(self) -> None:
        """Stop the actors (and the local Ray instance this evaluator started)."""
        import ray

        self._shutdown_pool(cancel=self._aborting)
        for actor in self._all:
            try:
                ray.get(actor.close.remote(), timeout=30)
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self._all.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def abort(self) -> None:
        """Drop queued jobs and kill the actors (their children die with their servers)."""
        import ray

        self._aborting = True
        for actor in self._all:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self._all.clear()
        self.close()
