"""Small helpers shared by the fork server, the DDP supervisor and the client.

Reading what a child left behind without being fooled by it (only plain files: a FIFO the
candidate put in place of its report would block the reader), naming the signal that
killed a child, and killing a candidate's whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

#: How much of a child's stderr is kept in an error message.
STDERR_TAIL = 2000


def proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of this process's ``/proc/self/status`` (``VmRSS``, ...) in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def regular_file(path: Path) -> bool:
    """Whether ``path`` is a plain file (not a FIFO, device or link a candidate left there)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in the plain file ``path``; None if absent, unreadable or not an object."""
    if not regular_file(path):
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def tail(path: Path, limit: int = STDERR_TAIL) -> str:
    """The last ``limit`` bytes of the plain file ``path``, decoded ("" if there is none)."""
    if not regular_file(path):
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number itself for one that is not a known signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a candidate and all it started), if any."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
