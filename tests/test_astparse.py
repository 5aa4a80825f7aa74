"""llmatic.astparse.parse survives CPython 3.11's AST-constructor race between threads.

Two threads that build syntax trees at once while the garbage collector runs finalizers can
make a correct ``ast.parse`` raise ``SystemError: AST constructor recursion depth mismatch``
(python/cpython#106905; it turned a valid candidate into a ``syntax_error`` in a two-process
``make test``). The scenario below makes plain ``ast.parse`` fail in most runs on 3.11.
"""

from __future__ import annotations

import ast
import gc
import sys
import threading

import pytest

from llmatic.astparse import parse

SOURCE = "x = " + "(" * 60 + "1" + ")" * 60 + "\n" + "\n".join(
    f"def f{i}(a):\n    return [a + {i} for _ in range(3)]" for i in range(40)
)


class _Finalized:
    def __del__(self):
        sum(range(50))  # Python code inside a collection: a thread switch can happen here


def _race(parser, threads: int = 3, parses: int = 40) -> list[str]:
    """Parse SOURCE from several threads while another makes cyclic garbage; return errors."""
    errors: list[str] = []

    def churn():
        for _ in range(4000):
            a, b = _Finalized(), _Finalized()
            a.other, b.other = b, a

    def work():
        for _ in range(parses):
            try:
                assert isinstance(parser(SOURCE), ast.Module)
            except SystemError as error:
                errors.append(str(error))

    old_threshold, old_interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(10)
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=work) for _ in range(threads)]
        pool.append(threading.Thread(target=churn))
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        gc.set_threshold(*old_threshold)
        sys.setswitchinterval(old_interval)
    return errors


def test_parse_from_many_threads_never_raises_the_spurious_system_error():
    assert _race(parse) == []


def test_parse_retries_when_another_thread_parses_with_plain_ast_parse():
    # A library in another thread (not under llmatic's lock) can still race a parse:
    # llmatic's parses retry the spurious error instead of reporting a syntax error.
    foreign: list[str] = []

    def library():
        foreign.extend(_race(ast.parse, threads=1, parses=60))

    thread = threading.Thread(target=library)
    thread.start()
    ours = _race(parse, threads=2, parses=30)
    thread.join()
    assert ours == []


def test_parse_raises_syntax_errors_as_ast_parse_does():
    with pytest.raises(SyntaxError):
        parse("def f(:\n")
    assert ast.dump(parse("y = 1if True else 2")) == ast.dump(ast.parse("y = 1 if True else 2"))
