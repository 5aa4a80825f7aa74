"""Every file of a run directory: its names, atomic writes, and the one reader of each.

A run directory holds ``config.yaml`` (the resolved config, read by ``resume``),
``history.jsonl`` (one record per candidate, appended after each generation),
``checkpoints/gen_XXXX.pkl`` and ``checkpoints/latest.pkl`` (the pickled search state after
each generation), ``metrics.csv`` (one row per generation), ``summary.json`` (written at the
end), ``candidates/`` (every candidate's source), ``data/`` (the dataset's arrays as the
sandboxed children read them, written again by every start) and, while candidates train,
``jobs/``.

Checkpoints pickle llmatic's own classes. Runs written before the package layout of
version 0.2 name modules that have since moved (``llmatic.archives``, ``llmatic.temperature``
...): :func:`read_checkpoint` maps those names to where the classes live now, so old run
directories still resume and still draw figures.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

from llmatic.errors import RunDirectoryError

CONFIG = "config.yaml"
HISTORY = "history.jsonl"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest.pkl"
CANDIDATES = "candidates"
JOBS = "jobs"
DATA = "data"
#: The config Hydra saves before the app starts (a run killed before writing CONFIG has it).
HYDRA_CONFIG = Path(".hydra") / "config.yaml"

#: Modules of llmatic before version 0.2 -> where their names live now. Used for the classes
#: named in old checkpoints and for ``_target_`` values in old ``config.yaml`` files.
LEGACY_MODULES = {
    "llmatic.archives": "llmatic.qd.archives",
    "llmatic.descriptors": "llmatic.qd.descriptors",
    "llmatic.temperature": "llmatic.qd.temperature",
    "llmatic.prompts": "llmatic.plan.prompts",
    "llmatic.seed": "llmatic.plan.seed",
    "llmatic.policy": "llmatic.extract.policy",
    "llmatic.worker": "llmatic.train.worker",
    "llmatic.training": "llmatic.train.module",
    "llmatic.data": "llmatic.train.data",
    "llmatic.device_data": "llmatic.train.device_data",
    "llmatic.isolation": "llmatic.sandbox.isolation",
    "llmatic.evaluators": "llmatic.sandbox.evaluators",
    "llmatic.loggers": "llmatic.report.loggers",
    "llmatic.figures": "llmatic.report.figures",
    "llmatic.final": "llmatic.report.final",
    "llmatic.evaluate_cli": "llmatic.cli.evaluate",
    "llmatic.nb201.cli": "llmatic.cli.nb201",
}


def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory with a history and a config: what ``llmatic`` writes."""
    path = Path(path)
    return (path / HISTORY).is_file() and (path / CONFIG).is_file()


def write_failed(path: str | os.PathLike, exc: OSError, run_dir: str | os.PathLike,
                 kept: str = "the last checkpoint is intact") -> RunDirectoryError:
    """The named error that stops a search whose run directory cannot be written.

    ``kept``: what is still intact (the history up to the last checkpoint, the checkpoint).
    """
    return RunDirectoryError(
        f"could not write {path} ({exc.strerror or exc}); {kept}. Nothing is lost: free "
        f"space, then resume with `llmatic resume={run_dir}`"
    )


def write_run_file(path: str | os.PathLike, text: str, run_dir: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` in the run directory, or stop with :func:`write_failed`."""
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise write_failed(path, exc, run_dir) from exc


def atomic_write_bytes(path: Path, data: bytes) -> None:
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


# --------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------
def read_history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All candidate records of a run, in order ([] when there is no history yet).

    A torn last line (the process died while appending) is left out: ``resume`` cuts it
    off anyway. A bad line anywhere else means the file was damaged.

    Raises:
        RunDirectoryError: A line other than the last is not JSON.
    """
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise RunDirectoryError(
                f"{path}: line {number} is not a JSON record ({exc.msg}); the file is damaged. "
                f"Resume from the last checkpoint with: llmatic resume={Path(run_dir)}"
            ) from exc
    return records


class HistoryTail:
    """A run's history read as it grows: each :meth:`records` call parses only new lines.

    What :func:`read_history` returns, without re-reading the whole file every generation
    (a 200-generation NAS-Bench-201 run spent a quarter of its time doing that). A line
    is taken once it is complete (ends with a newline); a file that shrank (a resume cut
    it) is read again from the start.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / HISTORY
        self._records: list[dict[str, Any]] = []
        self._offset = 0

    def records(self) -> list[dict[str, Any]]:
        """Every complete record so far, in order (the list is the tail's own: do not edit)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < self._offset:
            self._records, self._offset = [], 0
        if size == self._offset:
            return self._records
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read(size - self._offset)
        end = data.rfind(b"\n") + 1
        for number, line in enumerate(data[:end].splitlines(), len(self._records) + 1):
            if not line.strip():
                continue
            try:
                self._records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RunDirectoryError(
                    f"{self.path}: record {number} is not JSON ({exc.msg}); the file is "
                    f"damaged. Resume from the last checkpoint with: "
                    f"llmatic resume={self.path.parent}"
                ) from exc
        self._offset += end
        return self._records


def truncate_history(path: Path, lines: int) -> None:
    """Keep the first ``lines`` records (drops a generation interrupted mid-way)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        kept = fh.read().split(b"\n")[:lines]
    atomic_write_bytes(path, b"".join(line + b"\n" for line in kept if line))


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def checkpoint_path(run_dir: str | os.PathLike, generation: int | None = None) -> Path:
    """``checkpoints/gen_XXXX.pkl`` of ``generation``, or ``checkpoints/latest.pkl``."""
    name = LATEST if generation is None else f"gen_{generation:04d}.pkl"
    return Path(run_dir) / CHECKPOINTS / name


def save_checkpoint(run_dir: str | os.PathLike, state: Any) -> Path:
    """Write ``checkpoints/gen_XXXX.pkl`` and ``checkpoints/latest.pkl`` atomically.

    Raises:
        RunDirectoryError: The files could not be written; the previous checkpoint is intact.
    """
    run_dir = Path(run_dir)
    directory = run_dir / CHECKPOINTS
    data = pickle.dumps(state)
    path = checkpoint_path(run_dir, state.generation)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        atomic_write_bytes(directory / LATEST, data)
    except OSError as exc:
        raise write_failed(path, exc, run_dir,
                           f"the previous checkpoint {directory / LATEST} is intact") from exc
    return path


class _Unpickler(pickle.Unpickler):
    """Finds classes that moved since the checkpoint was written."""

    def find_class(self, module: str, name: str) -> Any:
        module = LEGACY_MODULES.get(module, module)
        try:
            return super().find_class(module, name)
        except (AttributeError, ModuleNotFoundError):
            # Moved within its package: the package re-exports its public names.
            package = module.rpartition(".")[0]
            if not package.startswith("llmatic"):
                raise
            return getattr(importlib.import_module(package), name)


def read_checkpoint(run_dir: str | os.PathLike, generation: int | None = None) -> Any | None:
    """The search state after ``generation`` (default: the last one), or None if absent.

    Unpickling runs code named in the file: read only checkpoints of your own runs.
    """
    path = checkpoint_path(run_dir, generation)
    if not path.is_file():
        return None
    state = _Unpickler(io.BytesIO(path.read_bytes())).load()
    if not hasattr(state, "evaluated"):  # a checkpoint from before duplicate tracking
        state.evaluated = {}
    return state


def upgrade_targets(config: Any) -> Any:
    """``config`` (nested dicts and lists) with old ``_target_`` module paths made current."""
    if isinstance(config, dict):
        out = {k: upgrade_targets(v) for k, v in config.items()}
        target = out.get("_target_")
        if isinstance(target, str):
            module, _, name = target.rpartition(".")
            out["_target_"] = f"{LEGACY_MODULES.get(module, module)}.{name}"
        return out
    if isinstance(config, list):
        return [upgrade_targets(v) for v in config]
    return config


def candidate_path(run_dir: str | os.PathLike, candidate_id: int, generation: int) -> Path:
    """``candidates/gXXX_cXXXXX.py``: where a candidate's source is kept (dir created)."""
    directory = Path(run_dir) / CANDIDATES
    directory.mkdir(exist_ok=True)
    return directory / f"g{generation:03d}_c{candidate_id:05d}.py"
