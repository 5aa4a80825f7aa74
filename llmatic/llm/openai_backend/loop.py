"""A long-lived asyncio event loop in a daemon thread, for a synchronous caller.

:class:`LoopThread` runs the concurrent HTTP calls of a synchronous ``generate`` on one loop
that outlives the call, so the async client and its keep-alive connections are reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from llmatic.llm.openai_backend.errors import describe_error

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop that runs forever in a daemon thread.

    ``generate`` is synchronous, but its HTTP calls are concurrent coroutines. Running them
    on one long-lived loop (rather than ``asyncio.run`` per call) lets the async client and
    its keep-alive connections live across calls (an async client is bound to the loop it
    first ran on), and works from any calling thread, even one whose own loop is running.

    Args:
        name: The thread's name.
    """

    def __init__(self, name: str) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def alive(self) -> bool:
        """Whether the loop still runs here (after a fork, the child has no loop thread)."""
        return self.pid == os.getpid() and self.thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result.

        Args:
            coro: The coroutine to run.
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            The coroutine's result.

        Raises:
            RuntimeError: If called from the loop's own thread (it would wait on itself).
            BaseException: Whatever the coroutine raised; on an interrupt of the caller
                (Ctrl-C), the coroutine is cancelled before the interrupt propagates.

        """
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("generate() called from inside the generator's own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what still runs, stop the loop, join the thread, close it (idempotent).

        Cancelling first resolves the futures that other threads wait on in :meth:`run`
        (a ``generate`` racing with ``close``), so nobody waits forever on a stopped loop.
        """
        if not self.alive or self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:
            self.loop.stop()  # e.g. a finalizer run on this thread: it cannot join itself
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(5)
        except Exception as e:  # noqa: BLE001 - stopping goes on regardless
            log.debug("cancelling the loop's tasks failed: %s", describe_error(e))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()
