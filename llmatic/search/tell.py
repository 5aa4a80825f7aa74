"""Telling the archives one result: network archive, curiosity, temperature, the record.

Results are told in candidate order, never in the order they finish, so a run does not
depend on timing. The record returned here is one line of ``history.jsonl``; its key order is
part of the file format.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmatic.rundir import candidate_path
from llmatic.search.planner import Plan
from llmatic.search.space import SearchSpace
from llmatic.search.state import SearchState
from llmatic.settings import SearchSettings
from llmatic.types import EvalResult, Operator, Status

if TYPE_CHECKING:
    from llmatic.qd import DescriptorSpace

#: Completions that yield no usable network: their prompt pays ``curiosity.no_network``.
NO_NETWORK = frozenset({Status.LLM_ERROR, Status.SYNTAX_ERROR, Status.NO_NETWORK,
                        Status.FORBIDDEN, Status.INVALID_CELL})


class Teller:
    """Updates a :class:`SearchState` from results (the scheduler's ``tell``)."""

    def __init__(self, *, settings: SearchSettings, descriptors: DescriptorSpace,
                 space: SearchSpace, run_dir: Path) -> None:
        self.settings = settings
        self.descriptors = descriptors
        self.space = space
        self.run_dir = Path(run_dir)

    def tell(self, state: SearchState, plan: Plan, result: EvalResult, source: str | None,
             generation: int) -> dict[str, Any]:
        """Update archives, curiosity and temperature from one result; return its record."""
        result = self.space.judge(result)
        state.status_counts[result.status.value] += 1
        added, measures, raw = False, None, None
        if result.status is Status.OK:
            raw = self.descriptors.raw(result)
            if raw is None:
                result = EvalResult(Status.RUNTIME_ERROR, error="descriptors could not be computed",
                                    timings=result.timings)
            else:
                measures = self._measures(state, raw)
                added = self._add(state, plan, result, source, measures, raw, generation)
        ok = result.status is Status.OK
        # Improvement drives the adaptive temperature.
        if state.temperature.compare_to == "parent":
            reference = max((float(p["objective"]) for p in plan.parents), default=None)
        else:
            reference = state.best_fitness
        improved = ok and (reference is None or result.fitness > reference)
        if ok and (state.best_fitness is None or result.fitness > state.best_fitness):
            state.best_fitness = float(result.fitness)
        if plan.key is not None and plan.duplicate_of is None:
            state.evaluated[plan.key] = (plan.candidate_id, result)
        next_t = plan.temperature
        if plan.operator is not Operator.SEED:
            next_t = state.temperature.update(plan.temperature, improved)
            if plan.operator is Operator.MUTATION and self.settings.prompt_archive:
                self._credit(state, plan, result, added, next_t)
        record = self._record(plan, result, raw, measures, added, improved, next_t, generation)
        self.space.annotate(record, source)
        return record

    def _measures(self, state: SearchState, raw: Any) -> Any:
        before = Counter(self.descriptors.clipped)
        measures = self.descriptors.normalise(raw)
        state.clipped.update(self.descriptors.clipped - before)
        return measures

    def _add(self, state: SearchState, plan: Plan, result: EvalResult, source: str | None,
             measures: Any, raw: Any, generation: int) -> bool:
        entry = dict(
            source=source, fitness=result.fitness, measures=measures,
            raw_measures=raw, candidate_id=plan.candidate_id, generation=generation,
            val_accuracy=result.val_accuracy, val_loss=result.val_loss,
            params=result.params or 0, flops=result.flops or 0,
        )
        # Without the network archive (an ablation) it only measures the niches.
        added = state.network_archive.add(**entry)
        if state.population is not None:
            added = state.population.add(**entry)
        return added

    def _credit(self, state: SearchState, plan: Plan, result: EvalResult, added: bool,
                next_t: float) -> None:
        """Curiosity of the mutation's prompt cell (crossover adds nothing to that archive).

        A completion with no usable network (refusal, outage, no code, policy) is not free:
        it pays ``curiosity.no_network`` (docs/method.md §3.4).
        """
        cur = self.settings.curiosity
        if result.status is Status.OK:
            delta = cur["added"] if added else cur["not_added"]
        elif result.status in NO_NETWORK:
            delta = cur.get("no_network", cur["untrainable"])
        else:
            delta = cur["untrainable"]
        prompts = state.prompt_archive
        prompts.credit(plan.instruction_id, plan.temperature, float(delta), added)
        # The adapted temperature reaches a cell of its own (inheriting curiosity).
        if prompts.snap(next_t) != prompts.snap(plan.temperature):
            prompts.spread(plan.instruction_id, plan.temperature, next_t)

    def _record(self, plan: Plan, result: EvalResult, raw: Any, measures: Any, added: bool,
                improved: bool, next_t: float, generation: int) -> dict[str, Any]:
        source_file = candidate_path(self.run_dir, plan.candidate_id, generation)
        return {
            "candidate_id": plan.candidate_id,
            "generation": generation,
            "operator": plan.operator.value,
            "warmup": plan.warmup,
            "instruction": plan.instruction,
            "instruction_id": plan.instruction_id,
            "temperature": plan.temperature,
            "next_temperature": next_t,
            "parents": [int(p["candidate_id"]) for p in plan.parents],
            "status": result.status.value,
            "fitness": result.fitness,
            "val_accuracy": result.val_accuracy,
            "val_loss": result.val_loss,
            "params": result.params,
            "flops": result.flops,
            "width": result.width,
            "depth": result.depth,
            "width_to_depth": result.width_to_depth,
            "descriptors": dict(zip(self.descriptors.names, raw, strict=True)) if raw else None,
            "measures": measures,
            "added": bool(added),
            "improved": bool(improved),
            "duplicate_of": plan.duplicate_of,
            "error": result.error,
            "source_file": str(source_file.relative_to(self.run_dir)),
        }
