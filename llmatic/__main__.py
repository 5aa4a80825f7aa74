"""The Hydra app: ``llmatic [overrides]`` or ``python -m llmatic [overrides]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from llmatic.config import CONFIG, ConfigError, preflight, validate_config

log = logging.getLogger("llmatic")

# Overrides that may change when a run is resumed (e.g. to extend it).
# Paths may move between the interruption and the resume; everything else stays as it was.
#: Overrides a resume may change: they do not change what the search finds (more
#: generations, where it logs, how many workers, where a moved table or dataset now lives).
RESUMABLE_OVERRIDES = ("budget.generations", "logger", "sandbox.workers", "evaluator.workers",
                       "evaluator.num_workers", "nb201.table", "dataset.data_dir",
                       "llm.cache_path")


def _value(cfg: DictConfig, key: str):  # noqa: ANN202
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except Exception:  # noqa: BLE001 - an unresolvable value counts as different
        return object()


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config saved in ``cfg.resume``, plus the overrides that may change on resume.

    Any other override that changes a saved value is refused, naming its key: a resumed
    run must continue the same search. A run killed before it wrote ``config.yaml`` (only
    ``.hydra/`` and the log) resumes from Hydra's copy of its config.
    """
    run_dir = Path(cfg.resume).expanduser()
    saved_path = run_dir / CONFIG
    if not saved_path.exists() and (run_dir / ".hydra" / "config.yaml").exists():
        saved_path = run_dir / ".hydra" / "config.yaml"
    if not saved_path.exists():
        raise ConfigError(f"resume={run_dir}: no {CONFIG} there; is it an llmatic run directory?")
    saved = OmegaConf.load(saved_path)
    allowed, refused = [], []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key == "resume" or key.startswith("hydra."):
            continue
        if key == RESUMABLE_OVERRIDES or key.startswith(RESUMABLE_OVERRIDES):
            allowed.append(o.lstrip("+~"))
        elif _value(cfg, key) != _value(saved, key):
            refused.append(key)
    if refused:
        raise ConfigError(
            f"resume={run_dir}: {', '.join(refused)} would change the results of this run "
            f"(saved: {', '.join(f'{k}={_value(saved, k)!r}' for k in refused)}). A resume may "
            f"change only {', '.join(RESUMABLE_OVERRIDES)}; start a new run for other settings"
        )
    if allowed:
        saved = OmegaConf.merge(saved, OmegaConf.from_dotlist(
            [o for o in allowed if "=" in o and not o.split("=", 1)[0].endswith(("logger",))]))
        for o in allowed:  # a group choice (logger=wandb) replaces the whole group
            key = o.split("=", 1)[0]
            if "." not in key and OmegaConf.select(cfg, key) is not None:
                saved[key] = cfg[key]
    saved.resume = str(run_dir)
    return saved


# The repository's top-level conf/ (the package is installed in editable mode by `make`).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _name_wandb_run(cfg: DictConfig, hydra_cfg) -> None:  # noqa: ANN001
    """Group the runs of one sweep in W&B and name each run by what varies."""
    from hydra.types import RunMode

    if not str(cfg.logger.get("_target_", "")).endswith("WandbLogger"):
        return
    if cfg.logger.get("group") is None and hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = Path(hydra_cfg.sweep.dir).name
        cfg.logger.group = f"{cfg.get('experiment_name') or 'sweep'}-{sweep}"
    if cfg.logger.get("name") is None:
        name = f"{cfg.ablation.name}-p{cfg.operators.p_mutation}-seed{cfg.seed}"
        if cfg.get("space", "network") == "nb201":  # a sweep covers three datasets
            name = f"nb201-{cfg.nb201.dataset}-{name}"
        cfg.logger.name = name


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from llmatic.errors import DatasetError, RunDirectoryError

    run_dir = Path(cfg.resume or HydraConfig.get().runtime.output_dir)
    try:
        if cfg.resume:
            cfg = resume_config(cfg, list(HydraConfig.get().overrides.task))
            run_dir = Path(cfg.resume)
        else:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
        validate_config(cfg)  # before the heavy imports below
        preflight(cfg)
        _name_wandb_run(cfg, HydraConfig.get())
        from llmatic.search import run_search

        summary = run_search(cfg, run_dir, resume=bool(cfg.resume))
    except (ConfigError, DatasetError) as exc:
        print(f"llmatic: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunDirectoryError as exc:
        print(f"llmatic: error: {exc}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:
        print(f"\nllmatic: interrupted; continue with: llmatic resume={run_dir}", file=sys.stderr)
        sys.exit(130)
    print(f"run directory: {run_dir}")
    # Returned for Hydra sweepers (e.g. Optuna) that optimise a scalar.
    return summary["network_archive"]["best_fitness"]


def main() -> None:
    """Console-script entry point."""
    _app()


if __name__ == "__main__":
    main()
