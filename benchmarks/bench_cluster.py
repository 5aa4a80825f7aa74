"""A simulated cluster: worker utilisation per schedule and worker count (``make bench``).

Every candidate is a NAS-Bench-201 cell (a synthetic table of all 15,625 cells) whose real
table result comes back only after it held one of ``W`` workers for a lognormal duration
(``llmatic.nb201.simulated``: log-space sigma 0.5, i.e. 10x between the 1st and 99th
percentile; sleeping, no CPU). Durations are scaled down from the minutes a GPU trains a
candidate: the median is ``--median-per-worker-s`` x W (0.04 s x W: 0.08 s at 2 workers,
2.56 s at 64), so the search process itself must produce W / mean duration = 22 candidates
per second at every W. Its own per-candidate work (planning, the rule-based mutator,
extraction, archive tells; 5-30 ms, not scaled) then weighs the same at every worker count,
as on a real cluster where it is negligible beside minutes of training; were the median
fixed, the table at 64 workers would measure the search process's speed (``make bench``'s
``nb201_candidates_per_s``), not the schedule.

Per worker count W: ``budget.candidates_per_generation = 2W``, ``budget.generations = 4``,
``steady_lag = 4W``, ``llm=rules``, seed 0; schedules ``generational`` (the paper) and
``steady``, with the local pool (threads) and, when ``ray`` is installed, through Ray.
Reported: the run's utilisation after the seed (busy worker-seconds / (W x wall), the final
drain included) and the steady phase's (from the first generation's last result to the
last candidate's start: no ramp-up, no final drain), with candidates per second.

    .venv/bin/python benchmarks/bench_cluster.py [--workers 2 8 32 64] [--median-per-worker-s 0.04]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEDULES = ("generational", "steady")


class _NoLogger:
    def start(self, *a: Any, **k: Any) -> None:
        pass

    def log_generation(self, *a: Any, **k: Any) -> None:
        pass

    def finish(self, *a: Any, **k: Any) -> None:
        pass


def steady_phase(history: list[dict[str, Any]], workers: int) -> float | None:
    """Utilisation from the first generation's last result to the last candidate's start.

    No ramp-up (the first plans, the first results), no final drain (the last candidates
    finishing while nothing is left to start): the state a long run spends its time in.
    """
    from llmatic.search.metrics import utilisation

    ran = [r["timings"] for r in history if "start_at" in r["timings"]]
    first = max(r["timings"]["told_at"] for r in history if r["generation"] == 1)
    last_start = max(t["start_at"] for t in ran)
    if last_start <= first:
        return None
    spans = [(t["start_at"], t["end_at"]) for t in ran]
    return utilisation(spans, first, last_start, workers)["worker_utilisation"]


def simulated_run(table: Path, schedule: str, workers: int, backend: str, *, median_s: float,
                  sigma: float, generations: int, seed: int, lag_factor: int) -> dict[str, Any]:
    """One search on the simulated cluster; its utilisation (run, steady phase, per block)."""
    from hydra import compose, initialize_config_dir
    from rich.console import Console

    from llmatic.config.build import build_search
    from llmatic.config.validate import validate_config
    from llmatic.nb201.simulated import RaySleepers, SleepingPool, simulated_search
    from llmatic.rundir import read_history
    from llmatic.search import run

    per_gen = 2 * workers
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=[
            "experiment=paper_nb201", f"nb201.table={table}", "llm=rules",
            "nb201.baselines=[]", f"budget.generations={generations}",
            f"budget.candidates_per_generation={per_gen}", f"seed={seed}",
            f"schedule={schedule}", f"steady_lag={lag_factor * workers}"])
    validate_config(cfg)
    cluster = SleepingPool(workers) if backend == "local" else RaySleepers(workers)
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        search = simulated_search(build_search(cfg, Path(tmp)), cluster, median_s=median_s,
                                  sigma=sigma)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run(search, None, logger=_NoLogger(), run_config={},
                          console=Console(file=io.StringIO()), show_progress=False)
        wall = time.perf_counter() - t0
        phase = steady_phase(read_history(Path(tmp)), workers)
    util = summary["utilisation"]
    blocks = search.block_stats
    return {
        "utilisation": util["worker_utilisation"],
        "steady_phase": phase,
        "per_generation": [blocks[g]["worker_utilisation"] for g in sorted(blocks)],
        "idle_straggler_s": util["idle_straggler_s"],
        "idle_no_candidate_s": util["idle_no_candidate_s"],
        "candidates": summary["candidates"],
        "candidates_per_s": round((summary["candidates"] - 1) / util["wall_s"], 2),
        "needed_candidates_per_s": round(workers / (median_s * math.exp(sigma ** 2 / 2)), 2),
        "loop_s": util["wall_s"],
        "wall_s": round(wall, 2),
        "steady_lag": summary["steady_lag"],
    }


def bench_cluster(*, workers: list[int], median_per_worker_s: float = 0.04, sigma: float = 0.5,
                  generations: int = 4, seed: int = 0, lag_factor: int = 4,
                  backends: tuple[str, ...] = ("local", "ray"), log: Any = None) -> dict[str, Any]:
    """The utilisation table: backend -> schedule -> workers -> numbers."""
    from llmatic.nb201.table import write_synthetic_table

    try:
        import ray  # noqa: F401
    except ImportError:
        backends = tuple(b for b in backends if b != "ray")
    table_out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_cluster_table_") as tmp:
        table = Path(tmp) / "synthetic.csv"
        write_synthetic_table(table)
        for backend in backends:
            for schedule in SCHEDULES:
                for w in workers:
                    t0 = time.perf_counter()
                    res = simulated_run(table, schedule, w, backend,
                                        median_s=median_per_worker_s * w,
                                        sigma=sigma, generations=generations, seed=seed,
                                        lag_factor=lag_factor)
                    table_out.setdefault(backend, {}).setdefault(schedule, {})[str(w)] = res
                    if log is not None:
                        log(f"[cluster] {backend} {schedule} W={w}: run {res['utilisation']} "
                            f"steady phase {res['steady_phase']} "
                            f"({time.perf_counter() - t0:.1f}s)")
        if "ray" in backends:
            import ray

            ray.shutdown()
    return {
        "settings": {"median_s": f"{median_per_worker_s} x workers", "sigma": sigma,
                     "generations": generations,
                     "candidates_per_generation": "2 x workers",
                     "steady_lag": f"{lag_factor} x workers", "seed": seed,
                     "backends": list(backends)},
        "table": table_out,
    }


def format_table(result: dict[str, Any]) -> str:
    """Rows: backend, schedule; columns: workers (run / steady phase utilisation)."""
    lines = []
    for backend, schedules in result["table"].items():
        ws = list(next(iter(schedules.values())))
        lines.append(f"{backend:6s} {'schedule':13s} " + "  ".join(f"W={w:>3s} run/steady"
                                                               for w in ws))
        for schedule, row in schedules.items():
            cells = [f"{row[w]['utilisation']!s:>6s}/{row[w]['steady_phase']!s:<8s}"
                     for w in ws]
            lines.append(f"{'':6s} {schedule:13s} " + "  ".join(f"{c:>18s}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the table and print it (``--out`` writes JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 8, 32, 64])
    parser.add_argument("--median-per-worker-s", type=float, default=0.04)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--lag-factor", type=int, default=4)
    parser.add_argument("--backends", nargs="*", default=["local", "ray"])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = bench_cluster(workers=args.workers, median_per_worker_s=args.median_per_worker_s,
                           generations=args.generations, lag_factor=args.lag_factor,
                           backends=tuple(args.backends),
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
