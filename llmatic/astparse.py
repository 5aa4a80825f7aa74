"""One way to build a syntax tree from untrusted text: :func:`parse`.

CPython 3.11 keeps the depth counter of its AST constructor in per-interpreter state, so two
threads that build trees at once (the local evaluator's pool, a generator's worker thread,
a library parsing its own source) can make a correct parse fail with ``SystemError: AST
constructor recursion depth mismatch`` (python/cpython#106905); one such failure turned a
valid candidate into a ``syntax_error`` in a two-process test run. Every parse in llmatic
goes through :func:`parse`, which serialises llmatic's own parses and retries the spurious
error a parse by another thread can still cause. Parsing executes nothing.
"""

from __future__ import annotations

import ast
import threading
import warnings

__all__ = ["parse"]

_LOCK = threading.Lock()
_RETRIES = 3


def parse(text: str) -> ast.Module:
    """Return ``ast.parse(text)``; SyntaxWarnings (``1if x``) are silenced, not errors.

    Raises :class:`SyntaxError` (and the ``ValueError``/``RecursionError`` that ``ast.parse``
    raises for null bytes or absurd nesting) exactly as ``ast.parse`` does.
    """
    for attempt in range(_RETRIES):
        try:
            with _LOCK, warnings.catch_warnings():
                # Also keeps ``-W error`` from turning a warning into a parse failure here.
                warnings.simplefilter("ignore", SyntaxWarning)
                return ast.parse(text)
        except SystemError as error:
            if "recursion depth mismatch" not in str(error) or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
