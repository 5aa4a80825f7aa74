"""Resuming a run: its saved config, and which overrides may still change.

A resumed run continues the same search, so its saved ``config.yaml`` is the config; an
override that would change the results is refused, naming its key. Config files written
before the package layout of version 0.2 name moved classes in ``_target_``; they are
brought up to date here (``llmatic.rundir.LEGACY_MODULES``).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from llmatic.errors import ConfigError
from llmatic.rundir import CONFIG, HYDRA_CONFIG, upgrade_targets

#: Overrides a resume may change: they do not change what the search finds (more
#: generations, where it logs, how many workers, where a moved table, dataset or completion
#: cache now lives). The README's resume comment lists the same keys (a test checks).
RESUMABLE_OVERRIDES = ("budget.generations", "logger", "sandbox.workers", "evaluator.workers",
                       "nb201.table", "dataset.data_dir", "llm.cache_path")


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
    saved = load_saved_config(run_dir)
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


def load_saved_config(run_dir: Path) -> DictConfig:
    """The config a run saved (Hydra's copy when it was killed before writing its own)."""
    saved_path = run_dir / CONFIG
    if not saved_path.exists() and (run_dir / HYDRA_CONFIG).exists():
        saved_path = run_dir / HYDRA_CONFIG
    if not saved_path.exists():
        raise ConfigError(f"resume={run_dir}: no {CONFIG} there; is it an llmatic run directory?")
    saved = OmegaConf.load(saved_path)
    return OmegaConf.create(upgrade_targets(OmegaConf.to_container(saved)))
