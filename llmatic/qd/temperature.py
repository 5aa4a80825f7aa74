"""Temperature schedules (docs/method.md §3.5). Each child records the temperature it used."""

from __future__ import annotations


class TemperatureSchedule:
    """Base: a temperature per candidate, clipped to [min, max].

    ``propose(prompt_temperature, generation, generations)`` gives the temperature for a
    new candidate; ``update(temperature, improved)`` is told the outcome and returns the
    temperature the prompt should carry next.
    """

    #: What a child must beat to count as improved (recorded in the history; the adaptive
    #: schedule also moves on it): ``best`` so far, or its ``parent``.
    compare_to = "best"

    def __init__(self, *, min: float = 0.1, max: float = 1.0) -> None:  # noqa: A002
        if not 0.0 < min <= max:
            raise ValueError(f"temperature bounds need 0 < min <= max, got [{min}, {max}]")
        self.min, self.max = float(min), float(max)
        self.current = self.min

    def clip(self, t: float) -> float:
        """Clip ``t`` to the bounds (rounded so cells are stable across platforms)."""
        return round(min(self.max, max(self.min, float(t))), 6)

    def propose(self, prompt_temperature: float | None, generation: int, generations: int) -> float:
        """Temperature for the next candidate."""
        return self.current

    def update(self, temperature: float, improved: bool) -> float:
        """Record an outcome; return the temperature the prompt carries next."""
        return temperature


class AdaptiveTemperature(TemperatureSchedule):
    """The paper: +step after a child that improved fitness (explore), -step otherwise.

    Mutations use the temperature of the prompt cell they selected; the global ``current``
    temperature (used by warm-up and crossover) follows the same rule.

    Args:
        compare_to: ``parent`` (the default: did the child beat its parent?) or ``best``
            (best-so-far, the reference code).
    """

    def __init__(
        self,
        *,
        start: float = 0.6,
        step: float = 0.05,
        min: float = 0.1,  # noqa: A002
        max: float = 1.0,  # noqa: A002
        compare_to: str = "parent",
    ) -> None:
        super().__init__(min=min, max=max)
        if compare_to not in ("best", "parent"):
            raise ValueError(f"temperature.compare_to must be best or parent, got {compare_to!r}")
        if step < 0:
            raise ValueError(f"temperature.step must be >= 0, got {step}")
        self.step = float(step)
        self.compare_to = compare_to
        self.current = self.clip(start)

    def propose(self, prompt_temperature: float | None, generation: int, generations: int) -> float:
        """The prompt's own temperature if it has one, else the global one."""
        return self.clip(self.current if prompt_temperature is None else prompt_temperature)

    def update(self, temperature: float, improved: bool) -> float:
        """Move up by ``step`` after an improvement, down otherwise."""
        delta = self.step if improved else -self.step
        self.current = self.clip(self.current + delta)
        return self.clip(temperature + delta)


class ConstantTemperature(TemperatureSchedule):
    """Always ``value``."""

    def __init__(self, *, value: float = 0.6, min: float = 0.1, max: float = 1.0) -> None:  # noqa: A002
        super().__init__(min=min, max=max)
        self.current = self.clip(value)


class LinearDecayTemperature(TemperatureSchedule):
    """From ``start`` at generation 1 to ``end`` at the last generation."""

    def __init__(
        self, *, start: float = 1.0, end: float = 0.1, min: float = 0.1, max: float = 1.0  # noqa: A002
    ) -> None:
        super().__init__(min=min, max=max)
        self.start, self.end = float(start), float(end)
        self.current = self.clip(start)

    def propose(self, prompt_temperature: float | None, generation: int, generations: int) -> float:
        """Linear interpolation by generation (1-based)."""
        frac = 0.0 if generations <= 1 else (generation - 1) / (generations - 1)
        self.current = self.clip(self.start + (self.end - self.start) * frac)
        return self.current
