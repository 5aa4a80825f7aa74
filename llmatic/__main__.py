"""The Hydra app: ``llmatic [overrides]`` or ``python -m llmatic [overrides]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from llmatic.config import (
    CONFIG_DIR,
    ConfigError,
    preflight,
    resume_config,
    run_search,
    validate_config,
)

log = logging.getLogger("llmatic")



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
