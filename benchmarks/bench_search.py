"""Does the search work? Search quality of the full method against its ablations.

Every ablation runs with the same seeds, the embedded default (digits, ``llm=rules``, the
default budget and recipe) and one shared pre-warmed sandbox, side by side in one run. Per
ablation (mean with a 95% t-interval over seeds): best validation accuracy, QD score, cells
of both archives (and prompt cells after warm-up), instruction-use entropy (normalised, after
warm-up), distinct mutation temperatures, the share of trained networks at chance
(val acc < 1.25 / classes), the duplicate rate and wall time; with ``--final K`` also the
test accuracy of the best elite after ``llmatic-final``'s retrain.

A NAS-Bench-201 part (``--nb201-seeds``) runs ``experiment=paper_nb201`` on the bundled
synthetic table and reports the distinct queries each method needed to reach the table's
top 1% (validation), LLMatic against random search and REA (each median over seeds).

Usage::

    python benchmarks/bench_search.py --seeds 5 --out benchmarks/results/search.json

Writes the JSON, a Markdown table next to it (``.md``) and a figure (``.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
ABLATIONS = ("llmatic", "random_generation", "network_archive_only", "prompt_archive_only",
             "mutation_only")
METRICS = (  # key, label, digits
    ("best_val_accuracy", "best val acc", 4),
    ("qd_score", "QD score", 2),
    ("network_cells", "network cells", 1),
    ("prompt_cells", "prompt cells", 1),
    ("prompt_cells_warmup", "prompt cells after warm-up", 1),
    ("instruction_entropy", "instruction entropy (of max)", 2),
    ("distinct_temperatures", "distinct mutation temps", 1),
    ("at_chance", "% at chance", 1),
    ("duplicates", "% duplicates", 1),
    ("wall_s", "wall s", 0),
    ("test_accuracy", "test acc (final retrain)", 4),
)


def compose(*overrides: str):
    """The real config with overrides (as the CLI composes it)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return _compose(config_name="search", overrides=list(overrides))


def ci95(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95% t-interval (None for fewer than 2 values)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(half)


def one_run(ablation: str, seed: int, root: Path, sandbox, final: int,
            overrides: tuple[str, ...] = ()) -> dict:
    """One search; the numbers the table compares."""
    from llmatic.config import run_search
    from llmatic.rundir import read_history

    run_dir = root / ablation / str(seed)
    cfg = compose(f"ablation={ablation}", f"seed={seed}", *overrides)
    started = time.perf_counter()
    summary = run_search(cfg, run_dir, show_progress=False, sandbox=sandbox)
    wall = time.perf_counter() - started
    history = read_history(run_dir)
    ok = [r for r in history if r["status"] == "ok"]
    warm = {(r["instruction_id"], r["temperature"]) for r in history
            if r["operator"] == "mutation" and r["warmup"]}
    quality = summary["search"]
    row = {
        "ablation": ablation, "seed": seed, "run_dir": str(run_dir),
        "best_val_accuracy": max(r["val_accuracy"] for r in ok),
        "qd_score": summary["network_archive"]["qd_score"],
        "network_cells": summary["network_archive"]["cells_filled"],
        "prompt_cells": summary["prompt_archive"]["cells_filled"],
        "prompt_cells_warmup": len(warm) if summary["prompt_archive"]["cells_filled"] else 0,
        "instruction_entropy": quality["instruction_entropy"],
        "distinct_temperatures": quality["distinct_temperatures"],
        "at_chance": 100 * (quality["at_chance_fraction"] or 0.0),
        "duplicates": 100 * quality["duplicate_fraction"],
        "wall_s": wall,
        "candidates": summary["candidates"],
        "test_accuracy": None,
    }
    if final:
        from llmatic.report import final_evaluation

        rows = final_evaluation(run_dir, top_k=final)
        accs = [r.get("test_accuracy") for r in rows if r.get("test_accuracy") is not None]
        row["test_accuracy"] = accs[0] if accs else None
    return row


def networks(seeds: int, final: int, out: Path, ablations=ABLATIONS, first_seed: int = 0,
             keep: Path | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Every ablation x seed on digits, one shared sandbox (run dirs under ``keep`` if given)."""
    from llmatic.sandbox import Sandbox

    cfg = compose()
    sandbox = Sandbox(timeout_s=float(cfg.sandbox.timeout_s), memory_mb=cfg.sandbox.memory_mb,
                      torch_threads=int(cfg.sandbox.torch_threads))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        root = Path(keep) if keep is not None else Path(tmp)
        try:
            for seed in range(first_seed, first_seed + seeds):  # seeds outermost: a
                for ablation in ablations:  # cut-short run still compares
                    rows.append(one_run(ablation, seed, root, sandbox, final, overrides))
                    r = rows[-1]
                    print(f"{ablation:22s} seed {seed}: best {r['best_val_accuracy']:.4f}  "
                          f"H {r['instruction_entropy'] or 0:.2f}  #T "
                          f"{r['distinct_temperatures']}  chance {r['at_chance']:.0f}%  "
                          f"dup {r['duplicates']:.0f}%  {r['wall_s']:.0f}s", flush=True)
                    out.with_suffix(".partial.json").write_text(json.dumps(rows, indent=1))
        finally:
            sandbox.close()
    return {"rows": rows, "table": tabulate(rows)}


def tabulate(rows: list[dict]) -> dict:
    """Mean and 95% CI per ablation and metric."""
    table = {}
    for ablation in ABLATIONS:
        mine = [r for r in rows if r["ablation"] == ablation]
        table[ablation] = {key: ci95([r[key] for r in mine]) for key, _, _ in METRICS}
        table[ablation]["seeds"] = len(mine)
    return table


def _first_top(evaluated, threshold: float) -> int | None:
    """Distinct cells queried until one reaches ``threshold`` (None: never)."""
    seen = set()
    for cell, fitness in evaluated:
        if cell is None or cell in seen:
            continue
        seen.add(cell)
        if fitness is not None and fitness >= threshold:
            return len(seen)
    return None


def nb201(seeds: int, tmp: Path) -> dict:
    """Both synthetic landscapes: the bundled prior one and random ones (key = seed)."""
    return {"prior": _nb201(seeds, tmp, "prior"), "random": _nb201(seeds, tmp, "random")}


def _nb201(seeds: int, tmp: Path, landscape: str) -> dict:
    from llmatic.config import run_search
    from llmatic.nb201.arch import parse_arch_string
    from llmatic.nb201.baselines import random_search, regularized_evolution
    from llmatic.nb201.table import load_table, write_synthetic_table
    from llmatic.rundir import read_history

    out = {"llmatic": [], "random": [], "rea": []}
    thresholds = []
    for seed in range(seeds):
        path = tmp / f"nb201_{landscape}_{seed}.csv"
        write_synthetic_table(path, seed=0, landscape=landscape, key=seed)
        table = load_table(path, "cifar10")
        vals = np.array([e.valid_accuracy for _, e in table.items()])  # percent
        threshold = float(np.quantile(vals, 0.99))
        thresholds.append(threshold)

        def evaluate(cell, table=table):
            e = table.lookup(cell)
            return None if e is None else e.valid_accuracy

        run = tmp / f"nb201_{landscape}_{seed}"
        cfg = compose("experiment=paper_nb201", f"nb201.table={path}", f"seed={seed}")
        run_search(cfg, run, show_progress=False)
        history = read_history(run)
        evaluated = [(tuple(parse_arch_string(r["arch"])) if r.get("arch") else None,
                      None if r.get("val_accuracy") is None else 100 * r["val_accuracy"])
                     for r in history]
        out["llmatic"].append(_first_top(evaluated, threshold))
        budget = len(history)
        rng = np.random.default_rng(seed + 1000)
        out["random"].append(_first_top(random_search(evaluate, budget, rng), threshold))
        rng = np.random.default_rng(seed + 2000)
        out["rea"].append(_first_top(regularized_evolution(evaluate, budget, rng), threshold))
    return {
        "threshold_val_accuracy": thresholds,
        "queries": out,
        "median": {k: (statistics.median([q if q is not None else math.inf for q in v])
                       if v else None) for k, v in out.items()},
    }


def markdown(result: dict) -> str:
    """The comparison as a Markdown table."""
    seeds = {a: v["seeds"] for a, v in result["networks"]["table"].items()} if (
        "networks" in result) else {}
    lines = [f"Machine: {result['machine']}; seeds per ablation {seeds}; "
             "digits, llm=rules, default budget. Mean ± 95% CI half-width.", "",
             "| | " + " | ".join(ABLATIONS) + " |", "|---|" + "---|" * len(ABLATIONS)]
    for key, label, digits in METRICS if "networks" in result else ():
        cells = []
        for ablation in ABLATIONS:
            mean, half = result["networks"]["table"][ablation][key]
            if mean is None:
                cells.append("–")
            else:
                cells.append(f"{mean:.{digits}f}" + ("" if half is None
                                                      else f" ± {half:.{digits}f}"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for landscape, nb in (result.get("nb201") or {}).items():
        lines += ["", f"NAS-Bench-201, synthetic `{landscape}` landscape, "
                  f"{result['nb201_seeds']} seeds: median distinct queries to the top 1% "
                  "(validation) — " + ", ".join(f"{k} {v}" for k, v in nb["median"].items())
                  + "; per seed " + "; ".join(f"{k} {v}" for k, v in nb["queries"].items())]
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> None:
    """Box plots of best accuracy, entropy and networks at chance per ablation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["networks"]["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    for ax, (key, label) in zip(axes, [("best_val_accuracy", "best val accuracy"),
                                       ("instruction_entropy", "instruction entropy"),
                                       ("at_chance", "% networks at chance")], strict=True):
        data = [[r[key] for r in rows if r["ablation"] == a and r[key] is not None]
                for a in ABLATIONS]
        ax.boxplot(data)
        for i, d in enumerate(data):
            ax.scatter([i + 1] * len(d), d, s=12, alpha=0.7)
        ax.set_xticks(range(1, len(ABLATIONS) + 1), [a.replace("_", "\n") for a in ABLATIONS],
                      fontsize="small")
        ax.set_title(label)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write JSON, Markdown and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--nb201-seeds", type=int, default=5)
    parser.add_argument("--final", type=int, default=0,
                        help="retrain this many top elites per run for test accuracy (slow)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/search.json")
    parser.add_argument("--ablations", default=",".join(ABLATIONS),
                        help="comma-separated subset (default: all five)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="rows of earlier runs (JSON lists, e.g. a .partial.json) to add")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[],
                        help="config overrides for every run, e.g. prompt_selection.explore=0.25")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every run directory under this folder (ABLATION/SEED), "
                             "e.g. to draw its figures with llmatic-figures")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import os

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"Python {sys.version.split()[0]}",
              "seeds": args.seeds, "nb201_seeds": args.nb201_seeds,
              "overrides": list(args.overrides)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_nb201_") as tmp:
        if args.nb201_seeds:
            result["nb201"] = nb201(args.nb201_seeds, Path(tmp))
            for landscape, nb in result["nb201"].items():
                print(f"nb201 {landscape}: median distinct queries to top 1%:", nb["median"],
                      flush=True)
    if args.seeds or args.merge:
        result["networks"] = networks(args.seeds, args.final, args.out,
                                      tuple(args.ablations.split(",")), args.first_seed,
                                      args.keep, tuple(args.overrides))
        for path in args.merge:
            result["networks"]["rows"] += json.loads(path.read_text())
        result["networks"]["table"] = tabulate(result["networks"]["rows"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result))
    if "networks" in result:
        figure(result, args.out.with_suffix(".png"))
    print(markdown(result))
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
