"""Loggers: csv always; W&B offline needs no network and leaves a syncable run."""

from __future__ import annotations

import csv

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
