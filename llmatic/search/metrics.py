"""Numbers about a run: per generation (``metrics.csv``, loggers) and for the summary.

Everything here is read back from ``history.jsonl`` and the archives, never kept on the
side, so the figures, the summary and a recomputation from the history agree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmatic.rundir import read_history
from llmatic.types import Completion, Operator, Status


def exploration_metrics(mutations: Sequence[dict[str, Any]], instructions: int) -> dict[str, Any]:
    """How widely mutations explored: instruction-use entropy and distinct temperatures.

    The entropy is normalised by its maximum, the log of the instruction count (1 = every
    instruction used equally often).
    """
    counts = np.array(list(Counter(r["instruction_id"] for r in mutations).values()), float)
    entropy = None
    if counts.size and instructions > 1:
        p = counts / counts.sum()
        # max: one instruction used gives -0.0 (printed "-0.0000"); the entropy is >= 0.
        entropy = max(0.0, float(-(p * np.log(p)).sum() / math.log(instructions)))
    return {"instruction_entropy": entropy,
            "distinct_temperatures": len({round(float(r["temperature"]), 6) for r in mutations})}


def account(totals: Counter, completion: Completion) -> None:
    """Add one completion to the run's LLM totals (cache hits cost no tokens)."""
    totals["requests"] += 1
    if completion.cached:
        totals["cache_hits"] += 1
    else:
        totals["prompt_tokens"] += completion.prompt_tokens
        totals["completion_tokens"] += completion.completion_tokens
        totals["seconds"] += completion.seconds
        totals["attempts"] += completion.attempts
    if not completion.ok:
        totals["failures"] += 1


def utilisation(spans: Sequence[tuple[float, float]], start: float, end: float,
                workers: int) -> dict[str, Any]:
    """How busy ``workers`` were over ``[start, end]``, from when each candidate ran.

    ``spans`` are (start, end) of candidates on a worker (run clock; clipped to the window).
    The window's ``workers x wall`` worker-seconds split into busy, idle while at least one
    candidate still ran (waiting for stragglers, or for the next plans), and idle while none
    ran (generator, tells, checkpoints, start-up). ``worker_utilisation`` = busy / (workers
    x wall).
    """
    workers = max(1, int(workers))
    events = []
    for s, e in spans:
        s, e = max(float(s), start), min(float(e), end)
        if e > s:
            events += [(s, 1), (e, -1)]
    events.sort()
    busy = straggler = none = 0.0
    running, t = 0, start
    for at, step in events:
        dt = at - t
        if dt > 0:
            used = min(running, workers)
            busy += used * dt
            if running:
                straggler += (workers - used) * dt
            else:
                none += workers * dt
        running, t = running + step, max(t, at)
    none += workers * max(0.0, end - t)
    wall = max(0.0, end - start)
    return {
        "workers": workers,
        "wall_s": round(wall, 4),
        "worker_busy_s": round(busy, 4),
        "worker_utilisation": round(busy / (workers * wall), 4) if wall > 0 else None,
        "idle_straggler_s": round(straggler, 4),
        "idle_no_candidate_s": round(none, 4),
    }


def run_utilisation(records: Sequence[dict[str, Any]], workers: int) -> dict[str, Any]:
    """The run's utilisation after the seed, and its time to the first result (history)."""
    seed = next((r for r in records if r["operator"] == Operator.SEED.value), None)
    told = [r["timings"]["told_at"] for r in records if "told_at" in r.get("timings", {})]
    spans = [(r["timings"]["start_at"], r["timings"]["end_at"]) for r in records
             if r["operator"] != Operator.SEED.value and "end_at" in r.get("timings", {})]
    out: dict[str, Any] = {"time_to_first_result_s": None}
    if seed is not None:
        out["time_to_first_result_s"] = seed.get("timings", {}).get("first_result_s")
    if seed is None or not told or "told_at" not in seed.get("timings", {}):
        return {**out, **utilisation([], 0.0, 0.0, workers)}
    start = float(seed["timings"]["told_at"])
    out.update(utilisation(spans, start, max(told), workers))
    out["generate_s"] = round(sum(float(r["timings"].get("generate", 0.0)) for r in records), 4)
    return out


def _at_chance_fraction(space: Any, ok: Sequence[dict[str, Any]]) -> float | None:
    flags = [space.at_chance(r) for r in ok]
    if not ok or any(f is None for f in flags):
        return None
    return sum(flags) / len(ok)


def generation_metrics(search: Any, state: Any, generation: int) -> dict[str, Any]:
    """Metrics of the generation just told (read back from the history)."""
    records = [r for r in search.history.records() if r["generation"] == generation]
    ok = [r for r in records if r["status"] == Status.OK.value]
    temps = [r["temperature"] for r in records]
    net, prm = state.network_archive.stats(), state.prompt_archive.stats()
    losses = [r["val_loss"] for r in ok if r["val_loss"] is not None]
    mutations = [r for r in records if r["operator"] == Operator.MUTATION.value]
    return {
        "candidates": len(records),
        "valid_fraction": len(ok) / len(records) if records else 0.0,
        "added": sum(r["added"] for r in records),
        "best_fitness": state.best_fitness,
        "generation_best_fitness": max((r["fitness"] for r in ok), default=None),
        "mean_fitness": float(np.mean([r["fitness"] for r in ok])) if ok else None,
        "best_val_loss": min(losses) if losses else None,
        "network_cells": net["cells_filled"],
        "network_coverage": net["coverage"],
        "qd_score": net["qd_score"],
        "prompt_cells": prm["cells_filled"],
        "prompt_coverage": prm["coverage"],
        "temperature_mean": float(np.mean(temps)) if temps else None,
        "temperature_min": min(temps) if temps else None,
        "temperature_max": max(temps) if temps else None,
        **exploration_metrics(mutations, len(search.instructions)),
        "duplicates": sum(r.get("duplicate_of") is not None for r in records),
        "at_chance": _at_chance_fraction(search.space, ok),
        **_llm_metrics(records),
        "generate_s": round(sum(float(r["timings"].get("generate", 0.0)) for r in records), 4),
        **_BLOCK_KEYS, **search.block_stats.get(generation, {}),
        **{f"status_{k}": v for k, v in Counter(r["status"] for r in records).items()},
    }


#: Every generation's row has these columns (None: not measured), so metrics.csv keeps them.
_BLOCK_KEYS = {"workers": None, "wall_s": None, "worker_busy_s": None,
               "worker_utilisation": None, "idle_straggler_s": None,
               "idle_no_candidate_s": None}


def _llm_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    fresh = [r for r in records if not r["llm"].get("cached")]
    return {
        "llm_requests": sum(1 for r in records if r["operator"] != "seed"),
        "llm_cache_hits": sum(bool(r["llm"].get("cached")) for r in records),
        "llm_failures": sum(r["status"] == Status.LLM_ERROR.value for r in records),
        "llm_prompt_tokens": sum(r["llm"]["prompt_tokens"] for r in fresh),
        "llm_completion_tokens": sum(r["llm"]["completion_tokens"] for r in fresh),
        "llm_seconds": round(sum(r["timings"].get("llm", 0.0) for r in records), 4),
    }


def summarize(search: Any, state: Any) -> dict[str, Any]:
    """The run summary written to ``summary.json``."""
    net, prm = state.network_archive.stats(), state.prompt_archive.stats()
    records = read_history(search.run_dir)
    s = search.settings
    clock = run_utilisation(records, search.workers)
    return {
        "ablation": s.ablation,
        "generator": search.generator.name,
        "generator_is_llm": bool(search.generator.is_llm),
        "space": search.space.name,
        "dataset": search.space.dataset,
        "seed": s.seed,
        "generations": state.generation,
        "candidates": len(records),
        "status_counts": dict(Counter(r["status"] for r in records)),
        "valid_fraction": (sum(r["status"] == "ok" for r in records) / len(records))
        if records else 0.0,
        "wall_seconds": round(state.wall_seconds, 2),
        # Scheduling (flat for loggers that keep scalars): the run after the seed.
        "schedule": s.schedule,
        "steady_lag": s.steady_lag if s.schedule == "steady" else None,
        "worker_utilisation": clock["worker_utilisation"],
        "time_to_first_result_s": clock["time_to_first_result_s"],
        "utilisation": clock,
        "network_archive": {
            "cells_filled": net["cells_filled"],
            "coverage": net["coverage"],
            "qd_score": net["qd_score"],
            "best_fitness": net["best_fitness"],
        },
        "prompt_archive": {
            "cells_filled": prm["cells_filled"],
            "coverage": prm["coverage"],
            "max_curiosity": prm["max_curiosity"],
        },
        "search": run_quality(search, records),
        # The kernel layers every candidate got (None: nb201 lookups, or a Ray evaluator
        # whose servers live in its actors).
        "isolation": getattr(search.space, "isolation_report", None),
        "descriptors_clipped": dict(state.clipped),
        "llm": {k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in sorted(state.llm_totals.items())},
        "elites": [_elite(search, e) for e in state.network_archive.top(10)],
    }


def _elite(search: Any, e: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidate_id": int(e["candidate_id"]),
        "generation": int(e["generation"]),
        "fitness": float(e["objective"]),
        "val_accuracy": float(e["val_accuracy"]),
        "params": int(e["params"]),
        "flops": int(e["flops"]),
        "descriptors": dict(zip(search.descriptors.names,
                                [float(v) for v in e["raw_measures"]], strict=True)),
    }


def run_quality(search: Any, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Run-level exploration and fitness-noise numbers (what `make bench-search` compares)."""
    mutations = [r for r in records if r["operator"] == Operator.MUTATION.value
                 and not r.get("warmup")]
    ok = [r for r in records if r["status"] == Status.OK.value]
    children = [r for r in records if r["operator"] != Operator.SEED.value]
    dups = sum(r.get("duplicate_of") is not None for r in children)
    return {
        **exploration_metrics(mutations, len(search.instructions)),
        "instructions_used": len({r["instruction_id"] for r in mutations}),
        "duplicate_fraction": dups / len(children) if children else 0.0,
        "distinct_evaluations": len(records) - dups,
        "at_chance_fraction": _at_chance_fraction(search.space, ok),
    }
