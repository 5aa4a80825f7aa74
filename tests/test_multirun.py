"""A real Hydra multirun from the command line: ablations x seeds, W&B offline, figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a Hydra multirun through the command line, then figures


def run_ablation(run) -> str:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["ablation"]["name"]


def test_multirun_with_wandb_offline_then_figures(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "LLMATIC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "llmatic", "-m", "ablation=mutation_only,crossover_only",
         "seed=0", "dataset=digits", "budget=smoke",
         "budget.generations=1", "budget.candidates_per_generation=4",
         "logger=wandb", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "history.jsonl").exists())
    assert len(runs) == 2
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["candidates"] == 1 + 4
        offline = list((run / "wandb").glob("offline-run-*"))
        assert len(offline) == 1  # a syncable offline run, nothing hung
        records = b"".join(f.read_bytes() for f in offline[0].glob("run-*.wandb"))
        # The run record (protobuf, stored as written): one W&B group for the whole sweep,
        # each run named by what varies, its config holding the ablation it ran.
        ablation = run_ablation(run)
        assert f"sweep-{sweep.name}".encode() in records
        assert f"{ablation}-p".encode() in records and b"-seed0" in records
        other = ({"mutation_only", "crossover_only"} - {ablation}).pop()
        assert f"{other}-p".encode() not in records
        assert list(offline[0].glob("files/media/table/elites_*.table.json"))
        assert list(offline[0].glob("files/media/images/*heatmap*.png"))
        assert (run / "figures" / "network_heatmap.png").exists()

    # llmatic-figures in this process (its command line as a process: test_promises.py)
    from llmatic.cli.figures import main as figures_main

    out = tmp_path / "figures"
    assert figures_main([str(sweep), "--out", str(out)]) == 0
    data = json.loads((out / "figures_data.json").read_text())
    assert {"mutation_only", "crossover_only"} <= set(json.dumps(data).split('"'))
    assert (out / "best_fitness.png").exists() and (out / "best_fitness.pdf").exists()
