"""The search process's side of the sandbox: :class:`Sandbox`, the fork server's client.

One :class:`Sandbox` per run starts the pre-warmed server (``python -m
llmatic.sandbox.server``, :mod:`llmatic.sandbox.server`) with a scrubbed environment
(:func:`server_environment`), sends it one job per candidate, enforces the wall-clock
timeout by killing the candidate's process group, and reads back what the child left in
its job directory as a :class:`ChildOutcome`. Scoring that outcome happens in the parent
too, in :mod:`llmatic.sandbox.scoring`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmatic.rundir import JOBS, write_failed
from llmatic.sandbox.common import kill_group, read_json, regular_file, tail
from llmatic.sandbox.ddp import plan_ranks
from llmatic.train import (
    LOGITS_FILE,
    MEASURE_KEYS,
    MEASURES_FILE,
    ONNX_FILE,
    RESULT_FILE,
    WEIGHTS_FILE,
    logits_file,
)
from llmatic.types import Status


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
    #: Caps the candidate ran into (``{"oom_kill": 1}``: the memory cgroup killed a process).
    events: dict[str, int] | None = None


class Sandbox:
    """Client of the pre-warmed server; thread-safe, one call to :meth:`run` per candidate.

    Args:
        timeout_s: Wall-clock limit per candidate (a job may bring its own: :meth:`run`);
            the child's process group is killed.
        memory_mb: Memory a candidate may allocate beyond the pre-warmed runtime.
        torch_threads: Intra-op threads inside each child.
        isolation: ``sandbox.isolation`` (auto | strict | python).
        caps: ``sandbox.max_processes`` / ``scratch_mb`` / ``scratch_inodes`` / ``cpus``
            (:class:`~llmatic.sandbox.caps.Caps`; ``cpus`` defaults to ``torch_threads``).
    """

    def __init__(
        self, *, timeout_s: float, memory_mb: int | None, torch_threads: int = 1,
        isolation: str | None = None, caps: dict[str, Any] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"sandbox.timeout_s must be > 0, got {timeout_s}")
        if memory_mb is not None and memory_mb < 64:
            raise ValueError(f"sandbox.memory_mb must be >= 64 or null, got {memory_mb}")
        self.timeout_s = float(timeout_s)
        self.memory_mb = None if memory_mb is None else int(memory_mb)
        self.torch_threads = max(1, int(torch_threads))
        from llmatic.sandbox.caps import Caps
        from llmatic.sandbox.isolation import MODES, default_mode

        given = dict(caps or {})
        given.setdefault("cpus", self.torch_threads)
        given["memory_mb"] = self.memory_mb
        self.caps = Caps.from_dict(given)
        self.caps.check()
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
    def start(self) -> bool:
        """Start the server now (it imports torch and Lightning in the background).

        Returns whether this call started it (False: it was running already).
        """
        with self._lock:  # two searches starting at once must not start two servers
            return self._start_unlocked()

    def _start_unlocked(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return False
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
            [sys.executable, "-m", "llmatic.sandbox.server", "--isolation", self.isolation,
             "--caps", json.dumps(self.caps.to_dict())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._ready = False
        return True

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
        """Stop the server; children still running are killed by it.

        A server that was never asked for a job (started early for a config that then
        failed its checks) is killed at once instead of waited for while it imports.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None and not self._ready:
            proc.kill()
            proc.wait()
        elif proc is not None and proc.poll() is None:
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
    def run(self, job: dict[str, Any], job_dir: Path, *, cuda_devices: str | None = None,
            timeout_s: float | None = None) -> ChildOutcome:
        """Run ``job`` in a fresh child with ``job_dir`` as its working directory.

        ``cuda_devices`` sets the child's ``CUDA_VISIBLE_DEVICES`` (its GPU binding). A DDP
        trainer config with several devices runs one rank per device (:func:`plan_ranks`).
        ``timeout_s``: this job's wall-clock limit (default: the server's ``timeout_s``); it
        travels with the job, so searches with different timeouts can share one server.

        Raises:
            ValueError: for a DDP trainer config the sandbox cannot run, or a timeout <= 0.
        """
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise ValueError(f"sandbox.timeout_s must be > 0, got {timeout_s}")
        world_size = 1
        trains = int(job.get("epochs", 0)) > 0 and job.get("data_dir")
        if trains and isinstance(job.get("trainer"), dict):
            world_size, trainer, cuda_devices = plan_ranks(job["trainer"], cuda_devices)
            if trainer is not job["trainer"]:
                job = {**job, "trainer": trainer}
        job_dir = _prepare_job_dir(job, job_dir)
        waiter: queue.Queue = queue.Queue()
        job_id = self._send(job_dir, waiter, cuda_devices, world_size, timeout)
        events: dict[str, int] = {}
        started, exitcode, timed_out = self._wait(job_id, waiter, events, timeout)
        outcome = _collect(job, job_dir, started, exitcode, timed_out)
        outcome.events = events
        return outcome

    def _send(self, job_dir: Path, waiter: queue.Queue, cuda_devices: str | None,
              world_size: int, timeout_s: float) -> int:
        """Ask the server (started if need be) to fork a child for ``job_dir``; the job's id."""
        with self._lock:
            proc = self._ensure_server()  # may wait for the server's imports: not timed
            job_id = self._next_id
            self._next_id += 1
            self._waiters[job_id] = waiter
            request = {"id": job_id, "job_dir": str(job_dir), "memory_mb": self.memory_mb,
                       "torch_threads": self.torch_threads, "timeout_s": timeout_s,
                       "cuda_devices": cuda_devices}
            if world_size > 1:
                request["world_size"] = world_size
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        return job_id

    def _wait(self, job_id: int, waiter: queue.Queue, events: dict[str, int],
              timeout_s: float) -> tuple[float, int | None, bool]:
        """Wait for the child to exit, killing its group at the timeout (``events``: filled).

        Returns:
            ``(started, exitcode, timed_out)``: when the clock started (``perf_counter``),
            the child's exit code (None if unknown) and whether it was killed at the timeout.
        """
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
            deadline = started + timeout_s
            while pid is not None:
                try:
                    msg = waiter.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    timed_out = True
                    kill_group(pid)
                    try:  # the server reaps the killed child and reports it
                        events.update(waiter.get(timeout=10).get("events") or {})
                    except queue.Empty:
                        pass
                    break
                exitcode = msg.get("exitcode")
                events.update(msg.get("events") or {})
                kill_group(pid)  # anything the candidate left running in its group
                break
        except queue.Empty:  # the server never answered: it is wedged; start a new one
            self.close()
        finally:
            self._waiters.pop(job_id, None)
        return started, exitcode, timed_out


def _prepare_job_dir(job: dict[str, Any], job_dir: Path) -> Path:
    """Create ``job_dir`` (resolved), remove a previous run's reports, write ``job.json``."""
    job_dir = Path(job_dir).resolve()
    try:  # a full disk stops the search with a named error (nothing written is lost)
        job_dir.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT_FILE, LOGITS_FILE, MEASURES_FILE, logits_file("test"), WEIGHTS_FILE,
                      ONNX_FILE,
                      *(p.name for p in job_dir.glob("result.rank*.json"))):
            (job_dir / stale).unlink(missing_ok=True)
        (job_dir / "job.json").write_text(json.dumps(job))
    except OSError as exc:
        run_dir = job_dir.parent.parent if job_dir.parent.name == JOBS else "RUN_DIR"
        raise write_failed(job_dir / "job.json", exc, run_dir) from exc
    return job_dir


def _collect(job: dict[str, Any], job_dir: Path, started: float, exitcode: int | None,
             timed_out: bool) -> ChildOutcome:
    """What the child left in ``job_dir``: its report, measures and logits, as read here."""
    result = None
    path = job_dir / RESULT_FILE
    if regular_file(path):  # a FIFO left by the candidate would block the read
        try:
            result = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            result = None
    if result is not None and "params" in result:  # also a timed-out or crashed child's
        result = _with_measures(result, job_dir)
    logits = None
    logits_path = job_dir / logits_file(str(job.get("predict_split", "val")))
    if (result is not None and result.get("status") == "ok"
            and result.get("final") is True and regular_file(logits_path)):
        try:  # the file is created (empty) before the candidate runs
            logits = np.load(logits_path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            logits = None
    return ChildOutcome(
        result=result,
        exitcode=exitcode,
        timed_out=timed_out,
        stderr_tail=tail(job_dir / "stderr.txt"),
        seconds=time.perf_counter() - started,
        logits=logits,
    )


def _with_measures(result: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    """``result`` with its descriptors taken from the measuring process's own file.

    The candidate's process could rewrite its report while it trains; ``measures.json`` was
    written by a fork that ran no training, through a descriptor the training process had
    closed. A final ok report with counts but no such file is a runtime error.
    """
    measures = read_json(job_dir / MEASURES_FILE)
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
