"""Which network to export, and every check before anything is written.

:func:`choose` reads the run directory and picks one network, by its rank in the final
table (``--rank``, default 1) or by candidate id (``--candidate``), and refuses with an
:class:`ExportError` that says what to do: a directory that is not a run, a rank beyond the
archive, a run whose final retrain has not happened (``llmatic-final RUN_DIR`` first), a
retrain that failed or left no weights, a network the static policy refuses, or one that
needs a package other than torch and the standard library. Nothing is written here.
"""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmatic.report.final import FINAL_DIR, FINAL_JSON
from llmatic.report.lineage import LineageError, ancestry
from llmatic.rundir import is_run_dir, read_checkpoint


class ExportError(ValueError):
    """The network cannot be exported; the message says why and what to run instead."""


@dataclass
class Choice:
    """One network to export, with everything its folder is made from.

    Attributes:
        run_dir: The run directory.
        space: ``network`` or ``nb201``.
        candidate_id: The network's candidate id.
        rank: Its rank in the final table (network) or the archive (nb201); None when it is
            not among them.
        record: Its record in ``history.jsonl``.
        steps: Its lineage (:func:`llmatic.report.lineage.ancestry`), oldest first.
        config: The run's config as plain data.
        generator: The code generator (an LLM's name, or the rules mutator).
        final: ``final/final.json`` without its rows (network runs).
        row: Its row of ``final.json`` (network runs).
        seed_index: The retrain whose weights are shipped (network runs).
    """

    run_dir: Path
    space: str
    candidate_id: int
    rank: int | None
    record: dict[str, Any]
    steps: list[dict[str, Any]]
    config: dict[str, Any] = field(repr=False)
    generator: str = "unknown"
    final: dict[str, Any] = field(default_factory=dict, repr=False)
    row: dict[str, Any] = field(default_factory=dict, repr=False)
    seed_index: int = 0

    @property
    def shipped(self) -> dict[str, Any]:
        """The retrain whose weights the export ships (network runs)."""
        return self.row["runs"][self.seed_index]


def choose(run_dir: str | Path, *, rank: int | None = None, candidate: int | None = None,
           seed_index: int = 0) -> Choice:
    """The network to export (rank 1 by default). See the module docstring for the checks.

    Raises:
        ExportError: Bad input; nothing was written.
    """
    from llmatic.report.figures import config_value, load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not is_run_dir(run_dir):
        raise ExportError(f"{run_dir} is not an llmatic run directory (it needs history.jsonl "
                          "and config.yaml): pass the folder a search wrote, e.g. "
                          "outputs/DATE/TIME")
    if rank is not None and candidate is not None:
        raise ExportError("pass --rank or --candidate, not both")
    if rank is not None and rank < 1:
        raise ExportError(f"--rank must be >= 1, got {rank}")
    run = load_run(run_dir)
    space = str(config_value(run.config, "space", "network"))
    base = {"run_dir": run_dir, "space": space, "config": run.config,
            "generator": run.generator}
    if space == "nb201":
        cid, found_rank = _nb201_pick(run_dir, run.history, rank, candidate)
    else:
        final, row = _final_row(run_dir, rank, candidate)
        cid, found_rank = int(row["candidate_id"]), int(row["rank"])
        base.update(final=final, row=row, seed_index=_seed_index(run_dir, row, seed_index))
    try:
        steps = ancestry(run.history, cid)
    except LineageError as exc:
        raise ExportError(f"{run_dir}: {exc}") from exc
    record = next(r for r in run.history if int(r["candidate_id"]) == cid)
    choice = Choice(candidate_id=cid, rank=found_rank, record=record, steps=steps, **base)
    if space != "nb201":
        check_source(choice.row["source"], cid)
    return choice


def _archive_size(run_dir: Path) -> int:
    state = read_checkpoint(run_dir)
    return 0 if state is None else len(state.network_archive)


def _final_row(run_dir: Path, rank: int | None,
               candidate: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``final.json`` (without rows) and the chosen row."""
    path = run_dir / FINAL_DIR / FINAL_JSON
    if not path.is_file():
        raise ExportError(
            f"the final retrain of {run_dir} has not happened ({path} is missing): run "
            f"`llmatic-final {run_dir}` first (it retrains the top elites over several seeds "
            "and keeps their trained weights), then export")
    final = json.loads(path.read_text())
    rows = final.pop("rows")
    if candidate is not None:
        for row in rows:
            if int(row["candidate_id"]) == int(candidate):
                return final, row
        retrained = ", ".join(str(r["candidate_id"]) for r in rows) or "none"
        raise ExportError(
            f"candidate {candidate} is not among the elites the final retrain of {run_dir} "
            f"trained (candidates {retrained}); pick one of them, or a --rank")
    rank = 1 if rank is None else rank
    if rank > len(rows):
        size = _archive_size(run_dir)
        if rank > size:
            raise ExportError(f"--rank {rank} is beyond the archive of {run_dir}: it holds "
                              f"{size} elite(s)")
        raise ExportError(
            f"rank {rank} was not retrained (the final retrain covered ranks 1..{len(rows)}):"
            f" run `llmatic-final {run_dir} --top-k {rank}` first")
    return final, rows[rank - 1]


def _seed_index(run_dir: Path, row: dict[str, Any], seed_index: int) -> int:
    """``seed_index`` if that retrain left weights; else a named error."""
    runs = row["runs"]
    if not 0 <= seed_index < len(runs):
        raise ExportError(f"--seed-index must be in 0..{len(runs) - 1} (the final retrain "
                          f"of {run_dir} used {len(runs)} seed(s)), got {seed_index}")
    run = runs[seed_index]
    cid = row["candidate_id"]
    if run["status"] != "ok":
        raise ExportError(f"the final retrain of candidate {cid} with seed index {seed_index} "
                          f"failed ({run['status']}: {run.get('error')}); export another "
                          "--seed-index or another network")
    if not run.get("weights") or not (run_dir / FINAL_DIR / run["weights"]).is_file():
        note = (run.get("notes") or {}).get("weights", "no file")
        raise ExportError(f"the final retrain of candidate {cid} (seed index {seed_index}) "
                          f"left no weights ({note}); rerun `llmatic-final {run_dir}`")
    return seed_index


def _nb201_pick(run_dir: Path, history: list[dict[str, Any]], rank: int | None,
                candidate: int | None) -> tuple[int, int | None]:
    """A NAS-Bench-201 cell by archive rank or candidate id."""
    if candidate is not None:
        record = next((r for r in history if int(r["candidate_id"]) == candidate), None)
        if record is None or not record.get("arch"):
            raise ExportError(f"candidate {candidate} of {run_dir} is not a cell the search "
                              "read (no arch string in history.jsonl)")
        return int(candidate), None
    rank = 1 if rank is None else rank
    state = read_checkpoint(run_dir)
    elites = [] if state is None else state.network_archive.top(rank)
    if rank > len(elites):
        raise ExportError(f"--rank {rank} is beyond the archive of {run_dir}: it holds "
                          f"{len(elites)} cell(s)")
    return int(elites[rank - 1]["candidate_id"]), rank


def check_source(source: str, candidate_id: int) -> None:
    """Refuse a network the static policy refuses, or one that needs more than torch.

    Raises:
        ExportError: Which rule, on which line.
    """
    from llmatic.extract import DEFAULT_ALLOWED_IMPORTS, policy_error

    error = policy_error(source, DEFAULT_ALLOWED_IMPORTS)
    if error is not None:
        raise ExportError(f"candidate {candidate_id} is refused by the static policy "
                          f"(llmatic.extract.policy): {error}; it is not exported")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        for name in names:
            top = name.partition(".")[0]
            if top != "torch" and top not in sys.stdlib_module_names:
                raise ExportError(f"candidate {candidate_id} imports {name!r} (line "
                                  f"{node.lineno}): model.py may import only torch and the "
                                  "standard library")
