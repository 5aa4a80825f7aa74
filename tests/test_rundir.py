"""llmatic.rundir: one reader per run-directory file, and runs from before the layout move.

``tests/fixtures/run_v0_1`` is a real run directory written by llmatic 0.1 (commit eda8656, the
last before the package layout): ``budget=smoke sandbox.workers=2 sandbox.timeout_s=60
budget.generations=1``, seed 0. Its checkpoint pickles ``llmatic.search.SearchState``,
``llmatic.archives.NetworkArchive`` and ``llmatic.temperature.AdaptiveTemperature``; its
config names ``llmatic.loggers.CSVLogger`` and ``llmatic.data.DigitsDataModule``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SMOKE, compose_config

from llmatic import rundir
from llmatic.errors import RunDirectoryError

OLD_RUN = Path(__file__).parent / "fixtures" / "run_v0_1"


def _without_timings(records):
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


def test_an_old_checkpoint_loads_into_todays_classes():
    from llmatic.qd import AdaptiveTemperature, NetworkArchive
    from llmatic.search import SearchState

    state = rundir.read_checkpoint(OLD_RUN)
    assert type(state) is SearchState
    assert type(state.network_archive) is NetworkArchive
    assert type(state.temperature) is AdaptiveTemperature
    assert state.generation == 1 and len(state.network_archive) >= 1


def test_old_config_targets_are_brought_up_to_date():
    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(OmegaConf.load(OLD_RUN / rundir.CONFIG))
    assert saved["logger"]["_target_"] == "llmatic.loggers.CSVLogger"
    new = rundir.upgrade_targets(saved)
    assert new["logger"]["_target_"] == "llmatic.report.loggers.CSVLogger"
    assert new["dataset"]["_target_"] == "llmatic.train.data.DigitsDataModule"
    assert new["llm"]["_target_"] == saved["llm"]["_target_"]  # did not move


def test_read_history_skips_only_a_torn_last_line(tmp_path):
    good = [{"candidate_id": 0}, {"candidate_id": 1}]
    text = "".join(json.dumps(r) + "\n" for r in good)
    (tmp_path / rundir.HISTORY).write_text(text + '{"candidate_id": 2, "sta')
    assert rundir.read_history(tmp_path) == good
    (tmp_path / rundir.HISTORY).write_text('{"candidate_id": 0}\n{broken\n' + text)
    with pytest.raises(RunDirectoryError, match="line 2"):
        rundir.read_history(tmp_path)
    assert rundir.read_history(tmp_path / "nowhere") == []


@pytest.mark.slow
def test_a_run_from_before_the_layout_move_resumes_to_the_same_history(
        tmp_path, smoke_run, shared_sandbox):
    """Resumed with today's code, the 0.1 run ends exactly as today's straight run."""
    from llmatic.config import resume_config, run_search

    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    overrides = [f"resume={run}", "budget.generations=3"]
    cfg = resume_config(compose_config(*SMOKE, *overrides), overrides)
    run_search(cfg, run, resume=True, show_progress=False, sandbox=shared_sandbox)
    straight, _, _ = smoke_run
    assert _without_timings(rundir.read_history(run)) == _without_timings(
        rundir.read_history(straight))


def test_a_failed_write_names_the_file_and_how_to_continue(tmp_path):
    # A directory in place of the file: the write fails (as root, permissions would not).
    target = tmp_path / "candidates" / "g001_c00001.py"
    target.mkdir(parents=True)
    with pytest.raises(RunDirectoryError) as err:
        rundir.write_run_file(target, "class Net: ...", tmp_path)
    message = str(err.value)
    assert str(target) in message
    assert f"free space, then resume with `llmatic resume={tmp_path}`" in message


def test_a_failed_atomic_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    rundir.atomic_write_bytes(path, b"old")

    def full_disk(*args, **kwargs):  # the OS boundary only: fsync reports ENOSPC
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full_disk)
    with pytest.raises(OSError):
        rundir.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_history_tail_reads_what_read_history_reads_as_the_file_grows(tmp_path):
    from llmatic.rundir import HISTORY, HistoryTail, read_history

    path = tmp_path / HISTORY
    tail = HistoryTail(tmp_path)
    assert tail.records() == []
    with open(path, "w") as fh:
        fh.write('{"candidate_id": 0}\n{"candidate_id": 1}\n{"candidate_')  # torn last line
    assert tail.records() == read_history(tmp_path) == [{"candidate_id": 0}, {"candidate_id": 1}]
    with open(path, "a") as fh:
        fh.write('id": 2}\n')  # the line completes: taken once, whole
    assert [r["candidate_id"] for r in tail.records()] == [0, 1, 2]
    assert tail.records() == read_history(tmp_path)
    path.write_text('{"candidate_id": 0}\n')  # a resume cut the file: read from the start
    assert tail.records() == [{"candidate_id": 0}]
    with open(path, "a") as fh:
        fh.write("not json\n")
    with pytest.raises(RunDirectoryError, match="record 2 is not JSON"):
        tail.records()
