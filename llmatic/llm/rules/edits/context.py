"""What the edits of one request share (:class:`_Ctx`), and the type of an edit (``Edit``).

A ``_Ctx`` carries the request's random generator, temperature and caps; every random choice
an edit makes goes through it, so a request always gives the same child.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llmatic.llm.rules.network import _Net


@dataclass
class _Ctx:
    """Randomness, temperature and caps shared by the edits of one request."""

    rng: np.random.Generator
    temperature: float
    max_channels: int
    max_features: int
    max_layers: int

    def n_edits(self, base: int = 1) -> int:
        """How many edits: ``base + Binomial(2, temperature)``."""
        return base + int(self.rng.binomial(2, self.temperature))

    def factor(self) -> int:
        """A width factor for the drastic size edits: 2 when cold, up to 4 when hot."""
        return 2 + int(self.rng.binomial(2, self.temperature))

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return bool(self.rng.random() < p)

    def index(self, n: int) -> int:
        """A uniform index below ``n``."""
        return int(self.rng.integers(n))

    def pick(self, options: Sequence[float], ref: float, cap: float | None = None) -> float:
        """Pick near ``ref`` when cold, from a window that covers every option when hot."""
        opts = [o for o in options if cap is None or o <= cap] or [cap or options[0]]
        i = min(range(len(opts)), key=lambda j: (abs(opts[j] - ref), j))
        spread = int(round(self.temperature * (len(opts) - 1)))
        lo, hi = max(0, i - spread), min(len(opts) - 1, i + spread)
        return opts[lo + self.index(hi - lo + 1)]

    def order(self, kinds: Sequence[str], weights: Sequence[float]) -> list[str]:
        """A random order of ``kinds``, heavier ones first on average."""
        p = np.asarray(weights, dtype=float)
        picks = self.rng.choice(len(kinds), size=len(kinds), replace=False, p=p / p.sum())
        return [kinds[int(i)] for i in picks]


Edit = Callable[[_Net, _Ctx], "str | None"]
