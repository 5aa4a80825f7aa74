"""``llmatic-final``: retrain the best elites longer and score them on the test split."""

from __future__ import annotations

import csv

import pytest

from llmatic.cli.final import main
from llmatic.report import final_evaluation

pytestmark = pytest.mark.slow  # a search, then the final retrain of its elites


def test_final_evaluation_reports_test_accuracy(smoke_run):
    run_dir, summary, _ = smoke_run
    rows = final_evaluation(run_dir, top_k=2, epochs=3)
    assert [r["rank"] for r in rows] == [1, 2]
    assert [r["candidate_id"] for r in rows] == [e["candidate_id"] for e in summary["elites"][:2]]
    assert all(r["status"] == "ok" for r in rows)
    best = rows[0]
    assert 0.0 <= best["test_accuracy"] <= 1.0 and best["test_accuracy"] > 0.3
    table = list(csv.DictReader(open(run_dir / "final" / "elites.csv")))
    assert [int(r["candidate_id"]) for r in table] == [r["candidate_id"] for r in rows]
    assert "| rank |" in (run_dir / "final" / "elites.md").read_text()


def test_final_rejects_a_directory_without_a_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
