"""``llmatic-export``: a found network taken out of a run, and loaded where llmatic is not.

One tiny retrain is shared (a copy of the session's smoke run, ``llmatic-final --top-k 1
--seeds 2 --epochs 1``); the export is then loaded in a fresh Python process that imports
only torch (and onnxruntime for the ONNX graph) and must reproduce the reported test
accuracy. Bad input is checked on copies of the run: a named error, exit code 2, nothing
written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmatic.cli import export as export_cli
from llmatic.cli import final as final_cli

pytestmark = pytest.mark.slow  # a retrain in the sandbox (~30 s on 2 cores), then subprocesses

SEEDS = 2

# Runs in a fresh interpreter: imports only torch and the export's model.py.
LOAD_AND_SCORE = r"""
import json, sys
folder, x_path, y_path = sys.argv[1:4]
sys.path.insert(0, folder)
import torch
import model
net = model.load_model()
x = torch.load(x_path, weights_only=True)
y = torch.load(y_path, weights_only=True)
with torch.no_grad():
    logits = torch.cat([net(model.preprocess(x[i:i + 512])) for i in range(0, len(x), 512)])
accuracy = (logits.argmax(1) == y).double().mean().item()
mods = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"accuracy": accuracy, "modules": mods}))
"""

ONNX_SCORE = r"""
import json, sys
import numpy as np
import onnxruntime
folder, x_path, y_path, scale, mean, std = sys.argv[1:7]
x = np.load(x_path).astype(np.float32) * float(scale)
x = (x - np.array(json.loads(mean), np.float32).reshape(1, -1, 1, 1)) / np.array(
    json.loads(std), np.float32).reshape(1, -1, 1, 1)
y = np.load(y_path)
session = onnxruntime.InferenceSession(folder + "/model.onnx")
logits = np.concatenate([session.run(None, {"input": x[i:i + 512]})[0]
                         for i in range(0, len(x), 512)])
print(json.dumps({"accuracy": float((logits.argmax(1) == y).mean())}))
"""


def copy_run(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("jobs", "final", "export"))
    return target


@pytest.fixture(scope="module")
def retrained(smoke_run, tmp_path_factory):
    """A copy of the smoke run after ``llmatic-final --top-k 1 --seeds 2 --epochs 1``."""
    run_dir, _, cfg = smoke_run
    run = copy_run(run_dir, tmp_path_factory.mktemp("export") / "run")
    assert final_cli.main([str(run), "--top-k", "1", "--seeds", str(SEEDS), "--epochs", "1",
                           "--quiet"]) == 0
    return run, cfg


@pytest.fixture(scope="module")
def exported(retrained):
    run, _ = retrained
    assert export_cli.main([str(run)]) == 0
    final = json.loads((run / "final" / "final.json").read_text())
    folder = run / "export" / f"c{final['rows'][0]['candidate_id']:06d}"
    return folder, final


@pytest.fixture(scope="module")
def test_split(retrained, tmp_path_factory):
    """The test split's images and labels (the labels never leave this process otherwise)."""
    import torch
    from hydra.utils import instantiate

    from llmatic.config import datamodule_kwargs

    _, cfg = retrained
    dm = instantiate(datamodule_kwargs(cfg.dataset), _convert_="all")
    dm.setup()
    x, y = dm.splits["x_test"], dm.splits["y_test"]
    out = tmp_path_factory.mktemp("test_split")
    torch.save(torch.from_numpy(np.ascontiguousarray(x)), out / "x.pt")
    torch.save(torch.from_numpy(np.ascontiguousarray(y)), out / "y.pt")
    np.save(out / "x.npy", x)
    np.save(out / "y.npy", y)
    return out


def run_python(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-c", code, *args], capture_output=True,
                          text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_final_retrain_reports_every_seed_and_keeps_the_weights(retrained):
    run, _ = retrained
    final = json.loads((run / "final" / "final.json").read_text())
    (row,) = final["rows"]
    assert final["seeds"] == SEEDS and final["epochs"] == 1
    assert [r["seed_index"] for r in row["runs"]] == list(range(SEEDS))
    assert len({r["seed"] for r in row["runs"]}) == SEEDS  # different training seeds
    accs = [r["test_accuracy"] for r in row["runs"]]
    assert row["test_accuracy"] == pytest.approx(np.mean(accs))
    assert row["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    for r in row["runs"]:
        assert r["status"] == "ok" and (run / "final" / r["weights"]).is_file()
    assert "±" in (run / "final" / "elites.md").read_text()


def test_export_folder_holds_the_network_card_and_lineage(exported, retrained):
    folder, final = exported
    run, _ = retrained
    row = final["rows"][0]
    names = {p.name for p in folder.iterdir()}
    assert {"model.py", "weights.safetensors", "card.md", "lineage.json", "lineage.png",
            "export.json"} <= names
    model = (folder / "model.py").read_text()
    assert model.startswith('"""') and row["source"].strip() in model
    header = model.split('"""')[1]
    for needle in (str(run.resolve()), "Dataset: digits", "(1, 8, 8)", "10 classes",
                   "Fitness", "Test accuracy", "WARNING"):
        assert needle in header, needle
    card = (folder / "card.md").read_text()
    for needle in ("WARNING", "## Metrics", "## Training recipe", "## Lineage", "generator",
                   "test accuracy over the seeds", "± "):
        assert needle in card, needle
    for r in row["runs"]:  # every seed is in the card
        assert f"| {r['seed_index']} | {r['seed']} | ok |" in card
    numbers = json.loads((folder / "export.json").read_text())
    assert numbers["test_accuracy"] == row["runs"][0]["test_accuracy"]
    assert numbers["seed"] == row["runs"][0]["seed"]
    lineage = json.loads((folder / "lineage.json").read_text())
    steps = lineage["steps"]
    assert steps[0]["operator"] == "seed" and steps[-1]["candidate_id"] == row["candidate_id"]
    assert len(lineage["diffs"]) == sum(len(s["parents"]) for s in steps)
    if len(steps) > 1:
        assert "```diff" in card


def test_export_loads_and_scores_in_a_fresh_process_with_only_torch(exported, test_split):
    folder, final = exported
    reported = final["rows"][0]["runs"][0]["test_accuracy"]
    got = run_python(LOAD_AND_SCORE, str(folder), str(test_split / "x.pt"),
                     str(test_split / "y.pt"))
    assert abs(got["accuracy"] - reported) <= 1e-6
    assert not {"llmatic", "safetensors", "lightning", "hydra"} & set(got["modules"])


def test_onnx_graph_scores_the_same_where_onnxruntime_is_installed(exported, test_split):
    folder, final = exported
    if not (folder / "model.onnx").is_file():
        note = json.loads((folder / "export.json").read_text())["onnx_note"]
        assert note and note in (folder / "card.md").read_text()  # the card says why
        pytest.skip(f"no model.onnx (onnx not installed for the retrain?): {note}")
    pytest.importorskip("onnxruntime")
    norm = final["normalization"]
    got = run_python(ONNX_SCORE, str(folder), str(test_split / "x.npy"),
                     str(test_split / "y.npy"), str(norm["scale"]), json.dumps(norm["mean"]),
                     json.dumps(norm["std"]))
    assert abs(got["accuracy"] - final["rows"][0]["runs"][0]["test_accuracy"]) <= 1e-3


def test_the_weights_are_safetensors_the_package_reads(exported):
    from safetensors.torch import load_file

    folder, _ = exported
    tensors = load_file(str(folder / "weights.safetensors"))
    assert tensors and all(t.device.type == "cpu" for t in tensors.values())


# --------------------------------------------------------------------------------------
# Bad input: a named error, exit code 2, nothing written
# --------------------------------------------------------------------------------------
def test_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert export_cli.main([str(tmp_path)]) == 2
    assert "not an llmatic run directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_the_final_retrain_names_the_command(smoke_run, tmp_path, capsys):
    run = copy_run(smoke_run[0], tmp_path / "run")
    assert export_cli.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert f"llmatic-final {run}" in err
    assert not (run / "export").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--rank", "999"], "beyond the archive"),
    (["--rank", "2"], "--top-k 2"),  # in the archive, but the retrain covered rank 1 only
    (["--candidate", "99999"], "not among the elites"),
    (["--seed-index", str(SEEDS)], "--seed-index must be in"),
])
def test_ranks_and_seeds_that_were_not_retrained(retrained, args, message, capsys):
    run, _ = retrained
    before = sorted(p.name for p in (run / "export").iterdir()) if (run / "export").exists() \
        else []
    assert export_cli.main([str(run), *args, "--out", str(run / "bad")]) == 2
    assert message in capsys.readouterr().err
    assert not (run / "bad").exists()
    after = sorted(p.name for p in (run / "export").iterdir()) if (run / "export").exists() \
        else []
    assert after == before


def test_a_network_the_static_policy_refuses_is_not_exported(retrained, tmp_path, capsys):
    run, _ = retrained
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
    path = copy / "final" / "final.json"
    final = json.loads(path.read_text())
    final["rows"][0]["source"] = "import os\n" + final["rows"][0]["source"]
    path.write_text(json.dumps(final))
    assert export_cli.main([str(copy)]) == 2
    assert "static policy" in capsys.readouterr().err
    assert not (copy / "export").exists()


def test_an_existing_export_is_kept_without_force(exported, capsys):
    folder, _ = exported
    before = (folder / "model.py").read_bytes()
    run = folder.parent.parent
    assert export_cli.main([str(run)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (folder / "model.py").read_bytes() == before
    assert export_cli.main([str(run), "--force"]) == 0
    assert (folder / "model.py").read_bytes() == before  # the same network, written again


# --------------------------------------------------------------------------------------
# NAS-Bench-201: the cell, its table numbers and its lineage; no weights
# --------------------------------------------------------------------------------------
def test_an_nb201_run_exports_its_cell_without_weights(tmp_path):
    from conftest import compose_config

    from llmatic.config import run_search
    from llmatic.nb201.table import load_table, write_synthetic_table

    table = tmp_path / "nb201_synthetic.csv"
    write_synthetic_table(table, seed=0)
    cfg = compose_config("experiment=paper_nb201", f"nb201.table={table}",
                         "budget.generations=1", "seed=1")
    summary = run_search(cfg, tmp_path / "run", show_progress=False)
    assert export_cli.main([str(tmp_path / "run")]) == 0
    (folder,) = (tmp_path / "run" / "export").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["card.md", "cell.json", "lineage.json",
                                                         "lineage.png"]
    cell = json.loads((folder / "cell.json").read_text())
    assert cell["candidate_id"] == summary["elites"][0]["candidate_id"]
    entry = load_table(table, "cifar10").lookup(cell["arch"])
    assert cell["test_accuracy_percent"] == entry.test_accuracy
    assert cell["valid_accuracy_percent"] == entry.valid_accuracy
    card = (folder / "card.md").read_text()
    assert cell["arch"] in card and "made-up numbers" in card  # a synthetic table says so
    steps = json.loads((folder / "lineage.json").read_text())["steps"]
    assert steps[-1]["arch"] == cell["arch"] and steps[0]["operator"] == "seed"


def test_an_interrupted_retrain_keeps_the_previous_weights_and_final_json(retrained, tmp_path):
    from llmatic.report import final_evaluation

    run, _ = retrained
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export", "jobs"))
    before = {p.name: p.read_bytes() for p in (copy / "final" / "weights").iterdir()}
    final_json = (copy / "final" / "final.json").read_bytes()

    def interrupt(done, total, line):  # Ctrl-C right after the first retrain finished
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        final_evaluation(copy, top_k=1, seeds=1, epochs=1, progress=interrupt)
    assert (copy / "final" / "final.json").read_bytes() == final_json
    after = {p.name: p.read_bytes() for p in (copy / "final" / "weights").iterdir()}
    assert after == before
    assert export_cli.main([str(copy)]) == 0  # still consistent: exports as before
