"""An on-disk completion cache (SQLite through the standard library).

A completion is keyed by everything that determines it: the generator's identity (model,
endpoint mode, sampling parameters, its seed), the prompt or chat messages, the temperature,
the request's seed and a sample index (the n-th identical request in one call). A rerun or a
resumed run with the same seed therefore asks the model only for completions it has not
seen. Only successful completions are stored, so an outage is retried next time.

SQLite in WAL mode with a busy timeout is safe with several processes writing at once (a
multirun on one machine); ``INSERT OR IGNORE`` keeps the first answer for a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmatic.llm.base import CodeGenerator
from llmatic.types import Completion, GenerationRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class CompletionCache:
    """A key -> completion store in one SQLite file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(
                f"llm.cache_path={self.path} is not usable ({exc}); choose a writable path or "
                "set llm.cache=false"
            ) from exc
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60.0, isolation_level=None)

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        """The cached completions among ``keys``."""
        found: dict[str, Completion] = {}
        with self._lock, self._connect() as db:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, text, prompt_tokens, completion_tokens, seconds "  # noqa: S608
                    f"FROM completions WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, text, pt, ct, sec in rows:
                    found[key] = Completion(text=text, prompt_tokens=pt, completion_tokens=ct,
                                            seconds=sec, cached=True, attempts=0)
        return found

    def put_many(self, items: Sequence[tuple[str, Completion]]) -> None:
        """Store successful completions (errors are never cached)."""
        rows = [(k, c.text, c.prompt_tokens, c.completion_tokens, c.seconds)
                for k, c in items if c.ok]
        if not rows:
            return
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR IGNORE INTO completions "
                "(key, text, prompt_tokens, completion_tokens, seconds) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


def request_key(identity: Mapping[str, Any], request: GenerationRequest, sample: int) -> str:
    """A stable hash of everything that determines one completion."""
    payload = {
        "generator": dict(identity),
        "prompt": request.prompt,
        "messages": [dict(m) for m in request.messages] if request.messages else None,
        "temperature": round(float(request.temperature), 6),
        "seed": int(request.seed),
        "sample": int(sample),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class CachedGenerator(CodeGenerator):
    """Wraps a generator; asks it only for completions the cache does not hold.

    Args:
        inner: The real generator.
        cache: Where completions are stored.
        identity: What identifies the generator's output distribution (model, sampling
            parameters, seed); part of every key.
    """

    def __init__(self, inner: CodeGenerator, cache: CompletionCache,
                 identity: Mapping[str, Any]) -> None:
        self.inner = inner
        self.cache = cache
        self.identity = dict(identity)
        self.name = inner.name
        self.is_llm = inner.is_llm
        #: Requests answered by the cache / sent to the model, over this object's life.
        self.stats: Counter[str] = Counter()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Serve hits from the cache; generate and store the misses."""
        seen: Counter[str] = Counter()
        keys = []
        for req in requests:
            base = request_key(self.identity, req, 0)
            keys.append(request_key(self.identity, req, seen[base]))
            seen[base] += 1
        hits = self.cache.get_many(keys)
        misses = [i for i, k in enumerate(keys) if k not in hits]
        self.stats["hits"] += len(requests) - len(misses)
        self.stats["misses"] += len(misses)
        fresh = self.inner.generate([requests[i] for i in misses]) if misses else []
        self.cache.put_many([(keys[i], c) for i, c in zip(misses, fresh, strict=True)])
        out: list[Completion] = []
        fresh_iter = iter(fresh)
        for key in keys:
            out.append(hits[key] if key in hits else next(fresh_iter))
        return out

    def close(self) -> None:
        """Close the wrapped generator."""
        self.inner.close()
