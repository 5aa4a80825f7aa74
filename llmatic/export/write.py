"""``llmatic-export``: one folder per exported network, written all at once or not at all.

A network run's folder (default ``RUN_DIR/export/cXXXXXX``) holds ``model.py`` (standalone:
torch and the standard library), ``weights.safetensors`` (the ``state_dict`` of one named
seed of the final retrain), ``model.onnx`` (when the network traced and ``onnx`` was
installed for ``llmatic-final``), ``card.md``, ``lineage.json``, ``lineage.png`` and
``export.json`` (the numbers as data). A NAS-Bench-201 run's folder holds the cell instead
of code and weights: ``cell.json``, ``card.md``, ``lineage.json``, ``lineage.png``.

Every check (:func:`llmatic.export.select.choose`) and every file is made in memory first;
then the files go into a temporary folder that is renamed into place, so bad input or a
failure leaves nothing behind. An existing folder is replaced only with ``force``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llmatic.export.card import nb201_card, network_card
from llmatic.export.modelfile import ModelFileError, render_model_file
from llmatic.export.select import Choice, ExportError, choose
from llmatic.report.final import FINAL_DIR, fmt
from llmatic.report.lineage import step_diffs

EXPORT_DIR = "export"
#: The machine-readable numbers of a network export.
EXPORT_JSON = "export.json"


def export(run_dir: str | Path, *, rank: int | None = None, candidate: int | None = None,
           seed_index: int = 0, out: str | Path | None = None, force: bool = False) -> Path:
    """Export one network (rank 1 of the final retrain by default); return its folder.

    Raises:
        ExportError: Bad input (see :mod:`llmatic.export.select`) or the folder exists
            without ``force``; nothing was written.
    """
    choice = choose(run_dir, rank=rank, candidate=candidate, seed_index=seed_index)
    target = (Path(out) if out is not None
              else choice.run_dir / EXPORT_DIR / f"c{choice.candidate_id:06d}")
    if target.exists() and not force:
        raise ExportError(f"{target} exists: pass --force to replace it, or --out DIR")
    diffs = step_diffs(choice.run_dir, choice.steps)
    files = (_nb201_files(choice, diffs) if choice.space == "nb201"
             else _network_files(choice, diffs))
    _write_folder(target, files)
    return target


def _lineage_files(choice: Choice, diffs: list[dict[str, Any]]) -> dict[str, bytes]:
    from llmatic.report.figures.lineage import plot_lineage

    data = {"run_dir": str(choice.run_dir.resolve()), "candidate_id": choice.candidate_id,
            "steps": choice.steps, "diffs": diffs}
    fig = plot_lineage(choice.steps, title=f"lineage of candidate {choice.candidate_id}")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=150)
    return {"lineage.json": json.dumps(data, indent=1).encode(), "lineage.png": png.getvalue()}


def _header(choice: Choice) -> list[str]:
    row, final, shipped = choice.row, choice.final, choice.shipped
    spread = (f"; {fmt(row['test_accuracy'])} ± {fmt(row['test_accuracy_std'])} over "
              f"{row['seeds_ok']} seeds" if row.get("test_accuracy_std") is not None else "")
    return [
        f"{row['class_name']}: a network found by LLMatic (written by llmatic-export).",
        "",
        f"Run: {choice.run_dir.resolve()} (candidate {choice.candidate_id}, generation "
        f"{choice.record.get('generation')}, rank {choice.rank} of the final retrain)",
        f"Dataset: {final['dataset']}; input shape {tuple(final['input_shape'])} (C, H, W, "
        f"normalised as preprocess() does); {final['num_classes']} classes",
        f"Fitness (search, validation): {fmt(choice.record.get('fitness'))}",
        f"Test accuracy: {fmt(shipped['test_accuracy'])} with weights.safetensors (seed index "
        f"{choice.seed_index}, seed {shipped['seed']}, {final['epochs']} epochs){spread}",
        f"Generator: {choice.generator}",
        "",
        "Usage: net = load_model(); logits = net(preprocess(uint8_images)). card.md has the "
        "metrics, the recipe and the lineage.",
    ]


def _onnx(choice: Choice) -> tuple[bytes | None, str | None]:
    """The shipped seed's ONNX graph, or why there is none."""
    shipped = choice.shipped
    if shipped.get("onnx"):
        path = choice.run_dir / FINAL_DIR / shipped["onnx"]
        if path.is_file():
            return path.read_bytes(), None
    note = (shipped.get("notes") or {}).get("onnx") or "the final retrain wrote no ONNX graph"
    if "onnx" in note.lower() and "not installed" in note.lower():
        note += (" (install the optional packages with `pip install 'llmatic[export]'` and "
                 "rerun llmatic-final)")
    return None, f"the network did not export to ONNX: {note}"


def _network_files(choice: Choice, diffs: list[dict[str, Any]]) -> dict[str, bytes]:
    row, final, shipped = choice.row, choice.final, choice.shipped
    try:
        model = render_model_file(row["source"], class_name=row["class_name"],
                                  header=_header(choice),
                                  input_shape=tuple(final["input_shape"]),
                                  num_classes=int(final["num_classes"]),
                                  normalization=final["normalization"])
    except ModelFileError as exc:
        raise ExportError(f"candidate {choice.candidate_id}: {exc}") from exc
    weights = (choice.run_dir / FINAL_DIR / shipped["weights"]).read_bytes()
    onnx, onnx_note = _onnx(choice)
    listing = {
        "model.py": "the network's source as the search evaluated it, plus load_model(), "
                    "preprocess() and read_safetensors() (torch and the standard library only)",
        "weights.safetensors": f"the trained state_dict (seed index {choice.seed_index}; no "
                               "optimizer state)",
    }
    if onnx is not None:
        listing["model.onnx"] = ("the same network and weights as an ONNX graph (input "
                                 "`input`, output `logits`, dynamic batch), traced with one "
                                 "input of zeros: Python control flow that depends on the "
                                 "input is frozen as traced")
    listing.update({"card.md": "this card", "lineage.json": "the lineage as data, with the "
                    "diffs", "lineage.png": "the lineage tree", EXPORT_JSON: "the numbers "
                    "above as data"})
    numbers = {
        "run_dir": str(choice.run_dir.resolve()), "candidate_id": choice.candidate_id,
        "rank": choice.rank, "class_name": row["class_name"], "dataset": final["dataset"],
        "input_shape": final["input_shape"], "num_classes": final["num_classes"],
        "normalization": final["normalization"], "test_size": final["test_size"],
        "fitness": choice.record.get("fitness"),
        "val_accuracy": choice.record.get("val_accuracy"),
        "test_accuracy": shipped["test_accuracy"], "seed_index": choice.seed_index,
        "seed": shipped["seed"], "test_accuracy_mean": row["test_accuracy"],
        "test_accuracy_std": row["test_accuracy_std"],
        "seeds": [{k: r[k] for k in ("seed_index", "seed", "status", "test_accuracy",
                                      "test_loss")} for r in row["runs"]],
        "params": row["params"], "flops": row["flops"],
        "descriptors": choice.record.get("descriptors"), "recipe": final.get("recipe"),
        "epochs": final["epochs"], "generator": choice.generator,
        "onnx": onnx is not None, "onnx_note": onnx_note,
    }
    files = {"model.py": model.encode(), "weights.safetensors": weights,
             "card.md": network_card(choice, diffs, listing, onnx_note).encode(),
             EXPORT_JSON: json.dumps(numbers, indent=1).encode(),
             **_lineage_files(choice, diffs)}
    if onnx is not None:
        files["model.onnx"] = onnx
    return files


def _nb201_metrics(choice: Choice) -> dict[str, Any]:
    """The cell's benchmark-table numbers (or why they are missing)."""
    from llmatic.report.figures import config_value

    arch = choice.record["arch"]
    path = config_value(choice.config, "nb201.table")
    dataset = str(config_value(choice.config, "nb201.dataset", "cifar10"))
    metrics: dict[str, Any] = {"dataset": dataset, "table": path}
    try:
        from llmatic.nb201 import load_table

        table = load_table(path, dataset)
        entry = table.lookup(arch)
    except Exception as exc:  # noqa: BLE001 - the card says the table was not readable
        metrics["table_error"] = f"the benchmark table could not be read ({exc})"
        return metrics
    if entry is None:
        metrics["table_error"] = "the cell is not in the table"
        return metrics
    metrics.update(valid_accuracy_percent=entry.valid_accuracy,
                   test_accuracy_percent=entry.test_accuracy, mflops=entry.flops,
                   params_millions=entry.params, synthetic_table=table.synthetic)
    return metrics


def _nb201_files(choice: Choice, diffs: list[dict[str, Any]]) -> dict[str, bytes]:
    metrics = _nb201_metrics(choice)
    listing = {"cell.json": "the arch string and its benchmark numbers", "card.md": "this card",
               "lineage.json": "the lineage as data, with the cell changes",
               "lineage.png": "the lineage tree"}
    cell = {"arch": choice.record["arch"], "candidate_id": choice.candidate_id,
            "rank": choice.rank, "fitness": choice.record.get("fitness"),
            "run_dir": str(choice.run_dir.resolve()), "generator": choice.generator,
            **metrics}
    card_metrics = {k: v for k, v in metrics.items() if k not in ("table",)}
    if metrics.get("synthetic_table"):
        card_metrics["synthetic_table"] = "YES: made-up numbers, never to be reported"
    return {"cell.json": json.dumps(cell, indent=1).encode(),
            "card.md": nb201_card(choice, diffs, card_metrics, listing).encode(),
            **_lineage_files(choice, diffs)}


def _write_folder(target: Path, files: dict[str, bytes]) -> None:
    """All of ``files`` in ``target``, or nothing: a temporary sibling renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
