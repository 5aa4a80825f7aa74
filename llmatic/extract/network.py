"""Turn a raw LLM completion into the source of one candidate network.

Nothing in this package executes, evaluates, compiles-to-run or imports the generated
code: it is untrusted, and it only ever runs later in the sandboxed child process. The
extraction does string work and :func:`ast.parse` (which builds a syntax tree and runs
nothing).

This module holds the entry point, :func:`extract_network`, and the flow of one attempt;
the steps live in the modules that follow the text:

1. **Normalise** the text (:mod:`llmatic.extract.text`): line endings, tabs in
   indentation, special tokens (``<|endoftext|>`` and friends end the answer;
   ``<|im_start|>assistant`` starts it), a leading chat role prefix.
2. **Fences** (:mod:`llmatic.extract.text`): when the answer has Markdown code blocks
   tagged as Python (or untagged), only their content is read at first; the whole text
   is the fallback.
3. **Parse** (:mod:`llmatic.extract.parse`): the text splits into runs at prose
   (column-0 lines that do not start like Python) and at fences. Each run is parsed
   whole; if that fails, statement by statement (a statement starts at a column-0 line
   that looks like code and borrows the next ones while unfinished, as a decorator is),
   and what does not parse is dropped. That strips prose between code and a tail
   truncated by ``max_new_tokens``, leaving earlier complete classes. The work is bounded
   by a parse budget proportional to the text, so a 2,000-line completion takes a
   fraction of a second.
4. **Filter** top-level statements (:mod:`llmatic.extract.select`): keep imports, class
   and function definitions and constant assignments; strip what would run on import
   (``model = Net()``, training loops, ``if __name__ == "__main__":``) because it wastes
   the sandbox's time or fails.
5. **Select** the network class (:mod:`llmatic.extract.select`): the last top-level
   ``nn.Module`` subclass that has ``forward`` and an ``__init__`` without required
   arguments, preferring classes no other class uses (so a helper defined after the
   network is not picked).
6. **Rebuild** one module (:mod:`llmatic.extract.select`): ``__future__`` imports, the
   code's imports (deduplicated and moved to the top), the preamble imports it lacks,
   then the kept definitions in their original order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmatic.extract.parse import (
    BUDGET_FACTOR,
    BUDGET_FLOOR,
    Budget,
    Scanner,
    note_scan,
    parse_quietly,
    syntax_error,
)
from llmatic.extract.select import (
    class_infos,
    drop_shadowed,
    filter_statements,
    no_network_error,
    rebuild,
    select_network,
    split_statements,
)
from llmatic.extract.text import find_fences, normalise
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
    budget = Budget(BUDGET_FACTOR * (len(prefix) + 2 * len(completion)) + BUDGET_FLOOR)
    result = _extract(completion, preamble, budget)
    if result.ok or not prefix:
        return result
    combined = _extract(prefix + completion, preamble, budget)
    if combined.ok:
        return replace(combined, notes=("used prefix + completion", *combined.notes))
    return result


# ---------------------------------------------------------------------------- attempt


def _extract(text: str, preamble: str, budget: Budget) -> Extraction:
    """Extract from one text: fenced blocks first, then the whole text."""
    text, notes = normalise(text)
    if not text.strip():
        return _failure(Status.SYNTAX_ERROR, "empty completion", notes)
    lines = text.split("\n")
    fences = find_fences(lines)
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
    budget: Budget,
    preamble: str,
    notes: list[str],
) -> Extraction:
    """Windows -> statements -> filter -> network -> module, for one view of the text."""
    notes = [*notes]
    scanner = Scanner(budget)
    scanner.scan(available, range(len(available)))
    note_scan(scanner, lines, furniture, notes)
    if not scanner.pieces:
        return _failure(Status.SYNTAX_ERROR, syntax_error(scanner), notes)

    statements = [s for piece in scanner.pieces for s in split_statements(piece)]
    statements = drop_shadowed(filter_statements(statements, notes), notes)
    infos = class_infos(statements)
    network = select_network(infos)
    if network is None:
        if any(f.had_definition for f in scanner.failures):
            return _failure(Status.SYNTAX_ERROR, syntax_error(scanner), notes)
        return _failure(Status.NO_NETWORK, no_network_error(infos), notes)

    source = rebuild(statements, preamble, notes)
    try:
        parse_quietly(source)  # each piece parsed; a whole that does not is a bug here
    except SyntaxError as error:  # pragma: no cover - defensive
        return _failure(Status.SYNTAX_ERROR, f"rebuilt source does not parse: {error}", notes)
    return Extraction(source, network.node.name, None, None, tuple(dict.fromkeys(notes)))


def _failure(status: Status, error: str, notes: list[str]) -> Extraction:
    return Extraction(None, None, status, error, tuple(dict.fromkeys(notes)))
