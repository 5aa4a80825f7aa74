"""How a candidate's failure becomes a :class:`~llmatic.types.Status` and a short message.

Every stage of the worker (and the process that measures the network) raises
:class:`CandidateFailure` for a failure it recognises; anything else the candidate raised is
turned into one by :func:`classify`.
"""

from __future__ import annotations

import traceback

from llmatic.types import Status


class CandidateFailure(Exception):
    """A candidate failed at a known stage; carries its status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def short_traceback(exc: BaseException, limit: int = 1500) -> str:
    """The exception and the innermost frames that belong to the candidate's file."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename == "candidate.py"]
    where = f" (candidate.py line {own[-1].lineno}: {own[-1].line})" if own else ""
    text = f"{type(exc).__name__}: {exc}{where}"
    return text[:limit]


def is_memory_error(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out (Python's, the allocator's or CUDA's)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(
        needle in text
        for needle in ("out of memory", "can't allocate memory", "cannot allocate memory",
                       "defaultcpuallocator")
    )


def classify(exc: BaseException, default: Status) -> CandidateFailure:
    """``exc`` as a :class:`CandidateFailure`: its own, memory, non-finite, else ``default``."""
    if isinstance(exc, CandidateFailure):
        return exc
    if is_memory_error(exc):
        return CandidateFailure(Status.MEMORY_LIMIT, short_traceback(exc))
    from llmatic.train.module import NonFiniteLossError

    if isinstance(exc, NonFiniteLossError):
        return CandidateFailure(Status.NON_FINITE, str(exc))
    return CandidateFailure(default, short_traceback(exc))
