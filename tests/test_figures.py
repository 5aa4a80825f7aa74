"""llmatic.report.figures: real runs, numbers recomputed from history.jsonl, interval math, CLI,
notebook."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import SMOKE, compose_config

from llmatic.cli import figures as figures_cli
from llmatic.report import figures

# Two seeds of the full method and one of an ablation: groups too small for an interval
# (their figures show the seeds instead). Each search takes ~30 s on 2 cores.
RUNS = (("llmatic", 0), ("llmatic", 1), ("mutation_only", 0))
STEMS = ("best_fitness", "best_loss", "filled_niches", "valid_fraction")


# --------------------------------------------------------------------------------------
# Real runs, laid out like a Hydra multirun (multirun/DATE/TIME/N/)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def multirun(tmp_path_factory: pytest.TempPathFactory, shared_sandbox) -> Path:
    from llmatic.config import run_search

    root = tmp_path_factory.mktemp("figures_runs")
    sweep = root / "multirun" / "2026-01-01" / "12-00-00"
    for num, (ablation, seed) in enumerate(RUNS):
        cfg = compose_config(*SMOKE, "budget.generations=2", "budget.candidates_per_generation=4",
                             f"ablation={ablation}", f"seed={seed}")
        run_search(cfg, sweep / str(num), show_progress=False, sandbox=shared_sandbox)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture(scope="session")
def cli_out(multirun: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures_out")
    assert figures_cli.main([str(multirun), "--out", str(out)]) == 0
    return out


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "multirun" / "2026-01-01" / "12-00-00").glob("[0-9]*"))


def history_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def metrics_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def expected_series(run_dir: Path) -> dict[str, list[float]]:
    """Recomputed here, without llmatic.report.figures, from the run's own files."""
    records, rows = history_of(run_dir), metrics_of(run_dir)
    last = max(int(r["generation"]) for r in rows)
    ok = [r for r in records if r["status"] == "ok"]
    best_acc, best_loss, valid = [], [], []
    for g in range(last + 1):
        best_acc.append(max(r["val_accuracy"] for r in ok if r["generation"] <= g))
        best_loss.append(min(r["val_loss"] for r in ok if r["generation"] <= g))
        this = [r for r in records if r["generation"] == g]
        valid.append(sum(r["status"] == "ok" for r in this) / len(this))
    return {
        "best_val_accuracy": best_acc,
        "best_val_loss": best_loss,
        "valid_fraction": valid,
        "network_cells": [1.0] + [float(r["network_cells"]) for r in rows],
        "prompt_cells": [0.0] + [float(r["prompt_cells"]) for r in rows],
    }


@pytest.mark.slow
def test_cli_writes_every_figure_as_png_and_pdf(multirun, cli_out):
    stems = list(STEMS)
    for ablation, seeds in (("llmatic", (0, 1)), ("mutation_only", (0,))):
        for seed in seeds:
            stems += [f"{kind}_heatmap_{ablation}_seed{seed}" for kind in ("network", "prompt")]
    for stem in stems:
        png, pdf = cli_out / f"{stem}.png", cli_out / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert pdf.read_bytes()[:5] == b"%PDF-", pdf
    assert (cli_out / "figures_data.json").is_file()


@pytest.mark.slow
def test_cli_draws_the_lineage_of_each_runs_best_network(multirun, cli_out):
    from llmatic.report.figures.lineage import best_lineage_figure
    from llmatic.report.lineage import ancestry, best_candidate

    for ablation, seeds in (("llmatic", (0, 1)), ("mutation_only", (0,))):
        for seed in seeds:
            png = cli_out / f"lineage_{ablation}_seed{seed}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for run_dir in run_dirs(multirun):
        run = figures.load_run(run_dir)
        history = history_of(run_dir)
        best = max((r for r in history if r["status"] == "ok"),
                   key=lambda r: (r["fitness"], -r["candidate_id"]))
        assert best_candidate(history) == best["candidate_id"]
        ax = best_lineage_figure(run).axes[0]
        ids = sorted(int(t.get_text()) for t in ax.texts if t.get_text().isdigit())
        assert ids == [s["candidate_id"] for s in ancestry(history, best["candidate_id"])]
        assert 0 in ids  # back to the seed


@pytest.mark.slow
def test_figure_data_equals_values_recomputed_from_the_run_files(multirun, cli_out):
    data = json.loads((cli_out / "figures_data.json").read_text())
    assert list(data) == ["llmatic", "mutation_only"]
    dirs = run_dirs(multirun)
    groups = {"llmatic": {"0": dirs[0], "1": dirs[1]}, "mutation_only": {"0": dirs[2]}}
    for group, by_seed in groups.items():
        expected = {seed: expected_series(d) for seed, d in by_seed.items()}
        for metric in figures.SERIES:
            got = data[group][metric]
            assert got["generations"] == [0, 1, 2]
            assert set(got["per_seed"]) == set(by_seed)
            for seed in by_seed:
                assert got["per_seed"][seed] == pytest.approx(expected[seed][metric]), (
                    group, metric, seed)
            for g in got["generations"]:
                values = [expected[s][metric][g] for s in by_seed]
                assert got["mean"][g] == pytest.approx(statistics.mean(values))
                assert got["n"][g] == len(values)
                # One or two seeds: no interval (null in the JSON), not a t-band from 2 points.
                assert got["ci_low"][g] is None and got["ci_high"][g] is None


@pytest.mark.slow
def test_history_best_matches_the_search_own_metrics(multirun):
    # Fitness is validation accuracy here, so metrics.csv's best_fitness is the same curve.
    for run_dir in run_dirs(multirun):
        best = expected_series(run_dir)["best_val_accuracy"]
        logged = [float(r["best_fitness"]) for r in metrics_of(run_dir)]
        assert logged == pytest.approx(best[1:])
        run = figures.load_run(run_dir)
        assert figures.run_series(run)["valid_fraction"][0] == 1.0  # the seed network


@pytest.mark.slow
def test_cells_come_from_checkpoints_without_metrics_csv(multirun, tmp_path):
    import shutil

    src = run_dirs(multirun)[0]
    copy = tmp_path / "run"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("candidates", "data", "jobs"))
    (copy / "metrics.csv").unlink()  # as with logger=wandb
    series = figures.run_series(figures.load_run(copy))
    expected = expected_series(src)
    assert series["network_cells"] == expected["network_cells"]
    assert series["prompt_cells"] == expected["prompt_cells"]
    assert series["best_val_accuracy"] == pytest.approx(expected["best_val_accuracy"])


@pytest.mark.slow
def test_load_runs_finds_nested_runs_once(multirun):
    first = run_dirs(multirun)[0]
    runs = figures.load_runs([multirun, first])  # a parent and one of its runs: no duplicate
    assert [(r.ablation, r.seed) for r in runs] == list(RUNS)
    assert runs[0].p_mutation == 0.7 and runs[2].p_mutation == 1.0
    assert runs[0].generations == 2 and len(runs[0].history) == 1 + 2 * 4
    assert figures.newest_run(multirun) == run_dirs(multirun)[-1]  # the notebook's default


# --------------------------------------------------------------------------------------
# Hand-made numbers
# --------------------------------------------------------------------------------------
def test_mean_ci_is_a_bootstrap_interval_by_hand():
    # Three seeds: 1 of the 27 equally likely resamples is all 1s (3.7% > 2.5%), so the
    # exact bootstrap quantiles are the extremes.
    assert figures.mean_ci([1.0, 2.0, 3.0]) == (2.0, 1.0, 3.0)
    # Five seeds 0,0,0,0,1: a resample's mean is k/5 with k ~ Binomial(5, 0.2);
    # P(k=0) = 0.33 > 2.5% and P(k>=3) = 5.8% > 2.5% > P(k>=4) = 0.67%: interval [0, 0.6].
    assert figures.mean_ci([0.0, 0.0, 0.0, 0.0, 1.0]) == pytest.approx((0.2, 0.0, 0.6))
    nan = pytest.approx(math.nan, nan_ok=True)
    assert figures.mean_ci([1.0, math.nan, 3.0]) == (2.0, nan, nan)
    mean, low, high = figures.mean_ci([0.0, 1.0])  # two seeds: no interval
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    assert math.isnan(figures.mean_ci([0.5])[1])
    assert all(math.isnan(v) for v in figures.mean_ci([]))


def test_intervals_stay_inside_what_the_quantity_can_take():
    from scipy import stats

    accuracy = [0.2, 0.99, 1.0, 1.0]
    counts = [0.0, 0.0, 0.0, 9.0]
    for values, bounds in ((accuracy, (0.0, 1.0)), (counts, (0.0, math.inf))):
        mean = statistics.mean(values)
        half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / 2
        assert not (bounds[0] <= mean - half and mean + half <= bounds[1])  # a t-band leaves
        _, low, high = figures.mean_ci(values, bounds=bounds)
        assert bounds[0] <= min(values) <= low < mean < high <= max(values) <= bounds[1]
    assert figures.BOUNDS["best_val_accuracy"] == (0.0, 1.0)
    assert figures.mean_ci([2.0, 2.0, 2.0], bounds=(0.0, 1.0))[1:] == (1.0, 1.0)  # clipped


def test_aggregate_handles_runs_of_different_length():
    agg = figures.aggregate({"0": [1.0, 2.0, 3.0], "1": [3.0, 4.0], "2": [2.0, 3.0]})
    assert agg["generations"] == [0, 1, 2]
    assert agg["mean"] == pytest.approx([2.0, 3.0, 3.0])
    assert agg["n"] == [3, 3, 1]
    assert (agg["ci_low"][0], agg["ci_high"][0]) == (1.0, 3.0)
    assert math.isnan(agg["ci_low"][2]) and math.isnan(agg["ci_high"][2])
    assert "bootstrap" in agg["interval"]


def test_legends_say_how_many_seeds_a_curve_rests_on():
    a = {"best_val_accuracy": figures.aggregate({"0": [0.5, 0.9], "1": [0.6, 1.0]})}
    b = {"best_val_accuracy": figures.aggregate({str(i): [0.5, 0.9 + i / 20] for i in range(3)},
                                                bounds=(0.0, 1.0))}
    fig = figures.plot_metric({"two": a, "three": b}, "best_val_accuracy")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["two (n=2 seeds, too few for an interval)", "three (n=3 seeds)"]
    assert "bootstrap" in ax.get_title()
    band = ax.collections[-1].get_paths()[0].vertices  # the 3-seed group's band
    assert band[:, 1].max() <= 1.0 and band[:, 1].min() >= 0.5


def record(gen: int, status: str = "ok", acc: float | None = None, loss: float | None = None):
    return {"generation": gen, "status": status, "val_accuracy": acc, "val_loss": loss}


def hand_run(ablation: str, seed: int, p: float | None, history: list[dict],
             cells: list[tuple[int, int]]) -> figures.Run:
    metrics = [{"generation": g, "network_cells": n, "prompt_cells": c}
               for g, (n, c) in enumerate(cells, 1)]
    return figures.Run(path=f"hand/{ablation}/{seed}", ablation=ablation, seed=seed,
                       p_mutation=p, generator="rules", history=history, metrics=metrics,
                       config={"fitness": "accuracy"})


def test_runs_of_different_datasets_are_never_averaged_together():
    def on(dataset: str, seed: int) -> figures.Run:
        run = hand_run("llmatic", seed, 0.7, [record(0, acc=0.1 * (seed + 1))], cells=[])
        run.config = {"fitness": "accuracy", "space": "nb201", "nb201": {"dataset": dataset}}
        return run

    groups = figures.group_runs([on("cifar100", 0), on("cifar10", 0), on("cifar10", 1)])
    assert {k: len(v) for k, v in groups.items()} == {"llmatic cifar10": 2,
                                                      "llmatic cifar100": 1}
    same = figures.group_runs([on("cifar10", 0), on("cifar10", 1)])
    assert list(same) == ["llmatic"]  # one dataset: the label stays the ablation's


def test_series_groups_and_sweep_labels_on_hand_made_runs():
    a = hand_run("llmatic", 0, 0.3, [
        record(0, acc=0.5, loss=2.0),
        record(1, acc=0.4, loss=1.5), record(1, "timeout"), record(1, "syntax_error"),
        record(2, acc=0.7, loss=1.8), record(2, acc=0.6, loss=1.9),
    ], cells=[(2, 1), (4, 3)])
    b = hand_run("llmatic", 1, 0.3, [
        record(0, acc=0.3, loss=2.2), record(1, "crashed"), record(2, acc=0.5, loss=2.1),
    ], cells=[(1, 1), (2, 2)])
    c = hand_run("llmatic", 0, 0.7, [record(0, acc=0.2, loss=2.5)], cells=[])
    d = hand_run("mutation_only", 4, 1.0, [record(0, acc=0.1, loss=3.0)], cells=[])
    s = figures.run_series(a)
    assert s["best_val_accuracy"] == [0.5, 0.5, 0.7]
    assert s["best_val_loss"] == [2.0, 1.5, 1.5]
    assert s["valid_fraction"] == pytest.approx([1.0, 1 / 3, 1.0])
    assert s["network_cells"] == [1.0, 2.0, 4.0]
    assert s["prompt_cells"] == [0.0, 1.0, 3.0]
    assert figures.run_series(b)["valid_fraction"] == [1.0, 0.0, 1.0]

    data = figures.figure_data([d, c, b, a])
    assert list(data) == ["llmatic p=0.3", "llmatic p=0.7", "mutation_only"]
    acc = data["llmatic p=0.3"]["best_val_accuracy"]
    assert acc["per_seed"] == {"1": [0.3, 0.3, 0.5], "0": [0.5, 0.5, 0.7]}
    assert acc["mean"] == pytest.approx([0.4, 0.4, 0.6])
    assert math.isnan(acc["ci_high"][2])  # two seeds: no interval
    assert data["mutation_only"]["best_val_accuracy"]["n"] == [1]


def test_heatmaps_of_grid_archives_and_empty_prompt_archives(tmp_path):
    from types import SimpleNamespace

    from llmatic.qd import NetworkArchive, PromptArchive

    network = NetworkArchive(kind="grid", dims=(4, 4))
    for i, (w2d, flops) in enumerate([(0.1, 0.2), (0.6, 0.9), (0.9, 0.4)]):
        network.add(source="...", fitness=0.2 * i, measures=[w2d, flops],
                    raw_measures=[64 * w2d, 1.5 + 5.5 * flops], candidate_id=i, generation=i,
                    val_accuracy=0.2 * i, val_loss=1.0, params=10, flops=100)
    prompts = PromptArchive(num_instructions=13, t_min=0.1, t_max=1.0)
    prompts.credit(3, 0.6, -1.0, False)
    prompts.credit(5, 0.2, 1.0, True)
    run = hand_run("llmatic", 0, 0.7, [record(0, acc=0.1, loss=2.0)], cells=[])
    run.config.update({
        "descriptors": {"names": ["width_to_depth", "log10_flops"]},
        "operators": {"mutation_instructions": [f"Add layer {i} to improve the above network"
                                                for i in range(13)]},
        "temperature": {"min": 0.1, "max": 1.0},
    })
    state = SimpleNamespace(network_archive=network, prompt_archive=prompts)
    net = figures.plot_network_heatmap(run, state)  # grid: scatter of raw descriptors
    assert net.axes[0].get_xlabel() == "width_to_depth"
    assert max(net.axes[0].collections[0].get_offsets()[:, 0]) == pytest.approx(64 * 0.9)
    prompt = figures.plot_prompt_heatmap(run, state)
    assert prompt.axes[0].get_yticklabels()[3].get_text() == "3: Add layer 3"
    empty = SimpleNamespace(network_archive=network,
                            prompt_archive=PromptArchive(num_instructions=13, t_min=0.1,
                                                         t_max=1.0))
    written = figures.save_figure(net, tmp_path, "net") + figures.save_figure(
        figures.plot_prompt_heatmap(run, empty), tmp_path, "empty")
    assert all(p.stat().st_size > 0 for p in written)


def test_write_data_is_strict_json(tmp_path):
    path = figures.write_data({"g": {"m": {"mean": [1.0, math.nan]}}}, tmp_path / "d.json")
    assert json.loads(path.read_text()) == {"g": {"m": {"mean": [1.0, None]}}}


# --------------------------------------------------------------------------------------
# CLI errors and W&B (a fake API: the real one needs network)
# --------------------------------------------------------------------------------------
def test_no_runs_is_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert figures_cli.main([str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err
    assert figures_cli.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert figures_cli.main([]) == 2


class FakeRemoteRun:
    id = "abc123"
    config = {"ablation": {"name": "llmatic", "p_mutation": None}, "seed": 3,
              "operators": {"p_mutation": 0.7}, "fitness": "accuracy"}

    def scan_history(self):
        return [
            {"_step": 1, "best_fitness": 0.5, "best_val_loss": 1.9, "network_cells": 3,
             "prompt_cells": 2, "valid_fraction": 0.75},
            {"_step": 2, "best_fitness": 0.6, "best_val_loss": 2.0, "network_cells": 5,
             "prompt_cells": 4, "valid_fraction": 1.0},
        ]


class FakeApi:
    def __init__(self, fail: bool = False):
        self.fail = fail

    def runs(self, path):
        if self.fail:
            raise ConnectionError("api.wandb.ai unreachable")
        return [FakeRemoteRun()]


def test_wandb_runs_become_curves_from_generation_1():
    (run,) = figures.load_wandb_runs("me/llmatic", api=FakeApi())
    assert (run.ablation, run.seed, run.p_mutation) == ("llmatic", 3, 0.7)
    s = figures.run_series(run)
    assert math.isnan(s["best_val_accuracy"][0])
    assert s["best_val_accuracy"][1:] == [0.5, 0.6]
    assert s["best_val_loss"][1:] == [1.9, 1.9]
    assert s["network_cells"][1:] == [3.0, 5.0]


def test_wandb_unreachable_is_a_clear_error():
    with pytest.raises(figures.FiguresError, match="could not read runs of W&B project"):
        figures.load_wandb_runs("me/llmatic", api=FakeApi(fail=True))
    assert figures_cli.main(["--wandb", "no-slash"]) == 2


# --------------------------------------------------------------------------------------
# The notebook
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_notebook_executes_on_one_run(multirun, monkeypatch):
    import nbclient  # dev dependencies: the notebook always runs in the test suite
    import nbformat
    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "figures.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    monkeypatch.setenv("LLMATIC_RUN_DIR", str(run_dirs(multirun)[0]))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(notebook.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 6  # 3 curves, niches, 2 heatmaps
    table = "text/html" if has_module("pandas") else "text"
    assert any(table in o.get("data", {}) or table in o for o in outputs)  # the elites table


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
