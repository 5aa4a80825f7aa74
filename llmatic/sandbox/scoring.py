"""Scoring in the parent: what a child left behind becomes an :class:`~llmatic.types.EvalResult`.

The child never sees the validation labels; it returns logits, and the search process
computes accuracy and loss from them here (:func:`score_logits`). :func:`outcome_to_result`
also decides the status of a child that timed out, crashed or reported a failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmatic.sandbox.client import ChildOutcome
from llmatic.sandbox.common import STDERR_TAIL, signal_name
from llmatic.types import EvalResult, Status


def score_logits(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``logits`` against ``labels`` (in the parent)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    return accuracy, loss


def outcome_to_result(
    outcome: ChildOutcome,
    *,
    job_dir: Path,
    val_labels: np.ndarray | None,
    num_classes: int,
    fitness: str = "accuracy",
    split: str = "val",
) -> EvalResult:
    """Turn what a child left behind into an :class:`EvalResult`, scoring in the parent."""
    res = outcome.result or {}
    timings = dict(res.get("timings") or {})
    timings["sandbox"] = round(outcome.seconds, 4)
    fields = {k: res.get(k) for k in ("params", "flops", "width", "depth")}
    width, depth = fields["width"], fields["depth"]
    ratio = (width / depth) if width is not None and depth else None
    base = dict(**fields, width_to_depth=ratio, timings=timings)

    if outcome.timed_out:
        return EvalResult(Status.TIMEOUT, error="killed after the sandbox timeout", **base)
    status_text = res.get("status")
    unfinished = status_text == Status.OK.value and (outcome.exitcode != 0
                                                     or res.get("final") is not True)
    if outcome.result is None or unfinished:
        # No report, or the child died after writing a partial one.
        code = outcome.exitcode
        tail = outcome.stderr_tail.strip().splitlines()[-3:]
        if code is not None and code < 0:
            error = f"child killed by signal {signal_name(-code)}"
        else:
            error = f"child exited with code {code} without a result"
        if tail:
            error += ": " + " | ".join(tail)
        events = outcome.events or {}
        if events.get("oom_kill"):
            error = (f"the memory cgroup killed {events['oom_kill']} of the candidate's "
                     f"processes (sandbox.memory_mb); {error}")
        status = Status.MEMORY_LIMIT if "memory" in error.lower() else Status.CRASHED
        return EvalResult(status, error=error, **base)
    status = Status(status_text)
    if status is not Status.OK and (outcome.events or {}).get("oom_kill"):
        error = (f"the memory cgroup killed {outcome.events['oom_kill']} of the candidate's "
                 f"processes (sandbox.memory_mb): {res.get('error')}")
        return EvalResult(Status.MEMORY_LIMIT, error=error[:STDERR_TAIL], **base)
    if status is not Status.OK:
        return EvalResult(status, error=res.get("error"), **base)
    if val_labels is None:  # a check-only job (no training)
        return EvalResult(Status.OK, **base)
    logits = outcome.logits
    if logits is None:
        return EvalResult(Status.CRASHED, error="the child returned no logits", **base)
    if logits.shape != (len(val_labels), num_classes) or not np.isfinite(logits).all():
        return EvalResult(Status.NON_FINITE, error="invalid validation logits", **base)
    accuracy, loss = score_logits(logits, val_labels)
    value = accuracy if fitness == "accuracy" else -loss
    return EvalResult(Status.OK, fitness=value, val_accuracy=accuracy, val_loss=loss, **base)
