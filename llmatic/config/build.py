"""Building the search's parts from a checked config: every ``instantiate`` lives here.

The order is part of the behaviour: the sandbox server starts first (it imports torch and
Lightning while the rest loads; :func:`prestart_sandbox` starts it even before the config
is checked), then the dataset (a missing dataset fails before the LLM loads), then the
generator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from llmatic.config.validate import datamodule_kwargs, descriptor_bounds
from llmatic.errors import ConfigError
from llmatic.plan import PromptBuilder, seed_network
from llmatic.qd import DescriptorSpace
from llmatic.settings import (
    ArchiveSettings,
    JobRecipe,
    Nb201Settings,
    PromptSelection,
    SandboxLimits,
    SearchSettings,
)

#: llm config keys that configure the search around the generator, not its constructor.
LLM_SEARCH_KEYS = ("prompt_format", "cache", "cache_path")
#: llm config keys that do not change what a generator answers (left out of cache keys).
LLM_TRANSPORT_KEYS = ("_target_", "batch_size", "device", "device_map", "max_concurrency",
                      "timeout_s", "max_retries", "backoff_base_s", "backoff_max_s",
                      "check_endpoint", "api_key", "local_files_only", "trust_remote_code")


def plain(node: Any) -> Any:
    """A config node as plain Python data (resolved)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------
def search_settings(cfg: DictConfig) -> SearchSettings:
    """The loop's settings (read once: OmegaConf lookups are slow on the hot path)."""
    ab, sel, arch = plain(cfg.ablation), plain(cfg.prompt_selection), cfg.archive
    p_mutation = cfg.operators.p_mutation if ab.get("p_mutation") is None else ab["p_mutation"]
    space = str(cfg.get("space", "network"))
    schedule = str(cfg.get("schedule", "generational"))
    if schedule == "generational" and cfg.get("pipeline_generations", False):
        schedule = "pipelined"  # the old name of schedule=pipelined (runs before 0.3)
    per_gen, lag = int(cfg.budget.candidates_per_generation), cfg.get("steady_lag")
    return SearchSettings(
        seed=int(cfg.seed),
        generations=int(cfg.budget.generations),
        candidates_per_generation=int(cfg.budget.candidates_per_generation),
        warmup_networks=int(cfg.budget.warmup_networks),
        warmup_prompts=int(cfg.budget.warmup_prompts),
        p_mutation=float(p_mutation),
        instructions=tuple(str(s) for s in cfg.operators.mutation_instructions),
        crossover_instruction=str(cfg.operators.crossover_instruction),
        tournament=int(cfg.get("parent_selection", {}).get("tournament", 1)),
        selection=PromptSelection(
            strategy=str(sel["strategy"]), k=int(sel["k"]),
            softmax_tau=float(sel["softmax_tau"]), explore=float(sel.get("explore", 0.0)),
            level=str(sel.get("level", "cell")),
        ),
        random_generation=bool(ab["random_generation"]),
        prompt_archive=bool(ab["prompt_archive"]),
        network_archive=bool(ab["network_archive"]),
        curiosity={k: float(v) for k, v in cfg.curiosity.items()},
        pipeline_generations=schedule == "pipelined",
        overlap_chunk=int(cfg.sandbox.get("overlap_chunk", 0) or 0),
        archive=ArchiveSettings(
            kind=str(arch.kind),
            network_cells=int(arch.get("network_cells", 100)),
            network_dims=tuple(int(d) for d in arch.get("network_dims", [10, 10])),
            centroid_samples=int(arch.get("centroid_samples", 20000)),
            centroid_seed=int(arch.get("centroid_seed", 0)),
            temperature_min=float(cfg.temperature.min),
            temperature_max=float(cfg.temperature.max),
            temperature_step=float(cfg.prompt_archive.temperature_step),
            qd_score_offset=0.0 if cfg.fitness == "accuracy" else -20.0,
        ),
        ablation=str(cfg.ablation.name),
        dataset=str(cfg.nb201.dataset) if space == "nb201" else str(cfg.dataset.name),
        schedule=schedule,
        steady_lag=int(per_gen if lag is None else lag),
        redraw_repeats=int(cfg.get("redraw_repeats", 0) or 0),
    )


def job_recipe(cfg: DictConfig) -> JobRecipe:
    """How every candidate is trained (``budget.epochs``, ``trainer``, ``module``, limits)."""
    from llmatic.extract import DEFAULT_ALLOWED_IMPORTS

    allowed = cfg.sandbox.get("allowed_imports", DEFAULT_ALLOWED_IMPORTS)
    cap = cfg.dataset.get("max_flops")
    scheduler = cfg.module.get("scheduler")
    return JobRecipe(
        epochs=int(cfg.budget.epochs),
        batch_size=int(cfg.dataset.batch_size),
        trainer=plain(cfg.trainer),
        optimizer=plain(cfg.module.optimizer),
        scheduler=None if scheduler is None else plain(scheduler),
        allowed_imports=None if allowed is None else tuple(allowed),
        static_policy=bool(cfg.sandbox.get("static_policy", True)),
        max_flops=None if cap is None else int(float(cap)),
        fitness=str(cfg.fitness),
    )


def sandbox_limits(cfg: DictConfig) -> SandboxLimits:
    """``sandbox.*``: every child's limits."""
    sb = cfg.sandbox
    return SandboxLimits(
        timeout_s=float(sb.timeout_s),
        memory_mb=None if sb.memory_mb is None else int(sb.memory_mb),
        torch_threads=int(sb.torch_threads),
        isolation=sb.get("isolation"),
        caps={k: None if sb[k] is None else (float if k == "cpus" else int)(sb[k])
              for k in ("max_processes", "scratch_mb", "scratch_inodes", "cpus") if k in sb},
    )


def nb201_settings(cfg: DictConfig) -> Nb201Settings:
    """``nb201.*`` (``nb201.baselines`` may be a single name on the command line)."""
    nb = cfg.nb201
    baselines = nb.get("baselines")
    if baselines is None:
        names: tuple[str, ...] = ()
    elif isinstance(baselines, str):
        names = (baselines,)
    else:
        names = tuple(str(b) for b in baselines)
    rea = nb.get("rea") or {}
    return Nb201Settings(
        table=str(nb.table), dataset=str(nb.dataset), seed_cell=str(nb.seed_cell),
        baselines=names, rea_population=int(rea.get("population", 10)),
        rea_sample_size=int(rea.get("sample_size", 3)),
    )


# --------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------
def prestart_sandbox(cfg: DictConfig) -> Any | None:
    """Start the sandbox server ``cfg`` will use now, before the config is checked.

    For ``space=network`` with the pool / local evaluator (the default): this process's
    server for the config's ``sandbox.*`` limits (``process_sandbox``) starts importing
    torch and Lightning while the caller validates the config, loads the data and plans the
    seed; the evaluator then finds it running. Best effort: a config this cannot read
    starts nothing (its checks name the problem), and a server that fails to start reports
    it, by name, when the seed is submitted, as before.

    Returns:
        The server when this call started it (to be discarded with
        ``llmatic.sandbox.evaluators.discard_process_sandbox`` if the config fails its
        checks), else None.
    """
    try:
        spec = cfg.get("evaluator")
        target = "" if spec is None else str(spec.get("_target_", ""))
        if str(cfg.get("space", "network")) != "network" or not (
                spec is None or target.endswith(("PoolEvaluator", "LocalEvaluator"))):
            return None
        limits = sandbox_limits(cfg)
        from llmatic.sandbox.evaluators import process_sandbox

        box = process_sandbox(timeout_s=limits.timeout_s, memory_mb=limits.memory_mb,
                              torch_threads=limits.torch_threads, isolation=limits.isolation,
                              caps=limits.caps)
        return box if box.start() else None
    except Exception:  # noqa: BLE001 - the config's checks come next and name the problem
        return None


def build_evaluator(cfg: DictConfig, sandbox: Any = None) -> Any:
    """Instantiate ``cfg.evaluator``; a lent sandbox server goes to local / pool evaluators."""
    from llmatic.sandbox import PoolEvaluator

    if cfg.get("evaluator") is None:
        return PoolEvaluator(workers=int(cfg.sandbox.workers), sandbox=sandbox)
    spec = plain(cfg.evaluator)
    lend = sandbox is not None and str(spec.get("_target_", "")).endswith(
        ("PoolEvaluator", "LocalEvaluator"))
    try:
        # A live server object cannot travel through the config: pass it as a keyword.
        return instantiate(spec, _convert_="all", **({"sandbox": sandbox} if lend else {}))
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"evaluator: {cause}") from exc


def build_generator(cfg: DictConfig) -> Any:
    """Instantiate ``cfg.llm`` (wrapped in the completion cache when ``llm.cache``)."""
    from llmatic.llm.cache import CachedGenerator, CompletionCache

    llm = plain(cfg.llm)
    use_cache = bool(llm.get("cache", False))
    cache_path = llm.get("cache_path")
    for key in LLM_SEARCH_KEYS:
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
    identity = {k: v for k, v in llm.items() if k not in LLM_TRANSPORT_KEYS}
    identity["generator"] = generator.name
    try:
        cache = CompletionCache(cache_path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return CachedGenerator(generator, cache, identity)


def build_network_space(cfg: DictConfig, run_dir: Path, sandbox: Any = None) -> Any:
    """space=network: sandbox server(s), the dataset and the paper's seed network."""
    from llmatic.search.space import NetworkSpace

    limits = sandbox_limits(cfg)
    evaluator = build_evaluator(cfg, sandbox)
    # Starts the sandbox server(s), which import torch + Lightning while we load the rest.
    evaluator.start(timeout_s=limits.timeout_s, memory_mb=limits.memory_mb,
                    torch_threads=limits.torch_threads, isolation=limits.isolation,
                    caps=limits.caps)
    try:
        # Data first: a missing dataset must fail before the LLM loads or anything runs.
        datamodule = instantiate(datamodule_kwargs(cfg.dataset), _convert_="all")
        datamodule.prepare_data()
        datamodule.setup()
        shape = tuple(int(v) for v in cfg.dataset.input_shape)
        return NetworkSpace(
            evaluator=evaluator, datamodule=datamodule, recipe=job_recipe(cfg),
            seed=int(cfg.seed), run_dir=run_dir, dataset=str(cfg.dataset.name),
            seed_source=seed_network(shape, int(cfg.dataset.num_classes)),
        )
    except BaseException:
        evaluator.close()
        raise


def build_nb201_space(cfg: DictConfig, run_dir: Path) -> Any:
    """space=nb201: the benchmark table (no sandbox: cells are read, never run)."""
    from llmatic.nb201.arch import parse_arch_string
    from llmatic.nb201.evaluator import TableEvaluator
    from llmatic.nb201.space import Nb201Space
    from llmatic.nb201.table import TableError, load_table

    nb = nb201_settings(cfg)
    try:
        lookup = TableEvaluator(load_table(nb.table, nb.dataset))
    except TableError as exc:
        raise ConfigError(f"nb201.table: {exc}") from exc
    if lookup.table.lookup(parse_arch_string(nb.seed_cell)) is None:
        raise ConfigError(
            f"nb201.seed_cell={nb.seed_cell} is not in the table {nb.table} "
            f"({len(lookup.table)} cells for {nb.dataset}): choose a cell the table "
            "has, or use a complete table"
        )
    return Nb201Space(lookup=lookup, settings=nb, seed=int(cfg.seed), run_dir=run_dir)


def build_space(cfg: DictConfig, run_dir: Path, sandbox: Any = None) -> Any:
    """The search space ``cfg.space`` names, built and started."""
    if str(cfg.get("space", "network")) == "nb201":
        return build_nb201_space(cfg, Path(run_dir))
    return build_network_space(cfg, Path(run_dir), sandbox)


def build_search(cfg: DictConfig, run_dir: str | Path, *, sandbox: Any = None) -> Any:
    """A :class:`~llmatic.search.Search` over built parts (``cfg`` must be validated).

    ``sandbox`` lends an already started sandbox server to local / pool evaluators (it
    stays open when the search closes).
    """
    from llmatic.search import Planner, Search

    run_dir = Path(run_dir)
    settings = search_settings(cfg)
    descriptors = DescriptorSpace(names=list(cfg.descriptors.names),
                                  bounds=descriptor_bounds(cfg))
    space = build_space(cfg, run_dir, sandbox)
    try:
        generator = build_generator(cfg)
    except BaseException:
        space.close()
        raise
    ops = cfg.operators
    chat = ops.get("chat")
    prompts = PromptBuilder(
        prompt_format=cfg.llm.get("prompt_format", "completion"),
        mutation_template=ops.mutation_template,
        crossover_template=ops.crossover_template,
        chat={} if chat is None else plain(chat),
        input_shape=space.input_shape,
        num_classes=space.num_classes,
        show_parent_stats=bool(ops.get("show_parent_stats", False)),
        parent_stats_template=ops.get("parent_stats", ""),
    )
    temperature = cfg.temperature
    return Search(
        space=space, generator=generator, descriptors=descriptors, settings=settings,
        planner=Planner(settings=settings, prompts=prompts),
        new_temperature=lambda: instantiate(temperature), run_dir=run_dir,
    )
