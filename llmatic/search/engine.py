"""The search engine: ask (plan, generate), evaluate, tell, one generation at a time.

One generation:

1. **plan** each candidate (:mod:`llmatic.search.planner`);
2. **generate** the completions, chunk by chunk, in batched calls to the code generator;
3. **extract** each candidate from its completion (no code runs here) and screen it with the
   static policy; a network already evaluated reuses its result;
4. **evaluate** the rest through the search space (a sandboxed child, or a table lookup);
5. **tell**, in candidate order so results never depend on timing
   (:mod:`llmatic.search.tell`), and append the records to ``history.jsonl``.

``schedule=steady`` runs the same steps one candidate at a time (:mod:`llmatic.search.steady`).
Candidates reach the evaluator through a :class:`~llmatic.search.dispatch.Dispatcher`, which
records when each one ran on a worker: a generation's worker utilisation is measured from it.

The engine receives built parts; it never reads a config. ``llmatic.config`` builds it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmatic.extract import Extraction
from llmatic.rundir import (
    HISTORY,
    HistoryTail,
    candidate_path,
    read_history,
    write_failed,
    write_run_file,
)
from llmatic.search.dispatch import Dispatcher, RunClock
from llmatic.search.metrics import account, generation_metrics, utilisation
from llmatic.search.planner import Plan, Planner, redraw_repeats
from llmatic.search.space import SearchSpace
from llmatic.search.state import SearchState
from llmatic.search.tell import Teller
from llmatic.settings import SearchSettings
from llmatic.types import Completion, EvalResult, Operator, Status

if TYPE_CHECKING:
    from llmatic.qd import DescriptorSpace

log = logging.getLogger("llmatic")


@dataclass
class InFlight:
    """A generation that is generated and submitted but not yet told."""

    generation: int
    plans: list[Plan]
    jobs: list[tuple[Plan, Completion, Any]] = field(default_factory=list)
    futures: list[Future] = field(default_factory=list)
    gen_seconds: float = 0.0


class Search:
    """One search run over built parts (``llmatic.config.build_search`` builds one).

    Args:
        space: What a candidate is and how it is evaluated.
        generator: The code generator (an LLM or the rule-based mutator).
        planner: Plans candidates (operator, parents, prompt, temperature).
        descriptors: Measures a result's niche.
        settings: The search's settings.
        new_temperature: Makes a fresh temperature schedule (one per new state).
        run_dir: Where the run's files go.
    """

    def __init__(self, *, space: SearchSpace, generator: Any, planner: Planner,
                 descriptors: DescriptorSpace, settings: SearchSettings,
                 new_temperature: Callable[[], Any], run_dir: Path) -> None:
        self.space = space
        self.generator = generator
        self.planner = planner
        self.descriptors = descriptors
        self.settings = settings
        self.new_temperature = new_temperature
        self.run_dir = Path(run_dir)
        self.history = HistoryTail(self.run_dir)  # the history as it grows (metrics read it)
        self.teller = Teller(settings=settings, descriptors=descriptors, space=space,
                             run_dir=self.run_dir)
        #: Networks submitted and not yet told: key -> (candidate id, future).
        self._running: dict[str, tuple[int, Future]] = {}
        #: The readings of the current generator call's completions (:meth:`_read`), by
        #: completion (kept in the entry, so its id stays unique): each is read once.
        self._readings: dict[int, tuple[Completion, Extraction | None, EvalResult | None,
                                        str | None]] = {}
        #: The run clock (seconds; it continues across a resume) and the workers' queue.
        self.clock = RunClock()
        self.dispatcher = Dispatcher(self.workers, self.clock)
        #: When ``run_search`` was called (perf_counter; None: not known): the time to the
        #: first result is measured from it.
        self.started_at: float | None = None
        #: Generation -> its worker utilisation (:func:`~llmatic.search.metrics.utilisation`).
        self.block_stats: dict[int, dict[str, Any]] = {}
        self._block_start = 0.0
        self._told_spans: list[tuple[float, float]] = []
        self._steady: Any = None
        #: The seed's evaluation, started before the archives are built (:meth:`submit_seed`).
        self._seed_future: Future | None = None

    @property
    def workers(self) -> int:
        """Candidates the space's evaluator runs at once (1: lookups in this process)."""
        return int(getattr(getattr(self.space, "evaluator", None), "workers", 1) or 1)

    @property
    def instructions(self) -> tuple[str, ...]:
        """The mutation instructions (row i of the prompt archive is instruction i)."""
        return self.settings.instructions

    # -- state ------------------------------------------------------------------------------
    def new_state(self) -> SearchState:
        """A fresh state before the seed network is evaluated."""
        from llmatic.qd import ElitistPopulation, NetworkArchive, PromptArchive  # loads torch

        s, arch = self.settings, self.settings.archive
        network = NetworkArchive(
            kind=arch.kind,
            cells=arch.network_cells,
            dims=list(arch.network_dims),
            centroid_samples=arch.centroid_samples,
            centroid_seed=arch.centroid_seed,
            qd_score_offset=arch.qd_score_offset,
            measure_dim=len(self.descriptors.names),
        )
        prompts = PromptArchive(
            num_instructions=len(s.instructions),
            t_min=arch.temperature_min,
            t_max=arch.temperature_max,
            t_step=arch.temperature_step,
        )
        population = None if s.network_archive else ElitistPopulation(size=arch.network_cells)
        return SearchState(
            population=population,
            generation=0,
            next_candidate_id=0,
            rng=np.random.default_rng(s.seed),
            network_archive=network,
            prompt_archive=prompts,
            temperature=self.new_temperature(),
            best_fitness=None,
            history_lines=0,
        )

    # -- ask ----------------------------------------------------------------------------------
    def plan(self, state: SearchState, generation: int) -> list[Plan]:
        """Plan one generation's candidates (draws from the run's RNG)."""
        return self.planner.plan(state, generation)

    def extract(self, text: str) -> Extraction:
        """The candidate in a completion; an answer that cannot be read is a failed candidate."""
        try:
            return self.space.extract(text)
        except Exception as exc:  # noqa: BLE001 - one unreadable answer must not stop the run
            return Extraction(source=None, class_name=None, status=self.space.unreadable,
                              error=f"could not read the answer ({type(exc).__name__}: {exc})")

    # -- one generation -------------------------------------------------------------------
    def run_generation(self, state: SearchState, generation: int, progress: Any = None) -> None:
        """Plan, generate, extract, evaluate and tell one generation."""
        self.finish_generation(state, self.start_generation(state, generation, progress))

    def start_generation(self, state: SearchState, generation: int, progress: Any = None,
                         plans: list[Plan] | None = None) -> InFlight:
        """Plan (unless ``plans`` are given), generate and submit one generation."""
        self.start_clock(state)
        if plans is None:
            plans = self.plan(state, generation)
        chunk = self.settings.overlap_chunk or len(plans)
        flight = InFlight(generation=generation, plans=plans)
        # Generate chunk by chunk and start evaluating each chunk at once, so training
        # overlaps with the LLM writing the rest of the generation.
        for start in range(0, len(plans), chunk):
            part = plans[start : start + chunk]
            t0 = time.perf_counter()
            completions = self._generate(part, generation, state)
            flight.gen_seconds += time.perf_counter() - t0
            for plan, completion in zip(part, completions, strict=True):
                ext = self.extract_and_keep(plan, completion, generation)
                flight.jobs.append((plan, completion, ext))
                flight.futures.append(self._start(plan, completion, ext, progress, state))
        return flight

    def extract_and_keep(self, plan: Plan, completion: Completion, generation: int) -> Any:
        """Extract a completion's network and write its source to ``candidates/``."""
        ext = self._read(completion)[0]
        # A cell is fully described by its arch string in the history; its text is kept
        # only when it could not be read (to see what the LLM wrote).
        if self.space.keeps_text(ext):
            text = ext.source if (ext is not None and ext.source) else completion.text
            path = candidate_path(self.run_dir, plan.candidate_id, generation)
            write_run_file(path, text or "", self.run_dir)
        return ext

    def _read(self, completion: Completion
              ) -> tuple[Extraction | None, EvalResult | None, str | None]:
        """A completion's network, the static policy's rejection of it and its key.

        ``(extraction or None when there is no answer, a forbidden result or None, the key
        or None when there is no network to run)``. Computed once per completion of a
        generator call: with ``redraw_repeats`` the key is first read to find repeats, then
        again when the candidate starts.
        """
        hit = self._readings.get(id(completion))
        if hit is not None:
            return hit[1:]
        ext = self.extract(completion.text) if completion.ok else None
        rejected = key = None
        if ext is not None and ext.status is None:
            rejected = self.space.check_policy(ext.source)
            key = self.space.key(ext.source) if rejected is None else None
        self._readings[id(completion)] = (completion, ext, rejected, key)
        return ext, rejected, key

    def _generate(self, part: list[Plan], generation: int,
                  state: SearchState | None = None) -> list[Completion]:
        self._readings.clear()  # the previous call's completions were all read
        completions = self._complete(part, generation)
        if state is not None and self.settings.redraw_repeats:  # beyond the paper
            completions = redraw_repeats(
                part, completions, generate=lambda plans: self._complete(plans, generation),
                key_of=lambda completion: self._read(completion)[2],
                attempts=self.settings.redraw_repeats,
                redraw=self.planner.redraw,
                taken=lambda key: key in state.evaluated or key in self._running)
        return completions

    def _complete(self, part: list[Plan], generation: int) -> list[Completion]:
        try:
            completions = self.generator.generate([p.request for p in part])
        except Exception as exc:  # noqa: BLE001 - an outage fails candidates, not the run
            log.warning("generator failed for generation %d: %s", generation, exc)
            completions = [Completion(text="", error=f"{type(exc).__name__}: {exc}")
                           for _ in part]
        if len(completions) != len(part):
            raise RuntimeError(
                f"{self.generator.name} returned {len(completions)} completions for "
                f"{len(part)} prompts"
            )
        return completions

    def _start(self, plan: Plan, completion: Completion, ext: Any, progress: Any,
               state: SearchState | None = None) -> Future:
        """A future of the candidate's result: failures before the sandbox resolve at once."""
        if ext is None:
            early = EvalResult(Status.LLM_ERROR, error=completion.error)
        elif ext.status is not None:
            early = EvalResult(ext.status, error=ext.error)
        else:
            _, early, key = self._read(completion)
        if early is None:
            # One network, one fitness: a repeat of an earlier candidate reuses its result.
            plan.key = key
            earlier = state.evaluated.get(plan.key) if state is not None else None
            if earlier is not None:
                plan.duplicate_of = int(earlier[0])
                early = earlier[1]
        if early is not None:
            done: Future = Future()
            done.set_result(early)
            if progress is not None:
                progress.advance()
            return done
        running = self._running.get(plan.key)
        if running is not None:  # the same network earlier in this generation
            plan.duplicate_of = running[0]
            future = running[1]
        else:
            source, name, cid = ext.source, ext.class_name, plan.candidate_id
            future = self.dispatcher.submit(cid, lambda: self.space.submit(source, name, cid))
            self._running[plan.key] = (plan.candidate_id, future)
        if progress is not None:
            future.add_done_callback(lambda _: progress.advance())
        return future

    def finish_generation(self, state: SearchState, flight: InFlight) -> None:
        """Wait for a started generation and tell its results, in candidate order."""
        self.start_clock(state)
        results = [f.result() for f in flight.futures]
        state.generate_seconds += flight.gen_seconds
        per_candidate_gen = flight.gen_seconds / max(1, len(flight.plans))
        records = [self.told(state, plan, completion, ext, result, flight.generation,
                             per_candidate_gen)
                   for (plan, completion, ext), result in zip(flight.jobs, results, strict=True)]
        self._append_history(state, records)
        self.end_block(flight.generation)

    def told(self, state: SearchState, plan: Plan, completion: Completion, ext: Any,
             result: EvalResult, generation: int, generate_s: float) -> dict[str, Any]:
        """Tell one candidate's result; return its history record (with its timings)."""
        account(state.llm_totals, completion)
        source = ext.source if ext is not None and ext.source else None
        record = self.tell(state, plan, result, source, generation)
        if not self.space.keeps_text(ext):
            record["source_file"] = None
        # Everything measured in seconds lives in `timings` (ignored when comparing runs):
        # on the run clock, when the candidate ran on a worker and when it was told.
        span = self.dispatcher.take(plan.candidate_id)
        ran = {}
        if span is not None:
            self._told_spans.append(span)
            ran = {"start_at": round(span[0], 4), "end_at": round(span[1], 4),
                   "worker": round(span[1] - span[0], 4)}
        record["timings"] = {"generate": round(generate_s, 4),
                             "llm": round(completion.seconds, 4), **result.timings, **ran,
                             "told_at": round(self.clock(), 4)}
        record["llm"] = {"prompt_tokens": completion.prompt_tokens,
                         "completion_tokens": completion.completion_tokens,
                         "cached": bool(completion.cached),
                         "attempts": int(completion.attempts)}
        record["extraction_notes"] = list(ext.notes) if ext is not None else []
        return record

    # -- the run clock ------------------------------------------------------------------
    def start_clock(self, state: SearchState) -> None:
        """Start the run clock once: at 0 for a new run, where the last one stopped on resume."""
        if self.clock.started:
            return
        at = state.wall_seconds
        if state.history_lines:
            told = [r.get("timings", {}).get("told_at") for r in read_history(self.run_dir)]
            at = max([at, *(t for t in told if t is not None)])
        self.clock.start(at)
        self._block_start = at

    def end_block(self, generation: int) -> None:
        """A generation is told: measure its workers' utilisation since the previous one."""
        now = self.clock()
        spans = self._told_spans + self.dispatcher.spans(now)
        self.block_stats[generation] = utilisation(spans, self._block_start, now, self.workers)
        self._told_spans = []
        self._block_start = now

    def run_block(self, state: SearchState, generation: int, progress: Any = None) -> None:
        """``schedule=steady``: run until every candidate of ``generation`` is told."""
        from llmatic.search.steady import SteadyScheduler

        self.start_clock(state)
        if self._steady is None:
            self._steady = SteadyScheduler(self, state)
        self._steady.run_block(state, generation, progress)
        self.end_block(generation)

    # -- tell -------------------------------------------------------------------------------
    def tell(self, state: SearchState, plan: Plan, result: EvalResult, source: str | None,
             generation: int) -> dict[str, Any]:
        """Update archives, curiosity and temperature from one result; return its record."""
        record = self.teller.tell(state, plan, result, source, generation)
        if plan.key is not None and plan.duplicate_of is None:
            self._running.pop(plan.key, None)
        return record

    def _append_history(self, state: SearchState, records: Sequence[dict[str, Any]]) -> None:
        path = self.run_dir / HISTORY
        try:
            with open(path, "a") as fh:
                for rec in records:
                    fh.write(json.dumps(rec, default=_json_default) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise write_failed(path, exc, self.run_dir, "the last checkpoint is intact and a "
                               "resume redoes this generation") from exc
        state.history_lines += len(records)

    # -- generation 0 -----------------------------------------------------------------------
    def evaluate(self, source: str, class_name: str, candidate_id: int) -> EvalResult:
        """Evaluate one candidate's source (blocking)."""
        return self.space.submit(source, class_name, candidate_id).result()

    def submit_seed(self, candidate_id: int = 0) -> None:
        """Start evaluating the seed network now (a new run's first candidate).

        Its evaluation depends on nothing the search builds, so it runs (and a cold sandbox
        server finishes its imports) while :meth:`new_state` builds the archives;
        :meth:`evaluate_seed` then waits for it.
        """
        if self._seed_future is None:
            space = self.space
            write_run_file(candidate_path(self.run_dir, candidate_id, 0), space.seed_source,
                           self.run_dir)
            self._seed_future = space.submit(space.seed_source, space.seed_class, candidate_id)

    def evaluate_seed(self, state: SearchState) -> None:
        """Generation 0: the paper's seed network; the search cannot start without it."""
        space = self.space
        self.start_clock(state)
        cid = state.next_candidate_id
        state.next_candidate_id += 1
        self.submit_seed(cid)
        result = self._seed_future.result()
        if result.status is not Status.OK:
            raise RuntimeError(
                f"the seed network failed to evaluate ({result.status.value}: {result.error}); "
                "check dataset.input_shape / dataset.num_classes and the trainer config "
                "(space=nb201: nb201.seed_cell and the table)"
            )
        plan = Plan(cid, Operator.SEED, "", None, state.temperature.current, [], False,
                    key=space.key(space.seed_source))
        record = self.tell(state, plan, result, space.seed_source, 0)
        if record["status"] != Status.OK.value:
            raise RuntimeError(f"the seed could not enter the archive ({record['status']}: "
                               f"{record['error']}); check descriptors.names")
        state.seed_elite = {
            "solution": space.seed_source, "objective": float(result.fitness),
            "candidate_id": cid, "val_accuracy": result.val_accuracy,
            "params": result.params or 0, "flops": result.flops or 0,
            "measures": np.asarray(record["measures"]), "index": -1,
        }
        record["timings"] = {**result.timings, "told_at": round(self.clock(), 4)}
        if self.started_at is not None:  # from the run_search call (start-up included)
            record["timings"]["first_result_s"] = round(time.perf_counter() - self.started_at, 4)
        self._block_start = self.clock()
        record["llm"] = {"prompt_tokens": 0, "completion_tokens": 0, "cached": False,
                         "attempts": 0}
        record["extraction_notes"] = []
        self._append_history(state, [record])

    def generation_metrics(self, state: SearchState, generation: int) -> dict[str, Any]:
        """Metrics of the generation just told (read back from the history)."""
        return generation_metrics(self, state, generation)

    def abort(self) -> None:
        """Ctrl-C: kill the running candidates and drop the queued ones (then :meth:`close`).

        Nothing of the interrupted generation is told or written: the last checkpoint stays
        the point ``resume=`` continues from.
        """
        self.dispatcher.stop()  # before the killed candidates free their workers
        stop = getattr(getattr(self.space, "evaluator", None), "abort", None)
        if stop is not None:
            stop()

    def close(self) -> None:
        """Stop the space's evaluator (and servers it started) and release the generator."""
        self.space.close()
        self.generator.close()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
