"""Handing candidates to the workers, and the clock that measures how busy they were.

The :class:`Dispatcher` keeps at most ``workers`` candidates on the evaluator at once and
holds the rest here, in submission order: a worker that frees up gets the next candidate at
once, and the search knows when each candidate started and ended on a worker. Those
intervals are what worker utilisation is computed from (:func:`llmatic.search.metrics.utilisation`).
Submission order is the order of the evaluator's own queue, so results never change.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["Dispatcher", "RunClock"]


class RunClock:
    """Seconds on the run's clock: it continues across a resume (from the checkpoint's time)."""

    def __init__(self) -> None:
        self._origin: float | None = None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran."""
        return self._origin is not None

    def start(self, at: float) -> None:
        """Start the clock so that it reads ``at`` now."""
        self._origin = time.perf_counter() - float(at)

    def __call__(self) -> float:
        """The run clock's time now (seconds)."""
        if self._origin is None:
            self.start(0.0)
        return time.perf_counter() - self._origin


class Dispatcher:
    """At most ``workers`` candidates on the evaluator; the rest wait here, in order.

    Args:
        workers: Candidates the evaluator runs at once.
        clock: The run clock (start and end of each candidate on a worker).
    """

    def __init__(self, workers: int, clock: Callable[[], float]) -> None:
        self.workers = max(1, int(workers))
        self.clock = clock
        self._lock = threading.Lock()
        self._queue: deque = deque()
        self._busy = 0
        self._stopped = False
        #: Candidate id -> [start, end] on the run clock (end None while it runs).
        self.intervals: dict[int, list] = {}

    def submit(self, candidate_id: int, start: Callable[[], Future]) -> Future:
        """A future of ``start()``'s result; ``start`` runs once a worker is free."""
        proxy: Future = Future()
        with self._lock:
            self._queue.append((candidate_id, start, proxy))
        self._pump()
        return proxy

    def _pump(self) -> None:
        while True:
            with self._lock:
                if self._stopped or self._busy >= self.workers or not self._queue:
                    return
                cid, start, proxy = self._queue.popleft()
                self._busy += 1
                self.intervals[cid] = [self.clock(), None]
            try:
                inner = start()
            except BaseException as exc:  # noqa: BLE001 - surfaced by the proxy's result()
                self._finish(cid, proxy, None, exc)
                continue
            inner.add_done_callback(lambda f, c=cid, p=proxy: self._finish(c, p, f, None))

    def _finish(self, cid: int, proxy: Future, inner: Future | None,
                error: BaseException | None) -> None:
        with self._lock:
            self.intervals[cid][1] = self.clock()
            self._busy -= 1
        self._pump()  # the next candidate starts before this one is told
        if error is None:
            try:
                proxy.set_result(inner.result())
                return
            except BaseException as exc:  # noqa: BLE001
                error = exc
        proxy.set_exception(error)

    def waiting(self) -> int:
        """Candidates handed over and not yet on a worker (queued here)."""
        with self._lock:
            return len(self._queue)

    def take(self, candidate_id: int) -> tuple[float, float] | None:
        """When the finished candidate ran on a worker, forgotten here (None: it never ran)."""
        with self._lock:
            span = self.intervals.get(candidate_id)
            if span is None or span[1] is None:
                return None
            del self.intervals[candidate_id]
        return float(span[0]), float(span[1])

    def spans(self, now: float) -> list[tuple[float, float]]:
        """The intervals not taken yet (a running candidate's ends ``now``)."""
        with self._lock:
            return [(s, now if e is None else e) for s, e in self.intervals.values()]

    def stop(self) -> None:
        """Ctrl-C: start nothing more (the queued candidates are dropped)."""
        with self._lock:
            self._stopped = True
            self._queue.clear()
