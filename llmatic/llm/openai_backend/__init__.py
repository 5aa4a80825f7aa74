"""Any OpenAI-compatible HTTP endpoint as the code generator.

One backend serves every server that speaks the OpenAI REST API: a local vLLM
(``vllm serve MODEL``), Ollama (``ollama serve``, base URL ``http://localhost:11434/v1``),
the llama.cpp server (``llama-server -m model.gguf``), LM Studio, TGI's OpenAI route, and
hosted APIs (OpenAI itself, Together, Fireworks, ...). It talks to them with the official
``openai`` package, in one of two modes:

* ``chat``: ``POST /v1/chat/completions`` with the request's chat ``messages`` (or its
  prompt as a single user message), for instruction-tuned models;
* ``completion``: ``POST /v1/completions`` with the raw prompt, for base code models that
  continue the parent's code (the paper's CodeGen set-up).

A call to :meth:`OpenAIGenerator.generate` sends its requests concurrently (at most
``max_concurrency`` HTTP calls in flight) on an asyncio event loop and returns when all
are answered. Identical requests (same prompt or messages, same temperature) are merged
into one call with ``n=k`` choices, which a server answers with one prompt prefill.

Failures never escape ``generate``: timeouts, connection errors, HTTP 429 and 5xx, malformed
bodies and empty ``choices`` are retried with exponential backoff and full jitter (honouring
``Retry-After``); other 4xx errors are not retried. A request that still has no text gets a
:class:`~llmatic.types.Completion` whose ``error`` says why, and the search records it as
``llm_error``.

Modules:

* :mod:`~llmatic.llm.openai_backend.generator`: :class:`OpenAIGenerator` (grouping,
  concurrency, retries, the start-up check);
* :mod:`~llmatic.llm.openai_backend.errors`: which failures are retried, ``Retry-After``,
  error messages;
* :mod:`~llmatic.llm.openai_backend.response`: reading a response's texts and token usage;
* :mod:`~llmatic.llm.openai_backend.loop`: the event loop's thread.

The configs name the class as ``llmatic.llm.openai_backend.OpenAIGenerator``.
"""

from llmatic.llm.openai_backend.generator import CHECK_TIMEOUT_S, MAX_N, OpenAIGenerator
from llmatic.llm.openai_backend.response import MAX_STOP

__all__ = ["CHECK_TIMEOUT_S", "MAX_N", "MAX_STOP", "OpenAIGenerator"]
