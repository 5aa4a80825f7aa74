"""Network descriptors and their normalisation to [0, 1] (docs/method.md §3.2).

Raw values come from the sandboxed child (width, depth, parameters, FLOPs). Each named
descriptor maps them to one number, and per-dataset bounds from config map that number to
[0, 1]. Values outside the bounds are clipped *and counted*, so a run whose bounds are wrong
says so instead of silently piling every network into one niche.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from llmatic.types import EvalResult


def _log10(value: float | None) -> float | None:
    return None if value is None else math.log10(max(float(value), 1.0))


#: Descriptor name -> function of an evaluation result. Add new descriptors here.
DESCRIPTORS: dict[str, Callable[[EvalResult], float | None]] = {
    "width_to_depth": lambda r: r.width_to_depth,
    "log10_flops": lambda r: _log10(r.flops),
    "log10_params": lambda r: _log10(r.params),
    "depth": lambda r: None if r.depth is None else float(r.depth),
    "width": lambda r: None if r.width is None else float(r.width),
    # NAS-Bench-201 cells (space=nb201): how many edges hold each kind of operation.
    **{name: (lambda r, n=name: r.features.get(n))
       for name in ("conv_ops", "conv3x3_ops", "skip_ops", "pool_ops", "none_ops")},
}


class DescriptorSpace:
    """Named descriptors with bounds; turns results into normalised measure vectors.

    Args:
        names: Descriptor names, keys of :data:`DESCRIPTORS`.
        bounds: ``name -> (low, high)`` for at least every name used.
    """

    def __init__(self, *, names: Sequence[str], bounds: Mapping[str, Sequence[float]]) -> None:
        unknown = [n for n in names if n not in DESCRIPTORS]
        if unknown:
            raise ValueError(
                f"descriptors.names has unknown {unknown}; choose from {sorted(DESCRIPTORS)}"
            )
        missing = [n for n in names if n not in bounds]
        if missing:
            raise ValueError(
                f"dataset.descriptor_bounds lacks {missing}: add [low, high] for each"
            )
        self.names = list(names)
        self.bounds = {n: (float(bounds[n][0]), float(bounds[n][1])) for n in names}
        for name, (lo, hi) in self.bounds.items():
            if not hi > lo:
                raise ValueError(f"dataset.descriptor_bounds.{name}: high must exceed low")
        #: How often each descriptor was clipped below / above its bounds.
        self.clipped: Counter[str] = Counter()

    def raw(self, result: EvalResult) -> list[float] | None:
        """The unnormalised descriptor values, or None if any is unknown."""
        values = [DESCRIPTORS[n](result) for n in self.names]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]

    def normalise(self, raw: Sequence[float]) -> list[float]:
        """Map raw values to [0, 1] with the bounds; count clipped values."""
        out = []
        for name, value in zip(self.names, raw, strict=True):
            lo, hi = self.bounds[name]
            x = (value - lo) / (hi - lo)
            if x < 0.0:
                self.clipped[f"{name}_low"] += 1
            elif x > 1.0:
                self.clipped[f"{name}_high"] += 1
            out.append(min(1.0, max(0.0, x)))
        return out


# -- raw counts a candidate cannot override -------------------------------------------------
def module_tree(net: object) -> list[object]:
    """Every module under ``net`` (itself first), read from the base class's own dicts.

    Walks ``_modules`` in each instance ``__dict__`` with ``dict`` methods, so overriding
    ``modules()``, ``named_modules()``, ``children()`` or ``__getattr__`` changes nothing.
    """
    seen: set[int] = set()
    out: list[object] = []
    stack = [net]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append(module)
        children = _raw(module, "_modules")
        if isinstance(children, dict):
            stack.extend(m for m in reversed(list(dict.values(children))) if m is not None)
    return out


def parameter_sizes(net: object) -> dict[int, int]:
    """``{id: elements}`` of every distinct parameter under ``net``, frozen or not (raw walk)."""
    import torch

    sizes: dict[int, int] = {}
    for module in module_tree(net):
        params = _raw(module, "_parameters")
        if not isinstance(params, dict):
            continue
        for p in dict.values(params):
            # A lazy layer that no forward has reached holds no weights yet (an LLM often
            # declares a layer and never uses it): it counts as none, not as an error.
            if isinstance(p, torch.Tensor) and not torch.nn.parameter.is_lazy(p):
                sizes.setdefault(id(p), int(torch.Tensor.numel(p)))
    return sizes


def parameter_count(net: object) -> int:
    """Elements of every distinct parameter under ``net``, frozen or not (raw walk)."""
    return sum(parameter_sizes(net).values())


def raw_attribute(module: object, name: str) -> object:
    """``module.name`` as stored in its instance dict (no property, no ``__getattr__``)."""
    return _raw(module, name)


def _raw(obj: object, name: str) -> object:
    try:
        return dict.get(object.__getattribute__(obj, "__dict__"), name)
    except (AttributeError, TypeError):
        return None
