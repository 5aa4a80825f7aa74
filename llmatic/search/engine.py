"""The LLMatic search loop: ask (select, prompt, generate), evaluate, tell (archives).

``run_search(cfg, run_dir)`` is the one entry point; the Hydra ``main`` only calls it, and
tests call it directly on composed configs. One generation:

1. **plan** each candidate: warm-up (random instruction and temperature) until an archive
   reaches its warm-up size, then mutation (random elite + a prompt biased to curiosity) with
   probability ``operators.p_mutation``, else crossover (a random elite and its nearest
   elite);
2. **generate** all completions in one batched call to the code generator;
3. **extract** each network class from its completion (no code runs here);
4. **evaluate** in sandboxed children (``sandbox.workers`` at a time);
5. **tell**, in candidate order so results never depend on timing: network archive,
   curiosity, temperature, history; then checkpoint.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from llmatic.config import (
    CONFIG,
    NB201_SHAPES,
    ConfigError,
    datamodule_kwargs,
    descriptor_bounds,
    validate_config,
)
from llmatic.errors import RunDirectoryError
from llmatic.extract import DEFAULT_ALLOWED_IMPORTS, Extraction, extract_network, policy_error
from llmatic.plan import PromptBuilder, seed_network
from llmatic.qd import DescriptorSpace, ElitistPopulation, NetworkArchive, PromptArchive
from llmatic.sandbox import Sandbox, outcome_to_result
from llmatic.train import too_large_error
from llmatic.types import Completion, EvalResult, GenerationRequest, Operator, Status

log = logging.getLogger("llmatic")

HISTORY = "history.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest.pkl"


# --------------------------------------------------------------------------------------
# State and files
# --------------------------------------------------------------------------------------
@dataclass
class SearchState:
    """Everything needed to continue a search exactly (pickled after each generation)."""

    generation: int
    next_candidate_id: int
    rng: np.random.Generator
    network_archive: NetworkArchive
    prompt_archive: PromptArchive
    temperature: Any
    best_fitness: float | None
    history_lines: int
    status_counts: Counter = field(default_factory=Counter)
    clipped: Counter = field(default_factory=Counter)
    llm_totals: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0
    #: Wall-clock seconds spent waiting for the generator (part of ``wall_seconds``).
    generate_seconds: float = 0.0
    #: Parents of the ``prompt_archive_only`` ablation (None: the network archive).
    population: ElitistPopulation | None = None
    #: The seed network as an elite record (the parent of ``random_generation``).
    seed_elite: dict[str, Any] | None = None
    #: ``pipeline_generations``: the plans of the next generation, made before this
    #: checkpoint's generation was told (None otherwise).
    pending_plans: list | None = None
    #: Normalised source key -> (candidate id, result) of every candidate evaluated so far:
    #: a repeated network is not trained again (METHOD.md §3.8).
    evaluated: dict = field(default_factory=dict)

    @property
    def parents(self) -> NetworkArchive | ElitistPopulation:
        """Where parents are selected from."""
        return self.network_archive if self.population is None else self.population


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, rename: a reader sees the old or the new file.

    On failure (a full disk, permissions) the temporary file is removed and the old file is
    left as it was.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_checkpoint(run_dir: Path, state: SearchState) -> Path:
    """Write ``checkpoints/gen_XXXX.pkl`` and ``checkpoints/latest.pkl`` atomically.

    Raises:
        RunDirectoryError: The files could not be written; the previous checkpoint is intact.
    """
    directory = run_dir / CHECKPOINTS
    data = pickle.dumps(state)
    path = directory / f"gen_{state.generation:04d}.pkl"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, data)
        _atomic_write_bytes(directory / LATEST, data)
    except OSError as exc:
        raise RunDirectoryError(
            f"could not write checkpoint {path} ({exc.strerror or exc}); the previous "
            f"checkpoint {directory / LATEST} is intact. Free space or fix permissions, then "
            f"continue with: llmatic resume={run_dir}"
        ) from exc
    return path


def load_checkpoint(run_dir: Path) -> SearchState:
    """The state after the last completed generation."""
    path = Path(run_dir) / CHECKPOINTS / LATEST
    if not path.exists():
        raise ConfigError(f"resume: {run_dir} has no {CHECKPOINTS}/{LATEST}; nothing to resume")
    with open(path, "rb") as fh:
        state = pickle.load(fh)
    if not hasattr(state, "evaluated"):  # a checkpoint from before duplicate tracking
        state.evaluated = {}
    return state


#: Completions that yield no usable network: their prompt pays ``curiosity.no_network``.
_NO_NETWORK = frozenset({Status.LLM_ERROR, Status.SYNTAX_ERROR, Status.NO_NETWORK,
                         Status.FORBIDDEN, Status.INVALID_CELL})


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _strip


def source_key(source: str) -> str:
    """A hash of the normalised source: the AST without comments, docstrings or layout.

    Two candidates with the same key are the same network; it names the training seed and
    lets a repeat reuse the first result. Unparseable text hashes as it stands.
    """
    try:
        text = ast.dump(_StripDocstrings().visit(ast.parse(source)), annotate_fields=False)
    except (SyntaxError, ValueError, RecursionError):
        text = source
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _truncate_history(path: Path, lines: int) -> None:
    """Keep the first ``lines`` records (drops a generation interrupted mid-way)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        kept = fh.read().split(b"\n")[:lines]
    _atomic_write_bytes(path, b"".join(line + b"\n" for line in kept if line))


# --------------------------------------------------------------------------------------
# Planning a candidate
# --------------------------------------------------------------------------------------
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
    #: :func:`source_key` of the evaluated source (None when nothing was evaluated).
    key: str | None = None


@dataclass
class _InFlight:
    """A generation that is generated and submitted but not yet told."""

    generation: int
    plans: list[Plan]
    jobs: list[tuple[Plan, Completion, Any]] = field(default_factory=list)
    futures: list[Future] = field(default_factory=list)
    gen_seconds: float = 0.0


class Search:
    """One search run (use :func:`run_search`)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, *, console: Any = None,
                 sandbox: Sandbox | None = None) -> None:

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.console = console
        self.space = str(cfg.get("space", "network"))
        self.instructions = list(cfg.operators.mutation_instructions)
        self.descriptors = DescriptorSpace(names=list(cfg.descriptors.names),
                                           bounds=descriptor_bounds(cfg))
        if self.space == "nb201":
            self._init_nb201()
        else:
            self._init_network(sandbox)
        self.generator = _build_generator(cfg)
        ops = cfg.operators
        chat = ops.get("chat")
        self.prompts = PromptBuilder(
            prompt_format=cfg.llm.get("prompt_format", "completion"),
            mutation_template=ops.mutation_template,
            crossover_template=ops.crossover_template,
            chat={} if chat is None else OmegaConf.to_container(chat),
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            show_parent_stats=bool(ops.get("show_parent_stats", False)),
            parent_stats_template=ops.get("parent_stats", ""),
        )
        self.trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        allowed = cfg.sandbox.get("allowed_imports", DEFAULT_ALLOWED_IMPORTS)
        self.allowed_imports = None if allowed is None else list(allowed)
        self.optimizer_cfg = OmegaConf.to_container(cfg.module.optimizer, resolve=True)
        scheduler = cfg.module.get("scheduler")
        self.scheduler_cfg = (None if scheduler is None
                              else OmegaConf.to_container(scheduler, resolve=True))
        # Read once (tell runs per candidate; OmegaConf lookups are slow).
        self._compare_to = str(cfg.temperature.get("compare_to", "best"))
        cap = cfg.dataset.get("max_flops") if self.space != "nb201" else None
        #: The compute cap of a candidate (``dataset.max_flops``); None: none.
        self.max_flops = None if cap is None else int(float(cap))
        self._prompt_archive_on = bool(cfg.ablation.prompt_archive)
        self._curiosity = {k: float(v) for k, v in cfg.curiosity.items()}
        #: Networks submitted and not yet told: key -> (candidate id, future).
        self._running: dict[str, tuple[int, Future]] = {}

    def _init_network(self, sandbox: Sandbox | None) -> None:
        """space=network: sandbox server(s), the dataset and the paper's seed network."""
        from hydra.utils import instantiate

        cfg = self.cfg
        ds = cfg.dataset
        self.input_shape = tuple(int(v) for v in ds.input_shape)
        self.num_classes = int(ds.num_classes)
        self.evaluator = _build_evaluator(cfg, sandbox)
        # Starts the sandbox server(s), which import torch + Lightning while we load the rest.
        self.evaluator.start(
            timeout_s=float(cfg.sandbox.timeout_s),
            memory_mb=None if cfg.sandbox.memory_mb is None else int(cfg.sandbox.memory_mb),
            torch_threads=int(cfg.sandbox.torch_threads),
            isolation=cfg.sandbox.get("isolation"),
        )
        self.sandbox = getattr(self.evaluator, "sandbox", None)
        # Data first: a missing dataset must fail before the LLM loads or anything runs.
        self.datamodule = instantiate(datamodule_kwargs(ds), _convert_="all")
        self.datamodule.prepare_data()
        self.datamodule.setup()
        self.val_labels = self.datamodule.splits["y_val"]
        self.data_dir = self.datamodule.write_child_arrays(self.run_dir / "data")
        self.seed_source = seed_network(self.input_shape, self.num_classes)
        self.seed_class = "Net"

    def _init_nb201(self) -> None:
        """space=nb201: the benchmark table (no sandbox: cells are read, never run)."""
        from llmatic.nb201.arch import parse_arch_string
        from llmatic.nb201.cells import render_cell
        from llmatic.nb201.evaluator import TableEvaluator
        from llmatic.nb201.table import TableError, load_table

        nb = self.cfg.nb201
        self.input_shape, self.num_classes = NB201_SHAPES[str(nb.dataset)]
        try:
            self.lookup = TableEvaluator(load_table(str(nb.table), str(nb.dataset)))
        except TableError as exc:
            raise ConfigError(f"nb201.table: {exc}") from exc
        seed_ops = parse_arch_string(str(nb.seed_cell))
        if self.lookup.table.lookup(seed_ops) is None:
            raise ConfigError(
                f"nb201.seed_cell={nb.seed_cell} is not in the table {nb.table} "
                f"({len(self.lookup.table)} cells for {nb.dataset}): choose a cell the table "
                "has, or use a complete table"
            )
        self.evaluator = None
        self.sandbox = None
        self.val_labels = None
        self.data_dir = None
        self.seed_source = render_cell(parse_arch_string(str(nb.seed_cell)))
        self.seed_class = "Cell"
        #: Canonical cell source -> its operations (filled as cells are read).
        self._cells: dict[str, tuple[str, ...]] = {}

    # -- helpers ----------------------------------------------------------------------
    def new_state(self) -> SearchState:
        """A fresh state before the seed network is evaluated."""
        from hydra.utils import instantiate

        cfg = self.cfg
        arch = cfg.archive
        fitness_floor = 0.0 if cfg.fitness == "accuracy" else -20.0
        network = NetworkArchive(
            kind=arch.kind,
            cells=int(arch.get("network_cells", 100)),
            dims=list(arch.get("network_dims", [10, 10])),
            centroid_samples=int(arch.get("centroid_samples", 20000)),
            centroid_seed=int(arch.get("centroid_seed", 0)),
            qd_score_offset=fitness_floor,
            measure_dim=len(self.descriptors.names),
        )
        prompts = PromptArchive(
            num_instructions=len(self.instructions),
            t_min=float(cfg.temperature.min),
            t_max=float(cfg.temperature.max),
            t_step=float(cfg.prompt_archive.temperature_step),
        )
        population = None
        if not cfg.ablation.network_archive:
            population = ElitistPopulation(size=int(arch.get("network_cells", 100)))
        return SearchState(
            population=population,
            generation=0,
            next_candidate_id=0,
            rng=np.random.default_rng(int(cfg.seed)),
            network_archive=network,
            prompt_archive=prompts,
            temperature=instantiate(cfg.temperature),
            best_fitness=None,
            history_lines=0,
        )

    def _job(self, source: str, class_name: str, candidate_id: int) -> dict[str, Any]:
        # One network, one fitness: the seed follows the run seed and the normalised source.
        words = [int(source_key(source)[i:i + 8], 16) for i in range(0, 32, 8)]
        seed = int(np.random.SeedSequence([int(self.cfg.seed), *words]).generate_state(1)[0])
        return {
            "code": source,
            "class_name": class_name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "data_dir": str(self.data_dir.resolve()),
            "epochs": int(self.cfg.budget.epochs),
            "batch_size": int(self.cfg.dataset.batch_size),
            "trainer": self.trainer_cfg,
            "optimizer": self.optimizer_cfg,
            "scheduler": self.scheduler_cfg,
            "seed": seed,
            "allowed_imports": self.allowed_imports,
            "max_flops": self.max_flops,
        }

    def extract(self, text: str) -> Extraction:
        """The candidate in a completion: a network class, or a cell for space=nb201."""
        try:
            return self._extract(text)
        except Exception as exc:  # noqa: BLE001 - one unreadable answer must not stop the run
            status = Status.INVALID_CELL if self.space == "nb201" else Status.SYNTAX_ERROR
            return Extraction(source=None, class_name=None, status=status,
                              error=f"could not read the answer ({type(exc).__name__}: {exc})")

    def _extract(self, text: str) -> Extraction:
        if self.space != "nb201":
            return extract_network(text)
        from llmatic.nb201.cells import read_cell

        ops, source, error = read_cell(text)
        if ops is None:
            return Extraction(source=source, class_name=None, status=Status.INVALID_CELL,
                              error=error)
        self._cells[source] = ops
        return Extraction(source=source, class_name="Cell", status=None, error=None)

    def check_policy(self, source: str) -> EvalResult | None:
        """A ``forbidden`` result if the static policy rejects ``source`` (nothing runs)."""
        if self.space == "nb201":  # cells are read from the syntax tree, never executed
            return None
        if not self.cfg.sandbox.get("static_policy", True):
            return None
        error = policy_error(source, self.allowed_imports or DEFAULT_ALLOWED_IMPORTS)
        return None if error is None else EvalResult(Status.FORBIDDEN, error=error)

    def submit(self, source: str, class_name: str, candidate_id: int) -> Future:
        """Start evaluating one network's source; the future holds its :class:`EvalResult`."""
        if self.space == "nb201":
            return self._lookup(source)
        job_dir = self.run_dir / "jobs" / f"{candidate_id:06d}"
        inner = self.evaluator.submit(self._job(source, class_name, candidate_id), job_dir)
        outer: Future = Future()

        def done(f: Future) -> None:
            try:
                outer.set_result(self._score(f.result(), job_dir))
            except BaseException as exc:  # noqa: BLE001 - surfaced by outer.result()
                outer.set_exception(exc)

        inner.add_done_callback(done)
        return outer

    def _cell(self, source: str) -> tuple[str, ...]:
        """The operations of a canonical cell source (read once by :meth:`extract`)."""
        ops = self._cells.get(source)
        if ops is None:  # the seed cell, or a parent from a checkpoint
            from llmatic.nb201.cells import parse_cell

            ops = self._cells[source] = parse_cell(source)
        return ops

    def _lookup(self, source: str) -> Future:
        started = time.perf_counter()
        result = self.lookup.evaluate(self._cell(source))
        result.timings["lookup"] = round(time.perf_counter() - started, 6)
        done: Future = Future()
        done.set_result(result)
        return done

    def evaluate(self, source: str, class_name: str, candidate_id: int) -> EvalResult:
        """Evaluate one network's source in a sandboxed child (blocking)."""
        return self.submit(source, class_name, candidate_id).result()

    def _score(self, outcome: Any, job_dir: Path) -> EvalResult:
        result = outcome_to_result(
            outcome, job_dir=job_dir, val_labels=self.val_labels,
            num_classes=self.num_classes, fitness=self.cfg.fitness,
        )
        _clean_job_dir(job_dir)
        return result

    def _source_path(self, candidate_id: int, generation: int) -> Path:
        directory = self.run_dir / "candidates"
        directory.mkdir(exist_ok=True)
        return directory / f"g{generation:03d}_c{candidate_id:05d}.py"

    # -- planning -----------------------------------------------------------------------
    def plan(self, state: SearchState, generation: int) -> list[Plan]:
        """Choose operator, parents, instruction and temperature for each candidate."""
        cfg = self.cfg
        # Plain values, read once: OmegaConf lookups cost more than a whole nb201 lookup.
        ablation = SimpleNamespace(**OmegaConf.to_container(cfg.ablation, resolve=True))
        selection = SimpleNamespace(**OmegaConf.to_container(cfg.prompt_selection, resolve=True))
        p_mutation = float(cfg.operators.p_mutation if ablation.p_mutation is None
                           else ablation.p_mutation)
        generations = int(cfg.budget.generations)
        warmup_networks = int(cfg.budget.warmup_networks)
        warmup_prompts = int(cfg.budget.warmup_prompts)
        crossover_instruction = str(cfg.operators.crossover_instruction)
        tournament = int(cfg.get("parent_selection", {}).get("tournament", 1))
        rng = state.rng
        temp = state.temperature
        pool = state.parents
        plans = []
        for _ in range(int(cfg.budget.candidates_per_generation)):
            cid = state.next_candidate_id
            state.next_candidate_id += 1
            warmup = (
                len(pool) < warmup_networks
                and len(state.prompt_archive) < warmup_prompts
            )
            crossover = (
                not warmup
                and not ablation.random_generation
                and len(pool) >= 2
                and rng.random() >= p_mutation
            )
            if crossover:
                a = _select_parent(pool, rng, tournament)
                b = pool.nearest(a)
                t = temp.propose(None, generation, generations)
                plan = Plan(cid, Operator.CROSSOVER, crossover_instruction, None,
                            t, [a, b], warmup)
            else:
                if ablation.random_generation:
                    parent = dict(state.seed_elite)  # no evolution: always the seed
                else:
                    parent = _select_parent(pool, rng, tournament)
                chosen = None
                if not warmup and ablation.prompt_archive:
                    chosen = state.prompt_archive.select(
                        rng,
                        strategy=selection.strategy,
                        k=int(selection.k),
                        tau=float(selection.softmax_tau),
                        explore=float(getattr(selection, "explore", 0.0)),
                        level=str(getattr(selection, "level", "cell")),
                    )
                if chosen is None:  # warm-up or no prompt archive: uniform draws
                    iid = int(rng.integers(len(self.instructions)))
                    chosen = iid, state.prompt_archive.snap(rng.uniform(temp.min, temp.max))
                # The selected cell's temperature (adaptive); constant / linear_decay
                # schedules keep their own.
                iid, t_prompt = chosen
                t = temp.propose(t_prompt, generation, generations)
                plan = Plan(cid, Operator.MUTATION, self.instructions[iid], iid, t, [parent],
                            warmup)
            plan.request = self._request(plan, int(rng.integers(2**31)))
            plans.append(plan)
        return plans

    def _request(self, plan: Plan, seed: int) -> GenerationRequest:
        prompt, messages = self.prompts.build(plan.instruction, plan.parents)
        sources = tuple(str(p["solution"]) for p in plan.parents)
        return GenerationRequest(prompt=prompt, temperature=plan.temperature,
                                 instruction=plan.instruction, parents=sources, seed=seed,
                                 messages=messages)

    # -- one generation ---------------------------------------------------------------------
    def run_generation(self, state: SearchState, generation: int, progress: Any = None) -> None:
        """Plan, generate, extract, evaluate and tell one generation."""
        self.finish_generation(state, self.start_generation(state, generation, progress))

    def start_generation(self, state: SearchState, generation: int, progress: Any = None,
                         plans: list[Plan] | None = None) -> _InFlight:
        """Plan (unless ``plans`` are given), generate and submit one generation."""
        if plans is None:
            plans = self.plan(state, generation)
        chunk = int(self.cfg.sandbox.get("overlap_chunk", 0) or 0) or len(plans)
        flight = _InFlight(generation=generation, plans=plans)
        # Generate chunk by chunk and start evaluating each chunk at once, so training
        # overlaps with the LLM writing the rest of the generation.
        for start in range(0, len(plans), chunk):
            part = plans[start : start + chunk]
            t0 = time.perf_counter()
            try:
                completions = self.generator.generate([p.request for p in part])
            except Exception as exc:  # noqa: BLE001 - an outage fails candidates, not the run
                log.warning("generator failed for generation %d: %s", generation, exc)
                completions = [Completion(text="", error=f"{type(exc).__name__}: {exc}")
                               for _ in part]
            flight.gen_seconds += time.perf_counter() - t0
            if len(completions) != len(part):
                raise RuntimeError(
                    f"{self.generator.name} returned {len(completions)} completions for "
                    f"{len(part)} prompts"
                )
            for plan, completion in zip(part, completions, strict=True):
                ext = self.extract(completion.text) if completion.ok else None
                text = ext.source if (ext is not None and ext.source) else completion.text
                # A cell is fully described by its arch string in the history; its text is kept
                # only when it could not be read (to see what the LLM wrote).
                if self.space != "nb201" or ext is None or not ext.ok:
                    self._source_path(plan.candidate_id, generation).write_text(text or "")
                flight.jobs.append((plan, completion, ext))
                flight.futures.append(self._start(plan, completion, ext, progress, state))
        return flight

    def finish_generation(self, state: SearchState, flight: _InFlight) -> None:
        """Wait for a started generation and tell its results, in candidate order."""
        results = [f.result() for f in flight.futures]
        state.generate_seconds += flight.gen_seconds
        records = []
        per_candidate_gen = flight.gen_seconds / max(1, len(flight.plans))
        for (plan, completion, ext), result in zip(flight.jobs, results, strict=True):
            _account(state.llm_totals, completion)
            source = ext.source if ext is not None and ext.source else None
            record = self.tell(state, plan, result, source, flight.generation)
            if self.space == "nb201" and ext is not None and ext.ok:
                record["source_file"] = None
            # Everything measured in seconds lives in `timings` (ignored when comparing runs).
            record["timings"] = {"generate": round(per_candidate_gen, 4),
                                 "llm": round(completion.seconds, 4), **result.timings}
            record["llm"] = {"prompt_tokens": completion.prompt_tokens,
                             "completion_tokens": completion.completion_tokens,
                             "cached": bool(completion.cached),
                             "attempts": int(completion.attempts)}
            record["extraction_notes"] = list(ext.notes) if ext is not None else []
            records.append(record)
        self._append_history(state, records)

    def _start(self, plan: Plan, completion: Completion, ext: Any, progress: Any,
               state: SearchState | None = None) -> Future:
        """A future of the candidate's result: failures before the sandbox resolve at once."""
        early = None
        if ext is None:
            early = EvalResult(Status.LLM_ERROR, error=completion.error)
        elif ext.status is not None:
            early = EvalResult(ext.status, error=ext.error)
        else:
            early = self.check_policy(ext.source)
        if early is not None:
            done: Future = Future()
            done.set_result(early)
            if progress is not None:
                progress.advance()
            return done
        # One network, one fitness: a repeat of an earlier candidate reuses its result.
        plan.key = source_key(ext.source)
        earlier = (state.evaluated.get(plan.key) if state is not None else None)
        if earlier is not None:
            plan.duplicate_of = int(earlier[0])
            done = Future()
            done.set_result(earlier[1])
            if progress is not None:
                progress.advance()
            return done
        running = self._running.get(plan.key)
        if running is not None:  # the same network earlier in this generation
            plan.duplicate_of = running[0]
            future = running[1]
        else:
            future = self.submit(ext.source, ext.class_name, plan.candidate_id)
            self._running[plan.key] = (plan.candidate_id, future)
        if progress is not None:
            future.add_done_callback(lambda _: progress.advance())
        return future

    def tell(self, state: SearchState, plan: Plan, result: EvalResult, source: str | None,
             generation: int) -> dict[str, Any]:
        """Update archives, curiosity and temperature from one result; return its record."""
        result = capped(result, self.max_flops)
        state.status_counts[result.status.value] += 1
        added, measures, raw = False, None, None
        if result.status is Status.OK:
            raw = self.descriptors.raw(result)
            if raw is None:
                result = EvalResult(Status.RUNTIME_ERROR, error="descriptors could not be computed",
                                    timings=result.timings)
            else:
                before = Counter(self.descriptors.clipped)
                measures = self.descriptors.normalise(raw)
                state.clipped.update(self.descriptors.clipped - before)
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
        ok = result.status is Status.OK
        # Improvement drives the adaptive temperature.
        if self._compare_to == "parent":
            reference = max((float(p["objective"]) for p in plan.parents), default=None)
        else:
            reference = state.best_fitness
        improved = ok and (reference is None or result.fitness > reference)
        if ok and (state.best_fitness is None or result.fitness > state.best_fitness):
            state.best_fitness = float(result.fitness)
        if plan.key is not None and plan.duplicate_of is None:
            state.evaluated[plan.key] = (plan.candidate_id, result)
            self._running.pop(plan.key, None)
        # Curiosity (mutation prompts only; crossover adds nothing to the prompt archive).
        # A completion with no usable network (refusal, outage, no code, policy) is not
        # free: it pays `curiosity.no_network` (METHOD.md §3.4).
        next_t = plan.temperature
        if plan.operator is not Operator.SEED:
            next_t = state.temperature.update(plan.temperature, improved)
            if plan.operator is Operator.MUTATION and self._prompt_archive_on:
                cur = self._curiosity
                if ok:
                    delta = cur["added"] if added else cur["not_added"]
                elif result.status in _NO_NETWORK:
                    delta = cur.get("no_network", cur["untrainable"])
                else:
                    delta = cur["untrainable"]
                prompts = state.prompt_archive
                prompts.credit(plan.instruction_id, plan.temperature, float(delta), added)
                # The adapted temperature reaches a cell of its own (inheriting curiosity).
                if prompts.snap(next_t) != prompts.snap(plan.temperature):
                    prompts.spread(plan.instruction_id, plan.temperature, next_t)
        record = {
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
            "source_file": str(self._source_path(plan.candidate_id, generation)
                               .relative_to(self.run_dir)),
        }
        if self.space == "nb201":
            from llmatic.nb201.arch import arch_string

            ops = self._cells.get(source) if source else None  # read cells only
            record["arch"] = arch_string(ops) if ops is not None else None
        return record

    def _append_history(self, state: SearchState, records: Sequence[dict[str, Any]]) -> None:
        try:
            with open(self.run_dir / HISTORY, "a") as fh:
                for rec in records:
                    fh.write(json.dumps(rec, default=_json_default) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RunDirectoryError(
                f"could not append to {self.run_dir / HISTORY} ({exc.strerror or exc}); the "
                "last checkpoint is intact and a resume redoes this generation. Free space or "
                f"fix permissions, then continue with: llmatic resume={self.run_dir}"
            ) from exc
        state.history_lines += len(records)

    def evaluate_seed(self, state: SearchState) -> None:
        """Generation 0: the paper's seed network; the search cannot start without it."""
        cid = state.next_candidate_id
        state.next_candidate_id += 1
        path = self._source_path(cid, 0)
        path.write_text(self.seed_source)
        result = self.evaluate(self.seed_source, self.seed_class, cid)
        if result.status is not Status.OK:
            raise RuntimeError(
                f"the seed network failed to evaluate ({result.status.value}: {result.error}); "
                "check dataset.input_shape / dataset.num_classes and the trainer config "
                "(space=nb201: nb201.seed_cell and the table)"
            )
        plan = Plan(cid, Operator.SEED, "", None, state.temperature.current, [], False,
                    key=source_key(self.seed_source))
        record = self.tell(state, plan, result, self.seed_source, 0)
        if record["status"] != Status.OK.value:
            raise RuntimeError(f"the seed could not enter the archive ({record['status']}: "
                               f"{record['error']}); check descriptors.names")
        state.seed_elite = {
            "solution": self.seed_source, "objective": float(result.fitness),
            "candidate_id": cid, "val_accuracy": result.val_accuracy,
            "params": result.params or 0, "flops": result.flops or 0,
            "measures": np.asarray(record["measures"]), "index": -1,
        }
        record["timings"] = result.timings
        record["llm"] = {"prompt_tokens": 0, "completion_tokens": 0, "cached": False,
                         "attempts": 0}
        record["extraction_notes"] = []
        self._append_history(state, [record])

    def generation_metrics(self, state: SearchState, generation: int) -> dict[str, Any]:
        """Metrics of the generation just told (read back from the history)."""
        records = [r for r in read_history(self.run_dir) if r["generation"] == generation]
        ok = [r for r in records if r["status"] == Status.OK.value]
        temps = [r["temperature"] for r in records]
        net, prm = state.network_archive.stats(), state.prompt_archive.stats()
        losses = [r["val_loss"] for r in ok if r["val_loss"] is not None]
        mutations = [r for r in records if r["operator"] == Operator.MUTATION.value]
        return {
            "candidates": len(records),
            "valid_fraction": len(ok) / len(records) if records else 0.0,
            "added": sum(r["added"] for r in records),
            "best_fitness": state.best_fitness,
            "generation_best_fitness": max((r["fitness"] for r in ok), default=None),
            "mean_fitness": float(np.mean([r["fitness"] for r in ok])) if ok else None,
            "best_val_loss": min(losses) if losses else None,
            "network_cells": net["cells_filled"],
            "network_coverage": net["coverage"],
            "qd_score": net["qd_score"],
            "prompt_cells": prm["cells_filled"],
            "prompt_coverage": prm["coverage"],
            "temperature_mean": float(np.mean(temps)) if temps else None,
            "temperature_min": min(temps) if temps else None,
            "temperature_max": max(temps) if temps else None,
            **exploration_metrics(mutations, len(self.instructions)),
            "duplicates": sum(r.get("duplicate_of") is not None for r in records),
            "at_chance": (sum(_at_chance(r, self.num_classes) for r in ok) / len(ok)
                          if ok and self.space != "nb201" else None),
            "llm_requests": sum(1 for r in records if r["operator"] != "seed"),
            "llm_cache_hits": sum(bool(r["llm"].get("cached")) for r in records),
            "llm_failures": sum(r["status"] == Status.LLM_ERROR.value for r in records),
            "llm_prompt_tokens": sum(r["llm"]["prompt_tokens"] for r in records
                                     if not r["llm"].get("cached")),
            "llm_completion_tokens": sum(r["llm"]["completion_tokens"] for r in records
                                         if not r["llm"].get("cached")),
            "llm_seconds": round(sum(r["timings"].get("llm", 0.0) for r in records), 4),
            **{f"status_{k}": v for k, v in Counter(r["status"] for r in records).items()},
        }

    def close(self) -> None:
        """Stop the evaluator (and servers it started) and release the generator."""
        if self.evaluator is not None:
            self.evaluator.close()
        self.generator.close()


def exploration_metrics(mutations: Sequence[dict[str, Any]], instructions: int) -> dict[str, Any]:
    """How widely mutations explored: instruction-use entropy and distinct temperatures.

    The entropy is normalised by its maximum, the log of the instruction count (1 = every
    instruction used equally often).
    """
    counts = np.array(list(Counter(r["instruction_id"] for r in mutations).values()), float)
    entropy = None
    if counts.size and instructions > 1:
        p = counts / counts.sum()
        entropy = float(-(p * np.log(p)).sum() / math.log(instructions))
    return {"instruction_entropy": entropy,
            "distinct_temperatures": len({round(float(r["temperature"]), 6) for r in mutations})}


def capped(result: EvalResult, cap: int | None) -> EvalResult:
    """``result``, or ``too_large`` when its measured FLOPs exceed ``cap`` (dataset.max_flops).

    The worker stops such a network before training; this holds whatever the child did
    (a network that timed out or crashed while too large is too large, on any machine).
    """
    if cap is None or result.flops is None or result.flops <= cap:
        return result
    return replace(result, status=Status.TOO_LARGE, fitness=None, val_accuracy=None,
                   val_loss=None, error=too_large_error(result.flops, cap))


def _select_parent(pool: Any, rng: np.random.Generator, tournament: int) -> dict[str, Any]:
    """A uniform random elite (the paper), or the fittest of ``tournament`` such draws."""
    if tournament <= 1:
        return pool.sample(rng)
    drawn = [pool.sample(rng) for _ in range(tournament)]
    return max(drawn, key=lambda e: float(e["objective"]))  # ties: the first drawn


def _at_chance(record: dict[str, Any], num_classes: int) -> bool:
    """A trained network no better than guessing (validation accuracy < 1.25 / classes)."""
    acc = record.get("val_accuracy")
    return acc is not None and acc < 1.25 / max(2, int(num_classes))


def _account(totals: Counter, completion: Completion) -> None:
    """Add one completion to the run's LLM totals (cache hits cost no tokens)."""
    totals["requests"] += 1
    if completion.cached:
        totals["cache_hits"] += 1
    else:
        totals["prompt_tokens"] += completion.prompt_tokens
        totals["completion_tokens"] += completion.completion_tokens
        totals["seconds"] += completion.seconds
        totals["attempts"] += completion.attempts
    if not completion.ok:
        totals["failures"] += 1


def _build_evaluator(cfg: DictConfig, sandbox: Sandbox | None) -> Any:
    """Instantiate ``cfg.evaluator``; a lent sandbox server goes to local / pool evaluators."""
    from hydra.utils import instantiate

    from llmatic.sandbox import PoolEvaluator

    if cfg.get("evaluator") is None:
        return PoolEvaluator(workers=int(cfg.sandbox.workers), sandbox=sandbox)
    spec = OmegaConf.to_container(cfg.evaluator, resolve=True)
    lend = sandbox is not None and str(spec.get("_target_", "")).endswith(
        ("PoolEvaluator", "LocalEvaluator"))
    try:
        # A live server object cannot travel through the config: pass it as a keyword.
        return instantiate(spec, _convert_="all", **({"sandbox": sandbox} if lend else {}))
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"evaluator: {cause}") from exc


def _clean_job_dir(job_dir: Path) -> None:
    """Remove a finished job's scratch files (its source is kept under candidates/)."""
    import shutil

    shutil.rmtree(job_dir, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: llm config keys that configure the search around the generator, not its constructor.
_LLM_SEARCH_KEYS = ("prompt_format", "cache", "cache_path")
#: llm config keys that do not change what a generator answers (left out of cache keys).
_LLM_TRANSPORT_KEYS = ("_target_", "batch_size", "device", "device_map", "max_concurrency",
                       "timeout_s", "max_retries", "backoff_base_s", "backoff_max_s",
                       "check_endpoint", "api_key", "local_files_only", "trust_remote_code")


def _build_generator(cfg: DictConfig):  # noqa: ANN202
    """Instantiate ``cfg.llm`` (wrapped in the completion cache when ``llm.cache``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from llmatic.llm.cache import CachedGenerator, CompletionCache

    llm = OmegaConf.to_container(cfg.llm, resolve=True)
    use_cache = bool(llm.get("cache", False))
    cache_path = llm.get("cache_path")
    for key in _LLM_SEARCH_KEYS:
        llm.pop(key, None)
    try:
        generator = instantiate(llm, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ValueError):  # generators raise ValueError naming the key
            raise ConfigError(str(cause)) from exc
        raise ConfigError(f"llm: could not build {llm.get('_target_')}: {cause}") from exc
    if not use_cache:
        return generator
    if not cache_path:
        raise ConfigError("llm.cache_path must be set when llm.cache=true")
    identity = {k: v for k, v in llm.items() if k not in _LLM_TRANSPORT_KEYS}
    identity["generator"] = generator.name
    try:
        cache = CompletionCache(cache_path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return CachedGenerator(generator, cache, identity)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """All candidate records of a run, in order."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(search: Search, state: SearchState) -> dict[str, Any]:
    """The run summary written to ``summary.json``."""
    net, prm = state.network_archive.stats(), state.prompt_archive.stats()
    records = read_history(search.run_dir)
    return {
        "ablation": str(search.cfg.ablation.name),
        "generator": search.generator.name,
        "generator_is_llm": bool(search.generator.is_llm),
        "space": search.space,
        "dataset": (str(search.cfg.nb201.dataset) if search.space == "nb201"
                    else search.cfg.dataset.name),
        "seed": int(search.cfg.seed),
        "generations": state.generation,
        "candidates": len(records),
        "status_counts": dict(Counter(r["status"] for r in records)),
        "valid_fraction": (sum(r["status"] == "ok" for r in records) / len(records))
        if records else 0.0,
        "wall_seconds": round(state.wall_seconds, 2),
        "network_archive": {
            "cells_filled": net["cells_filled"],
            "coverage": net["coverage"],
            "qd_score": net["qd_score"],
            "best_fitness": net["best_fitness"],
        },
        "prompt_archive": {
            "cells_filled": prm["cells_filled"],
            "coverage": prm["coverage"],
            "max_curiosity": prm["max_curiosity"],
        },
        "search": _run_quality(search, records),
        # The kernel layers every candidate got (None: nb201 lookups, or a Ray evaluator
        # whose servers live in its actors).
        "isolation": getattr(getattr(search, "sandbox", None), "isolation_report", None),
        "descriptors_clipped": dict(state.clipped),
        "llm": {k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in sorted(state.llm_totals.items())},
        "elites": [
            {
                "candidate_id": int(e["candidate_id"]),
                "generation": int(e["generation"]),
                "fitness": float(e["objective"]),
                "val_accuracy": float(e["val_accuracy"]),
                "params": int(e["params"]),
                "flops": int(e["flops"]),
                "descriptors": dict(zip(search.descriptors.names,
                                        [float(v) for v in e["raw_measures"]], strict=True)),
            }
            for e in state.network_archive.top(10)
        ],
    }


def _run_quality(search: Search, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Run-level exploration and fitness-noise numbers (what `make bench-search` compares)."""
    mutations = [r for r in records if r["operator"] == Operator.MUTATION.value
                 and not r.get("warmup")]
    ok = [r for r in records if r["status"] == Status.OK.value]
    children = [r for r in records if r["operator"] != Operator.SEED.value]
    dups = sum(r.get("duplicate_of") is not None for r in children)
    return {
        **exploration_metrics(mutations, len(search.instructions)),
        "instructions_used": len({r["instruction_id"] for r in mutations}),
        "duplicate_fraction": dups / len(children) if children else 0.0,
        "distinct_evaluations": len(records) - dups,
        "at_chance_fraction": (sum(_at_chance(r, search.num_classes) for r in ok) / len(ok)
                               if ok and search.space != "nb201" else None),
    }


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
def run_search(cfg: DictConfig, run_dir: str | os.PathLike, *, resume: bool = False,
               show_progress: bool | None = None, sandbox: Sandbox | None = None
               ) -> dict[str, Any]:
    """Run (or continue) a search in ``run_dir`` and return its summary.

    With ``resume=True`` the last checkpoint in ``run_dir`` is loaded and the history is cut
    back to it, so a generation interrupted half-way is redone identically. ``sandbox``
    lends an already started sandbox server (it stays open afterwards); by default the
    search starts its own with ``cfg.sandbox``.
    """
    from rich.console import Console

    validate_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (run_dir / HISTORY).exists():
        raise ConfigError(
            f"{run_dir} already holds a search ({HISTORY}); continue it with resume={run_dir} "
            "or choose a new hydra.run.dir"
        )
    state = None
    if resume:
        if (run_dir / CHECKPOINTS / LATEST).exists():
            state = load_checkpoint(run_dir)
        elif (run_dir / CONFIG).exists() or (run_dir / ".hydra" / "config.yaml").exists():
            # Killed before the seed's checkpoint: nothing finished yet, so start over here.
            log.warning("%s has no checkpoint yet (stopped during generation 0): starting "
                        "the run over in the same directory", run_dir)
            (run_dir / HISTORY).unlink(missing_ok=True)
        else:
            state = load_checkpoint(run_dir)  # raises: not a run directory
    if cfg.get("space", "network") == "nb201":
        # Absolute, so that `resume=` works from any directory.
        cfg.nb201.table = str(Path(str(cfg.nb201.table)).expanduser().resolve())
    if state is None:  # first, so that a run killed while starting up can be resumed
        (run_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    console = Console(stderr=True)
    search = Search(cfg, run_dir, console=console, sandbox=sandbox)
    from hydra.utils import instantiate

    metrics_logger = instantiate(cfg.logger)
    try:
        if state is None:
            state = search.new_state()
            metrics_logger.start(run_dir, OmegaConf.to_container(cfg, resolve=True))
            started = time.perf_counter()
            search.evaluate_seed(state)
            state.wall_seconds += time.perf_counter() - started
            save_checkpoint(run_dir, state)
        else:
            _truncate_history(run_dir / HISTORY, state.history_lines)
            metrics_logger.start(run_dir, OmegaConf.to_container(cfg, resolve=True), resumed=True)
            if hasattr(metrics_logger, "truncate"):
                metrics_logger.truncate(state.generation)
            log.info("resuming %s after generation %d", run_dir, state.generation)
        _loop(search, state, metrics_logger, console, show_progress)
        summary = summarize(search, state)
        if search.space == "nb201":
            from llmatic.nb201.results import finish_nb201

            summary["nb201"] = finish_nb201(search, state, console)
        _atomic_write_bytes(run_dir / SUMMARY, json.dumps(summary, indent=2).encode())
        if getattr(metrics_logger, "wants_heatmaps", False):
            summary["heatmaps"] = _render_heatmaps(run_dir)
        metrics_logger.finish(summary)
        print_elites(summary, console)
        return summary
    finally:
        search.close()


def _loop(search: Search, state: SearchState, metrics_logger: Any, console: Any,
          show_progress: bool | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cfg = search.cfg
    generations = int(cfg.budget.generations)
    per_gen = int(cfg.budget.candidates_per_generation)
    if show_progress is None:
        show_progress = console.is_terminal
    remaining = max(0, generations - state.generation) * per_gen
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, disable=not show_progress, transient=False,
    ) as bar:
        task = bar.add_task("search", total=remaining, info="")

        class _Advance:
            @staticmethod
            def advance() -> None:
                bar.advance(task)

        pipeline = bool(cfg.get("pipeline_generations", False))
        flight = None
        for generation in range(state.generation + 1, generations + 1):
            started = time.perf_counter()
            bar.update(task, description=f"gen {generation}/{generations}")
            if not pipeline:
                search.run_generation(state, generation, progress=_Advance)
            else:
                # Generation g+1 is planned from the archives after generation g-1 and starts
                # while generation g's last candidates still run: no slot waits for the
                # slowest candidate. Deterministic: plans never depend on timing.
                if flight is None:
                    pending = getattr(state, "pending_plans", None)
                    flight = search.start_generation(state, generation, _Advance, plans=pending)
                state.pending_plans = search.plan(state, generation + 1)
                following = None
                if generation < generations:
                    try:
                        following = search.start_generation(state, generation + 1, _Advance,
                                                            plans=state.pending_plans)
                    except Exception:
                        # Keep generation g's finished work: tell it and checkpoint (with
                        # g+1's plans pending) before the error ends the run.
                        search.finish_generation(state, flight)
                        state.generation = generation
                        save_checkpoint(search.run_dir, state)
                        raise
                search.finish_generation(state, flight)
                flight = following
            state.generation = generation
            state.wall_seconds += time.perf_counter() - started
            metrics = search.generation_metrics(state, generation)
            metrics_logger.log_generation(metrics, generation)
            save_checkpoint(search.run_dir, state)
            info = (
                f"best {_fmt(state.best_fitness)}  cells {metrics['network_cells']}"
                f"/{metrics['prompt_cells']}  T {state.temperature.current:.2f}"
                f"  H {_fmt(metrics['instruction_entropy'])}"
                f"  #T {metrics['distinct_temperatures']}"
            )
            bar.update(task, info=info)
            if not show_progress:
                log.info("generation %d/%d: valid %.0f%%, %s", generation, generations,
                         100 * metrics["valid_fraction"], info)


def _render_heatmaps(run_dir: Path) -> list[str]:
    """Draw both archive heatmaps into ``run_dir/figures`` (for loggers that show images)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from llmatic.report import load_run, plot_network_heatmap, plot_prompt_heatmap, save_figure

        run = load_run(run_dir)
        paths = []
        for name, plot in (("network_heatmap", plot_network_heatmap),
                           ("prompt_heatmap", plot_prompt_heatmap)):
            paths += [str(p) for p in save_figure(plot(run), run_dir / "figures", name)
                      if str(p).endswith(".png")]
        return paths
    except Exception as exc:  # noqa: BLE001 - a figure never fails a finished search
        log.warning("could not draw the archive heatmaps: %s", exc)
        return []


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _si(value: float) -> str:
    """Compact number: 1234 -> 1.23k, 4.5e6 -> 4.50M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


_SHORT = {"width_to_depth": "w/d", "log10_flops": "log FLOPs", "log10_params": "log params",
          "depth": "depth", "width": "width"}


def print_elites(summary: dict[str, Any], console: Any = None) -> None:
    """Print the best elites as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    names = list(summary["elites"][0]["descriptors"]) if summary["elites"] else []
    net = summary["network_archive"]
    table = Table(
        title=f"Elites of the network archive: {net['cells_filled']} cells filled, "
        f"{summary['candidates']} candidates",
        caption=f"generator: {summary['generator']}",
    )
    for col in ("#", "id", "gen", "fitness", "val acc", "params", "FLOPs",
                *[_SHORT.get(n, n) for n in names]):
        table.add_column(col, justify="right", no_wrap=True)
    for rank, e in enumerate(summary["elites"], 1):
        table.add_row(str(rank), str(e["candidate_id"]), str(e["generation"]),
                      f"{e['fitness']:.4f}", f"{e['val_accuracy']:.4f}", _si(e["params"]),
                      _si(e["flops"]), *[f"{e['descriptors'][n]:.3g}" for n in names])
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)
    out.print(table)
