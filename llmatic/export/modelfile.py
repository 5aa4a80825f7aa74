"""``model.py`` of an export: the network's source, standalone (torch and the stdlib only).

The file is, in order: a header docstring (run, dataset, input shape, classes, fitness, test
accuracy, and the warning that the code was written by a code generator), the candidate's
source exactly as the search evaluated it, and a short appendix written here:
``read_safetensors`` (a reader of the safetensors format in plain torch, so loading needs no
other package), ``preprocess`` (uint8 images -> the normalised inputs the network was
trained on), ``load_model`` (build, load the weights, eval mode) and a ``__main__`` check.
Nothing here runs the candidate's code: the text is only parsed (``ast``) and compiled.
"""

from __future__ import annotations

import ast
from typing import Any

#: Module-level names the appendix defines; a candidate that defines one is refused.
APPENDIX_NAMES = frozenset({"CLASS_NAME", "INPUT_SHAPE", "NUM_CLASSES", "NORMALIZATION",
                            "WEIGHTS_FILE", "read_safetensors", "preprocess", "load_model",
                            "_SAFETENSORS_DTYPES"})

WARNING = ("WARNING: the network below was written by a code generator (an LLM, or llmatic's "
           "rule-based mutator) during a search. Importing or running this file runs that "
           "code with your permissions: read it first. llmatic's static policy accepted it "
           "and it trained inside llmatic's sandbox, but nothing sandboxes it here.")

_APPENDIX = '''

# ---------------------------------------------------------------------------------------
# Added by llmatic-export: load the trained weights (torch and the standard library only).
# ---------------------------------------------------------------------------------------
import json as _json  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

import torch as _torch  # noqa: E402

CLASS_NAME = {class_name!r}
#: One input, without the batch dimension.
INPUT_SHAPE = {input_shape!r}
NUM_CLASSES = {num_classes!r}
#: ``preprocess``: inputs = (pixels * scale - mean) / std, per channel.
NORMALIZATION = {normalization!r}
WEIGHTS_FILE = "weights.safetensors"

_SAFETENSORS_DTYPES = {{
    "F64": _torch.float64, "F32": _torch.float32, "F16": _torch.float16,
    "BF16": _torch.bfloat16, "I64": _torch.int64, "I32": _torch.int32, "I16": _torch.int16,
    "I8": _torch.int8, "U8": _torch.uint8, "BOOL": _torch.bool,
}}


def read_safetensors(path):
    """The tensors of a safetensors file (the format's reader in plain torch; no pickle)."""
    data = _Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = _json.loads(data[8:8 + size])
    body = memoryview(data)[8 + size:]
    tensors = {{}}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        flat = (_torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start
                else _torch.empty(0, dtype=dtype))
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def preprocess(images):
    """uint8 images (N, C, H, W), as the dataset stores them -> the network's float inputs."""
    x = _torch.as_tensor(images).to(_torch.float32) * NORMALIZATION["scale"]
    mean = _torch.tensor(NORMALIZATION["mean"], dtype=_torch.float32).view(1, -1, 1, 1)
    std = _torch.tensor(NORMALIZATION["std"], dtype=_torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def load_model(weights=None, map_location="cpu"):
    """``{class_name}`` with the exported weights, in eval mode.

    ``weights``: a safetensors file (default: ``weights.safetensors`` next to this file).
    """
    path = _Path(weights) if weights is not None else _Path(__file__).with_name(WEIGHTS_FILE)
    net = {class_name}()
    lazy = _torch.nn.parameter.UninitializedParameter
    if any(isinstance(p, lazy) for p in net.parameters()):
        net.eval()  # lazy modules take their shapes from one forward pass
        with _torch.no_grad():
            net(_torch.zeros(1, *INPUT_SHAPE))
    net.load_state_dict(read_safetensors(path))
    return net.to(map_location).eval()


if __name__ == "__main__":
    _net = load_model()
    with _torch.no_grad():
        _out = _net(_torch.zeros(2, *INPUT_SHAPE))
    print(f"{{CLASS_NAME}}: {{sum(p.numel() for p in _net.parameters()):,}} parameters, "
          f"logits {{tuple(_out.shape)}} for a batch of 2 inputs of shape {{INPUT_SHAPE}}")
'''


class ModelFileError(ValueError):
    """The source cannot be made into a standalone ``model.py`` (the message says why)."""


def _docstring_text(lines: list[str]) -> str:
    text = "\n".join(lines).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'"""{text}\n"""\n'


def _split_future(source: str) -> tuple[str, str]:
    """``(future imports, the rest)``: ``from __future__`` lines must follow the header."""
    tree = ast.parse(source)
    lines = source.splitlines(True)
    future: list[str] = []
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            end = node.end_lineno or node.lineno
            future += lines[node.lineno - 1:end]
            drop.update(range(node.lineno - 1, end))
    rest = "".join(line for i, line in enumerate(lines) if i not in drop)
    return "".join(future), rest


def _defined_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).partition(".")[0] for a in node.names)
    return names


def render_model_file(source: str, *, class_name: str, header: list[str],
                      input_shape: tuple[int, ...], num_classes: int,
                      normalization: dict[str, Any]) -> str:
    """The text of ``model.py`` (compiled here to check it, never run).

    Raises:
        ModelFileError: The source defines a name the appendix needs, or the result does
            not compile.
    """
    clash = sorted(_defined_names(source) & APPENDIX_NAMES)
    if clash:
        raise ModelFileError(f"the network's source defines {', '.join(clash)}, which "
                             "model.py's loader needs")
    future, rest = _split_future(source)
    norm = {"scale": float(normalization["scale"]),
            "mean": [float(v) for v in _flat(normalization["mean"])],
            "std": [float(v) for v in _flat(normalization["std"])]}
    text = (_docstring_text(header + ["", WARNING]) + future + "\n" + rest.rstrip() + "\n"
            + _APPENDIX.format(class_name=class_name, input_shape=tuple(input_shape),
                               num_classes=int(num_classes), normalization=norm))
    try:
        compile(text, "model.py", "exec")  # parsed and compiled only: nothing runs
    except SyntaxError as exc:
        raise ModelFileError(f"model.py does not compile: {exc}") from exc
    return text


def _flat(values: Any) -> list[Any]:
    """A list of numbers from a number, a (nested) list or an array."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flat(item)]
    return [values]
