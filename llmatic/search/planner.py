"""Planning a generation: operator, parents, instruction and temperature of each candidate.

The planner is the search's emitter (pyribs' word): it reads the archives and draws from the
run's RNG, in a fixed order, so the same seed plans the same candidates. It never trains or
calls an LLM.

Per candidate: warm-up (a random instruction and temperature) while both archives are small;
then a crossover with probability ``1 - p_mutation`` (a parent and its nearest elite), else
a mutation of a parent with a prompt cell drawn towards curiosity. The cell's temperature
goes through the temperature schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmatic.plan import PromptBuilder
from llmatic.search.state import SearchState
from llmatic.settings import SearchSettings
from llmatic.types import Completion, GenerationRequest, Operator


@dataclass
class Plan:
    """One candidate before generation."""

    candidate_id: int
    operator: Operator
    instruction: str
    instruction_id: int | None
    temperature: float
    parents: list[dict[str, Any]]
    warmup: bool
    request: GenerationRequest | None = None
    #: The earlier candidate whose network this one repeats (its result is reused).
    duplicate_of: int | None = None
    #: The search space's key of the evaluated source: one key, one network (None when
    #: nothing was evaluated).
    key: str | None = None
    #: ``redraw_repeats``: how many times the request was drawn again because its network
    #: was already evaluated or pending (None: not checked yet; a resumed pending plan was).
    redraws: int | None = None


def select_parent(pool: Any, rng: np.random.Generator, tournament: int) -> dict[str, Any]:
    """A uniform random elite (the paper), or the fittest of ``tournament`` such draws."""
    if tournament <= 1:
        return pool.sample(rng)
    drawn = [pool.sample(rng) for _ in range(tournament)]
    return max(drawn, key=lambda e: float(e["objective"]))  # ties: the first drawn


def redraw_seed(seed: int, attempt: int) -> int:
    """The sampling seed of a request's ``attempt``-th redraw (a function of both only)."""
    return int(np.random.SeedSequence([int(seed), int(attempt)]).generate_state(1)[0] >> 1)


def redraw_repeats(plans: Sequence[Plan], completions: Sequence[Completion], *,
                   generate: Callable[[list[Plan]], list[Completion]],
                   key_of: Callable[[Completion], str | None],
                   taken: Callable[[str], bool], attempts: int,
                   redraw: Callable[[Plan, int, int], None]) -> list[Completion]:
    """Completions whose network was already evaluated or is pending, drawn again.

    A completion repeats when its network's key (``key_of``; None: no network) is ``taken``
    (evaluated, or submitted and not yet told) or belongs to an earlier plan of the same
    batch. Its plan is asked again with a new sampling seed (:func:`redraw_seed`):
    ``redraw(plan, seed, attempt)`` sets its request (:meth:`Planner.redraw`), all repeats
    of a round in one batched ``generate`` call, up to ``attempts`` rounds; what still
    repeats after that is kept (the engine reuses the earlier result). A plan records its
    redraws and is not checked twice, so a resumed pending plan keeps the request it was
    submitted with.
    Nothing here draws from the run's RNG: the same seed gives the same candidates.
    """
    out = list(completions)
    todo = {i for i, plan in enumerate(plans) if plan.redraws is None}
    keys = [key_of(c) for c in out]
    first = {i: plans[i].request.seed for i in todo}
    for i in todo:
        plans[i].redraws = 0
    for attempt in range(1, max(0, int(attempts)) + 1):
        seen: set[str] = set()
        again = []
        for i, key in enumerate(keys):
            if i in todo and key is not None and (key in seen or taken(key)):
                again.append(i)
            if key is not None:
                seen.add(key)
        if not again:
            break
        for i in again:
            redraw(plans[i], redraw_seed(first[i], attempt), attempt)
            plans[i].redraws = attempt
        for i, completion in zip(again, generate([plans[i] for i in again]),
                                 strict=True):
            out[i], keys[i] = completion, key_of(completion)
    return out


class Planner:
    """Plans candidates from the archives (see the module docstring)."""

    def __init__(self, *, settings: SearchSettings, prompts: PromptBuilder) -> None:
        self.settings = settings
        self.prompts = prompts

    def plan(self, state: SearchState, generation: int) -> list[Plan]:
        """Choose operator, parents, instruction and temperature for each candidate."""
        return [self.plan_one(state, generation)
                for _ in range(self.settings.candidates_per_generation)]

    def plan_one(self, state: SearchState, generation: int) -> Plan:
        """Plan the next candidate (the next id; draws from the run's RNG)."""
        s = self.settings
        rng, pool = state.rng, state.parents
        cid = state.next_candidate_id
        state.next_candidate_id += 1
        warmup = len(pool) < s.warmup_networks and len(state.prompt_archive) < s.warmup_prompts
        crossover = (not warmup and not s.random_generation and len(pool) >= 2
                     and rng.random() >= s.p_mutation)
        if crossover:
            a = select_parent(pool, rng, s.tournament)
            b = pool.nearest(a)
            t = state.temperature.propose(None, generation, s.generations)
            plan = Plan(cid, Operator.CROSSOVER, s.crossover_instruction, None, t, [a, b],
                        warmup)
        else:
            plan = self._mutation(state, generation, cid, warmup)
        plan.request = self.request(plan, int(rng.integers(2**31)))
        return plan

    def _mutation(self, state: SearchState, generation: int, cid: int, warmup: bool) -> Plan:
        s, sel, rng = self.settings, self.settings.selection, state.rng
        if s.random_generation:
            parent = dict(state.seed_elite)  # no evolution: always the seed
        else:
            parent = select_parent(state.parents, rng, s.tournament)
        chosen = None
        if not warmup and s.prompt_archive:
            chosen = state.prompt_archive.select(
                rng, strategy=sel.strategy, k=sel.k, tau=sel.softmax_tau, explore=sel.explore,
                level=sel.level,
            )
        temp = state.temperature
        if chosen is None:  # warm-up or no prompt archive: uniform draws
            iid = int(rng.integers(len(s.instructions)))
            chosen = iid, state.prompt_archive.snap(rng.uniform(temp.min, temp.max))
        # The selected cell's temperature (adaptive); constant / linear_decay schedules keep
        # their own.
        iid, t_prompt = chosen
        t = temp.propose(t_prompt, generation, s.generations)
        return Plan(cid, Operator.MUTATION, s.instructions[iid], iid, t, [parent], warmup)

    def redraw(self, plan: Plan, seed: int, attempt: int) -> None:
        """Ask again for ``plan``'s child (``redraw_repeats``), with sampling seed ``seed``.

        The first redraw asks the same prompt again; later ones ask a mutation of the (first)
        parent with an instruction drawn anew (uniformly, from ``seed``: no draw from the
        run's RNG): a parent whose every child of one instruction was evaluated needs another
        edit, and a crossover of two near-identical elites can only repeat them. The plan
        records what it ends with (operator, parents, instruction: its prompt cell gets the
        curiosity).
        """
        if attempt > 1 and plan.operator in (Operator.MUTATION, Operator.CROSSOVER):
            iid = int(np.random.default_rng(seed).integers(len(self.settings.instructions)))
            plan.operator, plan.parents = Operator.MUTATION, plan.parents[:1]
            plan.instruction, plan.instruction_id = self.settings.instructions[iid], iid
        plan.request = self.request(plan, seed)

    def request(self, plan: Plan, seed: int) -> GenerationRequest:
        """The generator's request for ``plan`` (the prompt and the sampling seed)."""
        prompt, messages = self.prompts.build(plan.instruction, plan.parents)
        sources = tuple(str(p["solution"]) for p in plan.parents)
        return GenerationRequest(prompt=prompt, temperature=plan.temperature,
                                 instruction=plan.instruction, parents=sources, seed=seed,
                                 messages=messages)
