"""Keep what belongs in the network's module and rebuild it: steps 4 to 6 of the extraction.

The parsed pieces split into top-level :class:`Statement` objects with their exact source
text. :func:`filter_statements` keeps imports, definitions and constants and strips what
would run on import; :func:`drop_shadowed` drops definitions a later one replaces.
:func:`class_infos` describes each class and :func:`select_network` picks the network.
:func:`rebuild` writes one module: ``__future__`` imports, the code's imports, the
preamble imports it lacks, then the kept definitions in their original order. Syntax
trees are only read, never compiled or run.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from llmatic.extract.parse import Piece

# -------------------------------------------------------------------------- statements


@dataclass
class Statement:
    """A top-level statement with its source text and 1-based line in the completion."""

    node: ast.stmt
    text: str
    line: int
    _reads: set[str] | None = None

    def global_reads(self) -> set[str]:
        """Return the module names this class reads (empty for other statements)."""
        if self._reads is None:
            node = self.node
            self._reads = _global_reads(node) if isinstance(node, ast.ClassDef) else set()
        return self._reads


def split_statements(piece: Piece) -> Iterator[Statement]:
    """Yield the top-level statements of a piece with their exact source text."""
    previous_end = 0  # 1-based last line of the previous statement
    for node in piece.module.body:
        decorators = getattr(node, "decorator_list", [])
        first = decorators[0].lineno if decorators else node.lineno
        start_col = 0 if decorators else node.col_offset
        text = _slice(piece.lines, first, start_col, node.end_lineno or first, node.end_col_offset)
        # Keep a comment block directly above a definition; it often explains the change.
        comment_start = first
        while (
            comment_start - 1 > previous_end
            and piece.lines[comment_start - 2].startswith("#")
            and start_col == 0
        ):
            comment_start -= 1
        if comment_start < first and isinstance(
            node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ):
            text = "\n".join(piece.lines[comment_start - 1 : first - 1]) + "\n" + text
        previous_end = node.end_lineno or first
        yield Statement(node, text, piece.numbers[node.lineno - 1] + 1)


def _slice(lines: Sequence[str], first: int, start_col: int, last: int, end_col: int | None) -> str:
    """Source text between two AST positions (columns are UTF-8 byte offsets).

    A comment after the end on the last line is kept (``return x  # logits``); a second
    statement after ``;`` is not.
    """
    chunk = [line.encode() for line in lines[first - 1 : last]]
    if end_col is not None:
        rest = chunk[-1][end_col:].lstrip()
        if rest and not rest.startswith(b"#"):
            chunk[-1] = chunk[-1][:end_col]
    chunk[0] = chunk[0][start_col:]
    return b"\n".join(chunk).decode(errors="replace").rstrip()


# ------------------------------------------------------------------------------ filter

_LITERAL_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_BUILTINS = frozenset(dir(builtins))


def _is_literal(node: ast.expr | None, constants: set[str]) -> bool:
    """Tell whether a value is safe and cheap to evaluate on import (literal arithmetic)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return all(_is_literal(element, constants) for element in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k, constants) for k in node.keys) and all(
            _is_literal(v, constants) for v in node.values
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _is_literal(node.operand, constants)
    if isinstance(node, ast.BinOp) and isinstance(node.op, _LITERAL_OPS):
        return _is_literal(node.left, constants) and _is_literal(node.right, constants)
    return False


def _assigned_names(node: ast.stmt) -> list[str] | None:
    """Target names of ``NAME = value`` / ``NAME: T = value``; ``None`` for other forms."""
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
        return [node.target.id]
    return None


def _is_main_guard(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _global_reads(node: ast.ClassDef) -> set[str]:
    """Names a class reads from the module: loads minus each method's own locals.

    Approximate scoping (a name assigned or bound as an argument anywhere in a method,
    nested functions included, is local to it) is enough to tell ``device`` read in
    ``forward`` from the argument ``x``. One walk over the class.
    """
    reads: set[str] = set()
    for part in [*node.bases, *node.keywords, *node.decorator_list, *node.body]:
        loads: set[str] = set()
        local: set[str] = set()
        for child in ast.walk(part):
            if isinstance(child, ast.Name):
                (loads if _is_load(child) else local).add(child.id)
            elif isinstance(child, ast.arg):
                local.add(child.arg)
        is_method = isinstance(part, ast.FunctionDef | ast.AsyncFunctionDef)
        # Class-level assignments are not visible inside methods, so they hide nothing.
        reads |= loads - local if is_method else loads
    return reads


def _is_load(name: ast.Name) -> bool:
    return isinstance(name.ctx, ast.Load)


def _bound_by_import(node: ast.Import | ast.ImportFrom) -> set[str]:
    """Names an import statement binds (``import a.b`` binds ``a``)."""
    return {alias.asname or alias.name.split(".")[0] for alias in node.names}


def filter_statements(statements: list[Statement], notes: list[str]) -> list[Statement]:
    """Keep definitions, imports and constants; strip code that would run on import.

    An assignment that is not a literal is kept only when a class uses its name and its
    value uses only imported names, builtins and constants (``device = torch.device(...)``
    read in ``forward``): stripping it would break the network.
    """
    safe: set[str] = set(_BUILTINS)
    for statement in statements:
        if isinstance(statement.node, ast.Import | ast.ImportFrom):
            safe |= _bound_by_import(statement.node)

    def read_by_a_class(names: list[str]) -> bool:
        return any(set(names) & s.global_reads() for s in statements)

    constants: set[str] = set()
    kept: list[Statement] = []
    for statement in statements:
        node = statement.node
        names = _assigned_names(node)
        value = getattr(node, "value", None)
        if isinstance(node, ast.Import | ast.ImportFrom | ast.ClassDef | ast.FunctionDef):
            kept.append(statement)
        elif isinstance(node, ast.AsyncFunctionDef):
            kept.append(statement)
        elif names is not None and _is_literal(value, constants):
            constants.update(names)
            kept.append(statement)
        elif (
            names is not None
            and value is not None
            and _names_in(value) <= safe | constants
            and read_by_a_class(names)
        ):
            constants.update(names)
            kept.append(statement)
            notes.append(f"kept top-level assignment used by a class (line {statement.line})")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant | ast.JoinedStr):
            # A bare string: the instruction docstring of the code-completion prompt.
            # Harmless, but it would pile up in the next prompt's parent code.
            notes.append(f"dropped top-level string (line {statement.line})")
        elif _is_main_guard(node):
            notes.append(f"stripped `if __name__ == '__main__'` block (line {statement.line})")
        else:
            first_line = statement.text.split("\n", 1)[0].strip()[:60]
            notes.append(f"stripped top-level code (line {statement.line}): {first_line}")
    return kept


def _definition_time_names(node: ast.stmt) -> set[str]:
    """Names a statement reads when it runs at import (not inside function bodies)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        parts: list[ast.AST] = [*node.decorator_list, *node.args.defaults]
        parts += [d for d in node.args.kw_defaults if d is not None]
        return set().union(*(_names_in(part) for part in parts)) if parts else set()
    if isinstance(node, ast.ClassDef):
        names: set[str] = set()
        for part in [*node.bases, *node.keywords, *node.decorator_list]:
            names |= _names_in(part)
        for child in node.body:
            names |= _definition_time_names(child)
        return names
    return _names_in(node)


def drop_shadowed(statements: list[Statement], notes: list[str]) -> list[Statement]:
    """Drop class/function definitions that a later one of the same name replaces.

    The repeated parent before the new network is the usual case. A definition is kept
    when anything up to its replacement reads the name at import time
    (``class Net(Net):``), because then it is really used.
    """
    positions: dict[str, list[int]] = {}
    for index, statement in enumerate(statements):
        if isinstance(statement.node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            positions.setdefault(statement.node.name, []).append(index)
    dropped: set[int] = set()
    for name, indices in positions.items():
        for current, following in zip(indices, indices[1:], strict=False):
            between = statements[current + 1 : following + 1]
            if not any(name in _definition_time_names(s.node) for s in between):
                dropped.add(current)
                notes.append(
                    f"dropped earlier definition of {name} (line {statements[current].line})"
                )
    return [s for index, s in enumerate(statements) if index not in dropped]


# ---------------------------------------------------------------------------- network

_MODULE_BASES = frozenset({"Module", "nn.Module", "torch.nn.Module"})


@dataclass
class ClassInfo:
    """What matters about a class to decide whether it is the network."""

    node: ast.ClassDef
    is_module: bool
    has_forward: bool
    init_required: tuple[str, ...] | None  # None: no __init__ in this file (nn.Module's)
    reads: set[str] = field(default_factory=set)  # module names the class uses

    @property
    def is_network(self) -> bool:
        """Whether this class can be the network: a module with forward, no init arguments."""
        return self.is_module and self.has_forward and not self.init_required

    def reason(self) -> str:
        """Why this class is not the network."""
        if not self.is_module:
            return "not an nn.Module subclass"
        if not self.has_forward:
            return "no forward()"
        return f"__init__ needs arguments: {', '.join(self.init_required or ())}"


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _required_init_args(init: ast.FunctionDef) -> tuple[str, ...]:
    """Arguments of ``__init__`` besides ``self`` that have no default."""
    positional = [*init.args.posonlyargs, *init.args.args][1:]  # drop self
    required = positional[: max(0, len(positional) - len(init.args.defaults))]
    keyword = [
        arg.arg
        for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True)
        if default is None
    ]
    return (*(arg.arg for arg in required), *keyword)


def class_infos(statements: list[Statement]) -> list[ClassInfo]:
    """Describe every top-level class, resolving bases to classes defined before it."""
    infos: list[ClassInfo] = []
    defined: dict[str, ClassInfo] = {}
    for statement in statements:
        node = statement.node
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [defined.get(_dotted(b) or "") for b in node.bases]
        methods = {
            item.name: item
            for item in node.body
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        init = methods.get("__init__")
        inherited_init = next(
            (b.init_required for b in bases if b is not None and b.init_required is not None),
            None,
        )
        info = ClassInfo(
            node=node,
            is_module=any(_dotted(b) in _MODULE_BASES for b in node.bases)
            or any(b is not None and b.is_module for b in bases),
            has_forward="forward" in methods or any(b is not None and b.has_forward for b in bases),
            init_required=_required_init_args(init)
            if isinstance(init, ast.FunctionDef)
            else inherited_init,
            reads=statement.global_reads(),
        )
        infos.append(info)
        defined[node.name] = info
    return infos


def select_network(infos: list[ClassInfo]) -> ClassInfo | None:
    """Pick the last network class no other class uses; else the last network class."""
    final = {info.node.name: info for info in infos}  # the last definition wins, as in Python
    networks = [info for info in final.values() if info.is_network]
    if len(networks) < 2:
        return networks[0] if networks else None
    used: set[str] = set()
    for info in final.values():
        used |= info.reads - {info.node.name}
    roots = [info for info in networks if info.node.name not in used]
    order = {id(info): index for index, info in enumerate(infos)}
    return max(roots or networks, key=lambda info: order[id(info)])


def no_network_error(infos: list[ClassInfo]) -> str:
    """Explain why none of the classes is the network, one reason per class name."""
    rule = "a network is an nn.Module subclass with forward() and an __init__ without arguments"
    if not infos:
        return f"no class definitions found ({rule})"
    final = {info.node.name: info for info in infos}
    found = "; ".join(f"{name} ({info.reason()})" for name, info in final.items())
    return f"no network class ({rule}); found: {found}"


# ---------------------------------------------------------------------------- rebuild


def rebuild(statements: list[Statement], preamble: str, notes: list[str]) -> str:
    """Build one module: future imports, imports, missing preamble imports, the rest."""
    future: list[str] = []
    imports: list[str] = []
    body: list[Statement] = []
    seen: set[str] = set()
    bound: set[str] = set()
    for statement in statements:
        node = statement.node
        if isinstance(node, ast.Import | ast.ImportFrom):
            if body:
                notes.append(f"moved import to the top (line {statement.line})")
            bound |= _bound_by_import(node)
            key = ast.dump(node)
            if key not in seen:
                seen.add(key)
                is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
                (future if is_future else imports).append(statement.text)
        else:
            body.append(statement)

    missing = _missing_preamble(preamble, bound)
    if missing:
        notes.append(f"added missing imports: {'; '.join(missing)}")
    # The code's own imports first: the added ones then read as a completion of them.
    head = "\n".join([*future, *imports, *missing])
    chunks = [head] if head else []
    for index, statement in enumerate(body):
        # Definitions get two blank lines around them; runs of constants stay together.
        together = (
            index > 0 and not _is_definition(statement) and not _is_definition(body[index - 1])
        )
        if chunks:
            chunks.append("\n" if together else "\n\n\n")
        chunks.append(statement.text)
    return "".join(chunks).strip("\n") + "\n"


def _is_definition(statement: Statement) -> bool:
    return isinstance(statement.node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)


def _missing_preamble(preamble: str, bound: set[str]) -> list[str]:
    """Preamble import statements whose names the code does not bind yet."""
    missing = []
    for node in ast.parse(preamble).body:  # the preamble is ours, not generated code
        if isinstance(node, ast.Import | ast.ImportFrom):
            if not _bound_by_import(node) <= bound:
                missing.append(ast.unparse(node))
        else:
            missing.append(ast.unparse(node))
    return missing
