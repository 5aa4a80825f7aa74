"""Does the search work? Search quality of the full method against its ablations.

Every ablation runs with the same seeds, the embedded default (mnist5k, ``llm=rules``, the
default budget and recipe; ``--set`` overrides any of it, the shared server's limits too) and
one shared pre-warmed sandbox, side by side in one run. Per ablation (mean with a 95%
t-interval over seeds): best validation accuracy, QD score, cells of both archives (and prompt
cells after warm-up), instruction-use entropy (normalised, after warm-up), distinct mutation
temperatures, the share of trained networks at chance (val acc < 1.25 / classes), the
duplicate rate and wall time; with ``--final K`` also the test accuracy of the best elite
after ``llmatic-final``'s retrain. Sample efficiency: the best validation accuracy among the
first N distinct evaluated candidates (N at fixed fractions of the budget; a repeat of an
earlier network is not a new candidate), per ablation and as the paired difference per seed,
llmatic minus each ablation (mean, 95% t-interval over the n paired seeds).

A NAS-Bench-201 part (``--nb201-seeds``) runs ``experiment=paper_nb201`` (its own budget,
2,001 candidates; ``--set`` does not apply, ``--nb201-set`` does) on the bundled synthetic
table (``prior``) and on ``--random-keys`` random landscapes (``--jobs`` runs at once), then
random search, REA (population 10, sample 3) and local search on the same table with the same
budget. Queries are counted per network
(``llmatic.nb201.arch.canonical_arch``). Per method: the median distinct queries to the
table's top 1% and top 0.1% (validation), the mean best validation accuracy after 50, 100 and
300 distinct queries and the test accuracy of that pick, and the best-so-far curve against
distinct queries (data in the JSON, figure ``sample_efficiency_nb201.png``).

Usage::

    python benchmarks/bench_search.py --seeds 5 --out benchmarks/results/search.json

Writes the JSON, a Markdown table next to it (``.md``) and figures (``.png``). A run with
``--set`` or ``--nb201-set`` and no ``--out`` writes ``search_<overrides>.json``, not the
default's file.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
ABLATIONS = ("llmatic", "random_generation", "network_archive_only", "prompt_archive_only",
             "mutation_only", "crossover_only")
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
#: Sample efficiency of the network runs: N distinct evaluated candidates at these fractions
#: of the budget (its candidates).
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
#: Statuses with no network to evaluate (not counted as evaluated candidates).
_NOT_EVALUATED = ("llm_error", "syntax_error", "no_network")
#: NAS-Bench-201: the methods, the distinct-query counts of the "best after N" columns, the
#: tops (name, quantile of the table's validation accuracies, label) and the curve's grid.
NB201_METHODS = ("llmatic", "random", "rea", "local")
NB201_AT = (50, 100, 300)
NB201_TOPS = (("top_1_percent", 0.99, "top 1%"), ("top_0_1_percent", 0.999, "top 0.1%"))
NB201_GRID = tuple(sorted({int(round(x)) for x in np.logspace(0, np.log10(2001), 48)}
                          | set(NB201_AT)))


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
        "distinct_evaluated": sum(1 for r in history if r.get("duplicate_of") is None
                                  and r["status"] not in _NOT_EVALUATED),
        "best_after_distinct": best_after_distinct(history, summary["candidates"]),
    }
    if final:
        from llmatic.report import final_evaluation

        rows = final_evaluation(run_dir, top_k=final)
        accs = [r.get("test_accuracy") for r in rows if r.get("test_accuracy") is not None]
        row["test_accuracy"] = accs[0] if accs else None
    return row


def networks(seeds: int, final: int, out: Path, ablations=ABLATIONS, first_seed: int = 0,
             keep: Path | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Every ablation x seed, one shared sandbox (run dirs under ``keep`` if given)."""
    from llmatic.sandbox import Sandbox

    cfg = compose(*overrides)  # the shared server's limits: --set sandbox.timeout_s=... applies
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


# ------------------------------------------------------------------ NAS-Bench-201 part
def best_so_far(evaluated, table) -> list[tuple[float | None, float | None]]:
    """(best validation accuracy, test accuracy of that pick) after each distinct query.

    ``evaluated`` lists ``(cell or None, validation accuracy in percent or None)`` in order.
    Isomorphic cells are one network (``llmatic.nb201.arch.canonical_arch``): a cell whose
    network was queried before is not a new query. The test accuracy is looked up only here.
    """
    from llmatic.nb201.arch import first_of_each_network

    best: tuple[float | None, float | None] = (None, None)
    curve = []
    for cell, val in first_of_each_network(evaluated):
        if val is not None and (best[0] is None or val > best[0]):
            best = (float(val), float(table.lookup(cell).test_accuracy))
        curve.append(best)
    return curve


def _summarise_curve(curve, thresholds: dict[str, float]) -> dict:
    """One method's run: distinct queries to each threshold, the pick after N, the curve."""
    vals = [v for v, _ in curve]
    row: dict = {"distinct_queries": len(curve)}
    for name, threshold in thresholds.items():
        row[f"queries_to_{name}"] = next(
            (i + 1 for i, v in enumerate(vals) if v is not None and v >= threshold), None)
    # After N distinct queries; a run that made fewer counts its best over all of them.
    row["at"] = {str(n): {"val": curve[min(n, len(curve)) - 1][0] if curve else None,
                          "test": curve[min(n, len(curve)) - 1][1] if curve else None,
                          "short": len(curve) < n} for n in NB201_AT}
    row["curve"] = [vals[n - 1] if n <= len(vals) else None for n in NB201_GRID]
    return row


def _nb201_baselines(table, budget: int, seed: int, key: int) -> dict[str, list]:
    """Random search, REA (population 10, sample 3) and local search, seeded by name."""
    from llmatic.nb201.baselines import local_search, random_search, regularized_evolution

    def evaluate(cell):
        entry = table.lookup(cell)
        return None if entry is None else entry.valid_accuracy

    def rng(name: str):
        return np.random.default_rng([seed, key, zlib.crc32(name.encode())])

    return {"random": random_search(evaluate, budget, rng("random")),
            "rea": regularized_evolution(evaluate, budget, rng("rea"), population=10,
                                         sample_size=3),
            "local": local_search(evaluate, budget, rng("local"))}


def nb201(seeds: int, tmp: Path, random_keys: int = 3, overrides: tuple[str, ...] = (),
          jobs: int = 1, first_key: int = 0, prior: bool = True) -> dict:
    """The bundled prior landscape and ``random_keys`` random ones, ``seeds`` seeds each.

    ``overrides`` apply to every llmatic run on top of ``experiment=paper_nb201`` (e.g. a
    smaller budget for a quick look); the baselines get the same number of candidates. The
    random landscapes have keys ``first_key .. first_key + random_keys - 1`` (a later
    ``first_key`` confirms on landscapes nothing was tuned on); ``prior=False`` skips the
    prior table.
    """
    keys = list(range(first_key, first_key + random_keys))
    result = {"prior": _nb201(seeds, tmp, "prior", [0], overrides, jobs)} if prior else {}
    if keys:
        result["random"] = _nb201(seeds, tmp, "random", keys, overrides, jobs)
    return result


def _llmatic_nb201(path: Path, seed: int, run: Path, overrides: tuple[str, ...]) -> list:
    """One llmatic search on a table: ``(cell or None, val accuracy % or None)`` in order."""
    import contextlib
    import io

    from llmatic.config import run_search
    from llmatic.nb201.arch import parse_arch_string
    from llmatic.rundir import read_history

    cfg = compose("experiment=paper_nb201", f"nb201.table={path}", f"seed={seed}",
                  "nb201.baselines=[]", *overrides)
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own tables: not this report's
        run_search(cfg, run, show_progress=False)
    return [(parse_arch_string(r["arch"]) if r.get("arch") else None,
             None if r.get("val_accuracy") is None else 100 * r["val_accuracy"])
            for r in read_history(run)]


def _nb201(seeds: int, tmp: Path, landscape: str, keys: list[int],
           overrides: tuple[str, ...] = (), jobs: int = 1) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from llmatic.nb201.table import load_table, write_synthetic_table

    tables, loaded, todo = [], {}, []
    for key in keys:
        path = tmp / f"nb201_{landscape}_{key}.csv"
        write_synthetic_table(path, seed=0, landscape=landscape, key=key)
        table = load_table(path, "cifar10")
        vals = np.array([e.valid_accuracy for _, e in table.items()])  # percent
        thresholds = {name: float(np.quantile(vals, q)) for name, q, _ in NB201_TOPS}
        tables.append({"key": key, "thresholds_val_accuracy": thresholds,
                       "optimum_val_accuracy": float(vals.max())})
        loaded[key] = table, thresholds
        todo += [(key, seed, path, tmp / f"nb201_{landscape}_{key}_{seed}")
                 for seed in range(seeds)]
    args = [(path, seed, run, tuple(overrides)) for _, seed, path, run in todo]
    if jobs > 1:  # independent runs in processes of their own (same seeds, same histories)
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            histories = list(pool.map(_llmatic_nb201, *zip(*args, strict=True)))
    else:
        histories = [_llmatic_nb201(*a) for a in args]
    runs = []
    for (key, seed, _, _), llmatic in zip(todo, histories, strict=True):
        table, thresholds = loaded[key]
        evaluated = {"llmatic": llmatic, **_nb201_baselines(table, len(llmatic), seed, key)}
        runs.append({"key": key, "seed": seed, "budget": len(llmatic), "methods": {
            m: _summarise_curve(best_so_far(ev, table), thresholds)
            for m, ev in evaluated.items()}})
        print(f"nb201 {landscape} key {key} seed {seed}: distinct queries to top 1% "
              + ", ".join(f"{m} {r['queries_to_top_1_percent']}"
                          for m, r in runs[-1]["methods"].items()), flush=True)
    return {"tables": tables, "grid": list(NB201_GRID), "runs": runs,
            "overrides": list(overrides), "summary": _nb201_summary(runs)}


def _median_or_none(values: list[int | None]) -> float | None:
    """Median with never = infinity; None when the median itself is never."""
    if not values:
        return None
    med = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(med) else float(med)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _nb201_summary(runs: list[dict]) -> dict:
    """Per method over runs: median queries to the tops, mean pick after N, mean curve."""
    summary = {}
    for method in NB201_METHODS:
        rows = [r["methods"][method] for r in runs if method in r["methods"]]
        agg: dict = {"runs": len(rows), "median_distinct_queries":
                     _median_or_none([r["distinct_queries"] for r in rows])}
        for name, _, _ in NB201_TOPS:
            found = [r[f"queries_to_{name}"] for r in rows]
            agg[f"median_queries_to_{name}"] = _median_or_none(found)
            agg[f"reached_{name}"] = sum(v is not None for v in found)
        agg["at"] = {str(n): {"mean_best_val_accuracy": _mean(r["at"][str(n)]["val"] for r in rows),
                              "mean_test_accuracy_of_pick": _mean(r["at"][str(n)]["test"]
                                                                  for r in rows),
                              "short_runs": sum(r["at"][str(n)]["short"] for r in rows)}
                     for n in NB201_AT}
        # Mean best-so-far per grid point over the runs that made that many distinct queries.
        agg["curve_mean"] = [_mean(r["curve"][i] for r in rows) for i in range(len(NB201_GRID))]
        agg["curve_runs"] = [sum(r["curve"][i] is not None for r in rows)
                             for i in range(len(NB201_GRID))]
        summary[method] = agg
    return summary


def _threshold(nb: dict, name: str) -> float:
    """A top-x% threshold (validation, percent), mean over the landscape's tables."""
    return statistics.fmean(t["thresholds_val_accuracy"][name] for t in nb["tables"])


def _fmt(value, digits: int = 2, none: str = "–") -> str:
    return none if value is None else f"{value:.{digits}f}"


def nb201_markdown(landscape: str, nb: dict, seeds: int) -> list[str]:
    """One landscape's sample-efficiency table."""
    tops = ", ".join(f"{label} ≥ {_threshold(nb, name):.2f}" for name, _, label in NB201_TOPS)
    budgets = sorted({r["budget"] for r in nb["runs"]})
    lines = ["", f"NAS-Bench-201, SYNTHETIC `{landscape}` landscape: {len(nb['tables'])} table(s) "
             f"(keys {[t['key'] for t in nb['tables']]}) x {seeds} seeds = {len(nb['runs'])} "
             f"runs; budget {budgets} candidates per method (experiment=paper_nb201"
             + "".join(f" {o}" for o in nb.get("overrides", []))
             + f"; local search: that many distinct networks); {tops} (validation, mean "
             "over tables). Queries = distinct networks (canonical class). Median distinct "
             "queries to the top (runs that reached it); mean best validation accuracy after N "
             "distinct queries / mean test accuracy of that pick.", "",
             "| method | to top 1% | to top 0.1% | " + " | ".join(
                 f"@{n} val / test" for n in NB201_AT) + " | distinct queries (median) |",
             "|---|---|---|" + "---|" * len(NB201_AT) + "---|"]
    for method, agg in nb["summary"].items():
        cells = [f"{_fmt(agg[f'median_queries_to_{name}'], 0, 'not reached')} "
                 f"({agg[f'reached_{name}']}/{agg['runs']})" for name, _, _ in NB201_TOPS]
        for n in NB201_AT:
            at = agg["at"][str(n)]
            short = f" ({at['short_runs']} short)" if at["short_runs"] else ""
            cells.append(f"{_fmt(at['mean_best_val_accuracy'])} / "
                         f"{_fmt(at['mean_test_accuracy_of_pick'])}{short}")
        cells.append(_fmt(agg["median_distinct_queries"], 0))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def nb201_figure(result: dict, path: Path) -> None:
    """Mean best validation accuracy against distinct queries, one panel per landscape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    landscapes = result["nb201"]
    fig, axes = plt.subplots(1, len(landscapes), figsize=(6 * len(landscapes), 4.2),
                             layout="constrained", squeeze=False)
    for ax, (landscape, nb) in zip(axes[0], landscapes.items(), strict=True):
        for method, agg in nb["summary"].items():
            n_runs = agg["runs"]
            points = [(x, y) for x, y, k in zip(nb["grid"], agg["curve_mean"], agg["curve_runs"],
                                                 strict=True) if y is not None and k == n_runs]
            if points:
                ax.plot(*zip(*points, strict=True), label=method, marker=".", markersize=3)
        for name, _, label in NB201_TOPS:
            level = _threshold(nb, name)
            ax.axhline(level, color="grey", linestyle=":", linewidth=1)
            ax.annotate(label, (1, level), fontsize="x-small", color="grey", va="bottom")
        ax.set_xscale("log")
        ax.set_xlabel("distinct networks queried")
        ax.set_ylabel("best validation accuracy so far (%, mean over runs)")
        ax.set_title(f"SYNTHETIC {landscape} landscape ({len(nb['runs'])} runs)")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


# ------------------------------------------------------- networks: sample efficiency
def fraction_points(candidates: int) -> dict[str, int]:
    """N distinct evaluated candidates at each of :data:`FRACTIONS` of the budget."""
    return {f"{f:g}": max(1, round(f * candidates)) for f in FRACTIONS}


def best_after_distinct(history: list[dict], candidates: int) -> dict:
    """Best validation accuracy among the first N distinct evaluated candidates, per fraction.

    A candidate is evaluated when the search got a network to evaluate from it (not an LLM
    error, unparseable code or code without a network) and distinct when it is not a repeat
    of an earlier network (``duplicate_of``). A run with fewer distinct candidates than N
    counts its best over all of them (its whole budget; ``short`` says so).
    """
    distinct = [r for r in history
                if r.get("duplicate_of") is None and r["status"] not in _NOT_EVALUATED]
    out = {}
    for frac, n in fraction_points(candidates).items():
        ok = [r["val_accuracy"] for r in distinct[:n]
              if r["status"] == "ok" and r.get("val_accuracy") is not None]
        out[frac] = {"n": n, "best_val_accuracy": max(ok) if ok else None,
                     "short": len(distinct) < n}
    return out


def sample_efficiency(rows: list[dict], ablations) -> dict:
    """Per ablation and fraction: mean ± 95% CI; paired per seed: llmatic minus each."""
    rows = [r for r in rows if r.get("best_after_distinct")]
    fractions = sorted({f for r in rows for f in r["best_after_distinct"]}, key=float)
    table: dict = {}
    for ablation in ablations:
        mine = [r for r in rows if r["ablation"] == ablation]
        table[ablation] = {}
        for f in fractions:
            at = [r["best_after_distinct"][f] for r in mine if f in r["best_after_distinct"]]
            mean, half = ci95([a["best_val_accuracy"] for a in at])
            table[ablation][f] = {"mean": mean, "ci95_half": half, "n": len(at),
                                  "N": sorted({a["n"] for a in at}),
                                  "short_runs": sum(a["short"] for a in at)}
    paired: dict = {}
    base = {r["seed"]: r["best_after_distinct"] for r in rows if r["ablation"] == "llmatic"}
    for ablation in ablations:
        if ablation == "llmatic":
            continue
        paired[ablation] = {}
        for f in fractions:
            diffs, seeds = [], []
            for r in rows:
                other = r["best_after_distinct"].get(f, {}).get("best_val_accuracy")
                mine = base.get(r["seed"], {}).get(f, {}).get("best_val_accuracy")
                if r["ablation"] == ablation and other is not None and mine is not None:
                    diffs.append(mine - other)
                    seeds.append(r["seed"])
            mean, half = ci95(diffs)
            paired[ablation][f] = {
                "mean": mean, "ci95_half": half, "n": len(diffs), "seeds": seeds,
                "diffs": diffs,
                "ci95": None if half is None else [mean - half, mean + half]}
    return {"fractions": fractions, "table": table, "paired_llmatic_minus": paired}


def efficiency_markdown(eff: dict) -> list[str]:
    """Best val acc after N distinct evaluated candidates; paired differences."""
    ablations = [a for a, v in eff["table"].items() if any(c["n"] for c in v.values())]
    if not eff["fractions"] or not ablations:
        return []
    lines = ["", "Best validation accuracy among the first N distinct evaluated candidates "
             "(a repeat of an earlier network is not a new candidate; a run with fewer than N "
             "counts its best over all of them: `short`). Mean ± 95% CI half-width.", "",
             "| N (of budget) | " + " | ".join(ablations) + " |",
             "|---|" + "---|" * len(ablations)]
    for f in eff["fractions"]:
        ns = sorted({n for a in ablations for n in eff["table"][a][f]["N"]})
        cells = []
        for a in ablations:
            c = eff["table"][a][f]
            cells.append(_pm(c["mean"], c["ci95_half"], 4) + f" (n={c['n']}"
                         + (f", {c['short_runs']} short" if c["short_runs"] else "") + ")")
        lines.append(f"| {'/'.join(map(str, ns))} ({f}) | " + " | ".join(cells) + " |")
    paired = {a: v for a, v in eff["paired_llmatic_minus"].items() if a in ablations}
    if paired:
        lines += ["", "Paired by seed, llmatic minus each ablation: mean [95% t-interval over "
                  "the n paired seeds].", "",
                  "| llmatic − | " + " | ".join(f"N {f} of budget" for f in eff["fractions"])
                  + " |", "|---|" + "---|" * len(eff["fractions"])]
        for a, per in paired.items():
            cells = []
            for f in eff["fractions"]:
                d = per[f]
                if d["mean"] is None:
                    cells.append("–")
                elif d["ci95"] is None:
                    cells.append(f"{d['mean']:+.4f} (n={d['n']}, no interval)")
                else:
                    cells.append(f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
                                 f"(n={d['n']})")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def _pm(mean, half, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def setup_label(overrides: tuple[str, ...] | list[str]) -> str:
    """What the network runs ran: dataset, generator, budget (name and size), overrides."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = _compose(config_name="search", overrides=list(overrides), return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    b = cfg.budget
    label = (f"{choices.get('dataset')}, llm={choices.get('llm')}, budget={choices.get('budget')} "
             f"({b.generations} generations x {b.candidates_per_generation} candidates, "
             f"{b.epochs} epoch{'' if b.epochs == 1 else 's'})")
    return label + (f", overrides {' '.join(overrides)}" if overrides else "")


def out_path(out: Path | None, overrides) -> Path:
    """``--out``, or search.json; a variant's own file otherwise.

    A run with ``--set`` or ``--nb201-set`` and no ``--out`` writes
    ``search_<slug of the overrides>.json``, so it never overwrites the default's file.
    """
    if out is not None:
        return out
    if not overrides:
        return ROOT / "benchmarks/results/search.json"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(overrides)).strip("-.")
    if len(slug) > 80:
        slug = f"{slug[:70]}-{zlib.crc32(slug.encode()):08x}"
    return ROOT / "benchmarks/results" / f"search_{slug}.json"


def markdown(result: dict) -> str:
    """The comparison as Markdown tables."""
    lines = [f"Machine: {result['machine']}."]
    net = result.get("networks")
    if net is not None:
        seeds = {a: v["seeds"] for a, v in net["table"].items() if v["seeds"]}
        merged = (f"; rows merged from {', '.join(result['merged'])} (their own settings)"
                  if result.get("merged") else "")
        lines += ["", f"Networks: {result['setup']}; seeds per ablation {seeds}{merged}. "
                  "Mean ± 95% CI half-width.", "",
                  "| | " + " | ".join(ABLATIONS) + " |", "|---|" + "---|" * len(ABLATIONS)]
        for key, label, digits in METRICS:
            cells = [_pm(*net["table"][ablation][key], digits) for ablation in ABLATIONS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += efficiency_markdown(net["sample_efficiency"])
    for landscape, nb in (result.get("nb201") or {}).items():
        lines += nb201_markdown(landscape, nb, result["nb201_seeds"])
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
    parser.add_argument("--nb201-seeds", type=int, default=5,
                        help="seeds per NAS-Bench-201 table (0: skip that part)")
    parser.add_argument("--nb201-set", dest="nb201_overrides", nargs="*", default=[],
                        help="config overrides for every NAS-Bench-201 llmatic run, e.g. "
                             "parent_selection.tournament=3 or budget.generations=2")
    parser.add_argument("--jobs", type=int, default=1,
                        help="NAS-Bench-201 llmatic runs at once, each in its own process")
    parser.add_argument("--random-keys", type=int, default=3,
                        help="how many random NAS-Bench-201 landscapes (keys F..F+K-1)")
    parser.add_argument("--first-key", type=int, default=0,
                        help="F, the first random landscape's key (e.g. 3 to confirm on keys "
                             "3..5 what was tuned on 0..2)")
    parser.add_argument("--no-prior", action="store_true",
                        help="skip the bundled prior table (random landscapes only)")
    parser.add_argument("--final", type=int, default=0,
                        help="retrain this many top elites per run for test accuracy (slow)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON (default benchmarks/results/search.json; with --set, "
                             "benchmarks/results/search_<overrides>.json)")
    parser.add_argument("--ablations", default=",".join(ABLATIONS),
                        help="comma-separated subset (default: all five)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="rows of earlier runs (JSON lists, e.g. a .partial.json) to add")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[],
                        help="config overrides for every network run, e.g. budget=smoke or "
                             "prompt_selection.explore=0.25 (not the NAS-Bench-201 part)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every run directory under this folder (ABLATION/SEED), "
                             "e.g. to draw its figures with llmatic-figures")
    args = parser.parse_args(argv)
    args.out = out_path(args.out, [*args.overrides, *args.nb201_overrides])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import os

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"Python {sys.version.split()[0]}",
              "seeds": args.seeds, "nb201_seeds": args.nb201_seeds,
              "random_keys": args.random_keys, "first_key": args.first_key,
              "overrides": list(args.overrides),
              "setup": setup_label(tuple(args.overrides))}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_nb201_") as tmp:
        if args.nb201_seeds:
            result["nb201"] = nb201(args.nb201_seeds, Path(tmp), args.random_keys,
                                    tuple(args.nb201_overrides), args.jobs, args.first_key,
                                    not args.no_prior)
            for landscape, nb in result["nb201"].items():
                print(f"nb201 {landscape}: median distinct queries to top 1%:",
                      {m: a["median_queries_to_top_1_percent"]
                       for m, a in nb["summary"].items()}, flush=True)
    if args.seeds or args.merge:
        ablations = tuple(args.ablations.split(","))
        result["networks"] = networks(args.seeds, args.final, args.out, ablations,
                                      args.first_seed, args.keep, tuple(args.overrides))
        for path in args.merge:
            result["networks"]["rows"] += json.loads(path.read_text())
        result["merged"] = [str(p) for p in args.merge]
        result["networks"]["table"] = tabulate(result["networks"]["rows"])
        result["networks"]["sample_efficiency"] = sample_efficiency(
            result["networks"]["rows"], ABLATIONS)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result))
    written = [args.out, args.out.with_suffix(".md")]
    if "networks" in result:
        figure(result, args.out.with_suffix(".png"))
        written.append(args.out.with_suffix(".png"))
    if "nb201" in result:
        stem = "" if args.out.stem == "search" else f"_{args.out.stem}"
        written.append(args.out.parent / f"sample_efficiency_nb201{stem}.png")
        nb201_figure(result, written[-1])
    print(markdown(result))
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
