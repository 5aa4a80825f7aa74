"""How much of the machine one candidate may take: processes, scratch space, memory, CPU.

The kernel layers of :mod:`llmatic.sandbox.isolation` decide *what* a candidate may touch;
these caps bound *how much* of it, for the candidate and every process it starts (a fresh
interpreter it runs with ``execve`` included). Each is a ``sandbox.*`` config value, enforced by the
kernel, probed once when the server starts and recorded in the isolation report:

* ``processes`` (``sandbox.max_processes``): processes and threads. A ``pids`` cgroup where
  one is writable (cgroup v1 as root, or a delegated cgroup v2 subtree); ``RLIMIT_NPROC``,
  which the kernel counts per user namespace, where it holds (it does not for a candidate
  running as root: the kernel exempts uid 0 from it).
* ``scratch`` (``sandbox.scratch_mb``, ``sandbox.scratch_inodes``): the only directory a
  candidate may write is a private tmpfs of that size and inode count, mounted in its own
  mount namespace over the job's ``scratch/`` (the reports the parent reads are opened in the
  job directory before, outside it).
* ``memory``: a ``memory`` cgroup (everything the candidate's processes charge: private and
  shared memory, memfds, tmpfs pages) at the server's resident size + ``sandbox.memory_mb``
  + the scratch size. Without one, ``RLIMIT_DATA`` caps private memory per process and
  seccomp refuses the shared kinds it does not count (memfd_create, SysV and POSIX shared
  memory, shared anonymous mappings); what remains is named in the report.
* ``cpu`` (``sandbox.cpus``, default ``sandbox.torch_threads``): a ``cpu`` cgroup quota, so
  a candidate that starts many busy processes gets that many cores, not the machine.

A candidate's cgroup is created by its own process right after the fork (before it enters
its namespaces: every process it starts inherits it) and removed by the server once the
candidate is gone, after killing anything still in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmatic.sandbox.common import proc_status_bytes

#: The caps, in the order the report lists them.
CAPS = ("processes", "scratch", "memory", "cpu")
#: cgroup controllers used, by cap.
CONTROLLERS = {"processes": "pids", "memory": "memory", "cpu": "cpu"}
_CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Caps:
    """The per-candidate caps (``sandbox.max_processes`` ...); None: that cap is off."""

    max_processes: int | None = 256
    scratch_mb: int | None = 1024
    scratch_inodes: int | None = 16384
    cpus: float | None = 1.0
    #: ``sandbox.memory_mb`` (the memory cgroup's share beyond the runtime and the scratch).
    memory_mb: int | None = 4096

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the server's ``--caps`` argument)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Caps:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        return cls(**(data or {}))

    def check(self) -> None:
        """Raise ValueError naming the config key of a value out of range."""
        for key, low in (("max_processes", 16), ("scratch_mb", 1), ("scratch_inodes", 64)):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"sandbox.{key} must be an integer >= {low} or null, "
                                 f"got {value!r}")
        if self.cpus is not None and not float(self.cpus) > 0:
            raise ValueError(f"sandbox.cpus must be > 0 or null, got {self.cpus!r}")


# -- cgroups ------------------------------------------------------------------------------
def own_cgroups() -> dict[str, tuple[int, str]]:
    """Controller -> (version, directory of this process's cgroup) for mounted hierarchies."""
    mounts: dict[str, str] = {}
    unified = None
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            if parts[2] == "cgroup2":
                unified = parts[1]
            elif parts[2] == "cgroup":
                for opt in parts[3].split(","):
                    mounts.setdefault(opt, parts[1])
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, tuple[int, str]] = {}
    for line in lines:
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else []:
            if name in mounts:
                found[name] = (1, os.path.join(mounts[name], path.lstrip("/")))
        if not names and unified:
            v2 = os.path.join(unified, path.lstrip("/"))
            with contextlib.suppress(OSError):
                enabled = Path(v2, "cgroup.subtree_control").read_text().split()
                for name in enabled:  # delegated: this cgroup's children get the controller
                    found.setdefault(name, (2, v2))
    return found


@dataclass
class Cgroups:
    """One directory per controller that the server owns; one child cgroup per candidate."""

    base: dict[str, tuple[int, str]] = field(default_factory=dict)  # controller -> (v, dir)
    pending: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, controllers: list[str], name: str) -> tuple[Cgroups, dict[str, str]]:
        """Make ``name`` under this process's cgroup of each controller; (cgroups, why not)."""
        own = own_cgroups()
        made: dict[str, tuple[int, str]] = {}
        why: dict[str, str] = {}
        for ctl in controllers:
            if ctl not in own:
                why[ctl] = f"no {ctl} cgroup is mounted or delegated to this process"
                continue
            version, parent = own[ctl]
            path = os.path.join(parent, name)
            try:
                _sweep_stale(parent)
                os.makedirs(path, exist_ok=True)
                if version == 2:
                    Path(path, "cgroup.subtree_control").write_text(f"+{ctl}")
                if not any(f.startswith(ctl + ".") for f in os.listdir(path)):
                    raise OSError(f"{path} has no {ctl}.* files")
                made[ctl] = (version, path)
            except OSError as exc:
                why[ctl] = f"cannot create a {ctl} cgroup under {parent}: {exc}"
        return cls(made), why

    def join(self, caps: Caps, *, memory_bytes: int | None) -> None:
        """In a fresh child: make its own cgroups, set the limits, move itself in."""
        me = f"c{os.getpid()}"
        for ctl, (version, base) in self.base.items():
            path = os.path.join(base, me)
            os.mkdir(path)
            for key, value in _limits(ctl, version, caps, memory_bytes):
                if os.path.exists(os.path.join(path, key)):
                    Path(path, key).write_text(value)
            Path(path, "cgroup.procs").write_text("0")

    def release(self, pid: int) -> dict[str, int]:
        """After a candidate's child was reaped: kill what is left in its cgroups, remove them.

        Returns the limits it ran into: ``{"oom_kill": n, "pids_max": n}`` (non-zero only).
        """
        events: dict[str, int] = {}
        for ctl, (version, base) in self.base.items():
            path = os.path.join(base, f"c{pid}")
            name = {"memory": "memory.oom_control" if version == 1 else "memory.events",
                    "pids": "pids.events"}.get(ctl)
            with contextlib.suppress(OSError, ValueError):
                for line in Path(path, name).read_text().splitlines() if name else []:
                    key, _, value = line.partition(" ")
                    key = {"max": "pids_max"}.get(key, key)
                    if key in ("oom_kill", "pids_max") and int(value) > 0:
                        events[key] = int(value)
            self.pending.append(path)
        self.sweep()
        # Its last processes are being killed: wait for them (bounded), so that the search
        # hears of the exit only once nothing of the candidate is left.
        deadline = time.monotonic() + 2.0
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)
            self.sweep()
        return events

    def sweep(self) -> None:
        """Try again to remove the cgroups of finished candidates (empty ones go at once)."""
        left = []
        for path in self.pending:
            if os.path.isdir(path) and not _remove(path):
                left.append(path)
        self.pending = left

    def close(self) -> None:
        """Remove every cgroup this server made (at exit)."""
        self.sweep()
        for _, base in self.base.values():
            for entry in (os.listdir(base) if os.path.isdir(base) else []):
                if entry.startswith("c") and entry[1:].isdigit():
                    _remove(os.path.join(base, entry))
            with contextlib.suppress(OSError):
                os.rmdir(base)


def _limits(ctl: str, version: int, caps: Caps, memory_bytes: int | None
            ) -> list[tuple[str, str]]:
    if ctl == "pids" and caps.max_processes:
        return [("pids.max", str(caps.max_processes))]
    if ctl == "memory" and memory_bytes:
        if version == 1:
            return [("memory.limit_in_bytes", str(memory_bytes)),
                    ("memory.memsw.limit_in_bytes", str(memory_bytes))]
        return [("memory.max", str(memory_bytes)), ("memory.swap.max", "0")]
    if ctl == "cpu" and caps.cpus:
        quota = max(1000, int(float(caps.cpus) * _CFS_PERIOD_US))
        if version == 1:
            return [("cpu.cfs_period_us", str(_CFS_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]
        return [("cpu.max", f"{quota} {_CFS_PERIOD_US}")]
    return []


def _remove(path: str) -> bool:
    """SIGKILL every process left in the cgroup at ``path``, then rmdir it; whether it went."""
    try:
        for line in Path(path, "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(line), signal.SIGKILL)
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _sweep_stale(parent: str) -> None:
    """Remove the cgroups of earlier servers that are gone (killed before they cleaned up)."""
    for entry in os.listdir(parent):
        if not entry.startswith("llmatic-"):
            continue
        pid = entry.rpartition("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            stale = os.path.join(parent, entry)
            for child in os.listdir(stale):
                if child.startswith("c") and child[1:].isdigit():
                    _remove(os.path.join(stale, child))
            with contextlib.suppress(OSError):
                os.rmdir(stale)


def resident_bytes() -> int:
    """This process's resident set (what a fork may copy-on-write into its own cgroup)."""
    return proc_status_bytes("VmRSS") or 0


# -- the scratch tmpfs --------------------------------------------------------------------
def mount_scratch(path: str, caps: Caps) -> None:
    """Mount a private tmpfs of ``caps.scratch_mb`` / ``caps.scratch_inodes`` over ``path``.

    Call in the candidate's own mount namespace (after ``mount --make-rprivate /``): the host
    never sees it, and it is gone with the candidate's last process.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    os.makedirs(path, exist_ok=True)
    options = f"size={int(caps.scratch_mb or 0)}m,nr_inodes={int(caps.scratch_inodes or 0)}"
    options += ",mode=700"
    flags = 2 | 4  # MS_NOSUID | MS_NODEV
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, options.encode()) < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount tmpfs on {path} ({options}): {os.strerror(code)}")


# -- probing --------------------------------------------------------------------------------
def _nproc_probe() -> None:
    """In a fresh user namespace: does RLIMIT_NPROC stop a fork? (uid 0 is exempt from it)."""
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    try:
        pid = os.fork()
    except BlockingIOError:
        os._exit(0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    raise OSError("RLIMIT_NPROC does not stop a fork here (the kernel exempts uid 0)")


def _scratch_probe(caps: Caps) -> None:
    import tempfile

    path = tempfile.mkdtemp(prefix="llmatic-probe-")
    try:
        mount_scratch(path, caps)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def probe_caps(caps: Caps, *, namespaces: bool, keep: bool, in_fork: Any, enter: Any
               ) -> tuple[dict[str, bool], dict[str, str], dict[str, list[str]],
                          Cgroups | None]:
    """Which caps this machine enforces, and by what: (present, why not, means, cgroups).

    ``in_fork(fn)`` runs ``fn`` in a throwaway child (None or why it failed); ``enter()``
    enters the candidate's namespaces there. ``keep``: keep the cgroups made (a server).
    """
    asked = {"processes": caps.max_processes, "memory": caps.memory_mb, "cpu": caps.cpus}
    wanted = [CONTROLLERS[c] for c in CONTROLLERS if asked[c]]
    groups, why_not = Cgroups.create(wanted, f"llmatic-{os.getpid()}")
    means: dict[str, list[str]] = {c: [] for c in CAPS}
    reasons: dict[str, str] = {}
    off = {"processes": caps.max_processes is None, "scratch": caps.scratch_mb is None,
           "cpu": caps.cpus is None, "memory": caps.memory_mb is None}
    if "pids" in groups.base:
        means["processes"].append("pids_cgroup")
    if namespaces and caps.max_processes:
        why = in_fork(lambda: (enter(), _nproc_probe(), os._exit(0)))
        if why is None:
            means["processes"].append("RLIMIT_NPROC")
        elif not means["processes"]:
            reasons["processes"] = f"{why_not.get('pids')}; {why}"
    if namespaces and caps.scratch_mb:
        why = in_fork(lambda: (enter(), _scratch_probe(caps), os._exit(0)))
        if why is None:
            means["scratch"].append("tmpfs")
        else:
            reasons["scratch"] = f"cannot mount a tmpfs in the candidate's namespace: {why}"
    elif not namespaces:
        reasons["scratch"] = "needs namespaces (a private mount namespace)"
    if "memory" in groups.base:
        means["memory"].append("memory_cgroup")
    else:
        reasons["memory"] = (f"{why_not.get('memory')}: RLIMIT_DATA caps each process's "
                             "private memory and seccomp refuses memfd_create, SysV / POSIX "
                             "shared memory and shared anonymous mappings; page cache and "
                             "kernel memory are not capped")
    if "cpu" in groups.base:
        means["cpu"].append("cpu_cgroup")
    else:
        reasons["cpu"] = (f"{why_not.get('cpu')}: a candidate's processes can take every core "
                          "until the timeout (RLIMIT_CPU bounds each process's CPU seconds)")
    if "processes" not in reasons and not means["processes"]:
        reasons["processes"] = f"{why_not.get('pids')}; RLIMIT_NPROC needs namespaces"
    for cap, is_off in off.items():
        if is_off:
            reasons[cap] = f"off (sandbox.{_KEY[cap]}=null)"
            means[cap] = []
    present = {c: bool(means[c]) and c not in reasons for c in CAPS}
    if not keep:
        groups.close()
        groups = None
    elif not groups.base:
        groups = None
    return present, reasons, means, groups


_KEY = {"processes": "max_processes", "scratch": "scratch_mb", "memory": "memory_mb",
        "cpu": "cpus"}
