"""The files a sandboxed child leaves for its parent, named in one place.

The child (:mod:`llmatic.train.worker`) writes them; the sandbox (:mod:`llmatic.sandbox`)
creates them before the candidate runs and reads them after the child exited. This module
imports nothing, so the search process can name the files without loading the worker.
"""

from __future__ import annotations

RESULT_FILE = "result.json"
LOGITS_FILE = "val_logits.npy"
#: The measured descriptors, written by the counting process only (see
#: :func:`llmatic.train.measure.measure`).
MEASURES_FILE = "measures.json"
#: The keys of :data:`MEASURES_FILE` (what the search's descriptors are computed from).
MEASURE_KEYS = ("params", "flops", "width", "depth")
#: The trained network's ``state_dict`` (safetensors) and its ONNX graph, written only for a
#: job with ``save_weights`` (the final retrain, :mod:`llmatic.report.final`). The parent
#: parses them as data (safetensors; ONNX is never loaded in the search process).
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"


def result_file(rank: int = 0) -> str:
    """Where a child leaves its report: ``result.json`` for rank 0 (or no DDP)."""
    return RESULT_FILE if rank == 0 else f"result.rank{rank}.json"


def logits_file(split: str) -> str:
    """Where a child leaves the logits it predicted for ``split`` (unlabelled inputs)."""
    return f"{split}_logits.npy"


def too_large_error(flops: int, cap: int) -> str:
    """Why a network above the compute cap was not trained."""
    return (f"{flops:,} FLOPs per input is above dataset.max_flops = {cap:,}: measured, not "
            "trained (raise the cap, or set it to null, to train it)")
