"""The OpenAI-compatible generator: request grouping, concurrency, retries and start-up check.

:class:`OpenAIGenerator` sends a batch of requests concurrently on its own event loop
(:class:`~llmatic.llm.openai_backend.loop.LoopThread`), merges identical requests into one
``n=k`` call, and retries each call with backoff; how a failure is classified lives in
:mod:`llmatic.llm.openai_backend.errors`, how a response is read in
:mod:`llmatic.llm.openai_backend.response`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from llmatic.llm.base import CodeGenerator, mix_seeds
from llmatic.llm.openai_backend.errors import (
    FatalError,
    RetryableError,
    cause,
    classify,
    describe_error,
)
from llmatic.llm.openai_backend.loop import LoopThread
from llmatic.llm.openai_backend.response import MAX_STOP, parse_response, share
from llmatic.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

#: Choices requested in one call at most; bigger groups of identical requests are split
#: (servers cap ``n``, and smaller calls spread over the concurrency slots).
MAX_N = 16
#: Timeout of the start-up probe (``GET /models``), in seconds.
CHECK_TIMEOUT_S = 5.0
#: Mixed seeds are reduced modulo this, so every server accepts them (llama.cpp takes 32 bits).
SERVER_SEED_MODULUS = 2**31 - 1

_MODES = ("chat", "completion")


@dataclass
class _CallResult:
    """What one logical call (with its retries) produced."""

    texts: list[str]  # one per choice received, in choice order (may be fewer than asked)
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    attempts: int
    error: str | None = None
    fatal_status: int | None = None  # the HTTP status of a failure not worth retrying


#: Hosts of a server on this machine (the hint then says how to start one).
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def unreachable_hint(url: str, model: str) -> str:
    """What to do when ``url`` does not answer: start a local server, or check the network.

    A local server is started with a model it can serve (a Hugging Face id for vLLM), never
    with a hosted API's model name such as ``gpt-4o-mini``.
    """
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    if host in _LOCAL_HOSTS:
        served = model if "/" in model else "HF_ORG/MODEL"  # vLLM serves Hugging Face ids
        return (f"Start the server on {host} first (vLLM: `vllm serve {served} --port "
                f"{urlparse(url).port or 8000}`; Ollama: `ollama serve`; llama.cpp: "
                "`llama-server -m MODEL.gguf`) or correct llm.base_url (it must include the "
                "/v1 suffix, e.g. http://localhost:8000/v1).")
    return (f"{host} did not answer: check this machine's network connection (and proxy "
            "settings) and llm.base_url (it must include the /v1 suffix).")


class OpenAIGenerator(CodeGenerator):
    """Generate code through an OpenAI-compatible HTTP API, many requests at a time.

    Each completion reports ``attempts`` (HTTP calls made for it, retries included) and the
    server's ``usage``; a call that answered ``k`` identical requests at once has its token
    counts and its wall time (``seconds``, retries included) split evenly over the ``k``,
    so that sums over completions count each call once.

    Args:
        model: The model name the server knows (e.g. ``Qwen/Qwen2.5-Coder-7B-Instruct`` for
            vLLM, ``qwen2.5-coder:7b`` for Ollama, ``gpt-4o-mini`` for OpenAI).
        base_url: The API root including ``/v1`` (e.g. ``http://localhost:8000/v1``); None
            for ``https://api.openai.com/v1``.
        api_key: The bearer token; None reads ``OPENAI_API_KEY`` and falls back to the dummy
            ``"EMPTY"``, which local servers accept.
        mode: ``"chat"`` for ``/chat/completions`` or ``"completion"`` for ``/completions``.
        max_new_tokens: ``max_tokens`` of every call.
        top_p: Nucleus-sampling mass; 1.0 disables it.
        stop: Strings that end a completion. The first four go to the server (the API's
            limit); all are also cut client-side.
        max_concurrency: HTTP calls in flight at most.
        timeout_s: Seconds one HTTP call may take before it is abandoned and retried.
        max_retries: Retries after the first attempt of a call (so ``max_retries + 1``
            attempts in all).
        backoff_base_s: Backoff before retry ``k`` (from 0) is
            ``min(backoff_max_s, backoff_base_s * 2**k) * U(0, 1)``.
        backoff_max_s: Cap of one backoff, and of a server's ``Retry-After``.
        seed: Mixed into each request's seed before it is sent.
        check_endpoint: Probe the endpoint in the constructor (see :meth:`check`).
        extra_body: Extra JSON fields for every call, for server-specific options (e.g.
            ``{"top_k": 50}`` for vLLM, ``{"options": {"num_ctx": 8192}}`` for Ollama).

    Raises:
        ValueError: If an argument is invalid, or ``check_endpoint`` is set and the endpoint
            is unreachable or rejects the API key.

    """

    is_llm = True

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        mode: str = "chat",
        max_new_tokens: int = 350,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed: int = 0,
        check_endpoint: bool = True,
        extra_body: dict | None = None,
    ) -> None:
        if not model:
            raise ValueError("llm.model must name the model the server serves, got ''")
        if mode not in _MODES:
            raise ValueError(f"llm.mode must be one of {list(_MODES)}, got {mode!r}")
        if base_url is not None and not str(base_url).startswith(("http://", "https://")):
            raise ValueError(
                f"llm.base_url={base_url!r} must start with http:// or https:// "
                "(e.g. http://localhost:8000/v1 for vLLM, http://localhost:11434/v1 for Ollama)"
            )
        if max_new_tokens < 1:
            raise ValueError(f"llm.max_new_tokens must be >= 1, got {max_new_tokens}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"llm.top_p must be in (0, 1], got {top_p}")
        if max_concurrency < 1:
            raise ValueError(f"llm.max_concurrency must be >= 1, got {max_concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"llm.timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"llm.max_retries must be >= 0, got {max_retries}")
        if backoff_base_s < 0 or backoff_max_s < 0:
            raise ValueError(
                f"llm.backoff_base_s and llm.backoff_max_s must be >= 0, got "
                f"{backoff_base_s} and {backoff_max_s}"
            )
        self.model = str(model)
        self.base_url = str(base_url).rstrip("/") if base_url else None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.mode = mode
        self.name = f"openai:{self.model}@{self.base_url or 'api.openai.com'}"
        self.max_new_tokens = int(max_new_tokens)
        self.top_p = float(top_p)
        self.stop = tuple(s for s in stop if s)
        if len(self.stop) > MAX_STOP:
            log.warning(
                "%s: %d stop strings, the API takes %d: the rest are applied client-side",
                self.name,
                len(self.stop),
                MAX_STOP,
            )
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.seed = int(seed)
        self.extra_body = dict(extra_body) if extra_body else None
        self._closed = False
        # Jitter needs no reproducibility; a private RNG leaves the global one alone.
        self._rng = random.Random()
        # Cleared when the server rejects n > 1 as a bad request.
        self._grouping = True
        # The event loop (in its own thread), the async client and the semaphore are made
        # on first use: a generator that is built but never used starts no thread.
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        if check_endpoint:
            self.check()

    # ------------------------------------------------------------------------- start-up
    def check(self) -> None:
        """Probe ``GET {base_url}/models`` once, so a wrong URL or key fails at start-up.

        The model name is not validated (servers alias names); a warning is logged when
        the server lists models and this one is not among them. A 404 (servers without the
        route) or another server-side error is logged and tolerated: generation retries.

        Raises:
            ValueError: If the endpoint is unreachable (naming ``llm.base_url``) or rejects
                the API key (naming ``llm.api_key``).

        """
        url = self.base_url or "https://api.openai.com/v1"
        client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            max_retries=0,
            timeout=min(CHECK_TIMEOUT_S, self.timeout_s),
        )
        try:
            page = client.models.list()
            ids = [str(getattr(m, "id", "")) for m in (getattr(page, "data", None) or [])]
        except openai.APIConnectionError as e:  # includes APITimeoutError
            what = "timed out" if isinstance(e, openai.APITimeoutError) else "refused or failed"
            raise ValueError(
                f"llm.base_url={url} is unreachable: GET {url}/models {what} "
                f"({type(e).__name__}: {cause(e)}). {unreachable_hint(url, self.model)}"
            ) from e
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise ValueError(
                f"llm.base_url={url} rejected the API key (HTTP {e.status_code}): set "
                "llm.api_key or the OPENAI_API_KEY environment variable to a valid key."
            ) from e
        except openai.NotFoundError:
            log.info("%s: the server has no GET /models route; not checking the model", self.name)
            return
        except (openai.APIError, ValueError, TypeError) as e:
            # A 5xx or an odd body at start-up: the server answers, so go on and let the
            # retries of generate() deal with it.
            log.warning("%s: GET /models failed (%s); continuing", self.name, describe_error(e))
            return
        finally:
            client.close()
        if ids and self.model not in ids:
            log.warning(
                "%s: the server does not list model %r (it lists %s); requests may fail "
                "unless the server aliases the name",
                self.name,
                self.model,
                ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
            )

    # ------------------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Return one completion per request, in order; failures give errors, not raises.

        Safe to call from any thread, also from one that runs an event loop (a notebook, an
        async caller): the calls run on the generator's own loop while the caller waits.

        Args:
            requests: The requests; each is sampled at its own temperature and seed.

        Returns:
            One :class:`~llmatic.types.Completion` per request.

        """
        requests = list(requests)
        if not requests:
            return []
        with self._lock:
            if self._closed:
                return [Completion(text="", error="the generator was closed") for _ in requests]
            loop = self._loop_thread()
        try:
            return loop.run(self._generate_async(requests))
        except concurrent.futures.CancelledError:
            # close() from another thread cancelled this generation.
            return [
                Completion(text="", error="the generator was closed during generation")
                for _ in requests
            ]

    def close(self) -> None:
        """Close the HTTP client and stop the event loop; later ``generate`` calls get errors."""
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None or not loop.alive:
            return
        try:
            loop.run(self._close_client(), timeout=10)
        except Exception as e:  # noqa: BLE001 - closing must not fail the caller's shutdown
            log.debug("%s: closing the HTTP client failed: %s", self.name, describe_error(e))
        loop.stop()

    def _loop_thread(self) -> LoopThread:
        """The generator's event loop; a new one after a fork (threads do not survive it)."""
        if self._loop is None or not self._loop.alive:
            self._loop = LoopThread(f"openai-{self.model}")
            self._client = None
            self._semaphore = None
            # A generator dropped without close() must not leave its thread behind.
            weakref.finalize(self, self._loop.stop)
        return self._loop

    async def _close_client(self) -> None:
        """Close the async client, on the loop it belongs to."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _generate_async(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Answer ``requests`` on the generator's loop: one task per group of identical ones."""
        results: list[Completion | None] = [None] * len(requests)
        # Made here, on the loop that uses them, and kept: the client's connection pool
        # keeps connections alive from one generation to the next, and one semaphore
        # bounds the HTTP calls in flight even when several threads call generate at once.
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                max_retries=0,  # retries are ours: counted, jittered, Retry-After honoured
                timeout=self.timeout_s,
            )
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        client, semaphore = self._client, self._semaphore
        groups = self._group(requests)
        await asyncio.gather(
            *(self._run_group(client, semaphore, requests, g, results) for g in groups)
        )
        out: list[Completion] = []
        for r in results:
            # Every slot is filled by _run_group; this guards against a logic error only.
            out.append(r if r is not None else Completion(text="", error="no result"))
        failed = [c for c in out if not c.ok]
        if failed:
            log.warning(
                "%s: %d of %d requests failed, e.g. %s",
                self.name,
                len(failed),
                len(out),
                failed[0].error,
            )
        return out

    def _group(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """Indices of identical requests, grouped (first-seen order), at most MAX_N each."""
        if not self._grouping:
            return [[i] for i in range(len(requests))]
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(self._key(r), []).append(i)
        out: list[list[int]] = []
        for indices in groups.values():
            out.extend(indices[j : j + MAX_N] for j in range(0, len(indices), MAX_N))
        return out

    def _key(self, r: GenerationRequest) -> Any:
        """What makes two requests identical: their prompt (or messages) and temperature."""
        if self.mode == "chat" and r.messages:
            body: Any = tuple(tuple(sorted(m.items())) for m in r.messages)
        else:
            body = r.prompt
        return (body, float(r.temperature))

    async def _run_group(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        requests: list[GenerationRequest],
        indices: list[int],
        results: list[Completion | None],
    ) -> None:
        """Answer identical requests with one ``n=len(indices)`` call, then fill the gaps."""
        first = requests[indices[0]]
        call = await self._call_with_retries(client, semaphore, first, len(indices))
        k = len(call.texts)
        for slot, i in enumerate(indices[:k]):
            results[i] = Completion(
                text=call.texts[slot],
                prompt_tokens=share(call.prompt_tokens, k, slot),
                completion_tokens=share(call.completion_tokens, k, slot),
                seconds=call.seconds / k,
                attempts=call.attempts,
            )
        missing = indices[k:]
        if not missing:
            return
        n_rejected = call.fatal_status in (400, 422) and len(indices) > 1
        if call.error is not None and not n_rejected:
            # The whole call failed after its retries: the same request again, one by one,
            # would fail the same way and multiply the traffic.
            for i in missing:
                results[i] = Completion(
                    text="", error=call.error, seconds=call.seconds, attempts=call.attempts
                )
            return
        # Some servers ignore n and return one choice, and some reject n > 1 as a bad
        # request: ask for the rest one at a time, each with its own seed so that a
        # deterministic server does not repeat itself.
        log.debug("%s: asked for %d choices, got %d (%s)", self.name, len(indices), k, call.error)
        await self._run_singly(client, semaphore, requests, missing, results, call.attempts)
        if n_rejected and any(results[i].ok for i in missing):  # type: ignore[union-attr]
            # The same request went through with n=1: n itself was the problem (a genuinely
            # bad request, e.g. one too long for the context, would have failed again).
            if self._grouping:
                log.warning(
                    "%s: the server rejected n=%d (%s) but accepts n=1: sending requests "
                    "one at a time from now on",
                    self.name,
                    len(indices),
                    call.error,
                )
            self._grouping = False

    async def _run_singly(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        requests: list[GenerationRequest],
        indices: list[int],
        results: list[Completion | None],
        prior_attempts: int,
    ) -> None:
        """Answer each of ``indices`` with its own ``n=1`` call, concurrently.

        Args:
            client: The async client.
            semaphore: Bounds the HTTP calls in flight.
            requests: All requests of the generation.
            indices: The requests to answer.
            results: Filled in at ``indices``.
            prior_attempts: HTTP calls already spent on these requests (the grouped call),
                added to each completion's ``attempts``.
        """

        async def single(i: int) -> None:
            one = await self._call_with_retries(client, semaphore, requests[i], 1)
            attempts = prior_attempts + one.attempts
            if one.texts:
                results[i] = Completion(
                    text=one.texts[0],
                    prompt_tokens=one.prompt_tokens,
                    completion_tokens=one.completion_tokens,
                    seconds=one.seconds,
                    attempts=attempts,
                )
            else:
                results[i] = Completion(
                    text="",
                    error=one.error or "the server returned no choice for this request",
                    seconds=one.seconds,
                    attempts=attempts,
                )

        await asyncio.gather(*(single(i) for i in indices))

    async def _call_with_retries(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        request: GenerationRequest,
        n: int,
    ) -> _CallResult:
        """One logical call with retries; never raises (except cancellation)."""
        t0 = time.perf_counter()
        reason = "no attempt made"
        attempts = 0
        for attempt in range(self.max_retries + 1):
            attempts = attempt + 1
            retry_after: float | None = None
            try:
                # The slot is held for the HTTP call only, not during backoff, so one
                # struggling call does not idle a slot others could use.
                async with semaphore:
                    texts, usage = await self._call_once(client, request, n)
                return _CallResult(
                    texts=texts,
                    prompt_tokens=usage[0],
                    completion_tokens=usage[1],
                    seconds=time.perf_counter() - t0,
                    attempts=attempts,
                )
            except FatalError as e:
                return _CallResult(
                    texts=[],
                    prompt_tokens=0,
                    completion_tokens=0,
                    seconds=time.perf_counter() - t0,
                    attempts=attempts,
                    error=f"{e.reason} (not retried)",
                    fatal_status=e.status,
                )
            except RetryableError as e:
                reason = e.reason
                retry_after = e.retry_after_s
            if attempt < self.max_retries:
                delay = self._backoff(attempt, retry_after)
                log.debug(
                    "%s: attempt %d failed (%s); retrying in %.2f s",
                    self.name,
                    attempts,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
        return _CallResult(
            texts=[],
            prompt_tokens=0,
            completion_tokens=0,
            seconds=time.perf_counter() - t0,
            attempts=attempts,
            error=f"{reason} after {attempts} attempts",
        )

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait before retry ``attempt`` (from 0)."""
        if retry_after_s is not None:
            # The server said when: waiting less only earns another 429.
            return min(self.backoff_max_s, max(0.0, retry_after_s))
        # Full jitter: spreads the retries of many concurrent calls over the window.
        window = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return window * self._rng.random()

    async def _call_once(
        self, client: openai.AsyncOpenAI, request: GenerationRequest, n: int
    ) -> tuple[list[str], tuple[int, int]]:
        """One HTTP call; return the choices' texts and (prompt, completion) token counts.

        Raises:
            RetryableError: On a failure that a retry may fix.
            FatalError: On a failure that it cannot.

        """
        kwargs: dict[str, Any] = {
            "model": self.model,
            "temperature": float(request.temperature),
            "top_p": self.top_p,
            "max_tokens": self.max_new_tokens,
            "seed": mix_seeds(self.seed, request.seed, modulus=SERVER_SEED_MODULUS),
            "n": n,
        }
        if self.stop:
            kwargs["stop"] = list(self.stop[:MAX_STOP])
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        try:
            if self.mode == "chat":
                messages = (
                    [dict(m) for m in request.messages]
                    if request.messages
                    else [{"role": "user", "content": request.prompt}]
                )
                response: Any = await client.chat.completions.create(messages=messages, **kwargs)
            else:
                response = await client.completions.create(prompt=request.prompt, **kwargs)
        except (openai.OpenAIError, ValueError) as e:
            raise classify(e, self.timeout_s) from e
        return parse_response(response, self.mode, self.stop)
