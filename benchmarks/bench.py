"""Benchmark the search machinery: training path, framework overhead, sandbox, parallelism.

Measured side by side, in one run, on this machine (each key of ``bench.json`` is
``{value, target, meets_target, unit, description, machine, details}``, or ``value: null``
with a ``reason``):

``lightning_vs_plain``
    Median epoch time of our Lightning path (``NetModule`` + ``lightning.Trainer`` built from
    ``conf/trainer/cpu.yaml``, ``batch_loader`` over the ``DigitsDataModule`` train split)
    divided by a hand-written PyTorch loop over the same loader, network, batch size,
    optimizer (Adam 1e-3) and gradient clipping (norm 5.0, as ``cpu.yaml``). One process,
    one torch thread (as a sandboxed child), the first epoch of each run is warm-up.
    Target <= 1.05.
``framework_overhead``
    A real search (``run_search``, ``llm=rules``, digits, ``sandbox.workers=1`` so the
    accounting is exact) in a temp dir: ``1 - (sum(train) + sum(generate)) / wall``, where
    ``wall`` runs from the ``run_search`` call (sandbox start-up and imports included) to
    its return and ``generate`` is each candidate's share of its generation's batched
    generator call (sum = the generator's wall time). Target <= 0.03.
``sandbox_start_s``
    Per-candidate start cost of the pre-warmed fork server: wall time of ``Sandbox.run`` on
    a trivial job (tiny Net, epochs=0) minus the child's own stage timings
    (exec+instantiate+forward+count); median over many runs after warm-up. Target <= 0.2 s.
``workers2_vs_1``
    Candidates per minute of the same search with ``schedule=steady`` and
    ``sandbox.workers=2`` / with 1 (each worker's torch threads = cores / workers), timed
    from the seed's result to the last result (process start-up excluded). Target >= 1.8
    on 2 cores. ``details`` also has the paper's ``schedule=generational`` (same seed, same
    candidates; generations only) and ``schedule=pipelined`` (loop seconds) ratios.
``simulated_cluster``
    ``benchmarks/bench_cluster.py``: NAS-Bench-201 lookups that hold one of W workers for a
    lognormal time (median 0.04 s x W, sigma 0.5; sleeping), W = 2, 8, 32, 64, through the
    local pool and Ray. Value: worker utilisation of ``schedule=steady`` at 64 local workers
    in the steady phase (from the first generation's last result to the last candidate's
    start); target >= 0.90 (and >= 0.95 at 8, in ``details``), with
    ``schedule=generational`` in the same table.
``gpu_data_vs_dataloader``
    DataLoader epoch time / ``llmatic.train.device_data.DeviceBatches`` epoch time on the GPU;
    null without CUDA or without ``DeviceBatches``.
``hf_batched_vs_sequential``
    ``benchmarks/bench_llm.py``'s HF measurement (tiny random GPT-2, batch 8 vs batch 1).
``nb201_candidates_per_s``
    A NAS-Bench-201 search (``experiment=paper_nb201``, ``llm=rules``, a synthetic table of
    all 15,625 cells, 2,000 candidates): candidates per second over the search's wall time
    minus the time spent waiting for the generator (issue 7: >= 200).

Usage::

    .venv/bin/python benchmarks/bench.py [--out benchmarks/results/bench.json] [--quick]

Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

CONFIG_DIR = str(ROOT / "conf")

TARGETS = {
    "lightning_vs_plain": 1.05,
    "framework_overhead": 0.03,
    "sandbox_start_s": 0.2,
    "workers2_vs_1": 1.8,
    "gpu_data_vs_dataloader": 1.0,
    "hf_batched_vs_sequential": 4.0,
    "nb201_candidates_per_s": 200.0,
    "simulated_cluster": 0.90,
}
#: True: the value must be at most the target; False: at least.
AT_MOST = {"lightning_vs_plain": True, "framework_overhead": True, "sandbox_start_s": True,
           "workers2_vs_1": False, "gpu_data_vs_dataloader": False,
           "hf_batched_vs_sequential": False, "nb201_candidates_per_s": False,
           "simulated_cluster": False}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What every number depends on."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model or platform.processor() or None,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": gpu,
    }


def compose(*overrides: str):
    """Compose ``conf/search.yaml`` with overrides, as the CLI would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="search", overrides=list(overrides))


def entry(key: str, value: float | None, *, unit: str, description: str, mach: dict[str, Any],
          details: dict[str, Any] | None = None, reason: str | None = None) -> dict[str, Any]:
    """One key of bench.json."""
    target = TARGETS[key]
    if value is None:
        meets = None
    else:
        meets = value <= target if AT_MOST[key] else value >= target
    out: dict[str, Any] = {
        "value": None if value is None else round(float(value), 4),
        "target": target,
        "target_is": "at most" if AT_MOST[key] else "at least",
        "meets_target": meets,
        "unit": unit,
        "description": description,
        "machine": mach,
    }
    if reason is not None:
        out["reason"] = reason
    if details is not None:
        out["details"] = details
    return out


def failed(key: str, exc: BaseException, mach: dict[str, Any], unit: str) -> dict[str, Any]:
    """A key whose measurement raised: value null, the error as the reason."""
    logging.getLogger("bench").exception("%s failed", key)
    return entry(key, None, unit=unit, description="measurement failed", mach=mach,
                 reason=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# lightning_vs_plain
# --------------------------------------------------------------------------------------
def small_cnn() -> torch.nn.Module:
    """The network of the training-path benchmark (8x8 digits, 10 classes, ~0.33M params)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 48, 3, padding=1), nn.ReLU(),
        nn.Conv2d(48, 96, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(96, 96, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(96 * 4 * 4, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


NETWORK_TEXT = ("Conv(1->48,3x3)-ReLU-Conv(48->96,3x3)-ReLU-MaxPool2-Conv(96->96,3x3)-ReLU-"
                "Flatten-Linear(1536->128)-ReLU-Linear(128->10)")


def bench_lightning_vs_plain(args: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    """Median epoch time, Lightning path / hand-written loop (one process, one thread)."""
    import lightning as L
    import torch.nn.functional as F  # noqa: N812
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from llmatic.config import datamodule_kwargs
    from llmatic.train import DigitsDataModule, NetModule, batch_loader

    epochs = args.epochs
    cfg = compose(f"budget.epochs={epochs}")
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    optimizer_cfg = OmegaConf.to_container(cfg.module.optimizer, resolve=True)
    ds = datamodule_kwargs(cfg.dataset)
    ds.pop("_target_", None)
    dm = DigitsDataModule(**ds)
    dm.setup()
    train = dm.dataset("train")
    batch_size = int(cfg.dataset.batch_size)
    clip = trainer_cfg.get("gradient_clip_val")

    def plain(seed: int) -> list[float]:
        # A hand-written loop does not opt into deterministic algorithms (Lightning's
        # deterministic=true leaves them switched on for the process after a fit).
        torch.use_deterministic_algorithms(False)
        torch.manual_seed(seed)
        net = small_cnn()
        opt = instantiate(optimizer_cfg)(params=net.parameters())
        loader = batch_loader(train, batch_size, shuffle=True, seed=seed)
        net.train()
        times = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            for x, y in loader:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x), y)
                if not torch.isfinite(loss):  # as NetModule.training_step
                    raise RuntimeError("non-finite loss")
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
                opt.step()
                _ = float(loss.detach())  # NetModule keeps last_loss as a float
            times.append(time.perf_counter() - t0)
        return times

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.times.append(time.perf_counter() - self._t0)

    def lightning(seed: int, workdir: str, **override: Any) -> tuple[list[float], float]:
        torch.manual_seed(seed)
        net = small_cnn()
        module = NetModule(net=net, optimizer=instantiate(optimizer_cfg))
        timer = EpochTimer()
        trainer = instantiate({**trainer_cfg, **override}, max_epochs=epochs,
                              default_root_dir=workdir, callbacks=[timer])
        loader = batch_loader(train, batch_size, shuffle=True, seed=seed)
        net.train()
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        return timer.times, time.perf_counter() - t0

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a sandboxed child (sandbox.torch_threads=1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    plain_times: list[float] = []
    light_times: list[float] = []
    fit_seconds: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_lightning_") as tmp:
            # Interleaved rounds so drifting machine load hits both paths alike; the first
            # epoch of every run is warm-up and is dropped.
            for r in range(args.rounds):
                plain_times += plain(r)[1:]
                times, fit = lightning(r, tmp)
                light_times += times[1:]
                fit_seconds.append(fit)
            # Diagnostic: the same Lightning path with deterministic=false.
            nondet_times = lightning(0, tmp, deterministic=False)[0][1:]
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(False)
    p, lt = statistics.median(plain_times), statistics.median(light_times)
    steps = -(-len(train) // batch_size)
    return entry(
        "lightning_vs_plain", lt / p, unit="ratio of median epoch seconds (lower is better)",
        description=f"Lightning (NetModule + Trainer from conf/trainer/cpu.yaml) / plain "
                    f"PyTorch loop; network {NETWORK_TEXT}; digits train split "
                    f"{len(train)} images, batch {batch_size}, {steps} steps/epoch; Adam 1e-3, "
                    f"grad-norm clip {clip}; 1 torch thread",
        mach=mach,
        details={
            "plain_epoch_s_median": round(p, 4),
            "lightning_epoch_s_median": round(lt, 4),
            "plain_epoch_s": [round(t, 4) for t in plain_times],
            "lightning_epoch_s": [round(t, 4) for t in light_times],
            "lightning_fit_s_per_run": [round(t, 4) for t in fit_seconds],
            "lightning_fit_overhead_s_per_run": round(
                statistics.median(fit_seconds) - epochs * lt, 4),
            "per_step_overhead_ms": round(1000 * (lt - p) / steps, 3),
            "diagnostic_single_run_deterministic_false_epoch_s_median": round(
                statistics.median(nondet_times), 4),
            "diagnostic_single_run_ratio_deterministic_false": round(
                statistics.median(nondet_times) / p, 4),
            "epochs_per_run": epochs,
            "rounds": args.rounds,
            "params": sum(q.numel() for q in small_cnn().parameters()),
        },
    )


# --------------------------------------------------------------------------------------
# sandbox_start_s
# --------------------------------------------------------------------------------------
TINY_NET = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))
"""


def bench_sandbox_start(args: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    """Median (Sandbox.run wall time - in-child stage timings) of a trivial job."""
    from llmatic.extract import DEFAULT_ALLOWED_IMPORTS
    from llmatic.sandbox import Sandbox

    job = {
        "code": TINY_NET, "class_name": "Net", "input_shape": [1, 8, 8], "num_classes": 10,
        "data_dir": None, "epochs": 0, "batch_size": 64, "trainer": {}, "optimizer": {},
        "seed": 0, "allowed_imports": list(DEFAULT_ALLOWED_IMPORTS),
    }
    stages = ("exec", "instantiate", "forward", "count")
    starts, walls, childs, reported = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_sandbox_") as tmp, \
            Sandbox(timeout_s=60, memory_mb=4096) as box:
        t0 = time.perf_counter()
        box.run(job, Path(tmp) / "warm0")  # waits for the server's imports (not timed)
        server_ready_s = time.perf_counter() - t0
        for i in range(args.warmup_jobs):
            box.run(job, Path(tmp) / f"warm{i + 1}")
        for i in range(args.sandbox_runs):
            job_dir = Path(tmp) / f"job{i}"
            t0 = time.perf_counter()
            outcome = box.run(job, job_dir)
            wall = time.perf_counter() - t0
            res = outcome.result or {}
            if res.get("status") != "ok":
                raise RuntimeError(f"trivial job failed: {res.get('error') or outcome}")
            child = sum(float(res["timings"].get(s, 0.0)) for s in stages)
            walls.append(wall)
            childs.append(child)
            starts.append(wall - child)
            reported.append(outcome.seconds)
    value = statistics.median(starts)
    return entry(
        "sandbox_start_s", value, unit="seconds per candidate (median)",
        description="Sandbox.run wall time of a trivial job (tiny Linear Net, epochs=0) minus "
                    "the child's exec+instantiate+forward+count timings: job files, fork, "
                    "child set-up (limits, audit hook), result write/read and the server's "
                    "exit polling",
        mach=mach,
        details={
            "runs": len(starts),
            "start_s_min": round(min(starts), 4),
            "start_s_max": round(max(starts), 4),
            "run_wall_s_median": round(statistics.median(walls), 4),
            "child_stages_s_median": round(statistics.median(childs), 4),
            "outcome_seconds_median": round(statistics.median(reported), 4),
            "server_first_job_s_incl_imports": round(server_ready_s, 2),
        },
    )


# --------------------------------------------------------------------------------------
# Searches: framework_overhead and workers2_vs_1
# --------------------------------------------------------------------------------------
def timed_search(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Run one search with its own fresh sandbox; time the whole call and each generation."""
    from llmatic.config import run_search
    from llmatic.rundir import read_history
    from llmatic.search import engine as search_module

    cfg = compose(*overrides)
    gen_times: list[float] = []
    seed_times: list[float] = []
    original = search_module.Search.run_generation
    original_seed = search_module.Search.evaluate_seed

    def timed_seed(self, state):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        try:
            return original_seed(self, state)
        finally:
            seed_times.append(time.perf_counter() - t0)

    def timed_generation(self, state, generation, progress=None):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        try:
            return original(self, state, generation, progress)
        finally:
            gen_times.append(time.perf_counter() - t0)

    search_module.Search.run_generation = timed_generation
    search_module.Search.evaluate_seed = timed_seed
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the elites table
            summary = run_search(cfg, run_dir, show_progress=False)
        wall = time.perf_counter() - t0
    finally:
        search_module.Search.run_generation = original
        search_module.Search.evaluate_seed = original_seed
    history = read_history(run_dir)
    return {"cfg": cfg, "summary": summary, "wall": wall, "gen_times": gen_times,
            "seed_time": sum(seed_times),
            "history": history}


def overhead_breakdown(run: dict[str, Any], workers: int) -> dict[str, Any]:
    """Split a search's wall time into useful work and framework overhead.

    Per-candidate child times are divided by ``workers`` (exact for workers=1; for more it
    assumes the workers were always busy, so it under-counts idle slots as useful).
    """
    hist = run["history"]
    wall = run["wall"]
    loop = float(run["summary"]["wall_seconds"])  # seed evaluation + generations

    def total(key: str, records: list[dict[str, Any]] = hist) -> float:
        return sum(float(r["timings"].get(key) or 0.0) for r in records)

    evaluated = [r for r in hist if "sandbox" in r["timings"]]
    train = total("train")
    generate = total("generate")
    llm = total("llm")
    child_stage = {k: total(k) for k in ("exec", "instantiate", "forward", "count", "predict")}
    sandbox = total("sandbox", evaluated)
    in_child = sum(child_stage.values()) + train
    useful = train / workers + generate
    overhead = 1.0 - useful / wall
    seed_rec = [r for r in hist if r["operator"] == "seed"]
    seed_phase = float(run["seed_time"])
    seed_sandbox = total("sandbox", seed_rec)
    gens = sum(run["gen_times"])
    share = {
        # Search set-up (data, archives' CVT centroids, generator), per-generation metrics
        # and checkpoints, summary, heatmaps, sandbox close: outside state.wall_seconds.
        "startup_metrics_checkpoints_teardown_s": round(wall - loop, 3),
        "seed_phase_server_import_wait_s": round(seed_phase - seed_sandbox, 3),
        "generate_s": round(generate, 3),
        "train_s_per_worker": round(train / workers, 3),
        "descriptor_counting_s_per_worker": round(child_stage["count"] / workers, 3),
        "exec_instantiate_forward_s_per_worker": round(
            (child_stage["exec"] + child_stage["instantiate"] + child_stage["forward"])
            / workers, 3),
        "predict_s_per_worker": round(child_stage["predict"] / workers, 3),
        "sandbox_start_and_exit_s_per_worker": round((sandbox - in_child) / workers, 3),
    }
    accounted = sum(v for k, v in share.items()
                    if k != "startup_metrics_checkpoints_teardown_s")
    # What is left inside the generations: history/source writes, extraction, policy checks,
    # archive tells, thread pool; for workers>1 also any time a worker slot sat idle.
    share["tell_history_extract_idle_other_s"] = round(seed_phase + gens - accounted, 3)
    return {
        "formula": f"overhead = 1 - (sum(train) / workers + sum(generate)) / wall, "
                   f"workers={workers}; wall = run_search call incl. start-up",
        "overhead": round(overhead, 4),
        "wall_s": round(wall, 3),
        "loop_s": round(loop, 3),
        "sum_train_s": round(train, 3),
        "sum_generate_s": round(generate, 3),
        "sum_llm_s": round(llm, 3),
        "candidates": len(hist),
        "status_counts": run["summary"]["status_counts"],
        "breakdown_s": share,
        "breakdown_fraction_of_wall": {k: round(v / wall, 4) for k, v in share.items()},
        "overhead_excluding_startup": round(1.0 - useful / loop, 4),
    }


def loop_rate(run: dict[str, Any]) -> float:
    """Candidates per minute from the seed's result to the last result (any schedule)."""
    hist = run["history"]
    told = [r["timings"]["told_at"] for r in hist]
    return 60.0 * (len(hist) - 1) / (max(told) - told[0])


def bench_searches(args: argparse.Namespace, mach: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Identical searches with workers=1 and 2 per schedule: both keys come from them."""
    base = ["llm=rules", "dataset=digits", "llm.cache=false", f"seed={args.seed}",
            f"budget.generations={args.generations}",
            f"budget.candidates_per_generation={args.candidates}",
            f"budget.epochs={args.search_epochs}", "sandbox.timeout_s=120"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs, steady = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        # The first search starts this process's sandbox server (imports of torch and
        # Lightning); the next ones reuse it, as the jobs of a sweep do.
        cold = timed_search(base + ["sandbox.workers=1"], Path(tmp) / "cold")
        for workers in (1, 2):
            runs[workers] = timed_search(base + [f"sandbox.workers={workers}"],
                                         Path(tmp) / f"w{workers}")
        # The same with schedule=pipelined (no slot waits for a generation's slowest
        # candidate); other parents, so compared with itself: loop seconds, workers 2 vs 1.
        piped = {w: timed_search(base + [f"sandbox.workers={w}", "schedule=pipelined"],
                                 Path(tmp) / f"p{w}") for w in (1, 2)}
        # schedule=steady, each worker's torch threads = cores / workers (a fresh server
        # per thread count: the server's limits are part of its key).
        for w in (1, 2):
            steady[w] = timed_search(base + [f"sandbox.workers={w}", "schedule=steady",
                                             f"sandbox.torch_threads={max(1, cores // w)}"],
                                     Path(tmp) / f"s{w}")
    per_gen = args.candidates
    rates = {}
    for w, run in runs.items():
        seconds = sum(run["gen_times"])
        rates[w] = 60.0 * per_gen * len(run["gen_times"]) / seconds
    steady_rates = {w: loop_rate(r) for w, r in steady.items()}
    same = [r["status"] for r in runs[1]["history"]] == [r["status"] for r in runs[2]["history"]]
    budget = (f"{args.generations} generations x {args.candidates} candidates, "
              f"{args.search_epochs} epochs, digits, llm=rules, seed {args.seed}")
    workers = entry(
        "workers2_vs_1", steady_rates[2] / steady_rates[1],
        unit="ratio of candidates per minute",
        description=f"schedule=steady, candidates/min from the seed's result to the last "
                    f"result, sandbox.workers=2 (torch_threads={max(1, cores // 2)}) / 1 "
                    f"(torch_threads={cores}); {budget}",
        mach=mach,
        details={
            "steady_candidates_per_min": {str(w): round(v, 2) for w, v in steady_rates.items()},
            "steady_utilisation": {str(w): r["summary"]["worker_utilisation"]
                                   for w, r in steady.items()},
            "generational_ratio": round(rates[2] / rates[1], 4),
            "candidates_per_min_workers1": round(rates[1], 2),
            "candidates_per_min_workers2": round(rates[2], 2),
            "generation_s_workers1": [round(t, 3) for t in runs[1]["gen_times"]],
            "generation_s_workers2": [round(t, 3) for t in runs[2]["gen_times"]],
            "generational_utilisation": {str(w): r["summary"]["worker_utilisation"]
                                         for w, r in runs.items()},
            "same_candidate_statuses": same,
            "pipelined_ratio": round(
                float(piped[1]["summary"]["wall_seconds"])
                / float(piped[2]["summary"]["wall_seconds"]), 4),
            "pipelined_loop_s": {
                str(w): round(float(r["summary"]["wall_seconds"]), 3) for w, r in piped.items()},
        },
    )
    b_cold = overhead_breakdown(cold, 1)
    b1 = overhead_breakdown(runs[1], 1)
    b2 = overhead_breakdown(runs[2], 2)
    overhead = entry(
        "framework_overhead", b_cold["overhead"], unit="fraction of wall time",
        description=f"1 - (sum(train) + sum(generate)) / wall of a real search with "
                    f"sandbox.workers=1 (exact accounting: one candidate at a time); wall "
                    f"includes sandbox start-up (imports of torch/Lightning in the server); "
                    f"details.warm_server: the same search when the process's server is "
                    f"already up (every job of a sweep after the first); {budget}",
        mach=mach,
        details={"workers1": b_cold, "warm_server": b1["overhead"],
                 "workers1_warm_server": b1, "workers2_approx": b2,
                 "time_to_first_result_s": {
                     "cold": cold["summary"]["time_to_first_result_s"],
                     "warm": runs[1]["summary"]["time_to_first_result_s"]}},
    )
    return overhead, workers


def bench_simulated_cluster(args: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    """Worker utilisation per schedule x worker count on a simulated cluster."""
    from bench_cluster import bench_cluster, format_table

    res = bench_cluster(workers=args.cluster_workers,
                        median_per_worker_s=args.cluster_median_per_worker_s,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    local = res["table"]["local"]
    top = str(max(args.cluster_workers))
    eight = local["steady"].get("8", {}).get("steady_phase")
    res["steady_8_workers_steady_phase"] = eight
    res["steady_8_workers_meets_0.95"] = None if eight is None else eight >= 0.95
    res["text"] = format_table(res).splitlines()
    return entry(
        "simulated_cluster", local["steady"][top]["steady_phase"], unit="worker utilisation",
        description=f"schedule=steady, {top} simulated workers (local pool), steady phase "
                    f"(no ramp-up, no final drain); lognormal durations, median "
                    f"{args.cluster_median_per_worker_s} s x workers, sigma 0.5 (scaled down "
                    "from training minutes); the table in details (generational beside it, "
                    "Ray when installed)",
        mach=mach, details=res,
    )


def bench_nb201(args: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    """The nb201 search's evaluation rate, excluding generator time."""
    from llmatic.config import run_search
    from llmatic.nb201.table import write_synthetic_table

    with tempfile.TemporaryDirectory(prefix="bench_nb201_") as tmp:
        table = Path(tmp) / "synthetic.csv"
        write_synthetic_table(table)
        cfg = compose("experiment=paper_nb201", f"nb201.table={table}", "llm=rules",
                      "nb201.baselines=[]", f"budget.generations={args.nb201_generations}",
                      f"seed={args.seed}")
        with contextlib.redirect_stdout(sys.stderr):
            summary = run_search(cfg, Path(tmp) / "run", show_progress=False)
    nb = summary["nb201"]
    return entry(
        "nb201_candidates_per_s", nb["candidates_per_second_excluding_llm"],
        unit="candidates per second",
        description=f"experiment=paper_nb201 llm=rules on a synthetic table, {nb['budget']} "
                    "candidates: budget / (wall - generator wait)",
        mach=mach,
        details={"budget": nb["budget"], "seconds_excluding_llm":
                 nb["search_seconds_excluding_llm"], "wall_seconds": summary["wall_seconds"]},
    )


# --------------------------------------------------------------------------------------
# gpu_data_vs_dataloader
# --------------------------------------------------------------------------------------
def bench_gpu_data(args: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    """DataLoader epoch / DeviceBatches epoch on CIFAR-10-shaped synthetic data."""
    key, unit = "gpu_data_vs_dataloader", "ratio of epoch seconds (DataLoader / device)"
    if not torch.cuda.is_available():
        return entry(key, None, unit=unit, description="GPU data path", mach=mach,
                     reason="no GPU (torch.cuda.is_available() is false)")
    try:
        from llmatic.train import DeviceBatches
    except ImportError as exc:
        return entry(key, None, unit=unit, description="GPU data path", mach=mach,
                     reason=f"llmatic.train.device_data.DeviceBatches not importable: {exc}")
    result = gpu_data_benchmark(DeviceBatches, n=args.gpu_images, epochs=args.gpu_epochs)
    return entry(key, result["ratio"], unit=unit,
                 description="one training epoch of a small CNN on synthetic CIFAR-10-shaped "
                             "uint8 data: batch_loader (host memory, per-batch copy) vs "
                             "DeviceBatches (device-resident)",
                 mach=mach, details=result)


def _make_device_batches(cls: Any, x: Any, y: Any, batch_size: int, norm: dict[str, Any],
                         device: torch.device) -> Any:
    """Build ``cls`` trying the plausible signatures (the API is another engineer's)."""
    import inspect

    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    for name, value in (("batch_size", batch_size), ("device", device), ("shuffle", True),
                        ("seed", 0), ("scale", norm["scale"]), ("mean", norm["mean"]),
                        ("std", norm["std"]), ("normalization", norm)):
        if name in params:
            kwargs[name] = value
    if "dataset" in params:
        from llmatic.train import BatchArrayDataset

        return cls(BatchArrayDataset(x, y, **norm), **kwargs)
    return cls(x, y, **kwargs)


def gpu_data_benchmark(device_batches_cls: Any | None, *, n: int = 50000, epochs: int = 3,
                       batch_size: int = 256) -> dict[str, Any]:
    """Median epoch seconds of both data paths (first epoch of each is warm-up)."""
    import numpy as np
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    from llmatic.train import BatchArrayDataset, batch_loader

    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    norm = {"scale": 1 / 255, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 8 * 8, 10)).to(device)

    def epoch_times(batches_fn) -> list[float]:  # noqa: ANN001
        model = net()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        times = []
        for _ in range(epochs + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for xb, yb in batches_fn():
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return times[1:]

    loader = batch_loader(BatchArrayDataset(x, y, **norm), batch_size, shuffle=True, seed=0)
    host = epoch_times(lambda: loader)
    h = statistics.median(host)
    out = {"images": n, "batch_size": batch_size, "epochs": epochs,
           "dataloader_epoch_s": round(h, 4),
           "dataloader_epoch_s_all": [round(t, 4) for t in host],
           "device_epoch_s": None, "ratio": None}
    if device_batches_cls is None:  # DeviceBatches not available: the DataLoader path only
        return out
    dev_batches = _make_device_batches(device_batches_cls, x, y, batch_size, norm, device)
    dev = epoch_times(lambda: dev_batches)
    d = statistics.median(dev)
    out.update(device_epoch_s=round(d, 4), device_epoch_s_all=[round(t, 4) for t in dev],
               ratio=round(h / d, 3))
    return out


# --------------------------------------------------------------------------------------
# hf_batched_vs_sequential
# --------------------------------------------------------------------------------------
def bench_hf(args: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    """Reuse bench_llm.bench_hf with smaller sizes."""
    import bench_llm

    ns = argparse.Namespace(requests=args.hf_requests, max_new_tokens=args.hf_tokens,
                            batch_size=8, repeats=args.hf_repeats)
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as bench_llm.py's default
    try:
        res = bench_llm.bench_hf(ns)
    finally:
        torch.set_num_threads(old)
    return entry("hf_batched_vs_sequential", res["ratio"],
                 unit="ratio of completions per second (batch 8 / batch 1)",
                 description=f"benchmarks/bench_llm.py bench_hf: {res['model']}, "
                             f"{res['requests']} requests x {res['max_new_tokens']} tokens, "
                             "1 torch thread",
                 mach=mach, details=res)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def table(result: dict[str, Any]) -> str:
    """One line per key: value, target, whether it is met."""
    rows = [("key", "value", "target", "ok", "unit / reason")]
    for key in TARGETS:
        e = result[key]
        if e["value"] is None:
            rows.append((key, "null", f"{'<=' if AT_MOST[key] else '>='} {e['target']:g}", "-",
                         e.get("reason", "")[:70]))
        else:
            rows.append((key, f"{e['value']:.4g}",
                         f"{'<=' if AT_MOST[key] else '>='} {e['target']:g}",
                         "yes" if e["meets_target"] else "NO", e["unit"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    m = result["machine"]
    lines.append(f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), torch {m['torch']}, "
                 f"GPU {m['gpu']}, load {m['load_average_1m']}")
    wd = result["workers2_vs_1"].get("details") or {}
    if wd.get("pipelined_ratio") is not None:
        lines.append(f"workers2_vs_1 with schedule=generational: {wd['generational_ratio']}, "
                     f"pipelined: {wd['pipelined_ratio']} (loop seconds "
                     f"{wd['pipelined_loop_s']}); steady utilisation "
                     f"{wd['steady_utilisation']}")
    sim = result["simulated_cluster"].get("details") or {}
    if sim.get("text"):
        lines.append("simulated_cluster, worker utilisation (whole run / steady phase):")
        lines += ["  " + t for t in sim["text"]]
    fo = result["framework_overhead"].get("details")
    if fo:
        b = fo["workers1"]
        lines.append(f"framework_overhead (workers=1): wall {b['wall_s']}s = train "
                     f"{b['sum_train_s']}s + generate {b['sum_generate_s']}s + overhead; "
                     f"breakdown (s): " + ", ".join(f"{k}={v}" for k, v in
                                                     b["breakdown_s"].items()))
        lines.append(f"  excluding start-up: {b['overhead_excluding_startup']}; with the "
                     f"process's server already up (a sweep's later jobs): "
                     f"{fo.get('warm_server')}; workers=2 approximation: "
                     f"{fo['workers2_approx']['overhead']}")
        lines.append(f"  time to the first result (s): {fo.get('time_to_first_result_s')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench.json"))
    parser.add_argument("--quick", action="store_true", help="shrink everything (smoke check)")
    parser.add_argument("--only", nargs="*", choices=list(TARGETS), default=None,
                        help="measure only these keys (the others are null)")
    args = parser.parse_args(argv)
    q = args.quick
    args.epochs = 3 if q else 6            # lightning_vs_plain: epochs per run (1st dropped)
    args.rounds = 1 if q else 3            # lightning_vs_plain: interleaved runs per path
    args.warmup_jobs = 2 if q else 5
    args.sandbox_runs = 5 if q else 30
    args.generations = 1 if q else 3
    args.candidates = 4 if q else 8
    args.nb201_generations = 2 if q else 20
    args.search_epochs = 1 if q else 4     # budget=default's epochs
    args.seed = 0
    args.gpu_images = 5000 if q else 50000
    args.gpu_epochs = 1 if q else 3
    args.hf_requests = 8 if q else 16
    args.hf_tokens = 16 if q else 32
    args.hf_repeats = 1 if q else 2
    args.cluster_workers = [2, 8] if q else [2, 8, 32, 64]
    args.cluster_median_per_worker_s = 0.04
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("llmatic").setLevel(logging.WARNING)

    mach = machine()
    result: dict[str, Any] = {"machine": mach, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "quick": q}
    want = set(args.only or TARGETS)

    def run(key: str, unit: str, fn, *a) -> None:  # noqa: ANN001
        if key not in want:
            result[key] = entry(key, None, unit=unit, description="not measured", mach=mach,
                                reason="skipped (--only)")
            return
        t0 = time.perf_counter()
        try:
            result[key] = fn(*a)
        except Exception as exc:  # noqa: BLE001 - one failure does not lose the others
            result[key] = failed(key, exc, mach, unit)
        print(f"[{key}] {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    run("lightning_vs_plain", "ratio", bench_lightning_vs_plain, args, mach)
    run("sandbox_start_s", "seconds", bench_sandbox_start, args, mach)
    if want & {"framework_overhead", "workers2_vs_1"}:
        t0 = time.perf_counter()
        try:
            result["framework_overhead"], result["workers2_vs_1"] = bench_searches(args, mach)
        except Exception as exc:  # noqa: BLE001
            result["framework_overhead"] = failed("framework_overhead", exc, mach, "fraction")
            result["workers2_vs_1"] = failed("workers2_vs_1", exc, mach, "ratio")
        print(f"[searches] {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    for key in ("framework_overhead", "workers2_vs_1"):
        if key not in want:
            result[key] = entry(key, None, unit="-", description="not measured", mach=mach,
                                reason="skipped (--only)")
    run("gpu_data_vs_dataloader", "ratio", bench_gpu_data, args, mach)
    run("hf_batched_vs_sequential", "ratio", bench_hf, args, mach)
    run("nb201_candidates_per_s", "candidates per second", bench_nb201, args, mach)
    run("simulated_cluster", "worker utilisation", bench_simulated_cluster, args, mach)

    result = {k: result[k] for k in ("machine", "time", "quick", *TARGETS)}
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
