"""A simulated cluster: NAS-Bench-201 lookups that each occupy a worker for a drawn time.

What a search on a cluster of ``workers`` GPUs would see, on one machine: every candidate
gets its real result from the benchmark table (:class:`~llmatic.nb201.space.Nb201Space`),
but only after it has held one of the workers for a duration drawn from a lognormal
distribution (seeded by the candidate's id, so every schedule meets the same durations).
A worker sleeps instead of training, so 64 of them cost no CPU. Two kinds of workers:

* ``local`` (:class:`SleepingPool`): a thread per worker in this process;
* ``ray`` (:class:`RaySleepers`): every candidate a remote call through Ray to an async actor
  (``max_concurrency`` = workers) that sleeps, so Ray's scheduling and serialisation are on
  the path; one actor process, not one per worker.

Used by ``benchmarks/bench.py`` (the ``simulated_cluster`` key) to measure the scheduling's
worker utilisation (``schedule=generational`` / ``steady``) at 2 to 64 workers.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from llmatic.nb201.space import Nb201Space
from llmatic.search.engine import Search
from llmatic.types import EvalResult

__all__ = ["RaySleepers", "SimulatedSpace", "SleepingPool", "lognormal_seconds",
           "simulated_search"]


def lognormal_seconds(seed: int, candidate_id: int, median_s: float, sigma: float) -> float:
    """The candidate's duration: lognormal with this median and log-space ``sigma``.

    ``sigma=0.5`` spreads durations 10x between the 1st and the 99th percentile.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(candidate_id)]))
    return float(median_s * math.exp(sigma * rng.standard_normal()))


def _sleep_then(result: EvalResult, seconds: float) -> EvalResult:
    time.sleep(seconds)
    return result


class SleepingPool:
    """``workers`` threads in this process; each candidate sleeps on one (no CPU)."""

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                        thread_name_prefix="llmatic-sim")

    def run(self, result: EvalResult, seconds: float) -> Future:
        """A future of ``result``, resolved ``seconds`` after a worker took it."""
        return self._pool.submit(_sleep_then, result, seconds)

    def close(self) -> None:
        """Stop the threads (sleeping candidates are not waited for)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def abort(self) -> None:
        """Ctrl-C: as :meth:`close`."""
        self.close()


class RaySleepers:
    """``workers`` concurrent sleeps on a Ray async actor (a local Ray is started if none).

    Args:
        workers: Calls the actor serves at once.
    """

    def __init__(self, workers: int) -> None:
        import asyncio

        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)

        @ray.remote(num_cpus=0)
        class _Sleeper:
            async def run(self, result: EvalResult, seconds: float) -> EvalResult:
                await asyncio.sleep(seconds)
                return result

        self.workers = int(workers)
        self._actor = _Sleeper.options(max_concurrency=self.workers).remote()
        ray.get(self._actor.run.remote(None, 0.0))  # started before the clock runs

    def run(self, result: EvalResult, seconds: float) -> Future:
        """A future of ``result`` after a remote sleep of ``seconds``."""
        return self._actor.run.remote(result, seconds).future()

    def close(self) -> None:
        """Stop the actor (Ray itself stays up for the next cluster)."""
        import ray

        ray.kill(self._actor)

    def abort(self) -> None:
        """Ctrl-C: as :meth:`close`."""
        self.close()


class SimulatedSpace:
    """An nb201 space whose every evaluation holds a worker for a drawn duration.

    Everything but :meth:`submit` is the wrapped space's.

    Args:
        inner: The nb201 space (its table gives the results).
        evaluator: The workers (:class:`SleepingPool` or :class:`RaySleepers`).
        median_s: Median duration of a candidate (seconds).
        sigma: Log-space spread of the durations.
        seed: Seeds the durations (with each candidate's id).
    """

    def __init__(self, inner: Nb201Space, evaluator: Any, *, median_s: float, sigma: float,
                 seed: int) -> None:
        self.inner = inner
        self.evaluator = evaluator
        self.median_s = float(median_s)
        self.sigma = float(sigma)
        self.seed = int(seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def submit(self, source: str, class_name: str, candidate_id: int) -> Future:
        """The table's result, after ``lognormal_seconds`` on a worker."""
        result = self.inner.submit(source, class_name, candidate_id).result()
        seconds = lognormal_seconds(self.seed, candidate_id, self.median_s, self.sigma)
        result.timings["simulated"] = round(seconds, 4)
        return self.evaluator.run(result, seconds)

    def close(self) -> None:
        """Stop the workers."""
        self.evaluator.close()
        self.inner.close()


def simulated_search(search: Search, evaluator: Any, *, median_s: float,
                     sigma: float) -> Search:
    """The same search (built parts, settings, run directory) on a simulated cluster.

    Args:
        search: A built nb201 search (``llmatic.config.build_search``).
        evaluator: The simulated workers.
        median_s: Median duration of a candidate (seconds).
        sigma: Log-space spread of the durations.
    """
    if not isinstance(search.space, Nb201Space):
        raise ValueError(f"a simulated cluster needs space=nb201, not {search.space.name}")
    space = SimulatedSpace(search.space, evaluator, median_s=median_s, sigma=sigma,
                           seed=search.settings.seed)
    return Search(space=space, generator=search.generator, planner=search.planner,
                  descriptors=search.descriptors, settings=search.settings,
                  new_temperature=search.new_temperature, run_dir=search.run_dir)
