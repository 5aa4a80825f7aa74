"""Turn a raw LLM completion into the source of one candidate network.

Nothing here executes, evaluates, compiles-to-run or imports the generated code: it is
untrusted, and it only ever runs later in the sandboxed child process. This module does
string work and :func:`ast.parse` (which builds a syntax tree and runs nothing).

The pipeline, one function per step:

1. **Normalise** the text: line endings, tabs in indentation, special tokens
   (``<|endoftext|>`` and friends end the answer; ``<|im_start|>assistant`` starts it),
   a leading chat role prefix.
2. **Fences**: when the answer has Markdown code blocks tagged as Python (or untagged),
   only their content is read at first; the whole text is the fallback.
3. **Parse**: the text splits into runs at prose (column-0 lines that do not start
   like Python) and at fences. Each run is parsed whole; if that fails, statement by
   statement (a statement starts at a column-0 line that looks like code and borrows the
   next ones while unfinished, as a decorator is), and what does not parse is dropped.
   That strips prose between code and a tail truncated by ``max_new_tokens``, leaving
   earlier complete classes. The work is bounded by a parse budget proportional to the
   text, so a 2,000-line completion takes a fraction of a second.
4. **Filter** top-level statements: keep imports, class and function definitions and
   constant assignments; strip what would run on import (``model = Net()``, training
   loops, ``if __name__ == "__main__":``) because it wastes the sandbox's time or fails.
5. **Select** the network class: the last top-level ``nn.Module`` subclass that has
   ``forward`` and an ``__init__`` without required arguments, preferring classes no
   other class uses (so a helper defined after the network is not picked).
6. **Rebuild** one module: ``__future__`` imports, the code's imports (deduplicated and
   moved to the top), the preamble imports it lacks, then the kept definitions in their
   original order.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from llmatic.types import Status

__all__ = ["DEFAULT_PREAMBLE", "Extraction", "extract_network"]

DEFAULT_PREAMBLE = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


@dataclass(frozen=True)
class Extraction:
    """The network found in one completion, or why there is none.

    ``source`` and ``class_name`` are set exactly when ``status`` is ``None``.

    Attributes:
        source: A standalone module: preamble imports (those missing), the code's imports,
            then its class, function and constant definitions.
        class_name: The network class to instantiate with no arguments.
        status: ``None`` on success, else ``Status.SYNTAX_ERROR`` (no usable parseable code,
            or the network's code is broken) or ``Status.NO_NETWORK``.
        error: Human-readable reason on failure (with a line number where one applies).
        notes: What was repaired on the way, in order, e.g. ``"used fenced code block"``.

    """

    source: str | None
    class_name: str | None
    status: Status | None
    error: str | None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether a network class was found."""
        return self.status is None


def extract_network(
    completion: str, *, prefix: str = "", preamble: str = DEFAULT_PREAMBLE
) -> Extraction:
    """Extract the source of one candidate network from an LLM completion.

    Args:
        completion: The raw text the model returned.
        prefix: Text that logically precedes the completion (the prompt, for base models
            that continue it). Used only when the completion alone yields no network;
            line numbers in messages then count from the start of ``prefix``.
        preamble: Import lines to prepend where the code lacks the names they bind.

    Returns:
        An :class:`Extraction`; this function does not raise for any completion text.

    """
    # One budget for every attempt below (the completion may be read twice: alone, then
    # after the prefix), so fallbacks cannot multiply the worst case.
    budget = _Budget(_BUDGET_FACTOR * (len(prefix) + 2 * len(completion)) + _BUDGET_FLOOR)
    result = _extract(completion, preamble, budget)
    if result.ok or not prefix:
        return result
    combined = _extract(prefix + completion, preamble, budget)
    if combined.ok:
        return replace(combined, notes=("used prefix + completion", *combined.notes))
    return result


# --------------------------------------------------------------------------- normalise

# Markers after which a model's answer is over; text after them is another document or
# a hallucinated next turn.
_STOP_RE = re.compile(
    r"<\|endoftext\|>|<\|im_end\|>|<\|eot_id\|>|<\|end_of_text\|>|<\|end\|>|<\|EOT\|>"
    r"|</s>|<end_of_turn>|<eos>|<\|file_separator\|>|<｜end▁of▁sentence｜>"
)
# Where an assistant turn starts; anything before it is an echo of the prompt.
_ASSISTANT_RE = re.compile(
    r"<\|im_start\|>[ \t]*assistant\b|<\|start_header_id\|>[ \t]*assistant[ \t]*<\|end_header_id\|>"
    r"|<\|assistant\|>|<start_of_turn>[ \t]*model\b|\[/INST\]"
)
# Other special tokens, removed in place. None of the patterns spans a newline, so line
# numbers in messages still match the completion.
_SPECIAL_RE = re.compile(
    r"<\|im_start\|>[ \t]*(?:system|user|assistant)?|<start_of_turn>[ \t]*(?:user|model)?"
    r"|<\|start_header_id\|>[^<>\n]{0,20}<\|end_header_id\|>|<\|[\w.:-]{1,40}\|>"
    r"|<｜[^｜\n]{1,40}｜>|<s>|<pad>|<unk>|\[/?INST\]|<</?SYS>>"
)
_ROLE_PREFIX_RE = re.compile(
    r"^[ \t]*(?:#{1,4}[ \t]*)?(?:assistant|response|answer|bot|gpt)[ \t]*:", re.I
)
_INVISIBLE_RE = re.compile("[\x00\ufeff\u200b\u200c\u200d]")
_LEADING_WS_RE = re.compile(r"^[ \t\u00a0]+", re.M)


def _normalise(text: str) -> tuple[str, list[str]]:
    """Clean line endings, special tokens and indentation; keep the line count."""
    notes: list[str] = []
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        notes.append("normalised line endings")
    text = _INVISIBLE_RE.sub("", text)

    header = _ASSISTANT_RE.search(text)
    if header is not None:
        # Blank the prompt echo out but keep its newlines so line numbers stay true.
        text = "\n" * text.count("\n", 0, header.end()) + text[header.end() :]
        notes.append("dropped text before the assistant turn")
    text, marker = _cut_at_stop_marker(text)
    if marker is not None:
        notes.append(f"cut at {marker}")
    cleaned = _SPECIAL_RE.sub("", text)
    if cleaned != text:
        notes.append("removed special tokens")
    text = _strip_role_prefix(cleaned, notes)

    # Tabs and no-break spaces in indentation become spaces: a tab is one level (4), which
    # is what models mean when they mix tabs with 4-space indentation.
    expanded = _LEADING_WS_RE.sub(lambda m: m.group().replace("\u00a0", " ").expandtabs(4), text)
    if expanded != text:
        notes.append("expanded tabs in indentation")
    return expanded, notes


def _cut_at_stop_marker(text: str) -> tuple[str, str | None]:
    """Cut at the first end-of-text marker that follows some content.

    A marker before any content (a model that opens with ``<|endoftext|>``) is skipped,
    with the text before it blanked to newlines.
    """
    start = 0
    for match in _STOP_RE.finditer(text):
        if _SPECIAL_RE.sub("", text[start : match.start()]).strip():
            return "\n" * text.count("\n", 0, start) + text[start : match.start()], match.group()
        start = match.end()
    return "\n" * text.count("\n", 0, start) + text[start:], None


def _strip_role_prefix(text: str, notes: list[str]) -> str:
    """Remove a leading ``Assistant:`` style prefix from the first non-blank line."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.strip():
            stripped = _ROLE_PREFIX_RE.sub("", line, count=1)
            if stripped != line:
                lines[index] = stripped.lstrip(" \t")
                notes.append("removed role prefix")
            break
    return "\n".join(lines)


# ------------------------------------------------------------------------------ fences

_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^`\n]*?)[ \t]*$")
_INFO_WORD_RE = re.compile(r"[\w+#.-]*")
_PYTHON_TAG_RE = re.compile(r"(?:(?:i?python|py)[\d.]*|pytorch|torch)?", re.I)


@dataclass
class _Fences:
    """Markdown code blocks: which lines are Python code and which are fence furniture."""

    python_lines: set[int] = field(default_factory=set)  # content of python/untagged blocks
    skipped: set[int] = field(default_factory=set)  # fence lines and other-language content
    blocks: int = 0
    other_blocks: int = 0
    unclosed: bool = False


def _is_python_tag(info: str) -> bool:
    """Whether a fence info string (``python``, ``py``, ``""``, ``bash``...) means Python."""
    word = _INFO_WORD_RE.match(info)
    return _PYTHON_TAG_RE.fullmatch(word.group() if word else "") is not None


def _find_fences(lines: Sequence[str]) -> _Fences:
    """Find fenced blocks; an unclosed final fence runs to the end (a truncated answer)."""
    fences = _Fences()
    opened: tuple[int, str, bool] | None = None  # (line, fence characters, is python)

    def close(end: int) -> None:
        assert opened is not None
        start, _, python = opened
        content = set(range(start + 1, end))
        if python:
            fences.python_lines |= content
            fences.blocks += 1
        else:
            fences.skipped |= content
            fences.other_blocks += 1

    for index, line in enumerate(lines):
        match = _FENCE_RE.match(line)
        if match is None:
            continue
        ticks, info = match.groups()
        fences.skipped.add(index)
        if opened is None:
            opened = (index, ticks, _is_python_tag(info))
            continue
        if ticks[0] != opened[1][0] or len(ticks) < len(opened[1]):
            fences.skipped.discard(index)  # a shorter fence inside a block is content
            continue
        close(index)
        # "```python" inside an open block is never Python: read it as close-and-reopen,
        # the way models forget to close one block before starting the next.
        opened = (index, ticks, _is_python_tag(info)) if info else None
    if opened is not None:
        close(len(lines))
        fences.unclosed = True
    return fences


# ------------------------------------------------------------------------------ parse

# A column-0 line where a statement may start.
_START_RE = re.compile(
    r"""(?:import|from|class|def|async|if|for|while|with|try|return|raise|assert|del|global)\b
    | @\w | \#
    | [A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*(?::[^=\n]+)?(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)
    | [A-Za-z_][\w.]*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)+[ \t]*=(?!=)
    | [A-Za-z_][\w.]*[ \t]*\(
    | [rRbBuUfF]{0,2}(?:\"\"\"|''')
    """,
    re.X,
)
# Column-0 lines that continue the statement above them.
_CONTINUATION_RE = re.compile(r"[)\]}]|(?:else|elif|except|finally)\b")
# Parse errors of code that simply stops: what max_new_tokens leaves behind.
_TRUNCATION_RE = re.compile(
    r"never closed|unterminated|expected an indented block|unexpected EOF|incomplete input"
)
_TAIL_LINES = 3  # how far above the end an error may be and still mean "truncated"
_MAX_BORROW = 8  # chunks a statement may borrow: decorators, column-0 lines in strings
_DETECTED_AT_RE = re.compile(r" \(detected at line \d+\)")
_DEFINITION_RE = re.compile(r"^[ \t]*(?:@|(?:async[ \t]+)?(?:class|def)[ \t]+\w)")
# IndentationErrors whose offending line is junk after complete code (indented prose):
# cut just before that line instead of dropping the whole statement above it.
_CUT_AT_LINE_MESSAGES = ("unexpected indent", "unindent does not match any outer indentation level")


def _at_column_0(line: str) -> bool:
    return bool(line) and line[0] not in " \t"


def _is_prose(line: str) -> bool:
    """Tell whether a column-0 line is neither a statement start nor a continuation."""
    return (
        _at_column_0(line)
        and _START_RE.match(line) is None
        and _CONTINUATION_RE.match(line) is None
    )


@dataclass
class _Piece:
    """One parsed run of lines: its tree, its (dedented) lines and their line indices."""

    module: ast.Module
    lines: list[str]
    numbers: list[int]


@dataclass
class _Failure:
    """Code that was dropped because it did not parse."""

    line: int  # 1-based line of the error in the normalised text
    message: str
    first: int  # 1-based first and last dropped line
    last: int
    had_definition: bool  # the dropped lines held a class/def: likely the network


class _Scanner:
    """Collect parseable code from lines, within a budget of characters parsed.

    Each segment (lines between hard breaks) is parsed whole first: clean code costs one
    parse. Otherwise it is cut into chunks, one per column-0 line that starts a statement,
    and each chunk is parsed alone, borrowing the chunks after it while the error says the
    statement is merely unfinished (a decorator, a string or bracket with column-0 lines).
    A chunk that still fails is dropped: a truncated tail, prose that looked like code.
    """

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.pieces: list[_Piece] = []
        self.failures: list[_Failure] = []
        self.covered: set[int] = set()  # line indices inside a parsed piece
        self.dedented = False
        self.exhausted = False

    def scan(self, lines: Sequence[str | None], numbers: Sequence[int]) -> None:
        """Scan ``lines`` (``None`` = not available, a hard break) in order."""
        for segment, segment_numbers in _segments(lines, numbers):
            dedented = segment
            if not any(_at_column_0(line) for line in segment):
                # Code indented as a whole (inside prose, a list item): dedent and rescan.
                dedented = textwrap.dedent("\n".join(segment)).split("\n")
            if dedented != segment:
                self.dedented = True
                self.scan(dedented, segment_numbers)
            else:
                self._scan_segment(_Segment.of(segment, segment_numbers))

    def _scan_segment(self, segment: _Segment) -> None:
        if not segment.starts or self._parse(segment, segment.starts[0], len(segment)) is None:
            return
        index = 0
        while index < len(segment.starts) and not self.exhausted:
            index = self._scan_chunk(segment, index)

    def _scan_chunk(self, segment: _Segment, index: int) -> int:
        """Parse the statement starting at chunk ``index``; return the next chunk index."""
        start = segment.starts[index]
        first_error: Exception | None = None
        for last in range(index, min(index + _MAX_BORROW + 1, len(segment.starts))):
            end = segment.chunk_end(last)
            error = self._parse(segment, start, end)
            if error is None:
                return last + 1
            if self.exhausted:
                return len(segment.starts)
            first_error = first_error or error
            if not _unfinished(error, segment, start, end):
                break
        assert first_error is not None
        end = segment.chunk_end(index)
        at = _error_index(first_error, start, end)
        if _message(first_error) in _CUT_AT_LINE_MESSAGES and at > start:
            # Indented junk after a complete statement (indented prose): keep the statement.
            if self._parse(segment, start, at) is None:
                start = at
        if start < end:
            self._record_failure(segment, start, end, at, first_error)
        return index + 1

    def _parse(self, segment: _Segment, start: int, end: int) -> Exception | None:
        """Parse ``lines[start:end]``; keep it as a piece on success, else return the error."""
        if self.budget.left <= 0:
            self.exhausted = True
            return RuntimeError("parse budget spent")
        text = segment.text(start, end)
        self.budget.left -= len(text) + _PARSE_OVERHEAD
        try:
            module = _parse_quietly(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            return error
        self.pieces.append(_Piece(module, segment.lines[start:end], segment.numbers[start:end]))
        self.covered.update(segment.numbers[start:end])
        return None

    def _record_failure(
        self, segment: _Segment, start: int, end: int, at: int, error: Exception
    ) -> None:
        line = segment.lines[at].strip()
        message = _message(error)
        self.failures.append(
            _Failure(
                line=segment.numbers[at] + 1,
                message=f"{message}: {line[:80]}" if line else message,
                first=segment.numbers[start] + 1,
                last=segment.numbers[end - 1] + 1,
                had_definition=any(_DEFINITION_RE.match(x) for x in segment.lines[start:end]),
            )
        )


@dataclass
class _Segment:
    """Lines between hard breaks, with the column-0 lines that start statements."""

    lines: list[str]
    numbers: list[int]
    starts: list[int]  # column-0 lines that look like the start of a statement
    joined: str
    offsets: list[int]  # offset of each line in ``joined``, plus one past the end

    @classmethod
    def of(cls, lines: list[str], numbers: list[int]) -> _Segment:
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line) + 1)
        return cls(
            lines=lines,
            numbers=numbers,
            starts=[i for i, line in enumerate(lines) if _START_RE.match(line)],
            joined="\n".join(lines),
            offsets=offsets,
        )

    def __len__(self) -> int:
        return len(self.lines)

    def text(self, start: int, end: int) -> str:
        return self.joined[self.offsets[start] : self.offsets[end] - 1]

    def chunk_end(self, index: int) -> int:
        """Return the line after chunk ``index``: the next start, or the segment's end."""
        return self.starts[index + 1] if index + 1 < len(self.starts) else len(self.lines)


def _parse_quietly(text: str) -> ast.Module:
    """Run ``ast.parse`` with SyntaxWarnings (``1if x``) silenced: they are not errors."""
    with warnings.catch_warnings():
        # Also keeps ``-W error`` from turning a warning into a parse failure here.
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(text)


def _message(error: Exception) -> str:
    message = getattr(error, "msg", None) or str(error) or type(error).__name__
    return _DETECTED_AT_RE.sub("", message)  # "(detected at line N)" counts in the parsed text


def _error_index(error: Exception, start: int, end: int) -> int:
    """Return the segment line index of a parse error in ``lines[start:end]``."""
    lineno = getattr(error, "lineno", None)
    at = start + lineno - 1 if isinstance(lineno, int) and lineno > 0 else end - 1
    return min(max(at, start), end - 1)


def _unfinished(error: Exception, segment: _Segment, start: int, end: int) -> bool:
    """Whether more lines might complete the statement: the parser ran out of text."""
    if _TRUNCATION_RE.search(_message(error)):
        return True
    last = max((i for i in range(start, end) if segment.lines[i].strip()), default=start)
    return _error_index(error, start, end) >= last


def _segments(
    lines: Sequence[str | None], numbers: Sequence[int]
) -> Iterator[tuple[list[str], list[int]]]:
    """Split at unavailable lines and column-0 prose; trim blank lines at both ends."""
    current: list[tuple[str, int]] = []

    def flush() -> Iterator[tuple[list[str], list[int]]]:
        while current and not current[-1][0].strip():
            current.pop()
        first = next((i for i, (line, _) in enumerate(current) if line.strip()), None)
        if first is not None:
            kept = current[first:]
            yield [line for line, _ in kept], [number for _, number in kept]
        current.clear()

    for line, number in zip(lines, numbers, strict=True):
        if line is None or _is_prose(line):
            yield from flush()
        else:
            current.append((line, number))
    yield from flush()


# -------------------------------------------------------------------------- statements


@dataclass
class _Statement:
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


def _statements(piece: _Piece) -> Iterator[_Statement]:
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
        yield _Statement(node, text, piece.numbers[node.lineno - 1] + 1)


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


def _filter(statements: list[_Statement], notes: list[str]) -> list[_Statement]:
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
    kept: list[_Statement] = []
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


def _drop_shadowed(statements: list[_Statement], notes: list[str]) -> list[_Statement]:
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
class _ClassInfo:
    """What matters about a class to decide whether it is the network."""

    node: ast.ClassDef
    is_module: bool
    has_forward: bool
    init_required: tuple[str, ...] | None  # None: no __init__ in this file (nn.Module's)
    reads: set[str] = field(default_factory=set)  # module names the class uses

    @property
    def is_network(self) -> bool:
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


def _class_infos(statements: list[_Statement]) -> list[_ClassInfo]:
    """Describe every top-level class, resolving bases to classes defined before it."""
    infos: list[_ClassInfo] = []
    defined: dict[str, _ClassInfo] = {}
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
        info = _ClassInfo(
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


def _select_network(infos: list[_ClassInfo]) -> _ClassInfo | None:
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


def _no_network_error(infos: list[_ClassInfo]) -> str:
    rule = "a network is an nn.Module subclass with forward() and an __init__ without arguments"
    if not infos:
        return f"no class definitions found ({rule})"
    final = {info.node.name: info for info in infos}
    found = "; ".join(f"{name} ({info.reason()})" for name, info in final.items())
    return f"no network class ({rule}); found: {found}"


# ---------------------------------------------------------------------------- rebuild


def _rebuild(statements: list[_Statement], preamble: str, notes: list[str]) -> str:
    """Build one module: future imports, imports, missing preamble imports, the rest."""
    future: list[str] = []
    imports: list[str] = []
    body: list[_Statement] = []
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


def _is_definition(statement: _Statement) -> bool:
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


# ---------------------------------------------------------------------------- driver

# Characters ast.parse may see in one extraction: a few times the text, so clean code
# (one parse) and a truncated tail or prose between code (about two) fit easily, while
# pathological input (thousands of broken statements) cannot make extraction slow.
# Counted, not timed, so the same completion always gives the same extraction.
_BUDGET_FACTOR = 3
_BUDGET_FLOOR = 100_000
_PARSE_OVERHEAD = 200  # per ast.parse call, so thousands of tiny failures also add up


@dataclass
class _Budget:
    """Characters ``ast.parse`` may still see, shared by all attempts."""

    left: int


def _extract(text: str, preamble: str, budget: _Budget) -> Extraction:
    """Extract from one text: fenced blocks first, then the whole text."""
    text, notes = _normalise(text)
    if not text.strip():
        return _failure(Status.SYNTAX_ERROR, "empty completion", notes)
    lines = text.split("\n")
    fences = _find_fences(lines)
    fence_notes = [*notes]
    if fences.other_blocks:
        fence_notes.append(f"skipped {fences.other_blocks} non-Python fenced block(s)")
    if fences.blocks:
        only_fenced = [line if i in fences.python_lines else None for i, line in enumerate(lines)]
        fenced_notes = [*fence_notes, f"used fenced code block(s) ({fences.blocks})"]
        if fences.unclosed:
            fenced_notes.append("unclosed final fence (truncated answer)")
        result = _analyse(lines, only_fenced, fences.skipped, budget, preamble, fenced_notes)
        if result.ok:
            return result
        fence_notes.append("fenced blocks held no network; read the whole text")
    # Whole text: fence lines and other-language blocks are hard breaks.
    masked = [None if i in fences.skipped else line for i, line in enumerate(lines)]
    return _analyse(lines, masked, fences.skipped, budget, preamble, fence_notes)


def _analyse(
    lines: list[str],
    available: list[str | None],
    furniture: set[int],
    budget: _Budget,
    preamble: str,
    notes: list[str],
) -> Extraction:
    """Windows -> statements -> filter -> network -> module, for one view of the text."""
    notes = [*notes]
    scanner = _Scanner(budget)
    scanner.scan(available, range(len(available)))
    _note_scan(scanner, lines, furniture, notes)
    if not scanner.pieces:
        return _failure(Status.SYNTAX_ERROR, _syntax_error(scanner), notes)

    statements = [s for piece in scanner.pieces for s in _statements(piece)]
    statements = _drop_shadowed(_filter(statements, notes), notes)
    infos = _class_infos(statements)
    network = _select_network(infos)
    if network is None:
        if any(f.had_definition for f in scanner.failures):
            return _failure(Status.SYNTAX_ERROR, _syntax_error(scanner), notes)
        return _failure(Status.NO_NETWORK, _no_network_error(infos), notes)

    source = _rebuild(statements, preamble, notes)
    try:
        _parse_quietly(source)  # each piece parsed; a whole that does not is a bug here
    except SyntaxError as error:  # pragma: no cover - defensive
        return _failure(Status.SYNTAX_ERROR, f"rebuilt source does not parse: {error}", notes)
    return Extraction(source, network.node.name, None, None, tuple(dict.fromkeys(notes)))


def _note_scan(scanner: _Scanner, lines: list[str], furniture: set[int], notes: list[str]) -> None:
    """Describe what the scan dropped: prose, broken code, a truncated tail."""
    if scanner.dedented:
        notes.append("dedented indented code")
    content = [i + 1 for i, line in enumerate(lines) if line.strip() and i not in furniture]
    last = max(content, default=0)
    accounted = set(scanner.covered)
    for failure in scanner.failures:
        # Code cut by max_new_tokens fails at (or a few lines above) the very end.
        at_end = failure.last >= last and failure.line >= last - _TAIL_LINES
        if at_end and (failure.had_definition or _TRUNCATION_RE.search(failure.message)):
            notes.append(f"cut truncated tail (line {failure.line}: {failure.message})")
        elif failure.had_definition:
            notes.append(
                f"dropped unparseable code (lines {failure.first}-{failure.last}, "
                f"line {failure.line}: {failure.message})"
            )
        else:
            continue  # prose that happened to start like code ("from the above...")
        accounted.update(range(failure.first - 1, failure.last))
    accounted |= furniture
    prose = sum(1 for i, line in enumerate(lines) if line.strip() and i not in accounted)
    if prose:
        notes.append(f"stripped prose ({prose} line{'s' if prose > 1 else ''})")
    if scanner.exhausted:
        notes.append("stopped scanning: parse budget spent")


def _syntax_error(scanner: _Scanner) -> str:
    """Describe the most telling parse failure: the last that dropped a class/def."""
    failures = [f for f in scanner.failures if f.had_definition] or scanner.failures
    if not failures:
        return "no Python code found in the completion"
    failure = failures[-1]
    return f"line {failure.line}: {failure.message}"


def _failure(status: Status, error: str, notes: list[str]) -> Extraction:
    return Extraction(None, None, status, error, tuple(dict.fromkeys(notes)))
