"""Lazy re-exports for package ``__init__`` files (PEP 562).

Each package of llmatic re-exports its public names, so that other packages import
``from llmatic.qd import NetworkArchive`` and never reach into a module. The import of the
module that defines a name waits until the name is first used: ``import llmatic.search``
stays free of torch and Lightning, and a config error is reported before they load.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: The package's ``__name__``.
        modules: Module name (relative to the package) -> the public names it defines.
    """
    where = {name: module for module, names in modules.items() for name in names}
    public = sorted(where)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module protocol's name
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:  # noqa: N807
        return public

    return public, __getattr__, __dir__
