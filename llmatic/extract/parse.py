"""Scan the cleaned lines into pieces of code that parse: step 3 of the extraction.

The text splits into segments at prose (column-0 lines that do not start like Python)
and at lines that are not available (fence lines, other languages, text outside the
fences being read). Each segment is parsed whole; if that fails, statement by statement
(a statement starts at a column-0 line that looks like code and borrows the next ones
while unfinished, as a decorator does), and what does not parse is dropped: prose between
code, a tail truncated by ``max_new_tokens``. :class:`Scanner` does this within a
:class:`Budget` of characters parsed; :func:`note_scan` and :func:`syntax_error` describe
what it dropped. Only :func:`ast.parse` runs, which builds a tree and executes nothing.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from llmatic.astparse import parse

# ------------------------------------------------------------------------------ budget

# Characters ast.parse may see in one extraction: a few times the text, so clean code
# (one parse) and a truncated tail or prose between code (about two) fit easily, while
# pathological input (thousands of broken statements) cannot make extraction slow.
# Counted, not timed, so the same completion always gives the same extraction.
BUDGET_FACTOR = 3
BUDGET_FLOOR = 100_000
_PARSE_OVERHEAD = 200  # per ast.parse call, so thousands of tiny failures also add up


@dataclass
class Budget:
    """Characters ``ast.parse`` may still see, shared by all attempts."""

    left: int


# ------------------------------------------------------------------------------- lines

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
class Piece:
    """One parsed run of lines: its tree, its (dedented) lines and their line indices."""

    module: ast.Module
    lines: list[str]
    numbers: list[int]


@dataclass
class Failure:
    """Code that was dropped because it did not parse."""

    line: int  # 1-based line of the error in the normalised text
    message: str
    first: int  # 1-based first and last dropped line
    last: int
    had_definition: bool  # the dropped lines held a class/def: likely the network


# -------------------------------------------------------------------------------- scan


class Scanner:
    """Collect parseable code from lines, within a budget of characters parsed.

    Each segment (lines between hard breaks) is parsed whole first: clean code costs one
    parse. Otherwise it is cut into chunks, one per column-0 line that starts a statement,
    and each chunk is parsed alone, borrowing the chunks after it while the error says the
    statement is merely unfinished (a decorator, a string or bracket with column-0 lines).
    A chunk that still fails is dropped: a truncated tail, prose that looked like code.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.pieces: list[Piece] = []
        self.failures: list[Failure] = []
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
            module = parse_quietly(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            return error
        self.pieces.append(Piece(module, segment.lines[start:end], segment.numbers[start:end]))
        self.covered.update(segment.numbers[start:end])
        return None

    def _record_failure(
        self, segment: _Segment, start: int, end: int, at: int, error: Exception
    ) -> None:
        line = segment.lines[at].strip()
        message = _message(error)
        self.failures.append(
            Failure(
                line=segment.numbers[at] + 1,
                message=f"{message}: {line[:80]}" if line else message,
                first=segment.numbers[start] + 1,
                last=segment.numbers[end - 1] + 1,
                had_definition=any(_DEFINITION_RE.match(x) for x in segment.lines[start:end]),
            )
        )


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


def parse_quietly(text: str) -> ast.Module:
    """Run ``ast.parse`` with SyntaxWarnings (``1if x``) silenced: they are not errors."""
    return parse(text)


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


# ------------------------------------------------------------------------------ report


def note_scan(scanner: Scanner, lines: list[str], furniture: set[int], notes: list[str]) -> None:
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


def syntax_error(scanner: Scanner) -> str:
    """Describe the most telling parse failure: the last that dropped a class/def."""
    failures = [f for f in scanner.failures if f.had_definition] or scanner.failures
    if not failures:
        return "no Python code found in the completion"
    failure = failures[-1]
    return f"line {failure.line}: {failure.message}"
