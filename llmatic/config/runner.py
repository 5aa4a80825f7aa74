"""From a composed config to a finished run: check, resume, save, build, run.

``run_search(cfg, run_dir)`` is what the Hydra app calls and what tests call on composed
configs. It is the only place where a config becomes a search: below it, the search sees
built parts and frozen settings.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from llmatic.config.build import build_search, build_space, prestart_sandbox
from llmatic.config.validate import check_ray_resources, validate_config
from llmatic.errors import ConfigError
from llmatic.rundir import (
    CHECKPOINTS,
    CONFIG,
    HISTORY,
    HYDRA_CONFIG,
    LATEST,
    read_checkpoint,
    upgrade_targets,
)
from llmatic.types import EvalResult, Status

log = logging.getLogger("llmatic")

#: The repository's top-level conf/ (the package is installed in editable mode by `make`).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _resume_state(run_dir: Path) -> Any | None:
    """The last checkpoint's state (None: killed during generation 0, start over)."""
    state = read_checkpoint(run_dir)
    if state is not None:
        return state
    if (run_dir / CONFIG).exists() or (run_dir / HYDRA_CONFIG).exists():
        # Killed before the seed's checkpoint: nothing finished yet, so start over here.
        log.warning("%s has no checkpoint yet (stopped during generation 0): starting "
                    "the run over in the same directory", run_dir)
        (run_dir / HISTORY).unlink(missing_ok=True)
        return None
    raise ConfigError(f"resume: {run_dir} has no {CHECKPOINTS}/{LATEST}; nothing to resume")


def _build_checked(cfg: DictConfig, run_dir: Path, sandbox: Any) -> Any:
    """:func:`build_search`, then Ray's resources checked (a Ray error as one named line)."""
    ray = str((cfg.get("evaluator") or {}).get("_target_", "")).endswith("RayEvaluator")
    try:
        search = build_search(cfg, run_dir, sandbox=sandbox)
    except ConnectionError as exc:
        if not ray:
            raise
        address = cfg.evaluator.get("address")
        raise ConfigError(
            f"evaluator.address={address}: no Ray cluster to join ({' '.join(str(exc).split())}"
            "); start one first (`ray start --head`), set RAY_ADDRESS, or use "
            "evaluator.address=null for a local Ray instance"
        ) from exc
    if ray:
        try:
            check_ray_resources(cfg)
        except BaseException:
            search.abort()  # kills the waiting actors (closing would wait for each)
            search.close()
            raise
    return search


def run_search(cfg: DictConfig, run_dir: str | os.PathLike, *, resume: bool = False,
               show_progress: bool | None = None, sandbox: Any = None,
               started_at: float | None = None) -> dict[str, Any]:
    """Run (or continue) a search in ``run_dir`` and return its summary.

    With ``resume=True`` the last checkpoint in ``run_dir`` is loaded and the history is cut
    back to it, so a generation interrupted half-way is redone identically. ``sandbox``
    lends an already started sandbox server (it stays open afterwards); by default the
    search starts its own with ``cfg.sandbox``, first thing (before the config's checks).
    ``started_at`` (``time.perf_counter()``) is when the job started, which the time to
    the first result counts from (default: this call).
    """
    started = time.perf_counter() if started_at is None else float(started_at)
    early = None if sandbox is not None else prestart_sandbox(cfg)
    try:
        search, state = _checked_search(cfg, Path(run_dir), resume, sandbox)
    except BaseException:
        if early is not None:  # started for a config that failed its checks: stop it now
            from llmatic.sandbox.evaluators import discard_process_sandbox

            discard_process_sandbox(early)
        raise
    search.started_at = started
    try:
        logger = instantiate(cfg.logger)
    except BaseException:
        search.close()
        raise
    from rich.console import Console

    from llmatic.search import run

    return run(search, state, logger=logger,
               run_config=OmegaConf.to_container(cfg, resolve=True),
               console=Console(stderr=True), show_progress=show_progress)


def _checked_search(cfg: DictConfig, run_dir: Path, resume: bool, sandbox: Any
                    ) -> tuple[Any, Any]:
    """Check ``cfg`` and ``run_dir``, save the config, build the search; (search, state)."""
    validate_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (run_dir / HISTORY).exists():
        raise ConfigError(
            f"{run_dir} already holds a search ({HISTORY}); continue it with resume={run_dir} "
            "or choose a new hydra.run.dir"
        )
    state = _resume_state(run_dir) if resume else None
    if cfg.get("space", "network") == "nb201":
        # Absolute, so that `resume=` works from any directory.
        cfg.nb201.table = str(Path(str(cfg.nb201.table)).expanduser().resolve())
    if state is None:  # first, so that a run killed while starting up can be resumed
        (run_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return _build_checked(cfg, run_dir, sandbox), state


def evaluate_file(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the network in ``path`` with the search config plus ``overrides``."""
    from hydra import compose, initialize_config_dir

    from llmatic.extract import extract_network

    text = Path(path).read_text(encoding="utf-8", errors="replace")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="search", overrides=list(overrides or []))
    validate_config(cfg)
    ext = extract_network(text)
    if ext.status is not None:
        result = EvalResult(ext.status, error=ext.error)
        return {**result.to_dict(), "class_name": None, "file": str(path)}
    if cfg.sandbox.get("static_policy", True):  # rejected code costs no sandbox start-up
        from llmatic.extract import DEFAULT_ALLOWED_IMPORTS, policy_error

        error = policy_error(ext.source,
                             cfg.sandbox.get("allowed_imports") or DEFAULT_ALLOWED_IMPORTS)
        if error is not None:
            result = EvalResult(Status.FORBIDDEN, error=error)
            return {**result.to_dict(), "class_name": ext.class_name, "file": str(path)}
    with tempfile.TemporaryDirectory(prefix="llmatic-eval-") as tmp:
        # The same code path as a search candidate, without an LLM.
        space = build_space(cfg, Path(tmp))
        try:
            result = space.submit(ext.source, ext.class_name, candidate_id=0).result()
        finally:
            space.close()
    return {**result.to_dict(), "class_name": ext.class_name, "file": str(path),
            "notes": list(ext.notes)}


def final_config(run_dir: Path, *, epochs: int | None,
                 overrides: list[str] | None) -> tuple[DictConfig, int]:
    """A finished run's config for ``llmatic-final``: its recipe, ``epochs`` and overrides.

    Raises:
        ConfigError: A NAS-Bench-201 run (nothing to retrain) or a bad override.
    """
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG))
    cfg = OmegaConf.create(upgrade_targets(saved))  # a run from before 0.2 names old modules
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    if cfg.get("space", "network") == "nb201":
        raise ConfigError(
            f"{run_dir} is a NAS-Bench-201 search: its cells are not retrained, their test "
            f"accuracies are looked up in the benchmark ({run_dir / 'nb201.json'}); for the "
            "Table-1 comparison run `llmatic-nb201 report` on the run or sweep directory"
        )
    epochs = int(epochs if epochs is not None else cfg.budget.epochs)
    cfg.budget.epochs = epochs
    validate_config(cfg)
    return cfg, epochs
