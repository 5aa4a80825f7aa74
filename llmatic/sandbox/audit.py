"""The Python-level boundary inside each child: an audit hook (``sys.addaudithook``).

Installed by :func:`llmatic.sandbox.child.run_child` as the last step before the
candidate's code runs, it refuses process creation, signals to other processes, sockets,
``ctypes`` and any write, deletion or rename outside the child's job directory. An audit
hook cannot be removed, so it holds for everything the candidate does afterwards; native
code (a C extension, torch's dispatcher) is not seen by it: the kernel layers of
:mod:`llmatic.sandbox.isolation` cover that.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

#: Audit events refused outright.
BLOCKED_EVENTS = frozenset(
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
#: ``open`` flags that make an open a write.
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
#: Audit events whose first two path arguments must lie inside the job directory (listing a
#: directory is allowed anywhere).
PATH_EVENTS = frozenset(
    {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
     "os.utime", "os.listdir", "os.scandir"}
)


def install_audit_hook(workdir: str) -> Callable[[], None]:
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
        if event in BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} is not allowed")
        elif event in PATH_EVENTS:
            if event in {"os.listdir", "os.scandir"}:
                return
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    raise PermissionError(f"sandbox: {event} on {path!r} is not allowed")

    sys.addaudithook(hook)
    return permit_fork
