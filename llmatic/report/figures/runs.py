"""Runs to plot: one run directory, every run below a multirun directory, or a W&B project.

A run directory is what ``llmatic`` writes (:mod:`llmatic.rundir`); :func:`load_run` reads
its config, ``history.jsonl``, ``metrics.csv`` and ``summary.json`` into a :class:`Run`, and
:func:`load_state` its last checkpoint (for the archive heatmaps). :func:`find_run_dirs`
finds the runs of a Hydra multirun at any depth. W&B runs carry the per-generation scalars
only.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmatic.rundir import (
    CONFIG,
    HISTORY,
    METRICS,
    SUMMARY,
    is_run_dir,
    read_checkpoint,
    read_history,
)


class FiguresError(RuntimeError):
    """A problem with the inputs of the figures command (reported without a traceback)."""


# --------------------------------------------------------------------------------------
# Loading runs
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    """One search run, as read from its directory (or from W&B).

    Attributes:
        path: The run directory (or ``wandb:ENTITY/PROJECT/RUN_ID``).
        ablation: ``ablation.name`` of the config.
        seed: The run's seed.
        p_mutation: The effective mutation probability (``ablation.p_mutation`` when the
            ablation fixes it, else ``operators.p_mutation``).
        generator: The code generator (``summary.json``'s name, else ``llm._target_``).
        history: The candidate records of ``history.jsonl`` (empty for W&B runs).
        metrics: The rows of ``metrics.csv``, numbers parsed, one per generation 1..G.
        config: The resolved config as a plain dict.
    """

    path: Path | str
    ablation: str
    seed: int
    p_mutation: float | None
    generator: str
    history: list[dict[str, Any]] = field(repr=False)
    metrics: list[dict[str, Any]] = field(repr=False)
    config: dict[str, Any] = field(repr=False)

    @property
    def dataset(self) -> str:
        """The dataset searched (``nb201.dataset`` for NAS-Bench-201 cells)."""
        if config_value(self.config, "space", "network") == "nb201":
            return str(config_value(self.config, "nb201.dataset", "?"))
        return str(config_value(self.config, "dataset.name", "?"))

    @property
    def generations(self) -> int:
        """The last completed generation (metrics rows; else the history's last)."""
        gens = [int(r["generation"]) for r in self.metrics if r.get("generation") is not None]
        if gens:
            return max(gens)
        return max((int(r["generation"]) for r in self.history), default=0)

    @property
    def fitness(self) -> str:
        """``accuracy`` or ``loss`` (what the network archive maximised)."""
        return str(self.config.get("fitness", "accuracy"))


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories at or below each path (a run, a multirun, any mix), deduplicated.

    Args:
        paths: Run directories or directories that contain runs at any depth.

    Returns:
        The run directories, in the order given, each path's runs sorted naturally
        (``2`` before ``10``).

    Raises:
        FiguresError: If a path does not exist.
    """
    found: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise FiguresError(f"{root} does not exist")
        for run_dir in sorted(_walk_runs(root), key=_natural_key):
            found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def _walk_runs(root: Path) -> list[Path]:
    if is_run_dir(root):
        return [root]
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            runs.append(here)
            dirnames[:] = []  # runs do not nest
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
    return runs


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _number(text: str | None) -> float | int | str | None:
    """A CSV cell as int, float, None (empty) or the text itself."""
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` rows with numbers parsed; the last row wins for a repeated generation."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    by_gen = {int(r["generation"]): r for r in rows if r.get("generation") is not None}
    return [by_gen[g] for g in sorted(by_gen)]


def config_value(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; also accepts flattened ``"a.b"`` keys (W&B).

    Args:
        config: A resolved config as nested dicts (or W&B's flattened one).
        dotted: The key, e.g. ``"ablation.name"``.
        default: Returned when the key is absent.
    """
    if dotted in config:
        return config[dotted]
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def effective_p_mutation(config: Mapping[str, Any]) -> float | None:
    """The mutation probability a run used (the ablation's, if it fixes one)."""
    p = config_value(config, "ablation.p_mutation")
    if p is None:
        p = config_value(config, "operators.p_mutation")
    return None if p is None else float(p)


def load_run(path: str | os.PathLike) -> Run:
    """Read one run directory.

    Args:
        path: A directory with ``history.jsonl`` and ``config.yaml``.

    Returns:
        The run.

    Raises:
        RunDirectoryError: A line of ``history.jsonl`` other than the last is not JSON.
    """
    import yaml

    run_dir = Path(path)
    config = yaml.safe_load((run_dir / CONFIG).read_text()) or {}
    generator = str(config_value(config, "llm._target_", "unknown")).rsplit(".", 1)[-1]
    summary_path = run_dir / SUMMARY
    if summary_path.is_file():
        try:
            generator = str(json.loads(summary_path.read_text()).get("generator", generator))
        except json.JSONDecodeError:
            pass
    return Run(
        path=run_dir,
        ablation=str(config_value(config, "ablation.name", "llmatic")),
        seed=int(config_value(config, "seed", 0)),
        p_mutation=effective_p_mutation(config),
        generator=generator,
        history=read_history(run_dir),
        metrics=read_metrics(run_dir),
        config=config,
    )


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Every run at or below ``paths`` (see :func:`find_run_dirs`).

    Raises:
        FiguresError: If a path is missing or no run directory is found.
        RunDirectoryError: A run's ``history.jsonl`` is damaged (see :func:`load_run`).
    """
    paths = list(paths)
    dirs = find_run_dirs(paths)
    if not dirs:
        shown = ", ".join(str(p) for p in paths) or "(no paths)"
        raise FiguresError(
            f"no run directories (a directory with {HISTORY} and {CONFIG}) under {shown}"
        )
    return [load_run(d) for d in dirs]


def newest_run(root: str | os.PathLike = "outputs") -> Path:
    """The most recently modified run directory under ``root`` (e.g. Hydra's ``outputs/``).

    Raises:
        FiguresError: If ``root`` holds no run.
    """
    root = Path(root)
    runs = _walk_runs(root) if root.exists() else []
    if not runs:
        raise FiguresError(f"no run directories under {root}")
    return max(runs, key=lambda d: (d / HISTORY).stat().st_mtime)


def load_state(run: Run) -> Any | None:
    """The ``SearchState`` of the run's ``checkpoints/latest.pkl``, or None if absent.

    Unpickling runs code named in the file: read only checkpoints of your own runs.
    """
    if not isinstance(run.path, Path):
        return None
    return read_checkpoint(run.path)


# --------------------------------------------------------------------------------------
# W&B (untested against the real service: needs network and credentials)
# --------------------------------------------------------------------------------------
WANDB_KEYS = ("best_fitness", "best_val_loss", "network_cells", "prompt_cells",
              "valid_fraction")


def load_wandb_runs(project: str, *, api: Any = None) -> list[Run]:
    """Runs of a W&B project logged with ``logger=wandb``.

    Only the per-generation scalars are available there, so the curves start at
    generation 1, best accuracy is ``best_fitness`` (runs with ``fitness=accuracy`` only),
    best loss is the running minimum of the per-generation ``best_val_loss``, and there are
    no heatmaps.

    Args:
        project: ``ENTITY/PROJECT``.
        api: A ``wandb.Api``-like object (default: a new ``wandb.Api()``).

    Returns:
        The runs (with empty ``history``).

    Raises:
        FiguresError: If W&B is not installed, unreachable, or the project has no runs.
    """
    if project.count("/") != 1:
        raise FiguresError(f"--wandb expects ENTITY/PROJECT, got {project!r}")
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=30)
        remote_runs = list(api.runs(project))
    except ImportError as exc:
        raise FiguresError("--wandb needs the wandb package (pip install wandb)") from exc
    except Exception as exc:  # noqa: BLE001 - any client/network error ends the same way
        raise FiguresError(
            f"could not read runs of W&B project {project!r}: {type(exc).__name__}: {exc}. "
            "It needs network access and credentials (`wandb login` or WANDB_API_KEY); "
            "offline, plot the run directories instead"
        ) from exc
    runs = [_wandb_run(project, r) for r in remote_runs]
    if not runs:
        raise FiguresError(f"W&B project {project!r} has no runs")
    return runs


def _wandb_run(project: str, remote: Any) -> Run:
    config = dict(remote.config)
    rows: dict[int, dict[str, Any]] = {}
    for row in remote.scan_history():
        step = row.get("_step")
        if step is None:
            continue
        metrics = {k: row.get(k) for k in WANDB_KEYS}
        rows[int(step)] = {"generation": int(step), **metrics}
    return Run(
        path=f"wandb:{project}/{getattr(remote, 'id', '?')}",
        ablation=str(config_value(config, "ablation.name", "llmatic")),
        seed=int(config_value(config, "seed", 0)),
        p_mutation=effective_p_mutation(config),
        generator=str(config_value(config, "llm._target_", "unknown")).rsplit(".", 1)[-1],
        history=[],
        metrics=[rows[s] for s in sorted(rows)],
        config=config,
    )
