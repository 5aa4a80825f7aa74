"""A small OpenAI-compatible HTTP server for tests (standard library only).

It serves ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``
on 127.0.0.1 at an ephemeral port, from a daemon thread, with the response shapes of the
real API (``id``, ``object``, ``created``, ``model``, ``choices``, ``usage``), ``n`` > 1
included. What it answers, and how it fails, is scripted:

* ``responder(body) -> str | list[str]`` gives the completion text(s): a string is repeated
  ``n`` times; a list gives one choice per item (a list shorter than ``n`` imitates servers
  that ignore ``n``).
* ``faults`` injects failures per completion request: a list consumed one item per request
  (``None`` = answer normally), a callable ``(index, path, body) -> kind | None``, or
  :class:`RandomFaults` (a seeded failure rate). Kinds: ``"500"``, ``"503"``, ``"429"``
  (with ``Retry-After``), ``"timeout"`` (sleep ``fault_delay_s`` before answering),
  ``"malformed"`` (a body that is not JSON, labelled JSON), ``"empty"`` (``choices: []``),
  ``"400"``, ``"401"``, ``"404"``.

Everything it sees is logged (:attr:`FakeOpenAIServer.requests`) with thread-safe counters,
including the most calls it had in flight at once.

Use::

    with FakeOpenAIServer(responder=cycling_responder(messy_network_answers())) as server:
        gen = OpenAIGenerator(model="fake", base_url=server.base_url)
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_KINDS = ("500", "503", "429", "timeout", "malformed", "empty", "400", "401", "404")

Responder = Callable[[dict[str, Any]], "str | list[str]"]
FaultPlan = Callable[[int, str, dict[str, Any]], "str | None"]

# A network for 8x8 single-channel digits, (B, 1, 8, 8) -> (B, 10): the default answer.
DEFAULT_NETWORK = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.flatten(x, 1)
        return self.fc1(x)
"""


class RandomFaults:
    """A seeded failure rate: request ``i`` fails with probability ``rate``.

    The draw depends on the request index only (not on thread timing), so a plan is
    reproducible even when requests arrive concurrently.

    Args:
        rate: Probability that a request fails.
        seed: Seed of the draws.
        kinds: Fault kinds to pick from, uniformly.

    """

    def __init__(
        self,
        rate: float,
        seed: int = 0,
        kinds: Sequence[str] = ("500", "503", "429", "malformed", "empty"),
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.rate = float(rate)
        self.seed = int(seed)
        self.kinds = tuple(kinds)

    def __call__(self, index: int, path: str, body: dict[str, Any]) -> str | None:
        rng = random.Random(self.seed * 1_000_003 + index)
        if rng.random() < self.rate:
            return rng.choice(self.kinds)
        return None


def cycling_responder(answers: Sequence[str]) -> Responder:
    """A responder that hands out ``answers`` in turn (one per choice), thread-safely."""
    items = list(answers)
    if not items:
        raise ValueError("cycling_responder needs at least one answer")
    counter = itertools.count()
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> list[str]:
        n = int(body.get("n") or 1)
        with lock:
            return [items[next(counter) % len(items)] for _ in range(n)]

    return respond


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1, for tests; a context manager.

    Args:
        responder: ``body -> str | list[str]``: the completion text(s) of a request. Default:
            :data:`DEFAULT_NETWORK` for every choice.
        faults: None, a list of fault kinds (or None) consumed one per completion request,
            a callable ``(index, path, body) -> kind | None``, or :class:`RandomFaults`.
        delay_s: Seconds every completion request waits before it is answered.
        fault_delay_s: Seconds a ``"timeout"`` fault waits (longer than the client timeout).
        retry_after_s: The ``Retry-After`` header of ``"429"`` and ``"503"`` faults (None: no
            header).
        models: The model ids ``GET /v1/models`` lists.
        models_status: HTTP status of ``GET /v1/models`` (e.g. 401, 404, 500); 200 lists
            ``models``.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1``.

    """

    def __init__(
        self,
        responder: Responder | None = None,
        faults: Sequence[str | None] | FaultPlan | None = None,
        delay_s: float = 0.0,
        *,
        fault_delay_s: float = 3.0,
        retry_after_s: float | None = 1,
        models: Sequence[str] = ("fake-model",),
        models_status: int = 200,
    ) -> None:
        self.responder = responder or (lambda body: DEFAULT_NETWORK)
        if faults is None or callable(faults):
            self._fault_plan: FaultPlan | None = faults  # type: ignore[assignment]
            self._fault_list: list[str | None] = []
        else:
            unknown = {f for f in faults if f is not None} - set(FAULT_KINDS)
            if unknown:
                raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
            self._fault_plan = None
            self._fault_list = list(faults)
        self.delay_s = float(delay_s)
        self.fault_delay_s = float(fault_delay_s)
        self.retry_after_s = retry_after_s
        self.models = tuple(models)
        self.models_status = int(models_status)

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._log: list[dict[str, Any]] = []
        self._counts: Counter[str] = Counter()
        self._completion_index = 0
        self._in_flight = 0
        self._max_in_flight = 0

        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Daemon handler threads: a "timeout" fault still sleeping must not block stop().
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ------------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); sleeping handlers wake up."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------- the log
    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the log: ``{"method", "path", "body", "fault", "time", "headers"}`` each."""
        with self._lock:
            return [dict(r) for r in self._log]

    @property
    def completion_requests(self) -> list[dict[str, Any]]:
        """The logged POSTs to the completion routes, in arrival order."""
        return [r for r in self.requests if r["method"] == "POST"]

    @property
    def counts(self) -> Counter[str]:
        """How often each outcome was served: ``"ok"``, ``"models"`` and each fault kind."""
        with self._lock:
            return Counter(self._counts)

    @property
    def max_in_flight(self) -> int:
        """The most completion requests being handled at the same time."""
        with self._lock:
            return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Completion requests being handled now."""
        with self._lock:
            return self._in_flight

    # ------------------------------------------------------------------------- internals
    def _next_fault(self, path: str, body: dict[str, Any]) -> tuple[int, str | None]:
        with self._lock:
            index = self._completion_index
            self._completion_index += 1
            if self._fault_list:
                return index, self._fault_list.pop(0)
        if self._fault_plan is not None:
            return index, self._fault_plan(index, path, body)
        return index, None

    def _record(self, entry: dict[str, Any], outcome: str) -> None:
        with self._lock:
            self._log.append(entry)
            self._counts[outcome] += 1

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; return whether it is still running."""
        return not self._stopping.wait(seconds) if seconds > 0 else True


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        # Headers and body go out in two writes; with Nagle's algorithm the second waits
        # for the client's delayed ACK (~40 ms a response). Real servers set TCP_NODELAY.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet test output

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        # ---------------------------------------------------------------- responses
        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                # The client gave up (its timeout) and closed the socket: nothing to do.
                self.close_connection = True

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None):
            err_type = {401: "authentication_error", 404: "not_found_error"}.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
            self._send(
                status,
                {"error": {"message": message, "type": err_type, "code": status}},
                headers,
            )

        # ------------------------------------------------------------------- routes
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0].rstrip("/")
            server._record(
                {
                    "method": "GET",
                    "path": path,
                    "body": None,
                    "fault": None,
                    "time": time.time(),
                    "headers": self._headers(),
                },
                "models",
            )
            if path != "/v1/models":
                self._error(404, f"no route GET {path}")
            elif server.models_status != 200:
                self._error(server.models_status, f"models: HTTP {server.models_status}")
            else:
                created = int(time.time())
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": m, "object": "model", "created": created, "owned_by": "fake"}
                            for m in server.models
                        ],
                    },
                )

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0].rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._error(400, "request body is not JSON")
                return
            if path not in ("/v1/chat/completions", "/v1/completions"):
                server._record(
                    {
                        "method": "POST",
                        "path": path,
                        "body": body,
                        "fault": "404",
                        "time": time.time(),
                        "headers": self._headers(),
                    },
                    "404",
                )
                self._error(404, f"no route POST {path}")
                return
            server._enter()
            try:
                self._completion(path, body)
            finally:
                server._leave()

        def _completion(self, path: str, body: dict[str, Any]) -> None:
            index, fault = server._next_fault(path, body)
            server._record(
                {
                    "method": "POST",
                    "path": path,
                    "body": body,
                    "fault": fault,
                    "time": time.time(),
                    "index": index,
                    "headers": self._headers(),
                },
                fault or "ok",
            )
            if not server._sleep(server.delay_s):
                return
            if fault == "timeout":
                # Outlast the client's timeout; then answer normally, to a closed socket.
                if not server._sleep(server.fault_delay_s):
                    return
                fault = None
            if fault in ("429", "503"):
                headers = (
                    {"Retry-After": f"{server.retry_after_s:g}"}
                    if server.retry_after_s is not None
                    else {}
                )
                self._error(int(fault), f"fault {fault}", headers)
                return
            if fault in ("500", "400", "401", "404"):
                self._error(int(fault), f"fault {fault}")
                return
            if fault == "malformed":
                self._send(200, b'{"id": "cmpl-broken", "choices": [{"index": 0, "tex')
                return
            n = int(body.get("n") or 1)
            texts: list[str] = []
            if fault != "empty":
                answer = server.responder(body)
                texts = [answer] * n if isinstance(answer, str) else list(answer)[:n]
            self._send(200, _completion_body(path, body, texts))

    return Handler


def _completion_body(path: str, body: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The JSON of a chat or text completion with one choice per text."""
    chat = path.endswith("/chat/completions")
    if chat:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
    else:
        prompt = body.get("prompt") or ""
        prompt = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    choices = []
    for i, text in enumerate(texts):
        # The text is cut at the first stop string, as a real server does. max_tokens is
        # not applied: the responder decides the length (a truncated answer is a test case).
        finish = "stop"
        cut = min((text.index(s) for s in stops if s and s in text), default=len(text))
        text = text[:cut]
        if chat:
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        else:
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish})
    prompt_tokens = len(prompt.split())
    completion_tokens = sum(
        len(c.get("text", c.get("message", {}).get("content", "")).split()) for c in choices
    )
    return {
        # uuid, not the random module: the server must not move the global RNG of the tests.
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# ------------------------------------------------------------------ realistic answers
_PARENT = """class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.flatten(x, 1)
        return self.fc1(x)
"""

_USABLE = [
    # 1. Chat model: prose, a fenced block, more prose.
    """Sure! To improve the network I added a second convolutional layer with batch
normalization and a max-pooling step, which lets the model learn more spatial features
before the classifier.

```python
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.fc1(x)
```

### Explanation
- `conv2` doubles the number of channels.
- `MaxPool2d` halves the 8x8 feature map to 4x4, so `fc1` takes 32 * 4 * 4 inputs.

Let me know if you want me to add dropout as well!""",
    # 2. A helper residual block before Net.
    '''Here's the network with a residual connection:

```python
import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.block = ResidualBlock(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.block(x)
        x = self.pool(x).flatten(1)
        return self.fc(x)
```

The residual block keeps the spatial size, so the shortcut can be added directly.''',
    # 3. Repeats the parent, then gives the new class Net.
    """The original network is:

```python
"""
    + _PARENT
    + """```

I improved it by adding a fully connected hidden layer and dropout:

```python
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 64)
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)
```""",
    # 4. Truncated mid-function (max_tokens) after an earlier complete class.
    """```python
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


class DeeperNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, pad""",
    # 5. Ends with instantiation and a print.
    """```python
import torch
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 12, 3)
        self.conv2 = nn.Conv2d(12, 24, 3)
        self.fc1 = nn.Linear(24 * 4 * 4, 48)
        self.fc2 = nn.Linear(48, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = x.reshape(x.shape[0], -1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)

model = Net()
print(model)
```""",
    # 6. CodeGen-style continuation: no fences, runs on into the next instruction.
    '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(2, 2)
        self.fc1 = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        return x


"""Add a pooling layer to improve the above network"""


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8''',
    # 7. A recurrent layer, with a __main__ guard and a training stub.
    """I added an LSTM that reads the 8 rows of the image as a sequence:

```python
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.rnn = nn.LSTM(input_size=8, hidden_size=hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        x = x.squeeze(1)  # (B, 8, 8): 8 steps of 8 features
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


if __name__ == "__main__":
    net = Net()
    x = torch.randn(4, 1, 8, 8)
    print(net(x).shape)
```""",
    # 8. Untagged fence, tabs for indentation, Windows line endings.
    "Here you go:\r\n```\r\nimport torch.nn as nn\r\n\r\nclass Net(nn.Module):\r\n"
    "\tdef __init__(self):\r\n\t\tsuper().__init__()\r\n"
    "\t\tself.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(),"
    " nn.Linear(32, 10))\r\n\r\n\tdef forward(self, x):\r\n\t\treturn self.net(x)\r\n```\r\n",
]

_UNUSABLE = [
    # Prose only: the model explains instead of writing code.
    """To improve the above network you could add more convolutional layers, use batch
normalization after each convolution, and add dropout before the final linear layer. You
might also try a learning-rate scheduler. Would you like me to write the code?""",
    # Broken: truncated inside the only network class.
    """```python
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8,""",
]


def messy_network_answers(usable: bool | None = None) -> list[str]:
    """Realistic LLM answers for a network on 8x8 single-channel digits, 10 classes.

    The usable ones (first) each define a network that maps ``(B, 1, 8, 8)`` to ``(B, 10)``
    once :func:`llmatic.extract.network.extract_network` has pulled it out: chat-style prose with
    fenced code, a helper residual block before ``Net``, a repeated parent followed by the
    new ``Net``, a completion truncated after an earlier complete class, a trailing
    ``model = Net(); print(model)``, a CodeGen-style continuation without fences, a
    ``__main__`` guard, tabs and CRLF line endings. The unusable ones (last) are prose only
    and a network truncated mid-definition.

    Args:
        usable: None for all answers, True for the usable ones only, False for the
            unusable ones only.

    Returns:
        The answers, usable first.

    """
    if usable is None:
        return list(_USABLE) + list(_UNUSABLE)
    return list(_USABLE) if usable else list(_UNUSABLE)
