"""The child's runtime checks on the candidate: replaced functions and imports.

:class:`TamperGuard` snapshots the functions that training and scoring rely on and fails
the candidate (``tampering``) when any of them was replaced; the worker checks it after
every stage. :func:`guarded_builtins` is the candidate's ``__builtins__``: imports are
limited to ``sandbox.allowed_imports``. Both run inside the sandboxed child only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmatic.train.failures import CandidateFailure
from llmatic.types import Status


def _guarded() -> dict[str, tuple[Any, str]]:
    """Functions that training and scoring rely on: a candidate must not replace them."""
    import builtins
    import json as json_module

    import torch
    import torch.nn.functional as F  # noqa: N812

    guarded = {
        "torch.nn.functional.cross_entropy": (F, "cross_entropy"),
        "torch.nn.Module.__call__": (torch.nn.Module, "__call__"),
        "torch.nn.Module.train": (torch.nn.Module, "train"),
        "torch.nn.Module.eval": (torch.nn.Module, "eval"),
        "torch.nn.Module.parameters": (torch.nn.Module, "parameters"),
        "torch.Tensor.backward": (torch.Tensor, "backward"),
        "torch.Tensor.numpy": (torch.Tensor, "numpy"),
        "torch.Tensor.float": (torch.Tensor, "float"),
        "torch.Tensor.cpu": (torch.Tensor, "cpu"),
        "torch.autograd.backward": (torch.autograd, "backward"),
        "torch.no_grad": (torch, "no_grad"),
        "torch.isfinite": (torch, "isfinite"),
        "torch.optim.Optimizer.step": (torch.optim.Optimizer, "step"),
        "torch.optim.Optimizer.zero_grad": (torch.optim.Optimizer, "zero_grad"),
        "numpy.save": (np, "save"),
        "numpy.concatenate": (np, "concatenate"),
        "numpy.isfinite": (np, "isfinite"),
        "json.dumps": (json_module, "dumps"),
        "builtins.open": (builtins, "open"),
    }
    for name in ("Adam", "AdamW", "SGD"):
        cls = getattr(torch.optim, name)
        # torch wraps a class's step() with a profiling hook at its first instantiation;
        # do that now so the snapshot holds the wrapped function.
        cls([torch.zeros(1, requires_grad=True)], lr=0.1)
        guarded[f"torch.optim.{name}.step"] = (cls, "step")
    return guarded


class TamperGuard:
    """Remembers the guarded functions; :meth:`check` fails if any was replaced."""

    def __init__(self) -> None:
        self.targets = _guarded()
        self.originals = {k: getattr(obj, attr) for k, (obj, attr) in self.targets.items()}

    def check(self, stage: str) -> None:
        """Raise a TAMPERING failure naming every replaced function."""
        changed = [k for k, (obj, attr) in self.targets.items()
                   if getattr(obj, attr, None) is not self.originals[k]]
        if changed:
            raise CandidateFailure(
                Status.TAMPERING, f"replaced {', '.join(changed)} (detected after {stage})"
            )


#: Modules that torch's C++ dispatcher and numpy's C core import lazily in the candidate's
#: frame (``ndarray.mean`` imports ``numpy._core._methods``; see :func:`guarded_builtins`);
#: the sandbox server imports them before any fork.
NATIVE_LAZY = frozenset({"torch._library.simple_registry", "torch._library",
                         "torch._library.utils", "torch._library.fake_impl",
                         "numpy._core._methods", "numpy._core._exceptions",
                         "numpy._core._internal", "numpy._core._dtype",
                         "numpy._core.arrayprint", "numpy._core._ufunc_config",
                         "numpy.core._methods", "numpy.core._exceptions",
                         "numpy.core._internal", "numpy.core._dtype"})


def guarded_builtins(allowed: Any) -> dict[str, Any]:
    """The candidate's ``__builtins__``: the real ones, with imports limited to ``allowed``.

    The static policy already rejects such imports; this is the runtime layer (it also
    covers ``eval`` / ``exec`` / ``__import__`` spelled in ways the policy cannot see, and
    imports of modules the server process already holds, which the audit hook never sees).
    """
    import builtins
    import types

    allowed = frozenset(allowed)
    real_import = builtins.__import__

    import sys

    def check(name: str) -> None:
        # torch's dispatcher and numpy's core import a few of their own modules from native
        # code (FlopCounterMode, ndarray.mean), which Python attributes to the calling
        # frame: the candidate's.
        # Those already loaded are handed back; nothing new is ever loaded that way.
        if name not in allowed and not (name in NATIVE_LAZY and name in sys.modules):
            raise ImportError(f"sandbox: import of {name!r} is not allowed")

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, ANN001, ANN202
        if level:
            raise ImportError("sandbox: relative imports are not allowed")
        check(name)
        module = real_import(name, globals, locals, fromlist, level)
        for item in fromlist or ():
            value = getattr(module, item, None)
            if isinstance(value, types.ModuleType):
                check(value.__name__)
        return module

    table = dict(builtins.__dict__)
    table["__import__"] = guarded_import
    return table
