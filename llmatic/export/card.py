"""``card.md`` of an export: what the network is, how well it does, and how it was found.

Sections: the warning about running generated code, metrics (search fitness and validation
accuracy, test accuracy of the shipped weights and mean ± std over every retrain seed,
parameters, FLOPs, descriptors), every seed, the training recipe, the files (with the ONNX
note when there is no graph), how to load it, the generator, and the lineage as a table plus
one unified diff per step. A NAS-Bench-201 card has the cell and its table numbers instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmatic.export.modelfile import WARNING
from llmatic.export.select import Choice
from llmatic.report.final import fmt
from llmatic.report.lineage import lineage_markdown

#: Longest diff shown in the card per step (lines); lineage.json has them whole.
MAX_DIFF_LINES = 80


def _table(rows: Sequence[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _descriptors(record: dict[str, Any]) -> str:
    desc = record.get("descriptors") or {}
    return ", ".join(f"{k} = {fmt(float(v))}" for k, v in desc.items()) or "-"


def _lineage_section(steps: Sequence[dict[str, Any]], diffs: Sequence[dict[str, Any]],
                     what: str) -> list[str]:
    lines = ["## Lineage", "",
             f"From the seed to this {what}, oldest first (`lineage.json` has the same as "
             "data, `lineage.png` as a tree):", "", lineage_markdown(steps).rstrip(), "",
             "### What each step changed", ""]
    for d in diffs:
        instruction = d.get("instruction") or d.get("operator") or ""
        lines.append(f"**{d['parent']} → {d['child']}** ({d.get('operator')}: "
                     f"{instruction.strip() or '-'})")
        lines.append("")
        if d["diff"] is None:
            lines.append("(a source was not kept in the run directory)")
        elif not d["diff"]:
            lines.append("(no change in the source)")
        else:
            body = d["diff"].splitlines()
            cut = len(body) > MAX_DIFF_LINES
            body = body[:MAX_DIFF_LINES] + ([f"... ({len(body) - MAX_DIFF_LINES} more lines "
                                              "in lineage.json)"] if cut else [])
            lines += ["```diff", *body, "```"]
        lines.append("")
    return lines


def network_card(choice: Choice, diffs: Sequence[dict[str, Any]], files: dict[str, str],
                 onnx_note: str | None) -> str:
    """The card of a trained network (see the module docstring)."""
    row, final, rec, shipped = choice.row, choice.final, choice.record, choice.shipped
    accs = [r["test_accuracy"] for r in row["runs"] if r["status"] == "ok"]
    spread = (f"{fmt(row['test_accuracy'])} ± {fmt(row['test_accuracy_std'])} over {len(accs)} "
              "seeds (sample std)" if row.get("test_accuracy_std") is not None
              else f"{fmt(row['test_accuracy'])} (one seed)")
    title = f"# {row['class_name']}: candidate {choice.candidate_id} of {choice.run_dir.name}"
    lines = [title, "", f"> **{WARNING}**", "", "## Metrics", ""]
    lines += _table([
        ("run", f"`{choice.run_dir.resolve()}`"),
        ("rank in the final retrain", choice.rank),
        ("dataset", f"{final['dataset']} (input shape {tuple(final['input_shape'])}, "
                    f"{final['num_classes']} classes, test split of {final['test_size']:,})"),
        ("search fitness", fmt(rec.get("fitness"))),
        ("search validation accuracy", fmt(rec.get("val_accuracy"))),
        ("test accuracy, shipped weights",
         f"{fmt(shipped['test_accuracy'])} (seed index {choice.seed_index}, "
         f"seed {shipped['seed']})"),
        ("test accuracy over the seeds", spread),
        ("parameters", fmt(row.get("params"))),
        ("FLOPs per input", fmt(row.get("flops"))),
        ("descriptors (search)", _descriptors(rec)),
        ("found in generation", rec.get("generation")),
        ("generator", choice.generator),
    ])
    lines += ["", "## Every seed of the final retrain", "",
              "| seed index | seed | status | test accuracy | test loss | shipped |",
              "|---:|---:|---|---:|---:|---|"]
    for r in row["runs"]:
        mark = "yes" if r["seed_index"] == choice.seed_index else ""
        lines.append(f"| {r['seed_index']} | {r['seed']} | {r['status']} | "
                     f"{fmt(r['test_accuracy'])} | {fmt(r['test_loss'])} | {mark} |")
    lines += ["", "Seed index 0 is the seed the search trained the network with; the shipped "
              "weights are chosen by index (`llmatic-export --seed-index`), never by test "
              "accuracy.", "", "## Training recipe", "",
              "Every seed (Lightning, the search's training code; `epochs` is what the "
              "trainer ran):", "", "```json",
              json.dumps(final.get("recipe", {}), indent=1, sort_keys=True), "```", "",
              "Inputs: uint8 images normalised as `model.preprocess` does: "
              f"`{json.dumps(final.get('normalization', {}))}` "
              "(`(pixels * scale - mean) / std`, per channel).", "", "## Files", ""]
    lines += [f"- `{name}`: {what}" for name, what in files.items()]
    if onnx_note:
        lines.append(f"- no `model.onnx`: {onnx_note}")
    lines += ["", "## Load it", "", "```python",
              "import model  # runs LLM-written code: read model.py first",
              "net = model.load_model()  # weights.safetensors next to model.py, eval mode",
              "logits = net(model.preprocess(images_uint8))  # (N, C, H, W) uint8",
              "```", "", "Only torch is needed; `safetensors.torch.load_file('weights."
              "safetensors')` reads the same `state_dict`.", ""]
    lines += _lineage_section(choice.steps, diffs, "network")
    return "\n".join(lines).rstrip() + "\n"


def nb201_card(choice: Choice, diffs: Sequence[dict[str, Any]], metrics: dict[str, Any],
               files: dict[str, str]) -> str:
    """The card of a NAS-Bench-201 cell: the arch string, its table numbers, the lineage."""
    rec = choice.record
    title = f"# NAS-Bench-201 cell: candidate {choice.candidate_id} of {choice.run_dir.name}"
    lines = [title, "", f"`{rec['arch']}`", "", "A cell of the NAS-Bench-201 search space: the "
             "search read it from the generator's code without running it and looked it up "
             "in the benchmark table, so there are no weights to export; train it with the "
             "benchmark's own code.", "", "## Metrics", ""]
    lines += _table([
        ("run", f"`{choice.run_dir.resolve()}`"),
        ("rank in the archive", choice.rank if choice.rank is not None else "-"),
        ("search fitness (validation accuracy)", fmt(rec.get("fitness"))),
        *[(k.replace("_", " "), v) for k, v in metrics.items()],
        ("descriptors (search)", _descriptors(rec)),
        ("found in generation", rec.get("generation")),
        ("generator", choice.generator),
    ])
    lines += ["", "## Files", "", *[f"- `{n}`: {w}" for n, w in files.items()], ""]
    lines += _lineage_section(choice.steps, diffs, "cell")
    return "\n".join(lines).rstrip() + "\n"
