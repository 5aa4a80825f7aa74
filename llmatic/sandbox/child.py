"""What a forked child does before the worker runs the candidate, and the DDP supervisor.

The fork server (:mod:`llmatic.sandbox.server`) forks one process per candidate and calls
:func:`run_child` in it (or :func:`run_supervisor` for a DDP candidate, which forks one
:func:`run_child` per rank). In order, a child: dies with its parent, starts its own
session, redirects its standard streams to capped files, enters the kernel isolation,
opens its report files, limits its memory, file sizes, core dumps and CPU time, scrubs its
environment, restricts the file system and system calls, installs the audit hook
(:mod:`llmatic.sandbox.audit`), and only then runs :func:`llmatic.train.run_job`. See the
package docstring (:mod:`llmatic.sandbox`) for the threat model.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from llmatic.sandbox.audit import install_audit_hook
from llmatic.sandbox.common import (
    STDERR_TAIL,
    proc_status_bytes,
    read_json,
    signal_name,
    tail,
)
from llmatic.train import (
    MEASURES_FILE,
    ONNX_FILE,
    RESULT_FILE,
    WEIGHTS_FILE,
    logits_file,
    result_file,
)
from llmatic.types import Status

#: Largest file a child may write (its logs, result and logits).
MAX_FILE_BYTES = 256 * 2**20
#: Open files per process (pipes and sockets hold kernel memory no other limit counts).
MAX_OPEN_FILES = 4096
#: Memory a DDP supervisor may allocate for its rendezvous store (its clients are candidates).
SUPERVISOR_MEMORY_MB = 256
#: The job directory's subdirectory a candidate may write (HOME, TMPDIR, Lightning's root).
SCRATCH = "scratch"
#: How a child opens the report files it hands to the worker.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def vm_data_bytes() -> int:
    """This process's current data segment size (what RLIMIT_DATA measures)."""
    data = proc_status_bytes("VmData")
    return data if data is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the server dies (Linux prctl)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)


def run_child(job_dir: str, memory_mb: int | None, torch_threads: int, server: int,
              timeout_s: float | None = None, cuda_devices: str | None = None,
              rank_env: dict[str, str] | None = None, iso: Any = None) -> None:
    """Body of a forked child: limits, then the worker. Never returns.

    ``rank_env`` (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_PORT``...) makes the child one DDP
    rank of a candidate: it stays in its supervisor's process group (``server`` is then the
    supervisor), writes ``*.rank<r>.*`` files unless it is rank 0, and exits with code 2
    when the candidate failed, so that the supervisor stops the other ranks at once.
    ``iso``: the kernel isolation every child gets (an
    :class:`~llmatic.sandbox.isolation.Isolation` from the server's ``--isolation``), or None.
    """
    code = 0
    rank = int(rank_env["RANK"]) if rank_env else 0
    try:
        die_with_parent(server)
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
            # From here on: PID 1 of new user/pid/net/mount namespaces, in its own cgroups,
            # with a size-limited tmpfs as its scratch directory.
            iso.enter(scratch=os.path.join(job_dir, SCRATCH))
        job = json.loads(Path("job.json").read_text())
        # The worker's reports are opened now: the candidate cannot write the job directory.
        outputs = {"result": os.open(result_file(rank), _NEW_FILE, 0o600)}
        if rank == 0:
            split = str(job.get("predict_split", "val"))
            outputs["logits"] = os.open(logits_file(split), _NEW_FILE, 0o600)
            outputs["measures"] = os.open(MEASURES_FILE, _NEW_FILE, 0o600)
            if job.get("save_weights"):  # the final retrain: the trained network as files
                outputs["weights"] = os.open(WEIGHTS_FILE, _NEW_FILE, 0o600)
                outputs["onnx"] = os.open(ONNX_FILE, _NEW_FILE, 0o600)
        scratch = os.path.join(job_dir, SCRATCH)
        os.makedirs(scratch, exist_ok=True)
        os.chdir(scratch)
        _limit_resources(memory_mb, torch_threads, timeout_s)
        _scrub_environment(scratch, torch_threads, cuda_devices, rank_env)
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
            permit_fork = install_audit_hook(job_dir)
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


def _limit_resources(memory_mb: int | None, torch_threads: int,
                     timeout_s: float | None) -> None:
    """Cap the child's data segment, file sizes, core dumps and CPU time."""
    if memory_mb:  # None / 0: no limit (e.g. if a CUDA driver refuses to start under one)
        limit = vm_data_bytes() + int(memory_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, cap), cap))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    if timeout_s:  # CPU-time backstop: SIGXCPU, then SIGKILL five seconds later
        cpu = int(timeout_s * max(1, torch_threads) + 30)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))


def _scrub_environment(scratch: str, torch_threads: int, cuda_devices: str | None,
                       rank_env: dict[str, str] | None) -> None:
    """Replace the environment: a fixed PATH and locale, ``scratch`` as HOME and TMPDIR."""
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


def run_supervisor(req: dict[str, Any], server: int, iso: Any = None) -> None:
    """Body of a forked DDP supervisor: ``world_size`` rank children in one group. Never returns.

    The supervisor runs no candidate code. It starts a session (the candidate's process
    group, as a single child's would be), forks the ranks before any of them installs the
    audit hook, and hosts their rendezvous store on a loopback socket it bound itself (the
    ranks only connect to it: ``TORCHELASTIC_USE_AGENT_STORE``). When a rank fails, the others
    are killed at once and the failure is written into rank 0's report. ``iso``: as for
    :func:`run_child`.
    """
    code, in_session = 1, False
    try:
        die_with_parent(server)
        os.setsid()
        in_session = True
        job_dir, world_size = req["job_dir"], int(req["world_size"])
        os.chdir(job_dir)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 1024)  # the server's protocol pipes
        if iso is not None:  # the ranks share one set of namespaces (loopback up)
            iso.enter(scratch=os.path.join(job_dir, SCRATCH), ranks=world_size,
                      ddp_supervisor=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        ranks = _fork_ranks(req, world_size, port, iso)
        # Only now (after the forks) does this process start the store's threads. Its
        # clients are candidate code: cap what they can make it allocate or compute.
        limit = vm_data_bytes() + SUPERVISOR_MEMORY_MB * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        if req.get("timeout_s"):
            cpu = int(float(req["timeout_s"]) + 30)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        from torch.distributed import TCPStore

        store = TCPStore("127.0.0.1", port, world_size, True, wait_for_workers=False,
                         master_listen_fd=listener.fileno())
        failed = _wait_for_ranks(ranks)
        del store
        if failed is not None:
            _report_rank_failure(Path(job_dir), *failed)
        code = 0 if failed is None else 1
    except BaseException:  # noqa: BLE001 - never leave ranks behind
        if in_session:  # (before setsid, group 0 would be the server's and the search's)
            os.killpg(0, signal.SIGKILL)  # the whole candidate, this process included
    finally:
        os._exit(code)


def _fork_ranks(req: dict[str, Any], world_size: int, port: int, iso: Any) -> dict[int, int]:
    """Fork one :func:`run_child` per rank, told where the store is; ``{pid: rank}``."""
    me = os.getpid()
    ranks: dict[int, int] = {}
    for rank in range(world_size):
        env = {"LOCAL_RANK": str(rank), "RANK": str(rank), "WORLD_SIZE": str(world_size),
               "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "TORCHELASTIC_USE_AGENT_STORE": "True",  # every rank a store client
               "GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
        pid = os.fork()
        if pid == 0:
            run_child(req["job_dir"], req["memory_mb"], req["torch_threads"], me,
                      req.get("timeout_s"), req.get("cuda_devices"), rank_env=env, iso=iso)
        ranks[pid] = rank
    return ranks


def _wait_for_ranks(ranks: dict[int, int]) -> tuple[int, int] | None:
    """Reap every rank; at the first failure kill the others. ``(rank, exitcode)`` or None."""
    failed: tuple[int, int] | None = None
    while ranks:
        pid, status = os.waitpid(-1, 0)
        rank = ranks.pop(pid, None)
        exitcode = os.waitstatus_to_exitcode(status)
        if rank is not None and exitcode != 0 and failed is None:
            failed = (rank, exitcode)
            for other in ranks:  # they would wait for the failed rank until the timeout
                os.kill(other, signal.SIGKILL)
    return failed


def _report_rank_failure(job_dir: Path, rank: int, exitcode: int) -> None:
    """Make the first failed rank's status the candidate's; note it in ``stderr.txt``."""
    if exitcode < 0:
        how = f"killed by signal {signal_name(-exitcode)}"
    else:
        how = f"exited with code {exitcode}"
    note = f"sandbox: DDP rank {rank} {how}; the other ranks were stopped"
    if rank > 0:  # rank 0 reports its own failure; the others' statuses are merged in
        main = read_json(job_dir / RESULT_FILE) or {"timings": {}}
        own = read_json(job_dir / result_file(rank)) or {}
        status = own.get("status")
        if status not in Status._value2member_map_ or status == Status.OK.value:
            status, error = Status.CRASHED.value, note
        else:
            error = f"rank {rank}: {own.get('error')}"[:STDERR_TAIL]
        main.update(status=status, error=error)
        (job_dir / RESULT_FILE).write_text(json.dumps(main))
        note += ": " + tail(job_dir / f"stderr.rank{rank}.txt", 500).strip()
    with open(job_dir / "stderr.txt", "a") as fh:
        fh.write("\n" + note + "\n")
