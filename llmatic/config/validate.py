"""Config checks that run before any expensive work (bad input fails fast).

Deliberately light on imports (no torch, pyribs or Lightning), so the command line reports a
wrong value in about a second.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from llmatic.errors import ConfigError
from llmatic.nb201.space import NB201_SHAPES
from llmatic.plan import check_templates
from llmatic.qd import DescriptorSpace
from llmatic.sandbox import JOINABLE_DDP

__all__ = ["RAY_WAIT_S", "ConfigError", "check_ray_resources", "datamodule_kwargs",
           "descriptor_bounds", "nb201_baselines", "preflight", "validate_config"]

#: How long a run on a Ray cluster (``evaluator.address`` set) waits for the resources its
#: actors reserve to appear (an autoscaler adding nodes) before it stops with an error.
RAY_WAIT_S = 60.0



def descriptor_bounds(cfg: DictConfig) -> dict:
    """Descriptor bounds: ``descriptors.bounds`` when the group has them, else the dataset's."""
    own = cfg.descriptors.get("bounds")
    source = own if own is not None else cfg.dataset.descriptor_bounds
    return OmegaConf.to_container(source, resolve=True)


def datamodule_kwargs(dataset: DictConfig) -> dict:
    """``dataset`` as the datamodule's arguments: without the keys the search reads itself."""
    kwargs = OmegaConf.to_container(dataset, resolve=True)
    for key in ("descriptor_bounds", "max_flops", "epochs"):
        kwargs.pop(key, None)
    return kwargs


# --------------------------------------------------------------------------------------
def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first wrong key (checks run in a fixed order)."""
    _check_recipe_epochs(cfg)
    _check_budget_and_limits(cfg)
    _check_operators_and_archives(cfg)
    _check_selection(cfg)
    _check_llm_data_and_space(cfg)
    _check_ablation(cfg)


def _check_recipe_epochs(cfg: DictConfig) -> None:
    """``budget.epochs: ${dataset.epochs}`` (budget=default) needs the dataset's recipe epochs."""
    from omegaconf.errors import InterpolationKeyError

    try:
        cfg.budget.get("epochs")
    except InterpolationKeyError:
        name = cfg.dataset.get("name", "?")
        raise ConfigError(
            f"budget.epochs: budget=default trains each candidate for the dataset's recipe "
            f"(dataset.epochs), but dataset {name!r} has no `epochs`: add `epochs: N` to its "
            f"config file, or pass +dataset.epochs=N or budget.epochs=N") from None


def need(cond: bool, key: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``key: msg`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def number(cfg: DictConfig, key: str) -> float:
    """The number at ``key`` (a bool or text is an error naming the key)."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _check_budget_and_limits(cfg: DictConfig) -> None:
    """Operator probability, budget, sandbox limits, batch size."""
    seed = cfg.get("seed")
    need(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed",
         f"must be an integer >= 0, got {seed!r}")
    p = number(cfg, "operators.p_mutation")
    need(0.0 <= p <= 1.0, "operators.p_mutation", f"must be in [0, 1], got {p}")
    for key in ("budget.generations", "budget.candidates_per_generation"):
        v = number(cfg, key)
        need(v >= 1 and v == int(v), key, f"must be a positive integer, got {v:g}")
    for key in ("budget.epochs", "budget.warmup_networks", "budget.warmup_prompts"):
        v = number(cfg, key)
        need(v >= 0 and v == int(v), key, f"must be a non-negative integer, got {v:g}")
    need(number(cfg, "sandbox.timeout_s") > 0, "sandbox.timeout_s", "must be > 0 seconds")
    if cfg.sandbox.memory_mb is not None:
        need(number(cfg, "sandbox.memory_mb") >= 64, "sandbox.memory_mb", "must be >= 64 (or null)")
    need(number(cfg, "sandbox.workers") >= 1, "sandbox.workers", "must be >= 1")
    isolation = cfg.sandbox.get("isolation", "auto")
    need(isolation in ("auto", "strict", "python"), "sandbox.isolation",
         f"must be auto, strict or python, got {isolation!r}")
    for key, low in (("max_processes", 16), ("scratch_mb", 1), ("scratch_inodes", 64)):
        if cfg.sandbox.get(key) is not None:  # per-candidate caps (llmatic/sandbox/caps.py)
            v = number(cfg, f"sandbox.{key}")
            need(v >= low and v == int(v), f"sandbox.{key}",
                 f"must be an integer >= {low} or null, got {v:g}")
    if cfg.sandbox.get("cpus") is not None:
        need(number(cfg, "sandbox.cpus") > 0, "sandbox.cpus", "must be > 0 cores or null")
    need(number(cfg, "dataset.batch_size") >= 1, "dataset.batch_size", "must be >= 1")


def _check_operators_and_archives(cfg: DictConfig) -> None:
    """Fitness, instructions, templates, temperatures, data shape, cap, descriptors."""
    need(cfg.fitness in ("accuracy", "loss"), "fitness",
         f"must be 'accuracy' or 'loss', got {cfg.fitness!r}")
    instructions = list(cfg.operators.mutation_instructions or [])
    need(len(instructions) > 0 and all(isinstance(s, str) and s.strip() for s in instructions),
         "operators.mutation_instructions", "must be a non-empty list of non-empty strings")
    need(isinstance(cfg.operators.crossover_instruction, str)
         and cfg.operators.crossover_instruction.strip() != "",
         "operators.crossover_instruction", "must be a non-empty string")
    try:
        chat = cfg.operators.get("chat")
        check_templates(
            cfg.operators.mutation_template,
            cfg.operators.crossover_template,
            None if chat is None else OmegaConf.to_container(chat),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    lo, hi = number(cfg, "temperature.min"), number(cfg, "temperature.max")
    need(0 < lo <= hi, "temperature.min/max", f"need 0 < min <= max, got [{lo}, {hi}]")
    for key in ("start", "end", "value"):  # the schedule's own temperatures (never clipped)
        if cfg.temperature.get(key) is not None:
            t = number(cfg, f"temperature.{key}")
            need(lo <= t <= hi, f"temperature.{key}",
                 f"must be within temperature.min/max [{lo:g}, {hi:g}], got {t:g}")
    if cfg.temperature.get("step") is not None:
        need(number(cfg, "temperature.step") >= 0, "temperature.step", "must be >= 0")
    shape = list(cfg.dataset.input_shape)
    need(len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape),
         "dataset.input_shape", f"must be [channels, height, width], got {shape}")
    need(int(cfg.dataset.num_classes) >= 2, "dataset.num_classes", "must be >= 2")
    cap = cfg.dataset.get("max_flops")
    try:
        cap_ok = cap is None or (not isinstance(cap, bool) and float(cap) >= 1)
    except (TypeError, ValueError):
        cap_ok = False
    need(cap_ok, "dataset.max_flops",
         f"must be null (no cap) or a number of FLOPs per input >= 1, e.g. 1e7; got {cap!r}")
    need(cfg.archive.kind in ("cvt", "grid"), "archive.kind",
         f"must be cvt or grid, got {cfg.archive.kind!r}")
    try:
        DescriptorSpace(names=list(cfg.descriptors.names), bounds=descriptor_bounds(cfg))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _check_selection(cfg: DictConfig) -> None:
    """Parent and prompt selection, the prompt archive's temperature step."""
    sel = cfg.prompt_selection.strategy
    need(sel in ("top_k", "softmax", "uniform"), "prompt_selection.strategy",
         f"must be top_k, softmax or uniform, got {sel!r}")
    tournament = cfg.get("parent_selection", {}).get("tournament", 1)
    need(isinstance(tournament, int) and not isinstance(tournament, bool) and tournament >= 1,
         "parent_selection.tournament",
         f"must be an integer >= 1 (1: a uniform random elite, the paper), got {tournament!r}")
    redraws = cfg.get("redraw_repeats", 0)
    need(isinstance(redraws, int) and not isinstance(redraws, bool) and redraws >= 0,
         "redraw_repeats",
         f"must be an integer >= 0 (0: never redraw, the paper), got {redraws!r}")
    level = cfg.prompt_selection.get("level", "cell")
    need(level in ("cell", "instruction"), "prompt_selection.level",
         f"must be cell or instruction, got {level!r}")
    explore = float(cfg.prompt_selection.get("explore", 0.0))
    need(0.0 <= explore <= 1.0, "prompt_selection.explore",
         f"must be in [0, 1] (a share of mutations), got {explore}")
    step = float(cfg.prompt_archive.temperature_step)
    span = float(cfg.temperature.max) - float(cfg.temperature.min)
    need(0.0 < step and (span == 0 or step <= span), "prompt_archive.temperature_step",
         f"must be > 0 and at most temperature.max - temperature.min, got {step}")


def _check_llm_data_and_space(cfg: DictConfig) -> None:
    """The LLM, a local dataset, the prompt format, DDP, the pipeline, the space."""
    if "model" in cfg.llm.keys() and OmegaConf.is_missing(cfg.llm, "model"):
        raise ConfigError(
            "llm.model is required for this llm: a local directory holding config.json or a "
            "hub id, e.g. llm.model=Salesforce/codegen-6B-mono"
        )
    data_dir = cfg.dataset.get("data_dir")
    if data_dir and not cfg.dataset.get("download", False):
        if not Path(str(data_dir)).expanduser().is_dir():
            raise ConfigError(
                f"dataset.data_dir={data_dir} does not exist and dataset.download=false: point "
                "dataset.data_dir at a local copy of the dataset or set dataset.download=true "
                "on a machine with internet access"
            )
    fmt = cfg.llm.get("prompt_format", "completion")
    need(fmt in ("completion", "chat"), "llm.prompt_format",
         f"must be completion or chat, got {fmt!r}")
    need(fmt != "chat" or cfg.operators.get("chat") is not None, "operators.chat",
         "llm.prompt_format=chat needs operators.chat templates (system, mutation, crossover)")
    _validate_ddp(cfg)
    pipeline = cfg.get("pipeline_generations", False)
    need(isinstance(pipeline, bool), "pipeline_generations",
         f"must be true or false, got {pipeline!r}")
    _check_schedule(cfg, pipeline)
    space = cfg.get("space", "network")
    need(space in ("network", "nb201"), "space", f"must be network or nb201, got {space!r}")
    if space == "nb201":
        _validate_nb201(cfg)
    else:
        cell_only = [n for n in cfg.descriptors.names
                     if n in NB201_DESCRIPTORS and n not in ("log10_flops", "log10_params")]
        need(not cell_only, "descriptors.names",
             f"{cell_only} describe NAS-Bench-201 cells, not networks; use "
             "descriptors=width_depth_flops or params_depth (or experiment=paper_nb201)")
        epochs = number(cfg, "budget.epochs")  # 0 trained nothing: every candidate crashed
        need(epochs >= 1, "budget.epochs",
             f"must be >= 1 for networks (each candidate is trained), got {epochs:g}")


def _check_schedule(cfg: DictConfig, pipeline: bool) -> None:
    """``schedule`` and ``steady_lag`` (``pipeline_generations=true``: schedule=pipelined)."""
    schedule = cfg.get("schedule", "generational")
    need(schedule in ("generational", "pipelined", "steady"), "schedule",
         f"must be generational, pipelined or steady, got {schedule!r}")
    need(not pipeline or schedule != "steady", "pipeline_generations",
         "pipeline_generations=true is the old name of schedule=pipelined and contradicts "
         "schedule=steady: drop pipeline_generations=true")
    lag = cfg.get("steady_lag")
    need(lag is None or (isinstance(lag, int) and not isinstance(lag, bool) and lag >= 0),
         "steady_lag", f"must be null (one generation) or an integer >= 0, got {lag!r}")


def _check_ablation(cfg: DictConfig) -> None:
    """The ablation switches."""
    ab = cfg.get("ablation")
    need(ab is not None, "ablation", "missing: choose e.g. ablation=llmatic")
    if ab.get("p_mutation") is not None:
        p_ab = number(cfg, "ablation.p_mutation")
        need(0.0 <= p_ab <= 1.0, "ablation.p_mutation", f"must be in [0, 1] or null, got {p_ab}")
    for key in ("network_archive", "prompt_archive", "random_generation"):
        need(isinstance(ab.get(key), bool), f"ablation.{key}",
             f"must be true or false, got {ab.get(key)!r}")


#: DDP strategies whose ranks the sandbox can start for Lightning to join (see sandbox.py).


def _validate_ddp(cfg: DictConfig) -> None:
    """DDP settings the sandbox cannot run fail here, not at the first candidate."""
    trainer = cfg.get("trainer")
    strategy = trainer.get("strategy", "auto") if trainer is not None else "auto"
    if not (isinstance(strategy, str) and strategy.startswith("ddp")):
        return
    if int(trainer.get("num_nodes", 1)) != 1:
        raise ConfigError("trainer.num_nodes must be 1: DDP runs on the GPUs of one machine "
                          "per candidate (scale out over machines with evaluator=ray)")
    if trainer.get("devices") not in (1, "1") and strategy not in JOINABLE_DDP:
        raise ConfigError(f"trainer.strategy={strategy} launches its own processes, which the "
                          f"sandbox refuses; use one of {list(JOINABLE_DDP)}")
    per_worker = cfg.get("evaluator", {}).get("gpus_per_worker", 1)
    if not (isinstance(per_worker, int) and per_worker >= 1):
        raise ConfigError(f"evaluator.gpus_per_worker must be a positive integer, got "
                          f"{per_worker!r}")


#: Descriptors a NAS-Bench-201 cell has (its operation counts, the benchmark's costs).
NB201_DESCRIPTORS = ("conv_ops", "conv3x3_ops", "skip_ops", "pool_ops", "none_ops",
                     "log10_flops", "log10_params")


def nb201_baselines(cfg: DictConfig) -> list[str]:
    """``nb201.baselines`` as a list (a single name on the command line is accepted)."""
    value = cfg.nb201.get("baselines")
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _validate_nb201(cfg: DictConfig) -> None:
    """space=nb201: the table, dataset, seed cell and baselines (before anything loads)."""
    nb = cfg.get("nb201")
    if nb is None:
        raise ConfigError("space=nb201 needs the nb201 settings: use experiment=paper_nb201")
    if nb.get("table") is None or not str(nb.get("table")).strip():
        raise ConfigError(
            "nb201.table is required: the path of a benchmark table. Make one with "
            "`llmatic-nb201 export /path/to/NATS-tss-v1_0-3ffb9-simple --out nb201.csv` from "
            "the official file (https://github.com/D-X-Y/NATS-Bench), or a SYNTHETIC one to "
            "try things out with `llmatic-nb201 synthetic --out nb201_synthetic.csv`"
        )
    table = Path(str(nb.table)).expanduser()
    if not table.exists():
        raise ConfigError(
            f"nb201.table={nb.table} does not exist. Make it with `llmatic-nb201 export "
            "/path/to/NATS-tss-v1_0-3ffb9-simple --out nb201.csv` from the official NATS-Bench "
            "file (https://github.com/D-X-Y/NATS-Bench), or a SYNTHETIC one with "
            "`llmatic-nb201 synthetic --out nb201_synthetic.csv`"
        )
    if str(nb.get("dataset")) not in NB201_SHAPES:
        raise ConfigError(f"nb201.dataset must be one of {list(NB201_SHAPES)}, "
                          f"got {nb.get('dataset')!r}")
    if cfg.fitness != "accuracy":
        raise ConfigError("fitness: space=nb201 supports only accuracy (the benchmark's "
                          "validation accuracy); remove fitness=loss")
    names = list(cfg.descriptors.names)
    wrong = [n for n in names if n not in NB201_DESCRIPTORS]
    if wrong:
        raise ConfigError(f"descriptors.names: {wrong} cannot be measured on a NAS-Bench-201 "
                          f"cell; use descriptors=nb201_ops or nb201_cost (names from "
                          f"{list(NB201_DESCRIPTORS)})")
    from llmatic.nb201.arch import ArchStringError, parse_arch_string

    try:
        parse_arch_string(str(nb.get("seed_cell")))
    except ArchStringError as exc:
        raise ConfigError(f"nb201.seed_cell: {exc}") from exc
    baselines = nb201_baselines(cfg)
    unknown = [b for b in baselines if b not in ("random", "rea", "local")]
    if unknown:
        raise ConfigError(f"nb201.baselines: unknown {unknown}; choose from random, rea, local")
    if "rea" in baselines:
        pop, sample = nb.rea.get("population"), nb.rea.get("sample_size")
        if not (isinstance(pop, int) and isinstance(sample, int) and 1 <= sample <= pop):
            raise ConfigError(f"nb201.rea: need integers 1 <= sample_size <= population, got "
                              f"population={pop}, sample_size={sample}")


def preflight(cfg: DictConfig) -> None:
    """Cheap checks of the outside world before any heavy import (seconds, not minutes).

    An OpenAI-compatible endpoint must accept a TCP connection (the generator does the full
    check, ``/models`` and the API key, when it starts); a GPU trainer needs a visible CUDA
    device; an online W&B logger needs an API key; a local Ray instance cannot give GPUs
    this machine does not have.
    """
    _preflight_endpoint(cfg)
    _preflight_gpu(cfg)
    _preflight_wandb(cfg)
    _preflight_ray(cfg)


def _ray_evaluator(cfg: DictConfig) -> DictConfig | None:
    evaluator = cfg.get("evaluator")
    if evaluator is None or not str(evaluator.get("_target_", "")).endswith("RayEvaluator"):
        return None
    return evaluator


def _preflight_ray(cfg: DictConfig) -> None:
    """Refuse ``evaluator=ray evaluator.num_gpus>0`` on a local instance without CUDA.

    Its actors would wait for a GPU forever (after the cluster started: see
    :func:`check_ray_resources`).
    """
    evaluator = _ray_evaluator(cfg)
    if evaluator is None or evaluator.get("address") or not float(evaluator.get("num_gpus") or 0):
        return
    if not cuda_available():
        raise ConfigError(
            f"evaluator.num_gpus={evaluator.num_gpus}: evaluator=ray starts a local Ray instance "
            "(evaluator.address=null) and this machine shows no CUDA device, so no actor could "
            "ever start; use evaluator.num_gpus=0, or join a cluster with GPUs "
            "(evaluator.address=auto or ray://HOST:10001)"
        )


def check_ray_resources(cfg: DictConfig, *, wait_s: float | None = None,
                        poll_s: float = 2.0) -> None:
    """After Ray started: the cluster must hold what the evaluator's actors reserve.

    ``evaluator.workers`` actors each reserve ``num_cpus`` CPUs and ``num_gpus`` GPUs; an
    actor the cluster cannot place waits forever, and so would every candidate sent to it.
    A local instance is checked at once; a cluster gets ``wait_s`` (default
    :data:`RAY_WAIT_S`) for an autoscaler to add nodes, then this raises.

    Raises:
        ConfigError: Naming the keys, what they need and what the cluster has.
    """
    import time

    evaluator = _ray_evaluator(cfg)
    if evaluator is None:
        return
    import ray

    if not ray.is_initialized():
        return
    workers = int(evaluator.get("workers") or 1)
    need = {"CPU": workers * float(evaluator.get("num_cpus") or 0),
            "GPU": workers * float(evaluator.get("num_gpus") or 0)}
    if wait_s is None:
        wait_s = RAY_WAIT_S if evaluator.get("address") else 0.0
    deadline = time.monotonic() + wait_s
    while True:
        have = ray.cluster_resources()
        short = [k for k, v in need.items() if v > have.get(k, 0.0) + 1e-9]
        if not short:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    parts = [f"evaluator.workers={workers} x evaluator.num_{k.lower()}s="
             f"{evaluator.get(f'num_{k.lower()}s')} needs {need[k]:g} {k}s, the Ray cluster has "
             f"{have.get(k, 0.0):g}" for k in short]
    waited = f" (waited {wait_s:.0f} s for an autoscaler)" if wait_s else ""
    raise ConfigError(
        f"evaluator=ray: {'; '.join(parts)}{waited}; lower evaluator.workers or the resources "
        "per actor (evaluator.num_cpus may be a fraction, evaluator.num_gpus=0 trains on CPU), "
        "or add nodes to the cluster"
    )


def _preflight_endpoint(cfg: DictConfig) -> None:
    """An OpenAI-compatible endpoint must accept a TCP connection."""
    import socket
    from urllib.parse import urlparse

    llm = cfg.llm
    if not str(llm.get("_target_", "")).endswith("OpenAIGenerator"):
        return
    if not llm.get("check_endpoint", True) or not llm.get("base_url"):
        return
    url = urlparse(str(llm.base_url))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"llm.base_url={llm.base_url} must look like http://HOST:PORT/v1")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=5):
            pass
    except OSError as exc:
        if url.hostname in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
            fix = (f"start the server first (e.g. `vllm serve HF_ORG/MODEL --port {port}` or "
                   "`ollama serve`) or correct llm.base_url")
        else:  # a hosted API: nothing to start here
            fix = "check this machine's network connection (and proxy) or llm.base_url"
        raise ConfigError(f"llm.base_url={llm.base_url} is unreachable ({exc}): {fix}") from exc


def cuda_available() -> bool:
    """Whether this machine shows a CUDA device (torch is imported only where a driver is)."""
    import glob

    if not glob.glob("/dev/nvidia[0-9]*") and not Path("/dev/kfd").exists():
        return False  # no NVIDIA (or ROCm) device node: no CUDA, without importing torch
    import torch

    return bool(torch.cuda.is_available())


def _preflight_gpu(cfg: DictConfig) -> None:
    """``trainer=gpu`` (or ddp) on a machine without CUDA fails here, before the seed trains."""
    trainer = cfg.get("trainer")
    if trainer is None or str(trainer.get("accelerator", "cpu")).lower() not in ("gpu", "cuda"):
        return
    evaluator = cfg.get("evaluator") or {}
    if str(evaluator.get("_target_", "")).endswith("RayEvaluator") and evaluator.get("address"):
        return  # the GPUs are on the Ray cluster's nodes, not necessarily here
    if not cuda_available():
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator}: trainer=gpu but no CUDA device is "
            "visible; use trainer=cpu (or check the driver and CUDA_VISIBLE_DEVICES)"
        )


def wandb_has_credentials() -> bool:
    """Whether ``wandb login`` (a netrc entry), ``WANDB_API_KEY`` or W&B's settings hold a key."""
    import configparser
    import netrc
    import os
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    paths = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for path in paths:
        try:
            if netrc.netrc(str(Path(path).expanduser())).authenticators(host or ""):
                return True
        except (OSError, netrc.NetrcParseError):
            continue
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb"
    settings = configparser.ConfigParser()
    try:
        settings.read(Path(config_dir).expanduser() / "settings")
    except configparser.Error:
        return False
    return bool(settings.get("default", "api_key", fallback=None))


def _preflight_wandb(cfg: DictConfig) -> None:
    """``logger=wandb`` online without credentials fails here, not in W&B's own traceback."""
    import os

    logger = cfg.get("logger")
    if logger is None or not str(logger.get("_target_", "")).endswith("WandbLogger"):
        return
    mode = logger.get("mode") or os.environ.get("WANDB_MODE") or "online"
    if str(mode).lower() in ("offline", "disabled", "dryrun"):
        return
    if not wandb_has_credentials():
        raise ConfigError(
            "logger=wandb needs a W&B API key: run `wandb login` (or set WANDB_API_KEY), or "
            "log without an account with WANDB_MODE=offline (sync later with `wandb sync`) "
            "or logger=csv"
        )
