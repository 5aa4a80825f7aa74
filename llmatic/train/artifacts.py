"""The trained network as files: its weights (safetensors) and its ONNX graph.

Only a job with ``save_weights`` (the final retrain of ``llmatic-final``) writes them, after
the logits, through descriptors the child opened before the candidate ran
(:func:`llmatic.sandbox.child.run_child`). The weights are the ``state_dict`` alone (no
optimizer state), as safetensors: the parent parses them as data and never unpickles
anything. The ONNX graph is traced here, in the child, because tracing runs the
candidate's ``forward``; it needs the ``onnx`` package (``pip install 'llmatic[export]'``),
and a network that does not trace gets a note instead of a file.
"""

from __future__ import annotations

import io
import os
from typing import Any

#: The longest note kept for an artifact that could not be written.
MAX_NOTE = 400


def write_artifacts(net: Any, input_shape: tuple[int, ...], outputs: dict[str, int],
                    result: dict[str, Any]) -> None:
    """Write ``net``'s weights and ONNX graph to ``outputs["weights"]`` / ``outputs["onnx"]``.

    Never raises for the candidate's sake: what could not be written is a note in
    ``result["artifacts"]`` (``weights`` / ``onnx``: ``"ok"`` or why not), and the retrain's
    test accuracy still counts.
    """
    notes: dict[str, str] = {}
    result["artifacts"] = notes
    if "weights" in outputs:
        notes["weights"] = _try(lambda: _write(outputs["weights"], weights_bytes(net)))
    if "onnx" in outputs:
        notes["onnx"] = _try(lambda: _write(outputs["onnx"], onnx_bytes(net, input_shape)))


def weights_bytes(net: Any) -> bytes:
    """``net.state_dict()`` in the safetensors format (CPU, contiguous, one copy per key)."""
    import torch
    from safetensors.torch import save

    tensors = {}
    for name, value in net.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(value).__name__}, "
                            "not a tensor")
        tensors[str(name)] = value.detach().to("cpu").contiguous().clone()
    return save(tensors, metadata={"format": "pt"})


def onnx_bytes(net: Any, input_shape: tuple[int, ...]) -> bytes:
    """``net`` traced by the TorchScript-based ONNX exporter (batch dimension dynamic)."""
    import warnings

    import torch

    net = net.to("cpu").eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, *input_shape),), buffer, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


def _try(write: Any) -> str:
    try:
        write()
    except BaseException as exc:  # noqa: BLE001 - a note, never a failed candidate
        return f"{type(exc).__name__}: {exc}"[:MAX_NOTE]
    return "ok"
