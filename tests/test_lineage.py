"""Lineage: a candidate's ancestry from the run history, its diffs, its table and its tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmatic.report.lineage import (
    LineageError,
    ancestry,
    best_candidate,
    lineage_markdown,
    step_diffs,
)


def record(cid, gen, parents, fitness, *, operator="mutation", instruction="Add a layer",
           temperature=0.5, status="ok", source_file=None, arch=None):
    return {"candidate_id": cid, "generation": gen, "parents": parents, "operator": operator,
            "instruction": instruction, "instruction_id": 1, "temperature": temperature,
            "status": status, "fitness": fitness, "val_accuracy": fitness,
            "duplicate_of": None, "source_file": source_file, "arch": arch}


# 0 (seed) -> 1, 2 -> 3 = crossover(1, 2) -> 5; 4 is a sibling that is not an ancestor.
HISTORY = [
    record(0, 0, [], 0.3, operator="seed", instruction="", temperature=0.6),
    record(1, 1, [0], 0.6, instruction="Add a convolutional layer"),
    record(2, 1, [0], 0.5, instruction="Add a normalization layer", temperature=0.8),
    record(3, 2, [1, 2], 0.7, operator="crossover", instruction="", temperature=0.25),
    record(4, 2, [1], None, status="runtime_error"),
    record(5, 3, [3], 0.9, instruction="Increase the width", temperature=0.35),
]


def test_ancestry_walks_every_parent_back_to_the_seed_oldest_first():
    steps = ancestry(HISTORY, 5)
    assert [s["candidate_id"] for s in steps] == [0, 1, 2, 3, 5]
    assert steps[0]["operator"] == "seed" and steps[3]["parents"] == [1, 2]
    assert [s["temperature"] for s in steps] == [0.6, 0.5, 0.8, 0.25, 0.35]
    assert [s["instruction"] for s in steps][-1] == "Increase the width"
    assert ancestry(HISTORY, 0) == [steps[0]]


def test_ancestry_names_a_missing_candidate_or_ancestor():
    with pytest.raises(LineageError, match="candidate 42 is not in the run history"):
        ancestry(HISTORY, 42)
    broken = [r for r in HISTORY if r["candidate_id"] != 2]
    with pytest.raises(LineageError, match="candidate 2, an ancestor of 5"):
        ancestry(broken, 5)


def test_best_candidate_is_the_fittest_that_trained_earliest_on_a_tie():
    assert best_candidate(HISTORY) == 5
    tie = HISTORY + [record(6, 3, [5], 0.9)]
    assert best_candidate(tie) == 5
    with pytest.raises(LineageError, match="no candidate of this run trained"):
        best_candidate([record(0, 0, [], None, status="syntax_error")])


def test_step_diffs_show_what_each_instruction_changed(tmp_path: Path):
    sources = {0: "a = 1\nb = 2\n", 1: "a = 1\nb = 3\n", 2: "a = 1\nb = 2\n", 3: "a = 4\nb = 3\n",
               5: "a = 4\nb = 3\nc = 5\n"}
    (tmp_path / "candidates").mkdir()
    history = []
    for r in HISTORY:
        name = f"candidates/c{r['candidate_id']}.py"
        if r["candidate_id"] in sources:
            (tmp_path / name).write_text(sources[r["candidate_id"]])
        history.append({**r, "source_file": name})
    diffs = step_diffs(tmp_path, ancestry(history, 5))
    assert [(d["parent"], d["child"]) for d in diffs] == [(0, 1), (0, 2), (1, 3), (2, 3), (3, 5)]
    by_edge = {(d["parent"], d["child"]): d["diff"] for d in diffs}
    assert "-b = 2\n+b = 3\n" in by_edge[(0, 1)]
    assert by_edge[(0, 2)] == ""  # no change
    assert "+c = 5" in by_edge[(3, 5)] and by_edge[(3, 5)].startswith("--- candidate 3")
    assert diffs[-1]["instruction"] == "Increase the width"


def test_nb201_cells_diff_as_arch_strings_one_node_per_line(tmp_path: Path):
    a = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    b = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    (tmp_path / "seed.py").write_text("class Cell(nn.Module):\n    pass\n")  # the seed's text
    history = [record(0, 0, [], 0.5, operator="seed", arch=a, source_file="seed.py"),
               record(1, 1, [0], 0.6, arch=b)]
    (diff,) = step_diffs(tmp_path, ancestry(history, 1))
    assert "class Cell" not in diff["diff"]  # cells are compared as cells
    assert "-|skip_connect~0|none~1|none~2|" in diff["diff"]
    assert "+|skip_connect~0|none~1|avg_pool_3x3~2|" in diff["diff"]


def test_lineage_markdown_has_one_row_per_step():
    table = lineage_markdown(ancestry(HISTORY, 5))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 5
    assert "| 3 | 2 | crossover | 1, 2 |" in table
    assert "| 5 | 3 | mutation | 3 | Increase the width | 0.35 | 0.9000 |" in table


def test_the_tree_draws_one_node_per_step_and_one_labelled_edge_per_parent():
    import matplotlib

    matplotlib.use("Agg")
    from llmatic.report.figures.lineage import plot_lineage

    fig = plot_lineage(ancestry(HISTORY, 5), title="t")
    ax = fig.axes[0]
    nodes = [c for c in ax.collections if len(c.get_offsets()) == 1]
    assert len(nodes) == 5
    texts = [t.get_text() for t in ax.texts]
    assert sum("T=" in t for t in texts) == 5  # one label per parent link
    assert any(t.startswith("crossover") for t in texts)
    assert any(t.startswith("Increase the width") for t in texts)
    assert {t for t in texts if t.isdigit()} == {"0", "1", "2", "3", "5"}
    # Coloured by fitness (nodes are drawn oldest first): the colour map at each fitness.
    from matplotlib import colormaps

    fitness = [0.3, 0.6, 0.5, 0.7, 0.9]
    want = [colormaps["viridis"]((f - 0.3) / 0.6) for f in fitness]
    faces = [float(v) for c in nodes for v in c.get_facecolor()[0]]
    assert faces == pytest.approx([float(v) for w in want for v in w], abs=0.01)  # 256 bins


def test_the_tree_keeps_each_chain_level_so_edges_do_not_cross():
    import matplotlib

    matplotlib.use("Agg")
    from llmatic.report.figures.lineage import plot_lineage

    # Two chains from the seed (1 -> 4 and 2 -> 3; 3 has the lower id but the lower parent).
    history = [record(0, 0, [], 0.3, operator="seed"), record(1, 1, [0], 0.5),
               record(2, 1, [0], 0.4), record(3, 2, [2], 0.6), record(4, 2, [1], 0.7),
               record(5, 3, [3, 4], 0.8, operator="crossover")]
    ax = plot_lineage(ancestry(history, 5)).axes[0]
    y = {int(t.get_text()): t.get_position()[1] for t in ax.texts if t.get_text().isdigit()}
    assert y[4] == y[1] and y[3] == y[2] and y[1] != y[2]


def test_lineage_json_round_trips(tmp_path: Path):
    steps = ancestry(HISTORY, 5)
    path = tmp_path / "lineage.json"
    path.write_text(json.dumps({"steps": steps}))
    assert json.loads(path.read_text())["steps"] == steps


@pytest.mark.slow  # reads the session's smoke search
def test_the_end_of_a_run_draws_the_lineage_for_loggers_that_show_images(smoke_run, tmp_path):
    """What WandbLogger.finish logs as images (``summary["heatmaps"]``) includes the lineage."""
    import shutil

    from llmatic.search.loop import _render_heatmaps

    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run, ignore=shutil.ignore_patterns("jobs", "figures"))
    paths = [Path(p) for p in _render_heatmaps(run)]
    assert [p.name for p in paths] == ["network_heatmap.png", "prompt_heatmap.png",
                                       "lineage.png"]
    assert paths[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
