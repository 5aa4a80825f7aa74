"""How the search got to a network: its ancestry in the run history, as data and as diffs.

Every record of ``history.jsonl`` names its ``parents`` (candidate ids; none for the seed,
one for a mutation, two for a crossover), the ``operator``, the ``instruction`` the
generator was given, the ``temperature`` it sampled at and the resulting ``fitness``.
:func:`ancestry` walks those links from any candidate back to the seed; :func:`step_diffs`
turns each step into a unified diff of the parent's and the child's source (``difflib``),
so a reader sees what each instruction did; :func:`lineage_markdown` is the short table of
an export's card. The figure is :func:`llmatic.report.figures.lineage.plot_lineage`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The keys of one lineage step (a history record cut down to what the lineage needs).
STEP_KEYS = ("candidate_id", "generation", "operator", "parents", "instruction",
             "instruction_id", "temperature", "status", "fitness", "val_accuracy",
             "duplicate_of", "source_file", "arch")


class LineageError(ValueError):
    """A candidate, or one of its ancestors, is not in the history (the message says which)."""


def best_candidate(history: Sequence[dict[str, Any]]) -> int:
    """The candidate of highest fitness among those that trained (the earliest on a tie).

    Raises:
        LineageError: No candidate trained.
    """
    ok = [r for r in history if r.get("status") == "ok" and r.get("fitness") is not None]
    if not ok:
        raise LineageError("no candidate of this run trained: there is no best network")
    best = max(ok, key=lambda r: (float(r["fitness"]), -int(r["candidate_id"])))
    return int(best["candidate_id"])


def ancestry(history: Sequence[dict[str, Any]], candidate_id: int) -> list[dict[str, Any]]:
    """``candidate_id`` and all its ancestors back to the seed, oldest first.

    Each step is a dict with :data:`STEP_KEYS`. A crossover has two parents, so the result
    is a small tree (a DAG where an ancestor is shared), ordered by candidate id: every
    parent comes before its children.

    Raises:
        LineageError: ``candidate_id``, or an ancestor it names, is not in the history.
    """
    by_id = {int(r["candidate_id"]): r for r in history}
    if int(candidate_id) not in by_id:
        raise LineageError(f"candidate {candidate_id} is not in the run history "
                           f"({len(by_id)} candidates, ids 0..{max(by_id, default=-1)})")
    seen: set[int] = set()
    todo = [int(candidate_id)]
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        if cid not in by_id:
            raise LineageError(f"candidate {cid}, an ancestor of {candidate_id}, is not in "
                               "the run history: the history is incomplete")
        seen.add(cid)
        todo.extend(int(p) for p in by_id[cid].get("parents") or [])
    return [{k: by_id[cid].get(k) for k in STEP_KEYS} for cid in sorted(seen)]


def source_of(run_dir: str | Path, step: dict[str, Any]) -> str | None:
    """The source a step's candidate was, read from ``candidates/`` (None when not kept).

    A NAS-Bench-201 cell is its arch string, one node per line (the search keeps the text of
    only some cells, and the cell is what was looked up).
    """
    if step.get("arch"):
        return "\n".join(str(step["arch"]).split("+")) + "\n"
    name = step.get("source_file")
    path = Path(run_dir) / name if name else None
    return path.read_text() if path is not None and path.is_file() else None


def step_diffs(run_dir: str | Path, steps: Sequence[dict[str, Any]],
               context: int = 2) -> list[dict[str, Any]]:
    """One unified diff per (parent, child) edge of the lineage, oldest first.

    Returns:
        Dicts with ``parent``, ``child``, ``instruction``, ``operator`` and ``diff`` (the
        text; empty when the sources are equal, None when a source was not kept).
    """
    sources = {int(s["candidate_id"]): source_of(run_dir, s) for s in steps}
    diffs = []
    for step in steps:
        child = int(step["candidate_id"])
        for parent in step.get("parents") or []:
            a, b = sources.get(int(parent)), sources.get(child)
            text = None
            if a is not None and b is not None:
                text = "".join(difflib.unified_diff(
                    a.splitlines(True), b.splitlines(True), fromfile=f"candidate {parent}",
                    tofile=f"candidate {child}", n=context))
            diffs.append({"parent": int(parent), "child": child, "diff": text,
                          "operator": step.get("operator"),
                          "instruction": step.get("instruction")})
    return diffs


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def lineage_markdown(steps: Sequence[dict[str, Any]]) -> str:
    """The lineage as a Markdown table: one row per candidate, oldest first."""
    lines = ["| candidate | generation | operator | parents | instruction | temperature "
             "| fitness |", "|---:|---:|---|---|---|---:|---:|"]
    for s in steps:
        parents = ", ".join(str(p) for p in s.get("parents") or []) or "-"
        instruction = s.get("instruction") or "-"
        if s.get("arch"):
            instruction += f" (cell `{s['arch']}`)"
        instruction = instruction.replace("|", "\\|").replace("\n", " ")  # one table cell
        lines.append(f"| {s['candidate_id']} | {s['generation']} | {s.get('operator') or '-'} "
                     f"| {parents} | {instruction} | {_num(s.get('temperature'), 2)} "
                     f"| {_num(s.get('fitness'))} |")
    return "\n".join(lines) + "\n"
