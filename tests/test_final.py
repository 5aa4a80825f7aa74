"""``llmatic-final``: retrain the best elites over several seeds, score them on the test split."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil

import pytest

from llmatic.cli.final import main
from llmatic.report.final import cell, fmt


@pytest.fixture(scope="module")
def cli_run(smoke_run, tmp_path_factory):
    """``llmatic-final RUN --top-k 2 --epochs 2 --seeds 2`` on a copy of the smoke run."""
    run_dir, summary, _ = smoke_run
    run = tmp_path_factory.mktemp("final") / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("jobs", "final", "export"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(run), "--top-k", "2", "--epochs", "2", "--seeds", "2"])
    return run, summary, code, out.getvalue(), err.getvalue()


@pytest.mark.slow  # a search, then 2 elites x 2 seeds retrained in the sandbox
def test_cli_retrains_top_k_elites_over_seeds_for_epochs(cli_run):
    run, summary, code, out, err = cli_run
    assert code == 0, err
    final = json.loads((run / "final" / "final.json").read_text())
    assert final["epochs"] == 2 and final["recipe"]["epochs"] == 2  # --epochs
    assert final["seeds"] == 2  # --seeds
    rows = final["rows"]
    assert [r["rank"] for r in rows] == [1, 2]  # --top-k
    assert [r["candidate_id"] for r in rows] == [e["candidate_id"] for e in summary["elites"][:2]]
    for row in rows:
        assert row["status"] == "ok" and len(row["runs"]) == 2
        assert all(r["status"] == "ok" and r["test_accuracy"] > 0.3 for r in row["runs"])
        assert row["test_accuracy"] == pytest.approx(
            sum(r["test_accuracy"] for r in row["runs"]) / 2)
    table = list(csv.DictReader(open(run / "final" / "elites.csv")))
    assert [int(r["candidate_id"]) for r in table] == [r["candidate_id"] for r in rows]
    assert [len(r["test_accuracies"].split(";")) for r in table] == [2, 2]
    md = (run / "final" / "elites.md").read_text()
    assert "test acc (mean ± std)" in md
    for row in rows:  # the same numbers, formatted the same way, in the printed table
        shown = f"{fmt(row['test_accuracy'])} ± {fmt(row['test_accuracy_std'])}"
        assert shown in md and shown in out


@pytest.mark.slow
def test_cli_says_what_it_is_doing_while_it_trains(cli_run):
    _, _, _, _, err = cli_run
    lines = err.splitlines()
    assert any("2 elite(s) x 2 seed(s) = 4 job(s) of 2 epoch(s)" in line for line in lines)
    done = [line for line in lines if line.startswith("llmatic-final: [")]
    assert [line.split("]")[0] for line in done] == [f"llmatic-final: [{k}/4" for k in
                                                     range(1, 5)]
    assert all("test accuracy" in line for line in done)


@pytest.mark.slow
def test_bad_seeds_and_top_k_are_refused_before_training(cli_run, capsys):
    run = cli_run[0]
    assert main([str(run), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert main([str(run), "--top-k", "0"]) == 2
    assert "--top-k must be >= 1" in capsys.readouterr().err


def test_final_rejects_a_directory_without_a_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_numbers_are_formatted_the_same_everywhere():
    assert [fmt(v) for v in (652, 10314, 2766848, 0.93751, None, float("nan"))] == [
        "652", "10,314", "2,766,848", "0.9375", "-", "-"]
    row = {"test_accuracy": 0.95, "test_accuracy_std": 0.0118, "seeds": 3, "seeds_ok": 2}
    assert cell(row, "test_accuracy") == "0.9500 ± 0.0118"
    assert cell(row, "seeds") == "2/3"  # one seed failed: said, not hidden
    assert cell({"test_accuracy": 0.95, "test_accuracy_std": None}, "test_accuracy") == "0.9500"
