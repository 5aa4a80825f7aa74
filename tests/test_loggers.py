"""Loggers: csv always; W&B offline needs no network and leaves a syncable run."""

from __future__ import annotations

import csv

import pytest

from llmatic.report import CSVLogger, WandbLogger


def test_csv_logger_appends_and_truncates_on_resume(tmp_path):
    log = CSVLogger()
    log.start(tmp_path, {})
    for g in (1, 2, 3):
        log.log_generation({"best_fitness": g / 10, "network_cells": g}, g)
    resumed = CSVLogger()
    resumed.start(tmp_path, {}, resumed=True)
    resumed.truncate(2)
    resumed.log_generation({"best_fitness": 0.9, "network_cells": 7}, 3)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["generation"] for r in rows] == ["1", "2", "3"]
    assert rows[-1]["network_cells"] == "7"


def test_wandb_offline_writes_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = WandbLogger(project="llmatic-test")
    log.start(tmp_path, {"seed": 0, "operators": {"p_mutation": 0.7}})
    log.log_generation({"best_fitness": 0.5, "network_cells": 3}, 1)
    log.finish({"candidates": 3})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())
    assert (tmp_path / "wandb_run_id.txt").read_text().strip() in runs[0].name


def test_tensorboard_writes_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from llmatic.report import TensorBoardLogger

    log = TensorBoardLogger()
    log.start(tmp_path, {"seed": 0})
    for g in (1, 2):
        log.log_generation({"best_fitness": g / 10, "network_cells": 3 * g, "note": "x"}, g)
    log.finish({})
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("network_cells")] == [3.0, 6.0]
    assert [e.step for e in acc.Scalars("best_fitness")] == [1, 2]


@pytest.mark.parametrize("name", ["wandb", "tensorboard"])
def test_every_logger_writes_metrics_csv_and_truncates_it_on_resume(name, tmp_path, monkeypatch):
    # W&B in disabled mode: no network, no login (the real client, no fake).
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from llmatic.report import TensorBoardLogger

    def make():
        return WandbLogger(project="llmatic-test") if name == "wandb" else TensorBoardLogger()

    log = make()
    log.start(tmp_path, {"seed": 0})
    for g in (1, 2, 3):
        log.log_generation({"best_fitness": g / 10, "network_cells": g}, g)
    log.finish({"candidates": 3})
    resumed = make()
    resumed.start(tmp_path, {"seed": 0}, resumed=True)
    resumed.truncate(2)
    resumed.log_generation({"best_fitness": 0.9, "network_cells": 7}, 3)
    resumed.finish({})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["generation"] for r in rows] == ["1", "2", "3"]
    assert [r["network_cells"] for r in rows] == ["1", "2", "7"]


@pytest.mark.slow  # a real search (about a minute on a loaded 2-core machine)
def test_a_search_with_tensorboard_writes_metrics_csv(tmp_path, shared_sandbox):
    from conftest import SMOKE, compose_config

    from llmatic.config import run_search

    cfg = compose_config(*SMOKE, "logger=tensorboard", "budget.generations=1",
                         "budget.candidates_per_generation=2")
    run_search(cfg, tmp_path, show_progress=False, sandbox=shared_sandbox)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["generation"] for r in rows] == ["1"]
    assert int(rows[0]["network_cells"]) >= 1
    assert (tmp_path / "tensorboard").is_dir()


def test_a_failed_metrics_write_stops_by_name_and_keeps_the_rows_written(tmp_path, monkeypatch):
    import builtins

    from llmatic.errors import RunDirectoryError

    log = CSVLogger()
    log.start(tmp_path, {})
    log.log_generation({"best_fitness": 0.1}, 1)
    real_open = builtins.open

    def appends_to_a_full_disk(path, mode="r", *args, **kwargs):
        # The append goes to /dev/full, where the kernel fails every write with ENOSPC.
        return real_open("/dev/full" if "a" in mode else path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", appends_to_a_full_disk)
    with pytest.raises(RunDirectoryError, match="metrics.csv .*No space.*free space"):
        log.log_generation({"best_fitness": 0.2}, 2)
    monkeypatch.undo()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["generation"] for r in rows] == ["1"]
