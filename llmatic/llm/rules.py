"""A rule-based code mutator: the non-LLM baseline and offline default (``llm=rules``).

This is **not a language model**. :class:`RuleBasedMutator` is a classic evolutionary-NAS
variation operator, in the spirit of the hand-written mutations of regularized evolution, that
takes the LLM's place in the LLMatic loop. It reads a request's ``instruction`` and ``parents``
(never its ``prompt``), edits the parent network's Python syntax tree with :mod:`ast`, and
returns the edited module as source code (:func:`ast.unparse`). It lets every experiment run
offline, and it makes "LLM vs. no LLM" a single config override (``llm=rules``).

What it does:

* It maps each of the paper's 13 mutation instructions, and the 4 optional width/depth ones, to
  an edit by case-insensitive keywords (for example "convolutional" inserts a convolution).
  Text it does not recognise gets a random edit.
* It edits the classifier head too: ``drop_output_activation`` removes an activation applied
  to the logits (the seed network's ``relu(fc1(x))`` puts many networks at chance),
  ``widen_head`` widens (at the cap: re-sizes) the last hidden layer before the classifier,
  and ``add_head`` inserts a hidden ``relu(LazyLinear)`` right before it. Each has its own
  instruction keywords; "improve the above network" may pick the last two. Like an LLM that
  rewrites a network and returns raw logits, every other edit (and crossover) also drops an
  activation on the logits with probability ``HEAD_FIX_P`` (0.8), and (unless it shrinks the
  network) widens hidden layers narrower than 4 units to 16 with the same probability. No
  edit narrows a layer below 4 units.
* An edit that finds nothing to change gives a completion whose ``error`` says so, never an
  unchanged copy of the parent.
* Given two parents it splices them: a one-point crossover at a cut where the shapes fit. By
  default the cut is at the flatten, so one parent gives the feature extractor and the other
  the classifier head.
* The temperature sets how big the change is: ``1 + Binomial(2, temperature)`` edits, and a
  wider choice of widths and kernel sizes when it is high; one small edit when it is low.
* It keeps the child runnable. Layers whose input size could change become PyTorch lazy modules
  (``nn.Conv2d(3, 16, 3)`` becomes ``nn.LazyConv2d(16, 3)``). Inserted convolutions keep H and
  W. Pooling uses ``ceil_mode=True``, so no feature map shrinks below 1x1. Residual and
  recurrent layers are small helper classes that adapt to any input. The final classifier's
  output size never changes. Widths and layer counts are capped so children stay small
  enough to train on a CPU.

What it does not do: it never executes or imports the code it edits; it does not learn from
the search; it adds no layer kinds beyond those above. It fully understands only networks of
the canonical shape: ``__init__`` assigns ``self.name = nn.Layer(...)``, and ``forward`` applies
the layers one statement at a time, 4-D (B, C, H, W) before a flatten and 2-D (B, F) after it.
Other code (``nn.Sequential`` stacks, loops over ``nn.ModuleList``, hand-written skip
connections) it edits only where it can show that the shapes still fit. Where no edit fits, it
returns a completion whose ``error`` says why.

Children contain lazy modules, whose parameters exist only after a first forward pass. Run one
dry batch before counting parameters or building an optimizer.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from llmatic.llm.base import CodeGenerator
from llmatic.types import Completion, GenerationRequest

__all__ = ["RuleBasedMutator", "classify_instruction", "output_activation"]

# --------------------------------------------------------------------------------- constants

#: Every child starts with the seed network's three imports.
_HEADER = ("import torch", "import torch.nn as nn", "import torch.nn.functional as F")

#: Eager layer -> (its lazy twin, the keyword of the input size the lazy twin infers).
_LAZY_TWIN: dict[str, tuple[str, str]] = {
    **{f"Conv{d}d": (f"LazyConv{d}d", "in_channels") for d in (1, 2, 3)},
    **{f"ConvTranspose{d}d": (f"LazyConvTranspose{d}d", "in_channels") for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": (f"LazyBatchNorm{d}d", "num_features") for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": (f"LazyInstanceNorm{d}d", "num_features") for d in (1, 2, 3)},
    "Linear": ("LazyLinear", "in_features"),
}
#: Attribute reads that need a layer's real sizes (weight init, ``fc.in_features``). Lazy
#: modules have none before the first forward, so a module that reads them is left eager.
_SIZE_READS = frozenset(
    {"weight", "bias", "in_features", "in_channels", "num_features", "running_mean", "running_var"}
)

_LAZY_CONVS = frozenset({"LazyConv1d", "LazyConv2d", "LazyConv3d"})
_EAGER_CONVS = frozenset({"Conv1d", "Conv2d", "Conv3d"})
_LAZY_NORMS = frozenset(
    {f"LazyBatchNorm{d}d" for d in (1, 2, 3)} | {f"LazyInstanceNorm{d}d" for d in (1, 2, 3)}
)
_ACTIVATIONS = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish",
     "Hardsigmoid", "Sigmoid", "Tanh", "Softplus", "Softsign", "Softmax", "LogSoftmax", "Identity"}
)
_DROPOUTS = frozenset(
    {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
)
#: Layers that never change a tensor's shape: deleting one is always safe.
_SHAPE_PRESERVING = _ACTIVATIONS | _DROPOUTS | _LAZY_NORMS
_POOLS = frozenset({"MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d"})
_ADAPTIVE_POOLS = frozenset(
    {"AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"}
)
#: Layers with weights: the last one the forward calls is the classifier.
_WEIGHTED = frozenset(
    _EAGER_CONVS | _LAZY_CONVS | {"Linear", "LazyLinear", "Bilinear", "RNN", "GRU", "LSTM"}
    | {f"ConvTranspose{d}d" for d in (1, 2, 3)} | {f"LazyConvTranspose{d}d" for d in (1, 2, 3)}
)

#: Layers whose output width is fixed whatever comes in: they absorb a change of width.
_ABSORB_WIDTH = frozenset(
    _LAZY_CONVS | {"LazyLinear", "conv_residual", "linear_residual", "recurrent"}
    | {f"LazyConvTranspose{d}d" for d in (1, 2, 3)}
)

#: Functions a forward statement may wrap around a layer call and stay "simple" (they keep
#: the channel/feature count; the pools change only H and W).
_FUNC_POOLS = frozenset({"max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d"})
_FUNC_ADAPTIVE = frozenset(
    {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"}
)
_FUNC_ELEMENTWISE = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish",
     "sigmoid", "tanh", "softplus", "softmax", "log_softmax", "dropout", "dropout1d", "dropout2d",
     "alpha_dropout"}
)
_CHAIN_FUNCS = _FUNC_ELEMENTWISE | _FUNC_POOLS | _FUNC_ADAPTIVE
_FUNC_MODULES = frozenset({"F", "torch", "functional", "nn.functional", "torch.nn.functional"})
_REDUCTIONS = frozenset({"mean", "sum", "amax"})  # x.mean([2, 3]) flattens like global pooling

# Choices of sizes, from small to large; the temperature widens the choice around a reference.
_CONV_WIDTHS = (4, 8, 16, 32, 64, 128, 256)
_LINEAR_WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
_RNN_WIDTHS = (16, 32, 64, 128, 256)
_KERNELS = (1, 3, 5)
_DROPOUT_PS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: At most this many pooling layers before the flatten: 32x32 reaches 1x1 after 5.
_MAX_DOWNSAMPLES = 5
#: Output size of the adaptive pool put before the flatten when a hidden layer would
#: otherwise see the whole feature map: flat size <= max_channels * 4 * 4.
_GUARD_SIZE = 4

# Helper classes added to a child. Every layer in them is lazy, so they fit any input.
_HELPER_SOURCES: dict[str, str] = {
    "conv_residual": '''
class ConvResidual(nn.Module):
    """Two same-padded convolutions plus a 1x1-projected skip (added by the rule mutator)."""

    def __init__(self, channels, kernel_size=3):
        super().__init__()
        self.conv1 = nn.LazyConv2d(channels, kernel_size, padding=kernel_size // 2)
        self.bn1 = nn.LazyBatchNorm2d()
        self.conv2 = nn.LazyConv2d(channels, kernel_size, padding=kernel_size // 2)
        self.bn2 = nn.LazyBatchNorm2d()
        self.skip = nn.LazyConv2d(channels, 1)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.skip(x))
''',
    "linear_residual": '''
class LinearResidual(nn.Module):
    """Two linear layers plus a linearly projected skip (added by the rule mutator)."""

    def __init__(self, features):
        super().__init__()
        self.fc1 = nn.LazyLinear(features)
        self.fc2 = nn.LazyLinear(features)
        self.skip = nn.LazyLinear(features)

    def forward(self, x):
        return F.relu(self.fc2(F.relu(self.fc1(x))) + self.skip(x))
''',
    "recurrent": '''
class RecurrentBlock(nn.Module):
    """A linear projection, then an RNN over the features as a length-1 sequence, plus the
    projection as a skip, layer-normalised (added by the rule mutator)."""

    def __init__(self, hidden, cell="gru"):
        super().__init__()
        self.proj = nn.LazyLinear(hidden)
        recurrent = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell]
        self.rnn = recurrent(hidden, hidden, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x):
        h = self.proj(x)
        out, _ = self.rnn(h.unsqueeze(1))
        return self.norm(h + out.squeeze(1))
''',
}
_HELPER_TEMPLATES: dict[str, ast.ClassDef] = {
    key: ast.parse(src).body[0] for key, src in _HELPER_SOURCES.items()  # type: ignore[misc]
}
_HELPER_DUMPS = {key: ast.dump(node) for key, node in _HELPER_TEMPLATES.items()}
#: Keyword of each helper's width argument, and which cap bounds it.
_HELPER_WIDTH = {"conv_residual": "channels", "linear_residual": "features", "recurrent": "hidden"}


class _NoEdit(Exception):
    """The requested edit cannot be made on this parent; the message says why."""


# ------------------------------------------------------------------------ instruction mapping

# Checked in order, so that the specific instructions win over the generic ones.
_KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    (r"(output|final|logits?|last)\W+(layer\W+)?activation|activation\W+(\w+\W+){0,3}"
     r"(output|logits?)", "drop_output_activation"),
    (r"(widen|wider|increase|enlarge|replace|resize)\W+(\w+\W+){0,3}"
     r"\b(last hidden|penultimate|classifier|head)\b", "widen_head"),
    (r"(hidden layer|linear layer|fully[- ]connected layer)\W+(\w+\W+){0,3}"
     r"\b(classifier|head|output layer)\b", "add_head"),
    (r"\bdelete|\bremove", "delete"),
    (r"multiple residual|residual connections|residual blocks", "residuals"),
    (r"residual|skip connection|shortcut", "residual"),
    (r"recurren|\blstm\b|\bgru\b|\brnn\b", "recurrent"),
    (r"dropout", "dropout"),
    (r"normali[sz]|batch ?norm|layer ?norm|\bnorm\b", "norm"),
    (r"\bpool", "pool"),
    (r"\bconv", "conv"),
    (r"fully[- ]connected|\blinear\b|\bdense\b", "linear"),
)
_GROW = r"increas|larger|bigger|enlarg|expand|wider|deeper"
_SHRINK = r"reduc|decreas|smaller|shrink|narrower|shallower|compress"


def classify_instruction(instruction: str, n_parents: int = 1) -> str:
    """Map free instruction text to the name of an edit, by case-insensitive keywords.

    Args:
        instruction: The instruction text, e.g. ``"Add pooling layer to improve the above
            network"``.
        n_parents: Number of parents; two always means crossover.

    Returns:
        One of ``crossover``, ``delete``, ``residuals``, ``residual``, ``recurrent``,
        ``dropout``, ``norm``, ``pool``, ``conv``, ``linear``, ``widen``, ``narrow``,
        ``deepen``, ``shallow``, ``grow``, ``shrink``, ``add``, the classifier-head edits
        ``drop_output_activation`` (e.g. "Remove the activation on the output logits"),
        ``add_head`` ("Add a hidden layer before the classifier") and ``widen_head``
        ("Widen the last hidden layer before the classifier"), or ``random`` (anything else).
    """
    if n_parents >= 2:
        return "crossover"
    text = instruction.lower()
    for pattern, edit in _KEYWORD_RULES:
        if re.search(pattern, text):
            return edit
    grow, shrink = re.search(_GROW, text), re.search(_SHRINK, text)
    for dim, up, down in (("width", "widen", "narrow"), ("depth", "deepen", "shallow")):
        if dim in text and (grow or shrink):
            return down if shrink else up
    if shrink:
        return "shrink"
    if grow:
        return "grow"
    if re.search(r"\badd\b|\binsert", text):
        return "add"
    return "random"


# ------------------------------------------------------------------------------ AST helpers


def _dotted(node: ast.AST) -> str | None:
    """Return ``"a.b.c"`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _self_attr(node: ast.AST) -> str | None:
    """Return ``X`` for the expression ``self.X``, else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "self":
            return node.attr
    return None


def _ctor_name(node: ast.AST) -> str | None:
    """Return the class a constructor call builds: ``Conv2d`` for ``nn.Conv2d(...)``.

    Only ``nn.X``, ``torch.nn.X`` and bare ``X`` count; ``self.make_layer(...)`` does not.
    """
    if not isinstance(node, ast.Call):
        return None
    name = _dotted(node.func)
    if name is None:
        return None
    prefix, _, last = name.rpartition(".")
    return last if prefix in ("", "nn", "torch.nn") else None


def _func_name(func: ast.AST) -> str | None:
    """Return ``relu`` for ``F.relu`` / ``torch.relu`` / ``torch.nn.functional.relu``."""
    name = _dotted(func)
    if name is None or "." not in name:
        return None
    prefix, _, last = name.rpartition(".")
    return last if prefix in _FUNC_MODULES else None


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    """Return a call's argument given by position or by keyword, else None."""
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if index < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args):
        return call.args[index]
    return None


_UNKNOWN = object()


def _literal(node: ast.expr | None, default: object = None) -> object:
    """Return ``node``'s literal value; ``default`` if absent, ``_UNKNOWN`` if not a literal."""
    if node is None:
        return default
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNKNOWN


def _int_literal(node: ast.expr | None) -> int | None:
    """Return the int a literal node holds (not bools), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _pair(value: object) -> tuple[int, int] | None:
    """Return ``(v, v)`` for an int, the tuple for a 2-tuple of ints, else None."""
    if type(value) is int:
        return value, value  # type: ignore[return-value]
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return value[0], value[1]
    return None


def _names(node: ast.AST, ctx: type[ast.expr_context]) -> set[str]:
    """Return the variable names ``node`` reads (``ast.Load``) or writes (``ast.Store``)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _static(nodes: Iterable[ast.AST]) -> bool:
    """Whether expressions read no local variable (``self.training`` and constants are fine)."""
    return all(_names(node, ast.Load) <= {"self"} for node in nodes)


def _stmt(source: str) -> ast.stmt:
    """Parse one statement."""
    return ast.parse(source).body[0]


def _assign(target: str, value: ast.expr) -> ast.Assign:
    """Build ``target = value``."""
    return ast.Assign(targets=[ast.Name(id=target, ctx=ast.Store())], value=value, lineno=0)


def _name(var: str) -> ast.Name:
    """Build a Name that reads ``var``."""
    return ast.Name(id=var, ctx=ast.Load())


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    """Return a class's method of that name."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _is_super_init(stmt: ast.stmt) -> bool:
    """Whether ``stmt`` is ``super().__init__(...)`` or ``nn.Module.__init__(self)``."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    func = stmt.value.func
    return isinstance(func, ast.Attribute) and func.attr == "__init__"


class _Swap(ast.NodeTransformer):
    """Replace one node (by identity) with another."""

    def __init__(self, old: ast.AST, new: ast.AST) -> None:
        self.old, self.new = old, new

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.old:
            return self.new
        return self.generic_visit(node)


class _RenameAttrs(ast.NodeTransformer):
    """Rename ``self.X`` attributes."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if _self_attr(node) in self.mapping:
            node.attr = self.mapping[node.attr]
        return node


class _RenameNames(ast.NodeTransformer):
    """Rename module-level names (classes, functions) where they are defined and used."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.generic_visit(node)
        node.name = self.mapping.get(node.name, node.name)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name = self.mapping.get(node.name, node.name)
        return node


def _fresh(prefix: str, taken: set[str]) -> str:
    """Return ``prefix1``, ``prefix2``, ... : the first one not in ``taken``."""
    base = re.sub(r"[_\d]+$", "", prefix) or prefix
    n = 1
    while f"{base}{n}" in taken:
        n += 1
    return f"{base}{n}"


# ------------------------------------------------------------------------ normalising a parent


def _bare_torch_nn_names(tree: ast.Module) -> set[str]:
    """Names imported with ``from torch.nn import X``."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "torch.nn":
            names |= {alias.name for alias in node.names if alias.asname is None}
    return names


def _torch_nn_call(call: ast.Call, bare: set[str]) -> str | None:
    """Return X for ``nn.X(...)``, ``torch.nn.X(...)`` or ``X(...)`` imported from torch.nn."""
    name = _dotted(call.func)
    if name is None:
        return None
    prefix, _, last = name.rpartition(".")
    if prefix in ("nn", "torch.nn") or (prefix == "" and last in bare):
        return last
    return None


class _Lazify(ast.NodeTransformer):
    """Turn eager layers into lazy ones: ``nn.Conv2d(3, 16, 3)`` -> ``nn.LazyConv2d(16, 3)``.

    A lazy layer infers its input size at the first forward pass, so a layer inserted before
    it, or a parent spliced in front of it, cannot break it.
    """

    def __init__(self, bare: set[str]) -> None:
        self.bare = bare

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        eager = _torch_nn_call(node, self.bare)
        if eager not in _LAZY_TWIN:
            return node
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            return node
        lazy, size_keyword = _LAZY_TWIN[eager]
        keywords = [k for k in node.keywords if k.arg != size_keyword]
        args = list(node.args)
        if len(keywords) == len(node.keywords):  # the input size was positional
            if not args:
                return node
            args = args[1:]
        func = ast.Attribute(value=_name("nn"), attr=lazy, ctx=ast.Load())
        return ast.copy_location(ast.Call(func=func, args=args, keywords=keywords), node)


class _CeilPools(ast.NodeTransformer):
    """Make max/avg pooling use ``ceil_mode=True``, so a 1x1 map stays 1x1 instead of failing."""

    # Position of ceil_mode among the positional arguments.
    _MODULES = {"MaxPool1d": 5, "MaxPool2d": 5, "AvgPool1d": 3, "AvgPool2d": 3}
    _FUNCS = {"max_pool1d": 5, "max_pool2d": 5, "avg_pool1d": 4, "avg_pool2d": 4}

    def __init__(self, bare: set[str]) -> None:
        self.bare = bare

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        module, func = _torch_nn_call(node, self.bare), _func_name(node.func)
        position = self._MODULES.get(module or "", self._FUNCS.get(func or ""))
        if position is None or any(isinstance(a, ast.Starred) for a in node.args):
            return node
        if len(node.args) > position:
            node.args[position] = ast.Constant(True)
            return node
        node.keywords = [k for k in node.keywords if k.arg != "ceil_mode"]
        node.keywords.append(ast.keyword(arg="ceil_mode", value=ast.Constant(True)))
        return node


def _reads_layer_sizes(tree: ast.Module) -> bool:
    """Whether any code reads sizes or weights that lazy layers do not have until used."""
    return any(isinstance(n, ast.Attribute) and n.attr in _SIZE_READS for n in ast.walk(tree))


def _drop_script_code(tree: ast.Module) -> None:
    """Keep imports, definitions and constants; drop script code (``print``, ``Net()``, main)."""
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    kept: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef)):
            kept.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            calls = {_dotted(c.func) for c in ast.walk(node.value) if isinstance(c, ast.Call)}
            if not calls & classes:  # instantiating a network is script code
                kept.append(node)
    tree.body = kept


# ------------------------------------------------------------------------- forward statements


@dataclass
class _Op:
    """One step of a chain: a layer call, a tensor function, or a flatten."""

    kind: str  # "module" (self.X(...)), "func" (F.relu(...)), "flatten"
    name: str  # attribute name for a module, function name otherwise
    call: ast.Call
    canonical: bool = True  # flatten only: False for view/reshape forms, rebuilt as torch.flatten
    reduces: bool = False  # flatten only: global pooling (x.mean([2, 3])), gives just C features


@dataclass
class _Chain:
    """A simple forward statement ``target = op_n(...op_1(source))``."""

    target: str
    source: str
    ops: list[_Op]  # innermost first


def _flatten_source(call: ast.Call) -> tuple[ast.expr, bool, bool] | None:
    """If ``call`` flattens (B, ...) to (B, F), return (tensor, canonical form, reduces).

    Recognises ``torch.flatten(t, 1)``, ``t.flatten(1)``, ``t.view(t.size(0), -1)``,
    ``t.view(-1, n)``, ``t.reshape(...)`` with two arguments one of which is -1, and global
    pooling by reduction such as ``t.mean([2, 3])``.
    """
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    receiver_is_module = isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
    if func.attr == "flatten":
        if receiver_is_module:  # torch.flatten(t, start_dim)
            if not call.args:
                return None
            tensor, start, end = call.args[0], _arg(call, 1, "start_dim"), _arg(call, 2, "end_dim")
        else:  # t.flatten(start_dim)
            tensor, start, end = func.value, _arg(call, 0, "start_dim"), _arg(call, 1, "end_dim")
        if _literal(start) == 1 and _literal(end, -1) == -1:
            return tensor, receiver_is_module, False
        return None
    if func.attr in ("view", "reshape") and not receiver_is_module:
        if len(call.args) == 2 and not call.keywords:
            minus_one = [_literal(a) == -1 for a in call.args]
            if sum(minus_one) == 1:
                return func.value, False, False
        return None
    if func.attr in _REDUCTIONS:
        if receiver_is_module:
            if not call.args:
                return None
            tensor, dims, keep = call.args[0], _arg(call, 1, "dim"), _arg(call, 2, "keepdim")
        else:
            tensor, dims, keep = func.value, _arg(call, 0, "dim"), _arg(call, 1, "keepdim")
        dims_value = _literal(dims)
        if isinstance(dims_value, (list, tuple)) and set(dims_value) in ({2, 3}, {-1, -2}):
            if _literal(keep, False) is False:
                return tensor, True, True
    return None


def _parse_chain(expr: ast.expr) -> tuple[str, list[_Op]] | None:
    """Read ``op_n(...op_1(name))`` into (name, ops innermost first); None if not a chain."""
    ops: list[_Op] = []
    node = expr
    while True:
        if isinstance(node, ast.Name):
            return node.id, ops[::-1]
        if not isinstance(node, ast.Call):
            return None
        attr = _self_attr(node.func)
        if attr is not None:
            if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
                return None
            ops.append(_Op("module", attr, node))
            node = node.args[0]
            continue
        flat = _flatten_source(node)
        if flat is not None:
            tensor, canonical, reduces = flat
            ops.append(_Op("flatten", "flatten", node, canonical, reduces))
            node = tensor
            continue
        fname = _func_name(node.func)
        if fname in _CHAIN_FUNCS and node.args and not isinstance(node.args[0], ast.Starred):
            if not _static([*node.args[1:], *(k.value for k in node.keywords)]):
                return None
            ops.append(_Op("func", fname, node))
            node = node.args[0]
            continue
        return None


def _stmt_chain(stmt: ast.stmt) -> _Chain | None:
    """Return the chain of a simple statement ``name = chain``, else None."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return None
    target = stmt.targets[0]
    if not isinstance(target, ast.Name):
        return None
    parsed = _parse_chain(stmt.value)
    if parsed is None:
        return None
    return _Chain(target.id, parsed[0], parsed[1])


def _rebuild(op: _Op, inner: ast.expr) -> ast.expr:
    """Re-apply one chain step to a new inner expression."""
    if op.kind == "module":
        return ast.Call(func=copy.deepcopy(op.call.func), args=[inner], keywords=[])
    if op.kind == "flatten" and not op.canonical:
        return ast.Call(
            func=ast.Attribute(value=_name("torch"), attr="flatten", ctx=ast.Load()),
            args=[inner, ast.Constant(1)],
            keywords=[],
        )
    call = copy.deepcopy(op.call)
    func = call.func
    if op.kind == "flatten" and isinstance(func, ast.Attribute) and not (
        isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
    ):
        func.value = inner  # a method form such as t.mean([2, 3])
    else:
        call.args[0] = inner
    return call


def _split_statement(stmt: ast.stmt) -> list[ast.stmt]:
    """Give every layer call its own statement, so that there is a place between any two.

    ``x = self.pool(F.relu(self.conv1(x)))`` becomes ``x = F.relu(self.conv1(x))`` and
    ``x = self.pool(x)``; a view/reshape flatten becomes ``torch.flatten(x, 1)``, which drops
    hard-coded sizes; ``x = self.fc(expr)`` becomes ``x = expr`` and ``x = self.fc(x)``.
    """
    chain = _stmt_chain(stmt)
    if chain is None:
        hoisted = _hoist_layer_input(stmt)
        if hoisted is None:
            return [stmt]
        return [*_split_statement(hoisted[0]), *_split_statement(hoisted[1])]
    groups: list[list[_Op]] = [[]]
    for op in chain.ops:
        if op.kind != "func" and any(o.kind != "func" for o in groups[-1]):
            groups.append([])
        groups[-1].append(op)
    if len(groups) == 1 and all(op.canonical for op in chain.ops):
        return [stmt]
    pieces: list[ast.stmt] = []
    inner = chain.source
    for group in groups:
        expr: ast.expr = _name(inner)
        for op in group:
            expr = _rebuild(op, expr)
        pieces.append(_assign(chain.target, expr))
        inner = chain.target
    return pieces


def _hoist_layer_input(stmt: ast.stmt) -> tuple[ast.stmt, ast.stmt] | None:
    """Split ``v = act(self.layer(expr))`` into ``v = expr`` and ``v = act(self.layer(v))``."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return None
    target = stmt.targets[0]
    if not isinstance(target, ast.Name):
        return None
    node = stmt.value
    while isinstance(node, ast.Call) and _func_name(node.func) in _CHAIN_FUNCS and node.args:
        if not _static([*node.args[1:], *(k.value for k in node.keywords)]):
            return None
        node = node.args[0]
    if not (isinstance(node, ast.Call) and _self_attr(node.func) is not None):
        return None
    if len(node.args) != 1 or node.keywords or isinstance(node.args[0], (ast.Name, ast.Starred)):
        return None
    first = _assign(target.id, node.args[0])
    node.args[0] = _name(target.id)
    return first, stmt


# ----------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class _Point:
    """A place in ``forward`` where a layer may be inserted (before ``body[index]``)."""

    index: int
    var: str  # the variable that holds the tensor there
    region: str  # "spatial": (B, C, H, W); "flat": (B, F)
    reshape_ok: bool  # everything after adapts to a new channel/feature count
    resize_ok: bool  # (spatial) everything after also accepts any H, W >= 1
    first_flat: bool  # (flat) nothing with weights since the flatten: sees the whole map


@dataclass
class _Layout:
    """What ``forward`` looks like: chains, the flatten, the classifier, insertion points."""

    chains: list[_Chain | None]
    flatten: int | None
    head: int | None
    head_attr: str | None
    points: list[_Point]


class _Net:
    """A parsed module and the network class in it, edited in place."""

    def __init__(self, tree: ast.Module, cls: ast.ClassDef) -> None:
        init, forward = _method(cls, "__init__"), _method(cls, "forward")
        if init is None or forward is None:
            raise _NoEdit("the network class needs both __init__ and forward")
        if len(forward.args.args) < 2:
            raise _NoEdit("forward takes no input tensor")
        self.tree, self.cls, self.init, self.forward = tree, cls, init, forward
        self._cache: dict[str, tuple[list[ast.stmt], object]] = {}

    def _cached(self, name: str, stmts: list[ast.stmt], compute: Callable[[], object]) -> object:
        """Memoise ``compute()`` until the statement list changes.

        Edits add or remove statements. The old statements themselves are kept in the cache, so
        a new statement can never reuse an old one's identity.
        """
        hit = self._cache.get(name)
        if hit is not None and len(hit[0]) == len(stmts):
            if all(a is b for a, b in zip(hit[0], stmts, strict=True)):
                return hit[1]
        value = compute()
        self._cache[name] = (list(stmts), value)
        return value

    # --- what is in the class ---------------------------------------------------------

    @property
    def input_name(self) -> str:
        """The forward's input variable."""
        return self.forward.args.args[1].arg

    def params(self) -> set[str]:
        """All of forward's parameter names."""
        a = self.forward.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
        return set(names)

    def module_attrs(self) -> dict[str, ast.Call]:
        """``self.X = Call(...)`` assignments at the top level of ``__init__``."""
        return self._cached("attrs", self.init.body, self._module_attrs)  # type: ignore[return-value]

    def _module_attrs(self) -> dict[str, ast.Call]:
        attrs: dict[str, ast.Call] = {}
        for stmt in self.init.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                attr = _self_attr(stmt.targets[0])
                if attr is not None and isinstance(stmt.value, ast.Call):
                    attrs[attr] = stmt.value
        return attrs

    def helpers(self) -> dict[str, str]:
        """Helper classes this mutator added, by class name -> template key."""
        return self._cached("helpers", self.tree.body, self._helpers)  # type: ignore[return-value]

    def _helpers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node is not self.cls:
                for helper, template in _HELPER_TEMPLATES.items():
                    renamed = copy.copy(node)
                    renamed.name = template.name
                    if ast.dump(renamed) == _HELPER_DUMPS[helper]:
                        found[node.name] = helper
        return found

    def taken_attrs(self) -> set[str]:
        """Attribute and method names already used in the class."""
        names = {n.attr for n in ast.walk(self.cls) if _self_attr(n) is not None}
        names |= {n.name for n in self.cls.body if isinstance(n, ast.FunctionDef)}
        return names

    def attr_uses(self) -> Counter[str]:
        """How often each ``self.X`` is read anywhere in the class."""
        return Counter(
            n.attr
            for n in ast.walk(self.cls)
            if _self_attr(n) is not None and isinstance(n.ctx, ast.Load)
        )

    def layer_count(self) -> int:
        """Layers built in ``__init__``; a container counts its elements."""

        def count(call: ast.expr) -> int:
            if _ctor_name(call) in ("Sequential", "ModuleList"):
                return sum(count(a) for a in call.args) or 1  # type: ignore[union-attr]
            return 1

        return sum(count(call) for call in self.module_attrs().values())

    # --- what the layers do -----------------------------------------------------------

    def ctor_kind(self, call: ast.expr) -> str | None:
        """The layer's class name, or the helper key for our helpers."""
        if not isinstance(call, ast.Call):
            return None
        name = _ctor_name(call)
        return self.helpers().get(name or "", name)

    def is_weighted(self, attr: str) -> bool:
        """Whether the layer ``self.attr`` has weights (it could be the classifier)."""
        if attr in {n.name for n in self.cls.body if isinstance(n, ast.FunctionDef)}:
            return False  # self.method(x) is not a layer
        call = self.module_attrs().get(attr)
        return True if call is None else self._weighted_call(call)

    def _weighted_call(self, call: ast.expr) -> bool:
        kind = self.ctor_kind(call)
        if kind in ("Sequential", "ModuleList"):
            return any(self._weighted_call(a) for a in call.args)  # type: ignore[union-attr]
        if kind in _WEIGHTED or kind in _HELPER_SOURCES:
            return True
        # A class defined in the module may hold weights; other torch.nn layers do not.
        local = {n.name for n in self.tree.body if isinstance(n, ast.ClassDef)}
        return isinstance(call, ast.Call) and _dotted(call.func) in local

    def agnostic(self, call: ast.expr | None) -> bool:
        """Whether a layer works for any input channel/feature count."""
        kind = self.ctor_kind(call) if call is not None else None
        if kind is None:
            return False
        if kind == "Sequential":
            return all(self.agnostic(a) for a in call.args)  # type: ignore[union-attr]
        if kind in _LAZY_CONVS or kind == "LazyLinear" or kind.startswith("LazyConvTranspose"):
            return _groups(call) == 1  # type: ignore[arg-type]
        return kind in _HELPER_SOURCES or kind in (
            _SHAPE_PRESERVING | _POOLS | _ADAPTIVE_POOLS | {"Flatten"}
        )

    def size_safe(self, call: ast.expr | None) -> bool:
        """Whether a layer accepts any spatial size down to 1x1."""
        kind = self.ctor_kind(call) if call is not None else None
        if kind is None:
            return False
        if kind == "Sequential":
            return all(self.size_safe(a) for a in call.args)  # type: ignore[union-attr]
        if kind in _LAZY_CONVS or kind in _EAGER_CONVS:
            return _conv_size_safe(call, 0 if kind in _LAZY_CONVS else 1)  # type: ignore[arg-type]
        if kind in _POOLS:
            return _pool_size_safe(call, False, kind.startswith("Max"))  # type: ignore[arg-type]
        return kind in (
            _SHAPE_PRESERVING | _ADAPTIVE_POOLS | {"Flatten", "conv_residual"}
            | {"LazyLinear", "Linear", "linear_residual", "recurrent"}
        )

    def is_flatten(self, op: _Op) -> bool:
        """Whether a chain step flattens (B, C, H, W) to (B, F)."""
        if op.kind == "flatten":
            return True
        call = self.module_attrs().get(op.name) if op.kind == "module" else None
        if call is not None and self.ctor_kind(call) == "Flatten":
            return _literal(_arg(call, 0, "start_dim"), 1) == 1
        return False

    def protected_call(self, head_attr: str | None) -> ast.Call | None:
        """The classifier's constructor call (its output size is the number of classes)."""
        call = self.module_attrs().get(head_attr or "")
        return None if call is None else self._last_weighted(call)

    def _last_weighted(self, call: ast.expr) -> ast.Call | None:
        if self.ctor_kind(call) == "Sequential":
            for arg in reversed(call.args):  # type: ignore[union-attr]
                found = self._last_weighted(arg)
                if found is not None:
                    return found
            return None
        return call if isinstance(call, ast.Call) and self._weighted_call(call) else None

    # --- the layout of forward --------------------------------------------------------

    def head(self) -> tuple[int | None, str | None]:
        """The statement that applies the classifier (the last layer with weights)."""
        body = self.forward.body
        for i in reversed(range(len(body))):
            for node in ast.walk(body[i]):  # breadth first: the outermost call wins
                if isinstance(node, ast.Call):
                    attr = _self_attr(node.func)
                    if attr is not None and self.is_weighted(attr):
                        return i, attr
        return None, None

    def touch(self) -> None:
        """Forget memoised analyses after an edit that changed nodes in place."""
        self._cache.clear()

    def layout(self) -> _Layout:
        """Find the flatten, the classifier and every place where a layer fits."""
        stmts = [*self.forward.body, *self.init.body]
        return self._cached("layout", stmts, self._layout)  # type: ignore[return-value]

    def _layout(self) -> _Layout:
        body = self.forward.body
        chains = [_stmt_chain(s) for s in body]
        flatten = next(
            (i for i, c in enumerate(chains) if c and any(self.is_flatten(op) for op in c.ops)),
            None,
        )
        head, head_attr = self.head()
        layout = _Layout(chains, flatten, head, head_attr, [])
        live = _live_vars(body, self.params())

        # Spatial: from the input, while each statement feeds the tensor on, up to the flatten
        # (and never past the classifier, e.g. in all-convolutional networks).
        var, end = self.input_name, 0
        if flatten is not None:
            end = flatten if head is None else min(flatten, head)
        for p in range(end + 1):
            if p > 0:
                chain = chains[p - 1]
                if chain is None or chain.source != var:
                    break
                var = chain.target
            if live[p] == {var}:
                reshape = self.absorbs(layout, p, channels=True)
                resize = self.absorbs(layout, p, spatial=True, size_check=True)
                layout.points.append(_Point(p, var, "spatial", reshape, resize, False))

        # Flat: after the flatten, up to and including the classifier's statement.
        if flatten is not None and head is not None and flatten < head:
            flat_chain = chains[flatten]
            # After global pooling a hidden layer sees just C features: nothing to guard.
            first = not any(op.kind == "flatten" and op.reduces for op in flat_chain.ops)  # type: ignore[union-attr]
            var = flat_chain.target  # type: ignore[union-attr]
            for p in range(flatten + 1, head + 1):
                if p > flatten + 1:
                    chain = chains[p - 1]
                    if chain is None or chain.source != var:
                        break
                    var = chain.target
                    if any(o.kind == "module" and self.is_weighted(o.name) for o in chain.ops):
                        first = False
                if live[p] == {var}:
                    reshape = self.absorbs(layout, p, channels=True)
                    layout.points.append(_Point(p, var, "flat", reshape, False, first))
        elif flatten is None and head is not None and self._linear_head(head, head_attr, body):
            # No flatten statement, but a linear classifier whose output is the network's
            # output: its input is (B, F).
            var = chains[head].source  # type: ignore[union-attr]
            if live[head] == {var}:
                reshape = self.absorbs(layout, head, channels=True)
                layout.points.append(_Point(head, var, "flat", reshape, False, False))
        return layout

    def _linear_head(self, head: int, attr: str | None, body: list[ast.stmt]) -> bool:
        """Whether the classifier is a linear layer whose output only activations follow."""
        if self.ctor_kind(self.module_attrs().get(attr or "")) not in ("Linear", "LazyLinear"):
            return False
        if _stmt_chain(body[head]) is None:
            return False
        for stmt in body[head + 1 :]:
            chain = _stmt_chain(stmt)
            plain = chain is not None and all(op.kind == "func" for op in chain.ops)
            if not (plain or isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Name)):
                return False
        return True

    # --- how a change of shape travels ------------------------------------------------

    def absorbs(
        self,
        layout: _Layout,
        start: int,
        channels: bool = False,
        spatial: bool = False,
        size_check: bool = False,
    ) -> bool:
        """Whether forward, from ``body[start]`` on, absorbs a change of the tensor's shape.

        ``channels``: the channel (or feature) count changed; ``spatial``: H and W changed.
        The change travels through the layers until one absorbs it: a lazy convolution or
        linear layer fixes the channels, an adaptive pool fixes H and W, a flatten turns a
        change of H and W into a change of features. Every layer it meets before that must
        accept any size (and, with ``size_check``, H and W down to 1). If the change reaches
        code this cannot follow, or the output, the answer is no.
        """
        state: tuple[bool, bool] | None = (channels, spatial)
        attrs = self.module_attrs()
        for chain in layout.chains[start:]:
            if state == (False, False):
                return True
            if chain is None:
                return False
            for op in chain.ops:
                state = self._op_transfer(op, attrs, state, size_check)  # type: ignore[arg-type]
                if state is None:
                    return False
        return state == (False, False)

    def _op_transfer(
        self, op: _Op, attrs: dict[str, ast.Call], state: tuple[bool, bool], size_check: bool
    ) -> tuple[bool, bool] | None:
        """The shape change after one chain step, or None if the step cannot take it."""
        changed_channels, changed_spatial = state
        if op.kind == "module":
            call = attrs.get(op.name)
            if call is None:
                return None if any(state) else state
            return self.transfer(call, state, size_check)
        if op.kind == "flatten":
            return changed_channels or (changed_spatial and not op.reduces), False
        if op.name in _FUNC_ADAPTIVE:
            return changed_channels, False
        pool = op.name in _FUNC_POOLS
        if pool and changed_spatial and size_check:
            if not _pool_size_safe(op.call, True, op.name.startswith("max")):
                return None
        return state

    def transfer(
        self, call: ast.expr, state: tuple[bool, bool], size_check: bool
    ) -> tuple[bool, bool] | None:
        """The shape change after the layer ``call`` builds, or None if it cannot take it."""
        kind = self.ctor_kind(call)
        if kind == "Sequential":
            for element in call.args:  # type: ignore[union-attr]
                state = self.transfer(element, state, size_check)  # type: ignore[assignment]
                if state is None:
                    return None
            return state
        changed_channels, changed_spatial = state
        if not (changed_channels or changed_spatial):
            return state
        if not self.agnostic(call):
            return None
        if changed_spatial and size_check and not self.size_safe(call):
            return None
        if kind == "Flatten":
            return True, False
        if kind in _ADAPTIVE_POOLS:
            changed_spatial = False
        if kind in _ABSORB_WIDTH:
            changed_channels = False
        return changed_channels, changed_spatial

def _groups(call: ast.Call) -> object:
    """The ``groups`` of a lazy convolution (position 5); 1 for layers without groups."""
    return _literal(_arg(call, 5, "groups"), 1)


def _conv_size_safe(call: ast.Call, shift: int) -> bool:
    """Whether a convolution keeps a 1x1 map valid (enough padding for its kernel)."""
    kernel = _pair(_literal(_arg(call, 1 + shift, "kernel_size")))
    padding = _literal(_arg(call, 3 + shift, "padding"), 0)
    dilation = _pair(_literal(_arg(call, 4 + shift, "dilation"), 1))
    if padding == "same":
        return True
    pad = _pair(padding)
    if kernel is None or pad is None or dilation is None:
        return False
    return all(2 * p >= d * (k - 1) for k, p, d in zip(kernel, pad, dilation, strict=True))


def _pool_size_safe(call: ast.Call, functional: bool, is_max: bool) -> bool:
    """Whether a pooling layer keeps a 1x1 map valid: ceil mode and kernel < 1 + 2*pad + stride.

    ``F.max_pool2d(x, ...)`` takes the input first, so its arguments sit one place later.
    """
    shift = int(functional)
    kernel = _pair(_literal(_arg(call, shift, "kernel_size")))
    stride_value = _literal(_arg(call, shift + 1, "stride"))
    stride = kernel if stride_value is None else _pair(stride_value)
    pad = _pair(_literal(_arg(call, shift + 2, "padding"), 0))
    ceil_position = {(False, True): 5, (False, False): 3, (True, True): 5, (True, False): 4}[
        (functional, is_max)
    ]
    if _literal(_arg(call, ceil_position, "ceil_mode"), False) is not True:
        return False
    if is_max and _literal(_arg(call, shift + 3, "dilation"), 1) != 1:
        return False
    if kernel is None or stride is None or pad is None:
        return False
    return all(k < 1 + 2 * p + s for k, s, p in zip(kernel, stride, pad, strict=True))


def _live_vars(body: list[ast.stmt], params: set[str]) -> list[set[str]]:
    """For each p, the local variables defined before ``body[p]`` and still read from it on.

    A layer can go at p only if exactly one variable (the tensor) is live there; otherwise a
    value saved earlier (a skip connection, a shape) would meet the changed tensor.
    """
    defined = [set(params)]
    for stmt in body:
        defined.append(defined[-1] | _names(stmt, ast.Store))
    live_from: list[set[str]] = [set() for _ in range(len(body) + 1)]
    for i in reversed(range(len(body))):
        stmt, after = body[i], live_from[i + 1]
        if isinstance(stmt, ast.Assign):  # reads first, then unconditional writes
            reads = _names(stmt.value, ast.Load).union(*(_names(t, ast.Load) for t in stmt.targets))
            writes = set().union(*(_names(t, ast.Store) for t in stmt.targets))
            live_from[i] = (after - writes) | reads
        else:  # compound statements may not run their assignments: only count reads
            reads = _names(stmt, ast.Load)
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                reads.add(stmt.target.id)
            live_from[i] = after | reads
    return [(live & known) - {"self"} for live, known in zip(live_from, defined, strict=True)]


# -------------------------------------------------------------------------- loading, output


def _network_class(tree: ast.Module) -> ast.ClassDef | None:
    """The network class: an nn.Module class with __init__ and forward that no other uses."""
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    local = {c.name for c in classes}
    candidates = [
        c
        for c in classes
        if _method(c, "__init__") and _method(c, "forward")
        and any((_dotted(b) or "").endswith("Module") or _dotted(b) in local for b in c.bases)
    ]
    used = set()
    for c in classes:
        used |= _names(c, ast.Load) - {c.name}
    top = [c for c in candidates if c.name not in used] or candidates
    named_net = [c for c in top if c.name == "Net"]
    return (named_net or top or [None])[-1]


def _load(source: str) -> _Net:
    """Parse a parent and bring it into the canonical form the edits understand."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise _NoEdit(f"the parent is not valid Python ({exc.msg}, line {exc.lineno})") from exc
    except ValueError as exc:  # e.g. null bytes
        raise _NoEdit(f"the parent is not valid Python ({exc})") from exc
    _drop_script_code(tree)
    cls = _network_class(tree)
    if cls is None:
        raise _NoEdit("the parent has no nn.Module class with __init__ and forward")
    net = _Net(tree, cls)
    bare = _bare_torch_nn_names(tree)
    if not _reads_layer_sizes(tree):
        _Lazify(bare).visit(tree)
    _CeilPools(bare).visit(tree)
    _normalise_forward(net)
    return net


def _normalise_forward(net: _Net) -> None:
    """Drop docstrings, name the returned value, and split statements to one layer each."""
    body = [
        s
        for s in net.forward.body
        if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    if body and isinstance(body[-1], ast.Return) and isinstance(body[-1].value, ast.Call):
        # return self.fc(x) -> x = self.fc(x); return x: gives a place before the classifier
        stored = [t.id for s in body[:-1] if isinstance(s, ast.Assign) for t in s.targets
                  if isinstance(t, ast.Name)]
        var = stored[-1] if stored else net.input_name
        body[-1:] = [_assign(var, body[-1].value), ast.Return(value=_name(var))]
    net.forward.body = [piece for stmt in body for piece in _split_statement(stmt)] or [
        ast.Pass()
    ]


def _prune(net: _Net) -> None:
    """Remove layers nothing uses any more, then unused module-level classes."""
    uses = net.attr_uses()
    net.init.body = [
        s
        for s in net.init.body
        if not (
            isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.value, ast.Call)
            and _self_attr(s.targets[0]) is not None and uses[_self_attr(s.targets[0])] == 0
        )
    ] or [ast.Pass()]
    while True:
        unused = [
            n
            for n in net.tree.body
            if isinstance(n, ast.ClassDef) and n is not net.cls
            and not any(n.name in _names(o, ast.Load) for o in net.tree.body if o is not n)
        ]
        if not unused:
            return
        net.tree.body = [n for n in net.tree.body if n not in unused]


def _render(net: _Net) -> str:
    """Source of the child: the three imports, other imports, helpers, then the network."""
    imports: list[str] = list(_HEADER)
    others: list[str] = []
    for node in net.tree.body:
        if node is net.cls:
            continue
        text = ast.unparse(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if text not in imports:
                imports.append(text)
        else:
            others.append(text)
    return "\n\n\n".join(["\n".join(imports), *others, ast.unparse(net.cls)]) + "\n"


# ------------------------------------------------------------------------------------ edits


@dataclass
class _Ctx:
    """Randomness, temperature and caps shared by the edits of one request."""

    rng: np.random.Generator
    temperature: float
    max_channels: int
    max_features: int
    max_layers: int

    def n_edits(self, base: int = 1) -> int:
        """How many edits: ``base + Binomial(2, temperature)``."""
        return base + int(self.rng.binomial(2, self.temperature))

    def factor(self) -> int:
        """A width factor for the drastic size edits: 2 when cold, up to 4 when hot."""
        return 2 + int(self.rng.binomial(2, self.temperature))

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return bool(self.rng.random() < p)

    def index(self, n: int) -> int:
        """A uniform index below ``n``."""
        return int(self.rng.integers(n))

    def pick(self, options: Sequence[float], ref: float, cap: float | None = None) -> float:
        """Pick near ``ref`` when cold, from a window that covers every option when hot."""
        opts = [o for o in options if cap is None or o <= cap] or [cap or options[0]]
        i = min(range(len(opts)), key=lambda j: (abs(opts[j] - ref), j))
        spread = int(round(self.temperature * (len(opts) - 1)))
        lo, hi = max(0, i - spread), min(len(opts) - 1, i + spread)
        return opts[lo + self.index(hi - lo + 1)]

    def order(self, kinds: Sequence[str], weights: Sequence[float]) -> list[str]:
        """A random order of ``kinds``, heavier ones first on average."""
        p = np.asarray(weights, dtype=float)
        picks = self.rng.choice(len(kinds), size=len(kinds), replace=False, p=p / p.sum())
        return [kinds[int(i)] for i in picks]


Edit = Callable[[_Net, _Ctx], "str | None"]


def _points(
    net: _Net, region: str | None = None, reshape: bool = False, resize: bool = False
) -> list[_Point]:
    """Insertion points with the required guarantees."""
    return [
        p
        for p in net.layout().points
        if (region is None or p.region == region)
        and (p.reshape_ok or not reshape)
        and (p.resize_ok or not resize)
    ]


def _choose_point(
    net: _Net, ctx: _Ctx, region: str | None = None, reshape: bool = False, resize: bool = False
) -> _Point | None:
    """A random insertion point with the required guarantees, or None."""
    points = _points(net, region, reshape, resize)
    return points[ctx.index(len(points))] if points else None


def _flat_point(net: _Net, ctx: _Ctx) -> _Point | None:
    """A flat point for a layer with weights, guarding the flat size when needed.

    A hidden layer right after the flatten sees every pixel of every channel (up to
    128 * 32 * 32 inputs), so an adaptive pool goes before the flatten first.
    """
    points = [p for p in net.layout().points if p.region == "flat" and p.reshape_ok]
    if any(p.first_flat for p in points):
        if _ensure_guard(net):
            points = [p for p in net.layout().points if p.region == "flat" and p.reshape_ok]
        else:
            points = [p for p in points if not p.first_flat]
    return points[ctx.index(len(points))] if points else None


def _has_guard(net: _Net, layout: _Layout) -> bool:
    attrs = net.module_attrs()
    for chain in layout.chains[: layout.flatten]:
        for op in chain.ops if chain else []:
            if op.kind == "func" and op.name in _FUNC_ADAPTIVE:
                return True
            if op.kind == "module" and net.ctor_kind(attrs.get(op.name)) in _ADAPTIVE_POOLS:
                return True
    return False


def _ensure_guard(net: _Net) -> bool:
    """Put ``nn.AdaptiveAvgPool2d(4)`` right before the flatten unless one is there."""
    layout = net.layout()
    if layout.flatten is None:
        return False
    if _has_guard(net, layout):
        return True
    before = [p for p in layout.points if p.region == "spatial" and p.index == layout.flatten]
    # The pool fixes H and W (never below 1): the flatten must carry that to lazy layers.
    if not before or not net.absorbs(layout, layout.flatten, spatial=True):
        return False
    attr = _fresh("gap", net.taken_attrs())
    _insert_layer(net, before[0], attr, f"nn.AdaptiveAvgPool2d({_GUARD_SIZE})", "self.{a}({x})")
    return True


def _insert_layer(net: _Net, point: _Point, attr: str, ctor: str, expr: str) -> None:
    """Add ``self.attr = ctor`` to __init__ and ``var = expr`` to forward at ``point``.

    The __init__ line goes before the first layer that forward uses after the point, so the
    constructor reads in the order the layers run.
    """
    later = [
        n.attr
        for stmt in net.forward.body[point.index :]
        for n in ast.walk(stmt)
        if _self_attr(n) is not None
    ]
    body = net.init.body
    position = len(body)
    for name in later:
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Assign) and any(_self_attr(t) == name for t in stmt.targets):
                position = min(position, i)
    supers = [i for i, stmt in enumerate(body) if _is_super_init(stmt)]
    if supers:  # modules cannot be assigned before nn.Module.__init__ ran
        position = max(position, supers[0] + 1)
    net.init.body.insert(position, _stmt(f"self.{attr} = {ctor}"))
    net.forward.body.insert(point.index, _stmt(f"{point.var} = {expr.format(a=attr, x=point.var)}"))


def _ensure_helper(net: _Net, key: str) -> str:
    """Return the name of our helper class ``key``, adding it to the module if missing."""
    for name, found in net.helpers().items():
        if found == key:
            return name
    taken = {n.name for n in net.tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    template = _HELPER_TEMPLATES[key]
    name = template.name
    while name in taken:
        name = _fresh(template.name, taken)
    node = copy.deepcopy(template)
    node.name = name
    net.tree.body.insert(net.tree.body.index(net.cls), node)
    return name


def _at_cap(net: _Net, ctx: _Ctx) -> bool:
    return net.layer_count() >= ctx.max_layers


def _widths(net: _Net, kinds: set[str]) -> list[int]:
    """Output widths (int literals) of the non-classifier layers of these kinds."""
    protected = net.protected_call(net.head()[1])
    found: list[int] = []
    for node in ast.walk(net.init):
        if isinstance(node, ast.Call) and node is not protected and net.ctor_kind(node) in kinds:
            width = _int_literal(_arg(node, 0, _width_keyword(net.ctor_kind(node) or "")))
            if width is not None:
                found.append(width)
    return found


def _width_keyword(kind: str) -> str:
    if kind in _HELPER_WIDTH:
        return _HELPER_WIDTH[kind]
    return "out_features" if kind == "LazyLinear" else "out_channels"


_CONV_KINDS = {"LazyConv2d", "conv_residual"}
_LINEAR_KINDS = {"LazyLinear", "linear_residual", "recurrent"}


def _add_conv(net: _Net, ctx: _Ctx, width: int | None = None) -> str | None:
    """Insert ``relu(LazyConv2d(c, k, padding=k // 2))``: same H and W, any channels in."""
    if _at_cap(net, ctx):
        return None
    point = _choose_point(net, ctx, "spatial", reshape=True)
    if point is None:
        return None
    ref = max(_widths(net, _CONV_KINDS) + [16])
    c = min(width, ctx.max_channels) if width else int(
        ctx.pick(_CONV_WIDTHS, ref, ctx.max_channels)
    )
    k = int(ctx.pick(_KERNELS, 3))
    attr = _fresh("conv", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.LazyConv2d({c}, {k}, padding={k // 2})",
                  "F.relu(self.{a}({x}))")
    return f"add {attr}: conv {c} channels {k}x{k}"


def _add_linear(net: _Net, ctx: _Ctx, width: int | None = None) -> str | None:
    """Insert ``relu(LazyLinear(f))`` in the flat region, before the classifier."""
    if _at_cap(net, ctx):
        return None
    point = _flat_point(net, ctx)
    if point is None:
        return None
    ref = max(_widths(net, _LINEAR_KINDS) + [64])
    f = min(width, ctx.max_features) if width else int(
        ctx.pick(_LINEAR_WIDTHS, ref, ctx.max_features)
    )
    attr = _fresh("fc", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.LazyLinear({f})", "F.relu(self.{a}({x}))")
    return f"add {attr}: linear {f}"


def _downsamples(net: _Net) -> int:
    """Pooling layers before the flatten."""
    layout = net.layout()
    attrs, count = net.module_attrs(), 0
    for chain in layout.chains[: layout.flatten]:
        for op in chain.ops if chain else []:
            if op.kind == "func" and op.name in _FUNC_POOLS:
                count += 1
            elif op.kind == "module":
                call = attrs.get(op.name)
                count += sum(isinstance(n, ast.Call) and _ctor_name(n) in _POOLS
                             for n in ast.walk(call)) if call else 0
    return count


def _add_pool(net: _Net, ctx: _Ctx, last: bool = False) -> str | None:
    """Insert a ceil-mode pooling layer: halves H and W, never below 1x1."""
    if _at_cap(net, ctx) or _downsamples(net) >= _MAX_DOWNSAMPLES:
        return None
    if last:  # right before the flatten: shrinks what the classifier sees the most
        points = [p for p in net.layout().points if p.region == "spatial" and p.resize_ok]
        point = max(points, key=lambda p: p.index) if points else None
    else:
        point = _choose_point(net, ctx, "spatial", reshape=True, resize=True)
    if point is None:
        return None
    ctor = "nn.MaxPool2d(2, ceil_mode=True)"
    if not last and ctx.chance(ctx.temperature / 2):
        ctor = ("nn.AvgPool2d(2, ceil_mode=True)",
                "nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)")[ctx.index(2)]
    attr = _fresh("pool", net.taken_attrs())
    _insert_layer(net, point, attr, ctor, "self.{a}({x})")
    return f"add {attr}: {ctor}"


def _add_dropout(net: _Net, ctx: _Ctx) -> str | None:
    """Insert dropout anywhere (it keeps the shape)."""
    if _at_cap(net, ctx):
        return None
    point = _choose_point(net, ctx)
    if point is None:
        return None
    p = ctx.pick(_DROPOUT_PS, 0.2)
    # Dropout2d drops whole channels: only sometimes, and only when hot.
    channelwise = point.region == "spatial" and ctx.chance(ctx.temperature / 2)
    kind = "Dropout2d" if channelwise else "Dropout"
    attr = _fresh("dropout", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.{kind}({p})", "self.{a}({x})")
    return f"add {attr}: {kind}({p})"


_NORM_KINDS = frozenset(
    {f"{lazy}{kind}{d}d" for lazy in ("", "Lazy") for kind in ("BatchNorm", "InstanceNorm")
     for d in (1, 2, 3)} | {"LayerNorm", "GroupNorm", "LocalResponseNorm", "RMSNorm"}
)
_FUNC_NORMS = frozenset(
    {"batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm",
     "normalize", "rms_norm"}
)


def _norm_kind(net: _Net, op: _Op) -> str:
    """'norm', 'transparent' (a reshape or dropout: the same values on) or 'other'."""
    if op.kind == "flatten":
        return "transparent"
    if op.kind == "func":
        return "norm" if op.name in _FUNC_NORMS else "other"
    kind = net.ctor_kind(net.module_attrs().get(op.name))
    if kind in _NORM_KINDS:
        return "norm"
    return "transparent" if kind in _DROPOUTS else "other"


def _next_to_norm(net: _Net, point: _Point) -> bool:
    """Whether a normalisation layer is applied right before or right after ``point``.

    Reshapes and dropout between them do not count: ``bn -> flatten -> bn1d`` normalises the
    same values twice. Stacked normalisation is an edit no LLM makes, and stacks of three or
    four train to chance (measured: a 0.979 network scored 0.094 after three more norms).
    """
    chains = net.layout().chains

    def ops(statements: Iterable[_Chain | None], backwards: bool) -> Iterator[_Op | None]:
        for chain in statements:
            if chain is None:  # not a plain layer chain (a sum, a loop): stop looking
                yield None
                return
            yield from (reversed(chain.ops) if backwards else chain.ops)

    for walk in (ops(reversed(chains[: point.index]), True), ops(chains[point.index :], False)):
        for op in walk:
            kind = "other" if op is None else _norm_kind(net, op)
            if kind != "transparent":
                if kind == "norm":
                    return True
                break
    return False


def _add_norm(net: _Net, ctx: _Ctx) -> str | None:
    """Insert lazy batch normalisation (it keeps the shape; infers its channels).

    Never right next to another normalisation layer (see ``_next_to_norm``).
    """
    if _at_cap(net, ctx):
        return None
    points = [p for p in _points(net) if not _next_to_norm(net, p)]
    if not points:
        return None
    point = points[ctx.index(len(points))]
    kind = "LazyBatchNorm2d" if point.region == "spatial" else "LazyBatchNorm1d"
    attr = _fresh("bn", net.taken_attrs())
    _insert_layer(net, point, attr, f"nn.{kind}()", "self.{a}({x})")
    return f"add {attr}: {kind}"


def _add_residual(
    net: _Net, ctx: _Ctx, width: int | None = None, spatial_only: bool = False
) -> str | None:
    """Insert a residual helper: conv blocks before the flatten, linear blocks after it."""
    if _at_cap(net, ctx):
        return None
    spatial = _choose_point(net, ctx, "spatial", reshape=True)
    if spatial is not None and (
        spatial_only or ctx.chance(0.75) or not _points(net, "flat", reshape=True)
    ):
        ref = max(_widths(net, _CONV_KINDS) + [16])
        c = min(width, ctx.max_channels) if width else int(
            ctx.pick(_CONV_WIDTHS, ref, ctx.max_channels)
        )
        k = int(ctx.pick(_KERNELS[1:], 3))
        helper = _ensure_helper(net, "conv_residual")
        args = f"{c}" if k == 3 else f"{c}, {k}"
        attr = _fresh("res", net.taken_attrs())
        _insert_layer(net, spatial, attr, f"{helper}({args})", "self.{a}({x})")
        return f"add {attr}: conv residual block {c} channels"
    point = None if spatial_only else _flat_point(net, ctx)
    if point is None:
        return None
    f = int(ctx.pick(_LINEAR_WIDTHS, max(_widths(net, _LINEAR_KINDS) + [64]), ctx.max_features))
    helper = _ensure_helper(net, "linear_residual")
    attr = _fresh("res", net.taken_attrs())
    _insert_layer(net, point, attr, f"{helper}({f})", "self.{a}({x})")
    return f"add {attr}: linear residual block {f}"


def _add_recurrent(net: _Net, ctx: _Ctx) -> str | None:
    """Insert a recurrent helper (LazyLinear projection + GRU/LSTM/RNN) after the flatten."""
    if _at_cap(net, ctx):
        return None
    point = _flat_point(net, ctx)
    if point is None:
        return None
    h = int(ctx.pick(_RNN_WIDTHS, 64, ctx.max_features))
    cell = ("gru", "lstm", "rnn")[int(ctx.rng.choice(3, p=[0.45, 0.45, 0.1]))]
    helper = _ensure_helper(net, "recurrent")
    attr = _fresh("rnn", net.taken_attrs())
    _insert_layer(net, point, attr, f"{helper}({h}, {cell!r})", "self.{a}({x})")
    return f"add {attr}: {cell.upper()} {h}"


def _delete_candidates(net: _Net, preserving_only: bool) -> list[tuple[str, int, str, ast.Call]]:
    """Layers whose removal keeps the network valid.

    Each is ``("stmt", forward statement index, attr, call)`` or
    ``("seq", element index, attr, nn.Sequential call)``.
    """
    layout = net.layout()
    attrs, uses = net.module_attrs(), net.attr_uses()
    found: list[tuple[str, int, str, ast.Call]] = []
    for j, chain in enumerate(layout.chains):
        for op in chain.ops if chain else []:
            call = attrs.get(op.name) if op.kind == "module" else None
            if call is None or uses[op.name] != 1 or op.name == layout.head_attr:
                continue
            kind = net.ctor_kind(call)
            if kind in _ADAPTIVE_POOLS or kind == "Flatten":
                continue  # the adaptive pool bounds the flat size; the flatten is structure
            preserving = kind in _SHAPE_PRESERVING
            # Without the layer, what came into it goes on: other channels, larger H and W.
            after_flatten = layout.flatten is not None and j > layout.flatten
            if preserving or (
                not preserving_only
                and net.absorbs(layout, j + 1, channels=True, spatial=not after_flatten)
            ):
                found.append(("stmt", j, op.name, op.call))
    for attr, call in attrs.items():
        if net.ctor_kind(call) == "Sequential" and len(call.args) > 1 and uses[attr] >= 1:
            for k, element in enumerate(call.args):
                if net.ctor_kind(element) in _SHAPE_PRESERVING:
                    found.append(("seq", k, attr, call))
    return found


def _delete(net: _Net, ctx: _Ctx, preserving_only: bool = False) -> str | None:
    """Remove one layer (never the classifier, never the flatten)."""
    candidates = _delete_candidates(net, preserving_only)
    if not candidates:
        return None
    where, index, attr, call = candidates[ctx.index(len(candidates))]
    net.touch()
    if where == "seq":
        del call.args[index]
        return f"delete element {index} of {attr}"
    stmt = _Swap(call, call.args[0]).visit(net.forward.body[index])
    net.forward.body[index] = stmt
    chain = _stmt_chain(stmt)
    if chain and chain.source == chain.target and all(
        op.kind == "func" and op.name in _FUNC_ELEMENTWISE for op in chain.ops
    ):
        del net.forward.body[index]  # only the deleted layer's activation was left
    if net.attr_uses()[attr] == 0:
        net.init.body = [
            s for s in net.init.body
            if not (isinstance(s, ast.Assign) and any(_self_attr(t) == attr for t in s.targets))
        ]
    return f"delete {attr}"


def _resizable_calls(net: _Net) -> list[ast.Call]:
    """Layer constructors whose output width may change: everything after them adapts.

    A layer qualifies when forward uses it once, in a simple statement, and the layers after it
    absorb the change (see :meth:`_Net.absorbs`). The classifier never qualifies.
    """
    layout = net.layout()
    protected = net.protected_call(layout.head_attr)
    if protected is None and layout.head_attr is not None:
        return []  # cannot tell which layer is the classifier
    uses = net.attr_uses()
    used_at = {
        op.name: j
        for j, chain in enumerate(layout.chains)
        for op in (chain.ops if chain else [])
        if op.kind == "module"
    }
    calls: list[ast.Call] = []
    for attr, call in net.module_attrs().items():
        if uses[attr] != 1 or attr not in used_at:
            continue
        elements = call.args if net.ctor_kind(call) == "Sequential" else [call]
        for k, element in enumerate(elements):
            if not isinstance(element, ast.Call) or element is protected:
                continue
            state: tuple[bool, bool] | None = (True, False)  # its output width changes
            for later in elements[k + 1 :]:  # the rest of its nn.Sequential, then forward
                state = net.transfer(later, state, False) if state else None
            if state and net.absorbs(layout, used_at[attr] + 1, *state):
                calls.append(element)
    return calls


def _literal_widths(net: _Net, ctx: _Ctx) -> list[tuple[ast.Constant, int, int]]:
    """(argument node, width, cap) of every resizable conv / linear with a literal width."""
    found = []
    for node in _resizable_calls(net):
        kind = net.ctor_kind(node) or ""
        if not (kind in _CONV_KINDS | _LINEAR_KINDS or kind in _LAZY_CONVS):
            continue
        arg = _arg(node, 0, _width_keyword(kind))
        value = _int_literal(arg)
        if value is None or _groups(node) != 1:
            continue
        cap = ctx.max_channels if kind in _CONV_KINDS | _LAZY_CONVS else ctx.max_features
        found.append((arg, value, cap))  # type: ignore[arg-type]
    return found


def _scale(net: _Net, ctx: _Ctx, factor: int, up: bool) -> str | None:
    """Multiply (or divide) every literal layer width by ``factor``, within the caps.

    The classifier is never touched, so the number of classes stays.
    """
    changed = 0
    for arg, value, cap in _literal_widths(net, ctx):
        new = (max(value, min(cap, value * factor)) if up
               else max(min(value, _MIN_WIDTH), value // factor))
        if new != value:
            arg.value = new  # type: ignore[union-attr]
            changed += 1
    net.touch()
    if not changed:
        return None
    return f"{'widen' if up else 'narrow'} {changed} layers x{factor}"


def _grow(net: _Net, ctx: _Ctx) -> list[str]:
    """Widen drastically, maybe add convolutions as wide as the widest one.

    Only before the flatten: a new hidden linear layer brings the adaptive pool that bounds
    the flat size, which can make the network smaller.
    """
    done = [d for d in [_scale(net, ctx, ctx.factor(), up=True)] if d]
    extra = int(ctx.rng.binomial(2, ctx.temperature)) + (0 if done else 1)
    for _ in range(extra):
        width = max(_widths(net, _CONV_KINDS), default=None)
        if ctx.chance(0.6):
            d = _add_conv(net, ctx, width=width)
        else:
            d = _add_residual(net, ctx, width=width, spatial_only=True)
        if d is None:
            break
        done.append(d)
    return done


def _shrink(net: _Net, ctx: _Ctx) -> list[str]:
    """Narrow drastically, pool before the flatten, maybe drop a norm/dropout layer.

    Each of these only removes parameters: the pool shrinks what the classifier sees.
    """
    done = [d for d in [_scale(net, ctx, ctx.factor(), up=False)] if d]
    if not done or ctx.chance(0.5):
        done += [d for d in [_add_pool(net, ctx, last=True)] if d]
    if ctx.chance(ctx.temperature / 2):
        done += [d for d in [_delete(net, ctx, preserving_only=True)] if d]
    return done


def _narrow(net: _Net, ctx: _Ctx) -> list[str]:
    """Narrow the layers; when none can be narrower, pool to narrow the flat features."""
    d = _scale(net, ctx, ctx.factor(), up=False) or _add_pool(net, ctx, last=True)
    return [d] if d else []


def _widen(net: _Net, ctx: _Ctx) -> list[str]:
    d = _scale(net, ctx, ctx.factor(), up=True)
    return [d] if d else []


# ------------------------------------------------------------------------- classifier head

#: Functions that may be dropped from the logits: they squash or clip them. ``log_softmax``
#: only shifts the logits (harmless under cross-entropy), dropout is not an activation.
_LOGIT_FUNCS = _FUNC_ELEMENTWISE - {"log_softmax", "dropout", "dropout1d", "dropout2d",
                                     "alpha_dropout"}
_LOGIT_MODULES = _ACTIVATIONS - {"LogSoftmax", "Identity"}


def _output_path(net: _Net) -> list[int] | None:
    """Indices of the statements from the classifier's to the ``return``, or None.

    None unless every statement from the classifier on is a simple chain on one variable and
    the last one returns that variable, so that what follows the classifier is the output.
    """
    layout = net.layout()
    if layout.head is None or layout.chains[layout.head] is None:
        return None
    body = net.forward.body
    var = layout.chains[layout.head].target  # type: ignore[union-attr]
    path = [layout.head]
    for j in range(layout.head + 1, len(body)):
        stmt = body[j]
        if isinstance(stmt, ast.Return):
            return path if isinstance(stmt.value, ast.Name) and stmt.value.id == var else None
        chain = layout.chains[j]
        if chain is None or chain.source != var or chain.target != var:
            return None
        path.append(j)
    return None


def _output_activations(net: _Net) -> list[tuple[str, int, object]]:
    """Activations applied to the logits: ``("op", statement, _Op)`` or ``("seq", k, call)``.

    They are the elementwise functions and activation layers applied after the classifier
    (``F.relu(self.fc(x))``, ``x = torch.relu(x); return x``, ``self.act(x)``), and the
    activations after the last layer with weights of an ``nn.Sequential`` classifier.
    """
    path = _output_path(net)
    if path is None:
        return []
    layout, attrs = net.layout(), net.module_attrs()
    found: list[tuple[str, int, object]] = []
    head_call = attrs.get(layout.head_attr or "")
    if head_call is not None and net.ctor_kind(head_call) == "Sequential":
        elements = head_call.args
        weighted = [k for k, e in enumerate(elements) if net._weighted_call(e)]
        for k in range(weighted[-1] + 1 if weighted else len(elements), len(elements)):
            if net.ctor_kind(elements[k]) in _LOGIT_MODULES:
                found.append(("seq", k, head_call))
    uses = net.attr_uses()
    for j in path:
        ops = layout.chains[j].ops  # type: ignore[union-attr]
        if j == layout.head:
            ops = ops[next(i for i, op in enumerate(ops) if op.name == layout.head_attr) + 1 :]
        for op in ops:
            if op.kind == "func" and op.name in _LOGIT_FUNCS:
                found.append(("op", j, op))
            elif op.kind == "module" and net.ctor_kind(attrs.get(op.name)) in _LOGIT_MODULES:
                if uses[op.name] == 1:
                    found.append(("op", j, op))
            elif op.kind != "func":
                return []  # something else acts on the logits: leave the output alone
    return found


def output_activation(source: str) -> str | None:
    """The activation the network applies to its logits (e.g. ``"relu"``), or None.

    It reads the network as the rule mutator does; a network whose output it cannot follow
    counts as having none.
    """
    net = _load(source)
    names = []
    for where, index, item in _output_activations(net):
        if where == "seq":
            names.append(net.ctor_kind(item.args[index]))  # type: ignore[attr-defined]
        else:
            op: _Op = item  # type: ignore[assignment]
            kind = net.ctor_kind(net.module_attrs().get(op.name))
            names.append(op.name if op.kind == "func" else kind)
    return ", ".join(n for n in names if n) or None


def _drop_output_activation(net: _Net, ctx: _Ctx) -> str | None:
    """Remove every activation applied to the logits: the classifier's output is the output."""
    found = _output_activations(net)
    if not found:
        return None
    names: list[str] = []
    for where, index, item in reversed(found):  # later ones first: indices stay valid
        if where == "seq":
            names.append(net.ctor_kind(item.args[index]) or "?")  # type: ignore[attr-defined]
            del item.args[index]  # type: ignore[attr-defined]
            continue
        op: _Op = item  # type: ignore[assignment]
        names.append(op.name)
        net.forward.body[index] = _Swap(op.call, op.call.args[0]).visit(net.forward.body[index])
    net.touch()
    body = net.forward.body
    net.forward.body = [
        s for s in body
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name) and isinstance(s.value, ast.Name)
                and s.value.id == s.targets[0].id)
    ]
    net.touch()
    return f"drop output activation {', '.join(reversed(names))}"


def _last_hidden(net: _Net) -> tuple[ast.Call | None, bool]:
    """The constructor of the last layer with weights before the classifier, or None.

    Only a plain layer used once (``self.X = nn.LazyLinear(...)``/``LazyConv2d``/eager twins)
    counts. The flag says whether only activations and dropout lie between it and the
    classifier (nothing else that could depend on its width).
    """
    layout, attrs, uses = net.layout(), net.module_attrs(), net.attr_uses()
    plain = True
    if layout.head is None:
        return None, plain
    for j in reversed(range(layout.head + 1)):
        chain = layout.chains[j]
        if chain is None:
            return None, plain
        ops = chain.ops
        if j == layout.head:
            names = [op.name for op in ops]
            if layout.head_attr not in names:
                return None, plain
            ops = ops[: names.index(layout.head_attr)]
        for op in reversed(ops):
            if op.kind != "module":
                plain = plain and op.kind == "func" and op.name in _FUNC_ELEMENTWISE
                continue
            call = attrs.get(op.name)
            if call is None or not net.is_weighted(op.name):
                plain = plain and net.ctor_kind(call) in _ACTIVATIONS | _DROPOUTS
                continue  # a pool, norm or dropout layer keeps the width
            if uses[op.name] != 1:
                return None, plain
            kind = net.ctor_kind(call)
            if kind not in ("LazyLinear", "Linear", "LazyConv2d", "Conv2d") or _groups(call) != 1:
                return None, plain
            return call, plain
    return None, plain


def _widen_head(net: _Net, ctx: _Ctx) -> str | None:
    """Widen (or, at the cap, re-size) the last hidden layer before the classifier.

    Lazy layers after it adapt; an eager ``nn.Linear`` classifier right after an eager linear
    hidden layer gets the new ``in_features``.
    """
    call, plain = _last_hidden(net)
    if call is None:
        return None
    kind = net.ctor_kind(call) or ""
    eager = kind in ("Linear", "Conv2d")
    position = 1 if eager else 0
    keyword = "out_features" if "Linear" in kind else "out_channels"
    arg = _arg(call, position, keyword)
    old = _int_literal(arg)
    if old is None:
        return None
    follow: ast.expr | None = None
    if call in _resizable_calls(net):
        pass
    elif kind == "Linear":
        head = net.protected_call(net.layout().head_attr)
        follow = _arg(head, 0, "in_features") if head is not None else None
        if not plain or head is None or net.ctor_kind(head) != "Linear":
            return None
        if _int_literal(follow) != old:
            return None
    else:
        return None
    linear = "Linear" in kind
    options, cap = (_LINEAR_WIDTHS, ctx.max_features) if linear else (_CONV_WIDTHS,
                                                                       ctx.max_channels)
    wider = [w for w in options if old < w <= cap and (linear or w <= 4 * max(old, 4))]
    other = [w for w in options if w != old and w <= cap]
    choices = wider or other
    if not choices:
        return None
    new = int(ctx.pick(choices, 2 * old))
    arg.value = new  # type: ignore[union-attr]
    if follow is not None:
        follow.value = new  # type: ignore[union-attr]
    net.touch()
    verb = "widen" if new > old else "resize"
    return f"{verb} the last hidden layer {kind} {old} -> {new}"


def _add_head(net: _Net, ctx: _Ctx) -> str | None:
    """Insert ``relu(LazyLinear(f))`` right before the classifier."""
    if _at_cap(net, ctx):
        return None
    layout = net.layout()
    before = [p for p in layout.points if p.region == "flat" and p.reshape_ok
              and p.index == layout.head]
    if not before:
        return None
    if before[0].first_flat and _ensure_guard(net):
        layout = net.layout()
        before = [p for p in layout.points if p.region == "flat" and p.reshape_ok
                  and p.index == layout.head]
    elif before[0].first_flat:
        return None
    if not before:
        return None
    ref = max(_widths(net, _LINEAR_KINDS) + [64])
    f = int(ctx.pick(_LINEAR_WIDTHS, ref, ctx.max_features))
    attr = _fresh("fc", net.taken_attrs())
    _insert_layer(net, before[0], attr, f"nn.LazyLinear({f})", "F.relu(self.{a}({x}))")
    return f"add {attr}: hidden linear {f} before the classifier"


#: Chance that an edit (any kind but the head's own, and crossover) also drops an activation
#: applied to the logits. An activation there (the seed's ``relu(fc1(x))``) only hurts: with
#: it, 40% of trained children sat at chance (seed-0 benchmark run), without it 9%. An LLM
#: that rewrites a network almost always returns raw logits; this is that habit.
HEAD_FIX_P = 0.8


#: Hidden layers narrower than this are bottlenecks no edit narrows to, and that an edit
#: widens to :data:`BOTTLENECK_WIDTH` with probability ``HEAD_FIX_P``: the seed's 1-channel
#: ``relu(conv1(x))`` loses everything when its one unit dies (a third of the at-chance
#: children of a seed-1 benchmark run had no output activation but kept it).
_MIN_WIDTH, BOTTLENECK_WIDTH = 4, 16


def _widen_bottlenecks(net: _Net, ctx: _Ctx) -> str | None:
    """Widen every hidden layer narrower than ``_MIN_WIDTH`` to ``BOTTLENECK_WIDTH``."""
    changed = []
    for arg, value, cap in _literal_widths(net, ctx):
        if value < _MIN_WIDTH:
            arg.value = min(cap, BOTTLENECK_WIDTH)
            changed.append(f"{value}->{arg.value}")
    if not changed:
        return None
    net.touch()
    return f"widen bottleneck {', '.join(changed)}"


def _llm_fixes(net: _Net, ctx: _Ctx, bottlenecks: bool = True) -> list[str]:
    """What an LLM fixes while it edits, each with probability ``HEAD_FIX_P``.

    Drop the logits' activation, and (``bottlenecks``) widen bottleneck layers.
    """
    done = []
    if _output_activations(net) and ctx.chance(HEAD_FIX_P):
        done.append(_drop_output_activation(net, ctx))
    if bottlenecks and ctx.chance(HEAD_FIX_P):
        done.append(_widen_bottlenecks(net, ctx))
    return [d for d in done if d]


def _with_llm_fixes(
    mutation: Callable[[_Net, _Ctx], list[str]], bottlenecks: bool = True
) -> Callable[[_Net, _Ctx], list[str]]:
    """Run ``mutation``, then (if it changed something) :func:`_llm_fixes`.

    ``bottlenecks=False`` for the edits that shrink the network.
    """

    def run(net: _Net, ctx: _Ctx) -> list[str]:
        done = mutation(net, ctx)
        return done + _llm_fixes(net, ctx, bottlenecks) if done else done

    return run


_ADD_EDITS: dict[str, Edit] = {
    "conv": _add_conv,
    "linear": _add_linear,
    "pool": _add_pool,
    "dropout": _add_dropout,
    "norm": _add_norm,
    "residual": _add_residual,
    "recurrent": _add_recurrent,
}
_ANY_EDITS: dict[str, Edit] = {
    **_ADD_EDITS,
    "delete": _delete,
    "widen": lambda net, ctx: _scale(net, ctx, ctx.factor(), up=True),
    "narrow": lambda net, ctx: _scale(net, ctx, ctx.factor(), up=False),
    "drop_output_activation": _drop_output_activation,
    "widen_head": _widen_head,
    "add_head": _add_head,
}
#: Relative weights of a random edit ("improve the above network").
_RANDOM_WEIGHTS = {"conv": 3, "linear": 2, "pool": 1, "dropout": 1, "norm": 1, "residual": 1.5,
                   "recurrent": 0.5, "delete": 2, "widen": 1, "narrow": 1, "widen_head": 1,
                   "add_head": 1}
_LAYER_WEIGHTS = {"conv": 3, "linear": 2, "pool": 1, "dropout": 1, "norm": 1}
_DEPTH_WEIGHTS = {"conv": 3, "linear": 2, "residual": 1}


def _one_of(weights: dict[str, float]) -> Edit:
    """An edit that tries kinds in a random weighted order until one applies."""

    def edit(net: _Net, ctx: _Ctx) -> str | None:
        for kind in ctx.order(list(weights), list(weights.values())):
            done = _ANY_EDITS[kind](net, ctx)
            if done:
                return done
        return None

    return edit


def _repeat(edit: Edit, base: int = 1, once: bool = False) -> Callable[[_Net, _Ctx], list[str]]:
    """Apply ``edit`` ``base + Binomial(2, temperature)`` times, stopping when it cannot.

    With ``once`` it is applied one time (edits that would only repeat themselves).
    """

    def run(net: _Net, ctx: _Ctx) -> list[str]:
        done: list[str] = []
        for _ in range(1 if once else ctx.n_edits(base)):
            d = edit(net, ctx)
            if d is None:
                break
            done.append(d)
        return done

    return run


_MUTATIONS: dict[str, Callable[[_Net, _Ctx], list[str]]] = {
    **{kind: _with_llm_fixes(_repeat(edit)) for kind, edit in _ADD_EDITS.items()},
    "residuals": _with_llm_fixes(_repeat(_add_residual, base=2)),
    "delete": _with_llm_fixes(_repeat(_delete)),
    "shallow": _with_llm_fixes(_repeat(_delete), bottlenecks=False),
    "deepen": _with_llm_fixes(_repeat(_one_of(_DEPTH_WEIGHTS))),
    "add": _with_llm_fixes(_repeat(_one_of(_LAYER_WEIGHTS))),
    "random": _with_llm_fixes(_repeat(_one_of(_RANDOM_WEIGHTS))),
    "drop_output_activation": _repeat(_drop_output_activation, base=1, once=True),
    "widen_head": _with_llm_fixes(_repeat(_widen_head, base=1, once=True)),
    "add_head": _with_llm_fixes(_repeat(_add_head)),
    "widen": _with_llm_fixes(_widen),
    "narrow": _with_llm_fixes(_narrow, bottlenecks=False),
    "grow": _with_llm_fixes(_grow),
    "shrink": _with_llm_fixes(_shrink, bottlenecks=False),
}
_WHY_NOT = {
    "conv": "no place before the flatten where a convolution keeps the shapes valid",
    "linear": "no place after the flatten where a linear layer keeps the shapes valid",
    "pool": f"no place where pooling keeps the shapes valid (or {_MAX_DOWNSAMPLES} pools already)",
    "dropout": "no place to insert dropout",
    "norm": "no place to insert normalisation that is not right next to another one",
    "residual": "no place where a residual block keeps the shapes valid",
    "residuals": "no place where a residual block keeps the shapes valid",
    "recurrent": "no place after the flatten where a recurrent layer keeps the shapes valid",
    "delete": "no layer can be deleted without breaking the network",
    "shallow": "no layer can be deleted without breaking the network",
    "widen": "no layer width can grow (all at the caps or not literal)",
    "narrow": "no layer width can shrink and no place to pool",
    "grow": "the network cannot grow (caps reached or no place to add layers)",
    "shrink": "the network cannot shrink any further",
    "drop_output_activation": "no activation is applied to the output logits (or the output "
    "cannot be followed)",
    "widen_head": "no plain linear or convolutional hidden layer before the classifier whose "
    "width can change",
    "add_head": "no place right before the classifier where a hidden linear layer fits",
}


def _mutate(source: str, kind: str, ctx: _Ctx) -> str:
    net = _load(source)
    done = _MUTATIONS[kind](net, ctx)
    if not done:
        reason = _WHY_NOT.get(kind, "no edit applies to this network")
        if _at_cap(net, ctx) and kind not in ("delete", "shallow", "narrow", "shrink"):
            reason = f"layer cap {ctx.max_layers} reached"
        raise _NoEdit(f"{kind}: {reason}")
    _prune(net)
    child = _render(net)
    if child == _render(_load(source)):
        # An edit that found nothing to change must say so: an unchanged copy would be
        # evaluated again as if it were a new network.
        raise _NoEdit(f"{kind}: the edit left the network unchanged ({'; '.join(done)})")
    return child


# -------------------------------------------------------------------------------- crossover


def _cut_pairs(a: _Net, b: _Net) -> list[tuple[_Point, _Point]]:
    """Pairs (cut in A, cut in B) where A's front part can feed B's back part."""
    front = [p for p in a.layout().points if p.index >= 1]
    back = [p for p in b.layout().points if p.reshape_ok and (p.region == "flat" or p.resize_ok)]
    return [(pa, pb) for pa in front for pb in back if pa.region == pb.region]


def _crossover(source_a: str, source_b: str, ctx: _Ctx) -> str:
    """Splice two parents: A's forward up to a cut, then B's forward from a matching cut.

    When cold the cut is at the flatten (A's feature extractor, B's classifier head); when
    hot it may be any pair of shape-compatible places. Either parent may come first.
    A splice that gives back one of the parents (two networks with the same head, cut at the
    flatten) is not a child: the other cuts are tried in a random order, and when every one
    gives a parent back the crossover says so instead of returning a copy.
    """
    copies = {_render(_load(source_a)), _render(_load(source_b))}

    def loaded(swap: bool) -> tuple[_Net, _Net, list[tuple[_Point, _Point]]]:
        a, b = _load(source_a), _load(source_b)
        if swap:
            a, b = b, a
        return a, b, _cut_pairs(a, b)

    def child(swap: bool, choice: int | None) -> str:
        a, b, pairs = loaded(swap)
        if choice is None:  # the first try: the flatten cut when cold
            la, lb = a.layout(), b.layout()
            at_flatten = [
                (pa, pb)
                for pa, pb in pairs
                if la.flatten is not None and lb.flatten is not None
                and pa.index == la.flatten + 1 and pb.index == lb.flatten + 1
            ]
            if at_flatten and not ctx.chance(ctx.temperature / 2):
                pa, pb = at_flatten[0]
            else:
                pa, pb = pairs[ctx.index(len(pairs))]
        else:
            pa, pb = pairs[choice]
        _splice(a, b, pa, pb)
        _prune(a)
        if _needs_guard(a):
            _ensure_guard(a)
        _llm_fixes(a, ctx)
        return _render(a)

    swap = ctx.chance(0.5)
    if not loaded(swap)[2]:
        swap = not swap
    if not loaded(swap)[2]:
        raise _NoEdit("crossover: the parents have no shape-compatible places to splice")
    result = child(swap, None)
    if result not in copies:
        return result
    others = [(s, i) for s in (swap, not swap) for i in range(len(loaded(s)[2]))]
    for k in ctx.rng.permutation(len(others))[:_CROSSOVER_RETRIES]:
        result = child(*others[int(k)])
        if result not in copies:
            return result
    raise _NoEdit("crossover: every shape-compatible splice gives back one of the parents")


#: Further cuts a crossover tries when its first splice gives back a parent.
_CROSSOVER_RETRIES = 24


def _needs_guard(net: _Net) -> bool:
    """Whether a hidden layer with weights sees the flattened map without a pool bounding it."""
    layout = net.layout()
    if layout.flatten is None or layout.head is None:
        return False
    hidden = [
        op
        for chain in layout.chains[layout.flatten + 1 : layout.head]
        for op in (chain.ops if chain else [])
        if op.kind == "module" and net.is_weighted(op.name)
    ]
    return bool(hidden) and not _has_guard(net, layout)


def _splice(a: _Net, b: _Net, pa: _Point, pb: _Point) -> None:
    """Make ``a`` the child: its forward up to ``pa``, then ``b``'s forward from ``pb``."""
    tail = copy.deepcopy(b.forward.body[pb.index :])
    used_b = {n.attr for s in tail for n in ast.walk(s) if _self_attr(n) is not None}
    b_attrs = b.module_attrs()
    b_init = [
        copy.deepcopy(s)
        for s in b.init.body
        if not _is_super_init(s)
        and not (
            isinstance(s, ast.Assign) and len(s.targets) == 1
            and _self_attr(s.targets[0]) in b_attrs and _self_attr(s.targets[0]) not in used_b
        )
    ]
    b_methods = [
        copy.deepcopy(m)
        for m in b.cls.body
        if isinstance(m, ast.FunctionDef) and m.name not in ("__init__", "forward")
        and _method(a.cls, m.name) is None
    ]
    # A keeps what its front part uses; B's layers are renamed where A's names collide.
    a.forward.body = a.forward.body[: pa.index]
    _prune(a)
    taken = a.taken_attrs()
    rename: dict[str, str] = {}
    for stmt in b_init:
        for target in getattr(stmt, "targets", []):
            attr = _self_attr(target)
            if attr is not None and attr not in rename:
                rename[attr] = _fresh(attr, taken) if attr in taken else attr
                taken.add(rename[attr])
    carried: list[ast.AST] = [*b_init, *tail, *b_methods]
    for node in carried:
        _RenameAttrs(rename).visit(node)
    _merge_module_level(a, b, carried)
    if pb.var != pa.var:
        tail.insert(0, _stmt(f"{pb.var} = {pa.var}"))
    a.forward.body = a.forward.body + tail
    a.init.body.extend(b_init)
    a.cls.body.extend(b_methods)
    _merge_init_defaults(a, b)


def _merge_module_level(a: _Net, b: _Net, carried: list[ast.AST]) -> None:
    """Bring B's imports, helper classes, functions and constants into A's module.

    Definitions with the same name and the same code are kept once; a B definition whose name
    A uses for something else is renamed, and so are its uses in B's carried code.
    """
    a_defs = {
        n.name: n for n in a.tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }
    a_texts = {ast.unparse(n) for n in a.tree.body}
    b_nodes = [copy.deepcopy(n) for n in b.tree.body if n is not b.cls]
    renames: dict[str, str] = {}
    b_defs = {n.name for n in b_nodes if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    taken = set(a_defs) | b_defs
    for node in b_nodes:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in a_defs:
            if ast.dump(node) != ast.dump(a_defs[node.name]):
                renames[node.name] = _fresh(node.name, taken)
                taken.add(renames[node.name])
    for node in [*b_nodes, *carried]:
        _RenameNames(renames).visit(node)
    position = a.tree.body.index(a.cls)
    for node in b_nodes:
        text = ast.unparse(node)
        if text in a_texts:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            a.tree.body.insert(0, node)
            position += 1
        else:
            a.tree.body.insert(position, node)
            position += 1
        a_texts.add(text)


def _merge_init_defaults(a: _Net, b: _Net) -> None:
    """Give A's __init__ the defaulted parameters of B's that B's carried code may read."""
    a_args, b_args = a.init.args, b.init.args
    have = {x.arg for x in (*a_args.args, *a_args.kwonlyargs)}
    b_defaults = dict(zip([x.arg for x in b_args.args[len(b_args.args) - len(b_args.defaults):]],
                          b_args.defaults, strict=True))
    if a_args.vararg is not None or len(a_args.defaults) != len(a_args.args) - 1:
        return  # keep signatures we cannot safely extend
    for name, default in b_defaults.items():
        if name not in have:
            a_args.args.append(ast.arg(arg=name))
            a_args.defaults.append(copy.deepcopy(default))


# ---------------------------------------------------------------------------- the generator


class RuleBasedMutator(CodeGenerator):
    """Rule-based AST mutator: NOT a language model; the non-LLM baseline (``llm=rules``).

    It reads each request's ``instruction``, ``parents``, ``temperature`` and ``seed``, edits
    the parent's syntax tree, and returns the child's source. The same request and constructor
    seed always give byte-identical output. A parent it cannot edit yields a completion with
    ``error`` set (prefixed ``rules:``); ``generate`` never raises for a bad parent.

    Args:
        seed: Seed of the mutator; mixed with each request's seed and content.
        max_channels: Largest channel count an edit creates (convolutions, conv blocks).
        max_features: Largest feature count an edit creates (linear, recurrent blocks).
        max_layers: No layer is added once the network has this many.
    """

    name = "rules (rule-based AST mutator, not an LLM)"
    is_llm = False

    def __init__(
        self,
        *,
        seed: int = 0,
        max_channels: int = 128,
        max_features: int = 512,
        max_layers: int = 24,
    ) -> None:
        if min(max_channels, max_features, max_layers) < 1:
            raise ValueError("max_channels, max_features and max_layers must be >= 1")
        self.seed = int(seed)
        self.max_channels = int(max_channels)
        self.max_features = int(max_features)
        self.max_layers = int(max_layers)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Return one child per request, in order (see the class docstring)."""
        return [self._complete(request) for request in requests]

    def _complete(self, request: GenerationRequest) -> Completion:
        start = time.perf_counter()
        try:
            text = self._child(request)
        except _NoEdit as exc:
            return Completion(text="", error=f"rules: {exc}", seconds=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - a strange parent must never stop the search
            error = f"rules: cannot edit this parent ({type(exc).__name__}: {exc})"
            return Completion(text="", error=error, seconds=time.perf_counter() - start)
        return Completion(text=text, seconds=time.perf_counter() - start)

    def _child(self, request: GenerationRequest) -> str:
        parents = tuple(request.parents)
        if not parents:
            raise _NoEdit("the request has no parent network")
        if "edge_" in parents[0] or "~0|" in parents[0]:
            cell = self._cell_child(request)
            if cell is not None:
                return cell
        kind = classify_instruction(request.instruction, len(parents))
        ctx = _Ctx(self._rng(request), _temperature(request.temperature),
                   self.max_channels, self.max_features, self.max_layers)
        if kind == "crossover":
            return _crossover(parents[0], parents[1], ctx)
        return _mutate(parents[0], kind, ctx)

    def _cell_child(self, request: GenerationRequest) -> str | None:
        """A NAS-Bench-201 cell child (``space=nb201``); None if the parents are not cells."""
        from llmatic.nb201.cells import CellError, parse_cell, render_cell
        from llmatic.nb201.mutate import classify_cell_instruction, crossover_cells, edit_cell

        try:
            parents = [parse_cell(p) for p in request.parents]
        except CellError:
            return None
        rng = self._rng(request)
        kind = classify_cell_instruction(request.instruction, len(parents))
        if kind == "crossover":
            child = crossover_cells(parents[0], parents[1], rng)
        else:
            child = edit_cell(parents[0], kind, _temperature(request.temperature), rng)
        return render_cell(child)

    def _rng(self, request: GenerationRequest) -> np.random.Generator:
        """A generator seeded by the mutator seed, the request seed and the request content."""
        digest = hashlib.sha256()
        parts = (self.seed, request.seed, repr(float(request.temperature)),
                 request.instruction, len(request.parents), *request.parents)
        for part in parts:
            digest.update(str(part).encode("utf-8", "surrogatepass") + b"\0")
        return np.random.default_rng(int.from_bytes(digest.digest(), "big"))


def _temperature(value: float) -> float:
    """The temperature as a probability: clipped to [0, 1]; 0.5 when not a number."""
    t = float(value)
    return 0.5 if not math.isfinite(t) else min(1.0, max(0.0, t))
