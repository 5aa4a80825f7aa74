"""NAS-Bench-201 cells as short Python the LLM edits, and reading them back (never running them).

A candidate in the ``nb201`` space is a module like :func:`render_cell`'s output::

    class Cell(nn.Module):
        def __init__(self, C=16):
            super().__init__()
            self.edge_1_0 = nor_conv_3x3(C)
            self.edge_2_0 = none(C)
            ...

        def forward(self, x0):
            x1 = self.edge_1_0(x0)
            ...

:func:`parse_cell` reads the operation of each edge from the syntax tree only: the code is
never executed, imported or compiled to bytecode, so hostile text costs at most a parse. The
forward is the benchmark's fixed cell (node ``j`` sums its incoming edges); edits to it change
nothing. Readings that follow Python and what an LLM usually writes:

* ``self.edge_J_I = op(...)`` where ``op`` names an operation (``nor_conv_3x3``,
  ``ops.nor_conv_3x3``, ``OPS["nor_conv_3x3"]``) or a PyTorch module that *is* one
  (``nn.Identity()`` = skip_connect, ``nn.AvgPool2d(3, stride=1, padding=1)`` = avg_pool_3x3,
  ``nn.Conv2d(C, C, 3, padding=1)`` = nor_conv_3x3, kernel 1 = nor_conv_1x1, ``None`` = none;
  a stride other than 1 changes the resolution, which no cell operation does);
  NAS-Bench-201's own classes (``ReLUConvBN(C, C, 3, ...)``, ``POOLING(C, C, "avg")``,
  ``Zero``) and an ``nn.Sequential`` around exactly one such module count too;
* the cell is the *last* class that assigns edges (an answer that repeats its parent, or both
  parents of a crossover, before its own cell is read as its own cell); an edge assigned
  twice takes the last assignment, as in Python; an edge that class never assigns is ``none``
  (the LLM deleted it); edges assigned outside any class count only when all six are;
* a truncated tail (an answer cut off at the token limit) is dropped line by line until the
  rest parses; fenced code blocks are read on their own, the last one first;
* text without such assignments but with benchmark arch strings (``|op~0|+...``, spaces
  allowed) is read as the last arch string it names.

Anything else (unknown operations, edges the cell does not have, texts over
:data:`MAX_CHARS`) is an error naming the line and what to write instead.
"""

from __future__ import annotations

import ast
import functools
import re

from llmatic.astparse import parse as parse_source
from llmatic.nb201.arch import EDGES, OPS, Arch, ArchStringError, parse_arch_string

__all__ = ["CellError", "parse_cell", "read_cell", "render_cell"]

_EDGE_RE = re.compile(r"^edge_(\d+)_(\d+)$")
_NODE = r"\|(?:[A-Za-z0-9_]+~\d\|)+"
_ARCH_RE = re.compile(rf"{_NODE}\+{_NODE}\+{_NODE}")


class CellError(ValueError):
    """Code that does not describe one NAS-Bench-201 cell."""


def render_cell(ops: Arch, *, class_name: str = "Cell") -> str:
    """The Python text of a cell (what the LLM reads and edits)."""
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise CellError(f"not a cell: {ops!r}")
    lines = [
        "# A NAS-Bench-201 cell: node j sums op(node i) over its edges i -> j (i < j).",
        f"# Each edge holds one operation: {', '.join(OPS)}.",
        f"class {class_name}(nn.Module):",
        "    def __init__(self, C=16):",
        "        super().__init__()",
    ]
    lines += [f"        self.edge_{t}_{s} = {op}(C)" for (t, s), op in zip(EDGES, ops, strict=True)]
    lines += ["", "    def forward(self, x0):"]
    for target in (1, 2, 3):
        terms = " + ".join(f"self.edge_{target}_{s}(x{s})" for t, s in EDGES if t == target)
        lines.append(f"        x{target} = {terms}")
    lines.append("        return x3")
    return "\n".join(lines) + "\n"


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


#: Spellings of each operation (compared lower-case, without punctuation).
_ALIASES: dict[str, str] = {}
for _op, _names in {
    "none": ("none", "zero", "zeros", "noop", "nothing"),
    "skip_connect": ("skip_connect", "skip", "identity", "skipconnection", "residual"),
    "nor_conv_1x1": ("nor_conv_1x1", "conv_1x1", "conv1x1", "relu_conv_bn_1x1", "pointwise"),
    "nor_conv_3x3": ("nor_conv_3x3", "conv_3x3", "conv3x3", "relu_conv_bn_3x3"),
    "avg_pool_3x3": ("avg_pool_3x3", "avg_pool", "avgpool", "pool", "avgpool2d",
                     "average_pool", "avg_pool_2d"),
}.items():
    for _name in _names:
        _ALIASES[_canonical(_name)] = _op


def _literal_int(node: ast.expr | None) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Tuple) and node.elts:
        first = _literal_int(node.elts[0])
        if first is not None and all(_literal_int(e) == first for e in node.elts):
            return first
    return None


def _call_arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[index] if len(call.args) > index else None


def _operation(value: ast.expr) -> str | None:
    """The operation an edge's assigned value names, or None if it names none."""
    if isinstance(value, ast.Constant):
        if value.value is None:
            return "none"
        if isinstance(value.value, str):
            return _ALIASES.get(_canonical(value.value))
        return None
    if isinstance(value, ast.Subscript):  # OPS["nor_conv_3x3"](C, ...) or OPS["..."]
        key = value.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return _ALIASES.get(_canonical(key.value))
        return None
    call = value if isinstance(value, ast.Call) else None
    func = call.func if call is not None else value
    if isinstance(func, ast.Subscript | ast.Call):
        return _operation(func)
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name is None:
        return None
    if call is not None:  # torch modules that are one of the benchmark's operations
        if name in ("Conv2d", "LazyConv2d"):  # stride 1: a cell keeps its resolution
            first = 2 if name == "Conv2d" else 1
            kernel = _literal_int(_call_arg(call, first, "kernel_size"))
            stride = _call_arg(call, first + 1, "stride")
            if stride is not None and _literal_int(stride) != 1:
                return None
            return {1: "nor_conv_1x1", 3: "nor_conv_3x3"}.get(kernel)
        if name == "AvgPool2d":  # the benchmark's pool: 3x3, stride 1 (PyTorch's default
            kernel = _literal_int(_call_arg(call, 0, "kernel_size"))  # stride is the kernel)
            stride = _literal_int(_call_arg(call, 1, "stride"))
            return "avg_pool_3x3" if kernel == 3 and stride == 1 else None
        if name == "ReLUConvBN":  # NAS-Bench-201's conv: (C_in, C_out, kernel, ...)
            kernel = _literal_int(_call_arg(call, 2, "kernel_size"))
            return {1: "nor_conv_1x1", 3: "nor_conv_3x3"}.get(kernel)
        if name == "POOLING":  # NAS-Bench-201's pool: (C_in, C_out, mode, ...)
            mode = _call_arg(call, 2, "mode")
            if isinstance(mode, ast.Constant) and mode.value == "avg":
                return "avg_pool_3x3"
            return None
        if name == "Sequential":  # ReLU -> Conv -> BN and the like: the one op inside
            inner = {_operation(a) for a in call.args if isinstance(a, ast.Call)}
            inner.discard(None)
            return inner.pop() if len(inner) == 1 else None
        if name == "Identity":
            return "skip_connect"
    return _ALIASES.get(_canonical(name))


def _describe(value: ast.expr) -> str:
    try:
        text = ast.unparse(value)
    except Exception:  # noqa: BLE001 - only used in a message
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


#: Longest answer read (a cell is about 1,000 characters; longer texts are refused unread).
MAX_CHARS = 100_000
#: Lines a truncated tail may lose before the rest is given up on.
_MAX_DROPPED_LINES = 40
_SPACED_ARCH_RE = re.compile(r"[ \t]*([|+~])[ \t]*")
_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START_RE = re.compile(r"^(?:class |import |from |def |#)", re.M)


def _arch_string_in(text: str) -> Arch | None:
    """The cell named by the last benchmark arch string in ``text`` (None if there is none)."""
    last = None
    for match in _ARCH_RE.finditer(_SPACED_ARCH_RE.sub(r"\1", text)):
        try:
            last = parse_arch_string(match.group(0))
        except ArchStringError:
            continue
    return last


def parse_cell(source: str) -> Arch:
    """The 6 operations of the cell in ``source`` (Python text); raises :class:`CellError`."""
    ops, error, syntax = _parse_cached(source)
    if ops is None:
        raise (_Syntax if syntax else CellError)(error)
    return ops


@functools.lru_cache(maxsize=8192)
def _parse_cached(source: str) -> tuple[Arch | None, str | None, bool]:
    """Parents are read again and again by the mutator: remember each text's reading."""
    try:
        return _parse(source), None, False
    except CellError as exc:
        return None, str(exc), isinstance(exc, _Syntax)
    except (RecursionError, MemoryError):  # pathological nesting: refused, never a crash
        return None, "the text nests too deeply to read as a cell", False


class _Syntax(CellError):
    """The text is not Python (a truncated tail may be the reason)."""


def _edge_assignments(scope: ast.AST) -> list[tuple[ast.stmt, ast.Attribute]]:
    """``self.edge_*`` assignments in ``scope`` (not in classes nested inside it), in order."""
    found: list[tuple[ast.stmt, ast.Attribute]] = []
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.ClassDef):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                        and target.value.id == "self" and _EDGE_RE.match(target.attr)):
                    found.append((node, target))
        stack.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda item: (item[0].lineno, item[0].col_offset))


def _parse(source: str) -> Arch:
    if len(source) > MAX_CHARS:
        raise CellError(f"the text has {len(source):,} characters (more than {MAX_CHARS:,}); "
                        "a cell is about 1,000")
    try:
        tree = parse_source(source)
    except (SyntaxError, ValueError) as exc:
        raise _Syntax(f"the cell is not valid Python ({exc})") from exc
    edges_text = ", ".join(f"edge_{t}_{s}" for t, s in EDGES)
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    scopes = [(c, _edge_assignments(c)) for c in classes]
    scopes = [(c, found) for c, found in scopes if found]
    if scopes:  # the last class that assigns edges is the answer's cell
        _, found = max(scopes, key=lambda item: item[0].lineno)
        partial_ok = True
    else:
        found = _edge_assignments(tree)
        partial_ok = False
    assigned: dict[tuple[int, int], str] = {}
    problems: list[str] = []
    for node, target in found:
        match = _EDGE_RE.match(target.attr)
        edge = (int(match.group(1)), int(match.group(2)))
        if edge not in EDGES:
            problems.append(f"line {node.lineno}: self.{target.attr} is not an edge of the cell "
                            f"(edges: {edges_text})")
            continue
        if node.value is None:
            continue
        try:
            op = _operation(node.value)
        except RecursionError:
            op = None
        if op is None:
            problems.append(
                f"line {node.lineno}: self.{target.attr} = {_describe(node.value)} is not "
                f"a NAS-Bench-201 operation; use one of {', '.join(OPS)}"
            )
            continue
        assigned[edge] = op
    if problems:
        raise CellError("; ".join(problems[:3]) + ("" if len(problems) <= 3 else " ..."))
    if assigned and (partial_ok or len(assigned) == len(EDGES)):
        return tuple(assigned.get(edge, "none") for edge in EDGES)
    ops = _arch_string_in(source)
    if ops is not None:
        return ops
    if assigned:
        raise CellError(f"only {len(assigned)} of the 6 edges are assigned, outside any class: "
                        "write the whole cell class")
    raise CellError(
        "no cell found: assign each edge in __init__, e.g. self.edge_1_0 = nor_conv_3x3(C) "
        f"(edges: {edges_text}; operations: {', '.join(OPS)})"
    )


def _read_code(text: str) -> tuple[Arch | None, str | None]:
    """Parse ``text``; if it is not Python, drop trailing lines (a cut-off tail) and retry."""
    try:
        return parse_cell(text), None
    except _Syntax as exc:
        error = str(exc)
    except CellError as exc:
        return None, str(exc)
    lines = text.rstrip().split("\n")
    for cut in range(1, min(_MAX_DROPPED_LINES, len(lines) - 1) + 1):
        try:
            return parse_cell("\n".join(lines[:-cut])), None
        except _Syntax:
            continue
        except CellError as exc:
            return None, str(exc)
    return None, error


def read_cell(text: str) -> tuple[Arch | None, str | None, str | None]:
    """Read a cell from an LLM's raw completion: ``(ops, canonical source, error)``.

    Tried in order, the first reading wins: the whole text; its fenced code blocks (last
    first); the text from its first line of code on; the network class that
    :func:`llmatic.extract.network.extract_network` finds after cleaning chat tokens and prose; the
    last arch string in the text. Never raises for any text.
    """
    from llmatic.extract import extract_network

    if len(text) > MAX_CHARS:
        return None, None, (f"the answer has {len(text):,} characters (more than "
                            f"{MAX_CHARS:,}); a cell is about 1,000")
    pieces = [text, *reversed(_FENCE_RE.findall(text))]
    first_code = _CODE_START_RE.search(text)
    if first_code is not None and first_code.start() > 0:
        pieces.append(text[first_code.start():])
    errors: list[str] = []
    for piece in pieces:
        if not piece.strip():
            continue
        ops, error = _read_code(piece)
        if ops is not None:
            return ops, render_cell(ops), None
        errors.append(error)
    try:
        ext = extract_network(text)
    except (RecursionError, MemoryError):
        ext = None
    if ext is not None and ext.ok and ext.source:
        ops, error = _read_code(ext.source)
        if ops is not None:
            return ops, render_cell(ops), None
        errors.append(error)
    ops = _arch_string_in(text)
    if ops is not None:
        return ops, render_cell(ops), None
    # The most telling error: one about code that was found, else why none was.
    specific = [e for e in errors if e and not e.startswith(("no cell found",
                                                             "the cell is not valid Python"))]
    if specific:
        return None, None, specific[0]
    return None, None, (
        "no cell found: the answer holds neither a class assigning the edges "
        "(self.edge_1_0 = nor_conv_3x3(C), ...) nor an arch string (|op~0|+|op~0|op~1|+...)"
    )
