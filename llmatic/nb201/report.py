"""The paper's Table 1 beside this sweep's numbers (``llmatic-nb201 report MULTIRUN_DIR``).

Every nb201 run writes ``nb201.json`` (:mod:`llmatic.nb201.results`); this module gathers
them under a directory, groups them by method and dataset, and prints test accuracy as
mean ± standard deviation over seeds (the paper's Table 1 reports 10 runs), next to the
paper's rows. It also writes the comparison as ``nb201_table1.md`` and ``.json``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from llmatic.nb201.results import RESULTS
from llmatic.nb201.table import DATASETS

__all__ = ["PAPER_ROWS", "collect", "main_report", "table1"]

_HEAD = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "ImageNet16-120": "ImageNet16-120"}

#: Test accuracy (%) in the paper's Table 1 (docs/method.md §2): (mean, std or None).
PAPER_ROWS: dict[str, dict[str, tuple[float, float | None]]] = {
    "LLMatic (paper)": {"cifar10": (94.26, 0.13), "cifar100": (71.62, None),
                        "ImageNet16-120": (45.87, None)},
    "REA (paper)": {"cifar10": (93.92, None), "cifar100": (71.84, None),
                    "ImageNet16-120": (45.54, None)},
    "Random search (paper)": {"cifar10": (93.70, None), "cifar100": (71.04, None),
                              "ImageNet16-120": (44.57, None)},
    "Optimum (paper)": {"cifar10": (94.37, None), "cifar100": (73.51, None),
                        "ImageNet16-120": (47.31, None)},
}
_LABEL = {"llmatic": "LLMatic", "random": "Random search", "rea": "REA", "local": "Local search"}


class ReportError(Exception):
    """Nothing to report (no nb201.json below the directory)."""


_REQUIRED = ("dataset", "table", "seed", "budget", "optimum_test_accuracy", "methods")


def collect(root: str | Path, console: Any = None) -> list[dict[str, Any]]:
    """Every ``nb201.json`` below ``root`` (a multirun directory or one run).

    Unfinished nb201 runs (a config but no results) are named on ``console``, and a run
    copied twice (same dataset, seed, table, budget and generator) counts once.
    """
    root = Path(root)
    if not root.exists():
        raise ReportError(f"{root} does not exist")
    runs, seen = [], {}
    for path in sorted(root.rglob(RESULTS)):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ReportError(f"{path}: unreadable ({exc}); rerun that job") from exc
        if not isinstance(data, dict) or any(k not in data for k in _REQUIRED) or not all(
                isinstance(m, dict) and "method" in m for m in data.get("methods") or []):
            raise ReportError(f"{path}: not an nb201 result (needs {list(_REQUIRED)}); "
                              "was it written by llmatic?")
        data["run_dir"] = str(path.parent)
        llm = next((m.get("generator") for m in data["methods"] if m["method"] == "llmatic"),
                   None)
        key = (data["dataset"], data["seed"], data["table"], data["budget"], llm)
        if key in seen:
            if console is not None:
                console.print(f"[yellow]{path.parent} repeats {seen[key]} (same dataset, "
                              "seed, table, budget and generator): counted once[/]", soft_wrap=True)
            continue
        seen[key] = str(path.parent)
        runs.append(data)
    unfinished = _unfinished(root)
    if unfinished and console is not None:
        console.print(f"[yellow]{len(unfinished)} nb201 run(s) below {root} have no {RESULTS} "
                      "(unfinished or interrupted; left out, finish them with "
                      f"`llmatic resume=DIR`): {', '.join(str(u) for u in unfinished[:5])}"
                      f"{' ...' if len(unfinished) > 5 else ''}[/]", soft_wrap=True)
    if not runs:
        raise ReportError(
            f"no {RESULTS} below {root}: point at the directory of an nb201 sweep, e.g. "
            "multirun/paper_nb201/DATE_TIME (made by `llmatic -m experiment=paper_nb201 ...`); "
            "a run that was interrupted writes it only when it finishes"
        )
    return runs


def _unfinished(root: Path) -> list[Path]:
    """nb201 run directories below ``root`` without results.

    A run's config is its ``config.yaml``, or Hydra's ``.hydra/config.yaml`` when it was
    stopped before writing its own; ``.hydra`` itself is never a run.
    """
    runs = set()
    for path in root.rglob("config.yaml"):
        run_dir = path.parent.parent if path.parent.name == ".hydra" else path.parent
        try:
            if "space: nb201" in path.read_text():
                runs.add(run_dir)
        except OSError:
            continue
    return sorted(r for r in runs if not (r / RESULTS).exists())


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _setting(run: dict[str, Any]) -> dict[str, str]:
    """What must match for runs to be averaged together (besides dataset and method)."""
    llm = next((m.get("generator") for m in run["methods"] if m["method"] == "llmatic"), "")
    return {"table": Path(str(run["table"])).name, "budget": f"{run['budget']} candidates",
            "generator": str(llm or "").split(" (")[0]}


def table1(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows ``label -> dataset -> {mean, std, n, top1_first500}`` for this sweep and the paper.

    Runs are averaged per method and dataset; when the runs differ in table, budget or
    generator, each setting gets its own rows (never averaged together).
    """
    settings = [_setting(run) for run in runs]
    varying = [k for k in ("table", "budget", "generator")
               if len({s[k] for s in settings}) > 1]
    tests: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    first: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    optimum: dict[str, dict[str, float]] = defaultdict(dict)
    generators = set()
    order = {"LLMatic": 0, "REA": 1, "Random": 2}
    for run, setting in zip(runs, settings, strict=True):
        dataset = run["dataset"]
        suffix = ", ".join(setting[k] for k in varying)
        where = f"this sweep{', ' + suffix if suffix else ''}"
        opt_label = f"Optimum (table{' ' + setting['table'] if 'table' in varying else 's used'})"
        optimum[opt_label][dataset] = max(optimum[opt_label].get(dataset, -1.0),
                                          float(run["optimum_test_accuracy"]))
        for m in run["methods"]:
            label = f"{_LABEL.get(m['method'], m['method'])} ({where})"
            if m["method"] == "llmatic" and m.get("generator"):
                generators.add(m["generator"])
            if m.get("test_accuracy") is not None:
                tests[label][dataset].append(float(m["test_accuracy"]))
            if m.get("first_500"):
                first[label][dataset].append(bool(m["first_500"]["in_top_1_percent"]))
    rows: dict[str, dict[str, Any]] = {}
    for label in sorted(tests, key=lambda k: (order.get(k.split()[0], 9), k)):
        rows[label] = {}
        for dataset, values in tests[label].items():
            mean, std = _mean_std(values)
            hits = first[label].get(dataset, [])
            rows[label][dataset] = {"mean": mean, "std": std, "n": len(values),
                                    "top1_first500": (sum(hits), len(hits))}
    for label, cells in optimum.items():
        rows[label] = {d: {"mean": v, "std": None, "n": 1} for d, v in cells.items()}
    for label, cells in PAPER_ROWS.items():
        rows[label] = {d: {"mean": m, "std": s, "n": None} for d, (m, s) in cells.items()}
    tables = sorted({run["table"] for run in runs})
    synthetic = sorted({run["table"] for run in runs if run.get("table_synthetic")})
    return {"rows": rows, "generators": sorted(generators), "tables": tables,
            "synthetic_tables": synthetic, "runs": len(runs)}


def _cell(value: dict[str, Any] | None) -> str:
    if value is None:
        return "-"
    text = f"{value['mean']:.2f}"
    if value.get("std") is not None:
        text += f" ± {value['std']:.2f}"
    if value.get("n"):
        text += f" (n={value['n']})"
    return text


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    head = "| method | " + " | ".join(_HEAD[d] for d in DATASETS) + " |"
    lines = [head, "|" + "---|" * (len(DATASETS) + 1)]
    for label, cells in result["rows"].items():
        lines.append(f"| {label} | " + " | ".join(_cell(cells.get(d)) for d in DATASETS) + " |")
    lines.append("")
    lines.append("Test accuracy (%) of the cell with the best validation accuracy found by each "
                 "method; mean ± std over seeds. Tables: " + ", ".join(result["tables"]))
    if result["generators"]:
        lines.append("LLMatic generator: " + ", ".join(result["generators"]))
    if result["synthetic_tables"]:
        lines.append("**SYNTHETIC tables (made-up numbers, not NAS-Bench-201 results): "
                     + ", ".join(result["synthetic_tables"]) + "**")
    return "\n".join(lines) + "\n"


def main_report(root: str | Path, console: Any = None) -> dict[str, Any]:
    """Print the Table-1 comparison for the runs below ``root`` and write it beside them."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 110))
    result = table1(collect(root, console))
    view = Table(title=f"NAS-Bench-201 test accuracy (%), Table 1 of the paper vs. "
                       f"{result['runs']} runs below {root}")
    view.add_column("method")
    for d in DATASETS:
        view.add_column(_HEAD[d], justify="right")
    for label, cells in result["rows"].items():
        style = "dim" if label.endswith("(paper)") else None
        view.add_row(label, *(_cell(cells.get(d)) for d in DATASETS), style=style)
    console.print(view)
    for label, cells in result["rows"].items():
        hits = {d: v["top1_first500"] for d, v in cells.items()
                if v.get("top1_first500") and v["top1_first500"][1]}
        if hits:
            console.print(f"{label}: best of the first 500 candidates in the table's top 1% "
                          "(validation): " + ", ".join(f"{_HEAD[d]} {a}/{b}"
                                                       for d, (a, b) in hits.items()))
    console.print("tables: " + ", ".join(result["tables"]))
    if result["generators"]:
        console.print("LLMatic generator: " + ", ".join(result["generators"]))
    if result["synthetic_tables"]:
        console.print("[bold red]SYNTHETIC table(s): the numbers of this sweep are made up "
                      "(llmatic-nb201 synthetic), not NAS-Bench-201 results[/]")
    root = Path(root)
    if root.is_dir():
        (root / "nb201_table1.md").write_text(markdown(result))
        (root / "nb201_table1.json").write_text(json.dumps(result, indent=2, default=list))
        console.print(f"wrote {root / 'nb201_table1.md'} and {root / 'nb201_table1.json'}")
    return result
