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
  (``nn.Identity()`` = skip_connect, ``nn.AvgPool2d(3, ...)`` = avg_pool_3x3,
  ``nn.Conv2d(C, C, 3, ...)`` = nor_conv_3x3, kernel 1 = nor_conv_1x1, ``None`` = none);
* when an edge is assigned twice the last assignment counts, as in Python;
* an edge that the code never mentions is ``none`` (the LLM deleted it); one that the forward
  uses but ``__init__`` never assigns is an error;
* text without such assignments but with one benchmark arch string (``|op~0|+...``) is read
  as that cell.

Anything else (unknown operations, edges the cell does not have, several conflicting
readings) is an error naming the line and what to write instead.
"""

from __future__ import annotations

import ast
import functools
import re

from llmatic.nb201.arch import EDGES, OPS, Arch, ArchStringError, parse_arch_string

__all__ = ["CellError", "parse_cell", "read_cell", "render_cell"]

_EDGE_RE = re.compile(r"^edge_(\d+)_(\d+)$")
_ARCH_RE = re.compile(r"\|[A-Za-z0-9_]+~\d\|(?:[A-Za-z0-9_~|+]*)\|")


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
        if name in ("Conv2d", "LazyConv2d"):
            kernel = _literal_int(_call_arg(call, 2 if name == "Conv2d" else 1, "kernel_size"))
            return {1: "nor_conv_1x1", 3: "nor_conv_3x3"}.get(kernel)
        if name == "AvgPool2d":
            kernel = _literal_int(_call_arg(call, 0, "kernel_size"))
            return "avg_pool_3x3" if kernel == 3 else None
        if name == "Identity":
            return "skip_connect"
    return _ALIASES.get(_canonical(name))


def _describe(value: ast.expr) -> str:
    try:
        text = ast.unparse(value)
    except Exception:  # noqa: BLE001 - only used in a message
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _arch_string_in(text: str) -> Arch | None:
    """The cell named by the one benchmark arch string in ``text`` (None if there is none)."""
    readings = set()
    for match in _ARCH_RE.finditer(text):
        try:
            readings.add(parse_arch_string(match.group(0)))
        except ArchStringError:
            continue
    if len(readings) > 1:
        raise CellError(f"the text names {len(readings)} different arch strings; "
                        "write exactly one cell")
    return readings.pop() if readings else None


def parse_cell(source: str) -> Arch:
    """The 6 operations of the cell in ``source`` (Python text); raises :class:`CellError`."""
    ops, error = _parse_cached(source)
    if ops is None:
        raise CellError(error)
    return ops


@functools.lru_cache(maxsize=8192)
def _parse_cached(source: str) -> tuple[Arch | None, str | None]:
    """Parents are read again and again by the mutator: remember each text's reading."""
    try:
        return _parse(source), None
    except CellError as exc:
        return None, str(exc)


def _parse(source: str) -> Arch:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        raise CellError(f"the cell is not valid Python ({exc})") from exc
    assigned: dict[tuple[int, int], str] = {}
    mentioned: set[tuple[int, int]] = set()
    problems: list[str] = []
    edges_text = ", ".join(f"edge_{t}_{s}" for t, s in EDGES)
    # Assignments in source order, so the last one of an edge wins as in Python.
    nodes = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Assign | ast.AnnAssign | ast.Attribute)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    for node in nodes:
        if isinstance(node, ast.Attribute):
            match = _EDGE_RE.match(node.attr)
            if match:
                mentioned.add((int(match.group(1)), int(match.group(2))))
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                continue
            match = _EDGE_RE.match(target.attr)
            if not match:
                continue
            edge = (int(match.group(1)), int(match.group(2)))
            if edge not in EDGES:
                problems.append(
                    f"line {node.lineno}: self.{target.attr} is not an edge of the cell "
                    f"(edges: {edges_text})"
                )
                continue
            if node.value is None:
                continue
            op = _operation(node.value)
            if op is None:
                problems.append(
                    f"line {node.lineno}: self.{target.attr} = {_describe(node.value)} is not "
                    f"a NAS-Bench-201 operation; use one of {', '.join(OPS)}"
                )
                continue
            assigned[edge] = op
    if problems:
        raise CellError("; ".join(problems[:3]) + ("" if len(problems) <= 3 else " ..."))
    if not assigned:
        ops = _arch_string_in(source)
        if ops is not None:
            return ops
        raise CellError(
            "no cell found: assign each edge in __init__, e.g. self.edge_1_0 = nor_conv_3x3(C) "
            f"(edges: {edges_text}; operations: {', '.join(OPS)})"
        )
    unassigned = sorted(e for e in mentioned if e in EDGES and e not in assigned)
    if unassigned:
        names = ", ".join(f"self.edge_{t}_{s}" for t, s in unassigned)
        raise CellError(f"{names} is used but never assigned; assign it an operation "
                        f"({', '.join(OPS)}) or delete every use of it")
    return tuple(assigned.get(edge, "none") for edge in EDGES)


def read_cell(text: str) -> tuple[Arch | None, str | None, str | None]:
    """Read a cell from an LLM's raw completion: ``(ops, source, error)``.

    Messy text (prose, fences, chat tokens) is cleaned by :func:`llmatic.extract.extract_network`
    first; when that finds no class, the raw text is read (an arch string alone is a cell).
    """
    from llmatic.extract import extract_network

    try:  # clean Python (most answers): no need to clean it up first
        ops = parse_cell(text)
    except CellError:
        pass
    else:
        return ops, render_cell(ops), None
    ext = extract_network(text)
    source = ext.source if ext.ok and ext.source else None
    if source is not None:
        try:
            ops = parse_cell(source)
        except CellError as exc:
            return None, source, str(exc)  # code was found: say what is wrong with it
        return ops, render_cell(ops), None
    try:  # prose around an arch string
        ops = _arch_string_in(text)
    except CellError as exc:
        return None, None, str(exc)
    if ops is not None:
        return ops, render_cell(ops), None
    return None, None, (
        "no cell found: the answer holds neither a class assigning the edges "
        "(self.edge_1_0 = nor_conv_3x3(C), ...) nor an arch string (|op~0|+|op~0|op~1|+...)"
        + (f"; {ext.error}" if ext.error else "")
    )
