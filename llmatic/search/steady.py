"""``schedule=steady``: steady-state evolution, a worker that frees up gets the next candidate.

Candidates are numbered after the seed, i = 0, 1, 2, ... Candidate i is planned from the
archives as they were after every candidate before i - L was told (L = ``steady_lag``): the
run interleaves, in one fixed order, *tell candidate k, then plan candidate k + L + 1*. Results
are told in candidate order, never in the order they finish, so the history depends on the
seed and L only, not on the number of workers or their speed. Between the plan and the tell
of a candidate up to L + 1 candidates are in flight, which is what keeps the workers busy
while one of them trains a slow network.

A generation of the paper becomes a block of ``candidates_per_generation`` consecutive
candidates: candidate i belongs to generation i // C + 1 (its temperature schedule, its
history records, metrics and figures). The run checkpoints when a block is told, with the L + 1
planned candidates after it as ``state.pending_plans``, so a resume continues exactly.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmatic.search.planner import Plan
from llmatic.search.state import SearchState

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["SteadyScheduler"]


@dataclass
class _Slot:
    """One planned candidate until it is told."""

    index: int
    plan: Plan
    completion: Any = None
    ext: Any = None
    future: Future | None = None
    generate_s: float = 0.0


class SteadyScheduler:
    """Plans, submits and tells candidates one at a time (see the module docstring).

    Args:
        search: The :class:`~llmatic.search.engine.Search` whose parts it drives (it owns
            this scheduler: passed in, not imported).
        state: The state after the seed (new run) or of the last checkpoint (resume).
    """

    def __init__(self, search: Any, state: SearchState) -> None:
        self.search = search
        s = search.settings
        self.per_gen = int(s.candidates_per_generation)
        self.lag = int(s.steady_lag)
        self.told = state.generation * self.per_gen
        self.window: deque[_Slot] = deque()
        #: The window's planned slots not submitted yet (its tail, in order).
        self.unsubmitted: deque[_Slot] = deque()
        pending = list(state.pending_plans or [])
        for i, plan in enumerate(pending):
            # Submitted before the interruption: submitted again, in the same order.
            plan.key, plan.duplicate_of = None, None
            self.window.append(_Slot(self.told + i, plan))
            self.unsubmitted.append(self.window[-1])
        self.planned = self.told + len(pending)
        while self.planned < self.told + self.lag + 1:  # a new run: plan 0..L
            self._plan_next(state)

    def generation_of(self, index: int) -> int:
        """The generation (block) of candidate ``index``."""
        return index // self.per_gen + 1

    def _plan_next(self, state: SearchState) -> None:
        index = self.planned
        plan = self.search.planner.plan_one(state, self.generation_of(index))
        self.window.append(_Slot(index, plan))
        self.unsubmitted.append(self.window[-1])
        self.planned += 1

    def _submit_new(self, state: SearchState, progress: Any) -> None:
        """Generate and submit the planned candidates the budget holds.

        In batched generator calls of ``overlap_chunk`` requests, each chunk submitted
        before the next is generated (a completion depends only on its request).
        """
        total = self.search.settings.generations * self.per_gen
        new = []
        while self.unsubmitted and self.unsubmitted[0].index < total:
            new.append(self.unsubmitted.popleft())
        chunk = self.search.settings.overlap_chunk or len(new)
        for start in range(0, len(new), max(1, chunk)):
            self._submit(state, new[start:start + chunk], progress)

    def _submit(self, state: SearchState, part: list[_Slot], progress: Any) -> None:
        search = self.search
        started = time.perf_counter()
        completions = search._generate([slot.plan for slot in part],
                                       self.generation_of(part[0].index), state)
        seconds = time.perf_counter() - started
        state.generate_seconds += seconds
        for slot, completion in zip(part, completions, strict=True):
            ext = search.extract_and_keep(slot.plan, completion, self.generation_of(slot.index))
            slot.completion, slot.ext = completion, ext
            slot.generate_s = seconds / len(part)
            slot.future = search._start(slot.plan, completion, ext, progress, state)

    def _head_done(self) -> bool:
        head = self.window[0] if self.window else None
        return head is not None and head.future is not None and head.future.done()

    def run_block(self, state: SearchState, generation: int, progress: Any = None) -> None:
        """Tell every candidate of ``generation``, planning and submitting as tells free room.

        Its records go to the history at once; the planned candidates after it stay pending
        (``state.pending_plans``) and keep running while the loop checkpoints.
        """
        end = generation * self.per_gen
        records = []
        self._submit_new(state, progress)
        dispatcher = self.search.dispatcher
        while self.told < end:
            self.window[0].future.result()  # the oldest candidate: told first
            while self.told < end and self._head_done():
                slot = self.window.popleft()
                records.append(self.search.told(
                    state, slot.plan, slot.completion, slot.ext, slot.future.result(),
                    self.generation_of(slot.index), slot.generate_s))
                self.told += 1
                self._plan_next(state)  # tell k, then plan k + L + 1
                if dispatcher.waiting() < dispatcher.workers:
                    # Fewer candidates queued than workers: feed them now rather than after
                    # the whole run of finished candidates is told (a straggler at the head
                    # holds back hundreds at 64 workers). A completion depends only on its
                    # request, so when it is generated changes nothing.
                    self._submit_new(state, progress)
            self._submit_new(state, progress)
        self.search._append_history(state, records)
        state.pending_plans = [slot.plan for slot in self.window]
