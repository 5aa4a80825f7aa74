"""Failures of an OpenAI-compatible HTTP call: retry or give up, and how to say why.

:func:`classify` sorts an exception raised by the ``openai`` client into a
:class:`RetryableError` (timeouts, connection errors, HTTP 408 / 429 / 5xx, malformed
bodies) or a :class:`FatalError` (other 4xx, client-side errors); :func:`retry_after_s`
reads a server's ``Retry-After``. The remaining helpers turn exceptions into the short,
single-line messages that end up in a completion's ``error``.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import openai

#: Characters of a server's error message kept in a completion's ``error``.
MAX_ERROR_CHARS = 300


class RetryableError(Exception):
    """A failed attempt that is worth repeating (5xx, 429, timeout, malformed body...).

    Attributes:
        reason: Why the attempt failed, for logs and the completion's ``error``.
        retry_after_s: The server's ``Retry-After`` in seconds, or None.
    """

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class FatalError(Exception):
    """A failed attempt that repeating cannot fix (400, 401, 404, a client-side bug).

    Attributes:
        reason: Why the attempt failed, for logs and the completion's ``error``.
        status: The HTTP status, or None for a failure without one.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def classify(e: openai.OpenAIError | ValueError, timeout_s: float) -> RetryableError | FatalError:
    """The error to raise for an exception of one HTTP call (raise it ``from e``).

    Args:
        e: What the ``openai`` client raised: one of its errors, or a ``ValueError`` (such
            as ``json.JSONDecodeError``) from a body that is not valid JSON.
        timeout_s: The call's timeout, named in the reason of a timeout.

    Returns:
        A :class:`RetryableError` for timeouts, connection errors, HTTP 408, 429 and 5xx
        (with the server's ``Retry-After`` for 429 and 503) and malformed bodies; a
        :class:`FatalError` (with the HTTP status, if any) for anything else.
    """
    if isinstance(e, openai.APITimeoutError):
        return RetryableError(f"timeout after {timeout_s:g} s")
    if isinstance(e, openai.APIConnectionError):
        return RetryableError(f"connection error ({cause(e)})")
    if isinstance(e, openai.APIStatusError):
        status = e.status_code
        reason = f"HTTP {status}: {shorten(status_message(e))}"
        if status == 429 or status == 408 or status >= 500:
            retry_after = retry_after_s(e.response) if status in (429, 503) else None
            return RetryableError(f"HTTP {status}", retry_after)
        return FatalError(reason, status)
    if isinstance(e, openai.APIResponseValidationError):
        return RetryableError(f"malformed response ({shorten(str(e))})")
    if isinstance(e, ValueError):
        # json.JSONDecodeError (a ValueError) from a body that is not valid JSON.
        return RetryableError(f"malformed JSON body ({shorten(str(e))})")
    return FatalError(describe_error(e))


def retry_after_s(response: Any) -> float | None:
    """The server's ``Retry-After`` (or ``retry-after-ms``) in seconds, or None."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_message(e: openai.APIStatusError) -> str:
    """The server's own error message from the body of an HTTP error, if it sent one."""
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(e.message)


def describe_error(e: BaseException) -> str:
    """``"ExceptionType: message"`` on one line, shortened."""
    return f"{type(e).__name__}: {shorten(str(e))}"


def cause(e: BaseException) -> str:
    """The underlying reason of a connection error (the client's own message is generic)."""
    inner = e.__cause__ or e.__context__
    return shorten(str(inner) or type(inner).__name__) if inner is not None else shorten(str(e))


def shorten(text: str) -> str:
    """``text`` on one line, cut to :data:`MAX_ERROR_CHARS` characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
