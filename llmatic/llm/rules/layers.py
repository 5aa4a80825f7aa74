"""The parsed network class and its layers: what each layer is and what it does to a shape.

:class:`_Layers` holds a module's syntax tree and the network class in it, and answers
questions about the layers ``__init__`` builds: their kinds, which have weights, which accept
any input width or any spatial size, how a change of shape passes through one.
:class:`~llmatic.llm.rules.network._Net` builds on it with how ``forward`` uses the layers.
The three functions first read a convolution's or a pool's literal arguments.
"""

from __future__ import annotations

import ast
import copy
from collections import Counter
from collections.abc import Callable

from llmatic.llm.rules.astutil import (
    _arg,
    _ctor_name,
    _dotted,
    _literal,
    _method,
    _pair,
    _self_attr,
)
from llmatic.llm.rules.errors import _NoEdit
from llmatic.llm.rules.helpers import _HELPER_DUMPS, _HELPER_SOURCES, _HELPER_TEMPLATES
from llmatic.llm.rules.vocab import (
    _ABSORB_WIDTH,
    _ADAPTIVE_POOLS,
    _EAGER_CONVS,
    _LAZY_CONVS,
    _POOLS,
    _SHAPE_PRESERVING,
    _WEIGHTED,
)


def _groups(call: ast.Call) -> object:
    """The ``groups`` of a lazy convolution (position 5); 1 for layers without groups."""
    return _literal(_arg(call, 5, "groups"), 1)


def _conv_size_safe(call: ast.Call, shift: int) -> bool:
    """Whether a convolution keeps a 1x1 map valid (enough padding for its kernel)."""
    kernel = _pair(_literal(_arg(call, 1 + shift, "kernel_size")))
    padding = _literal(_arg(call, 3 + shift, "padding"), 0)
    dilation = _pair(_literal(_arg(call, 4 + shift, "dilation"), 1))
    if padding == "same":
        return True
    pad = _pair(padding)
    if kernel is None or pad is None or dilation is None:
        return False
    return all(2 * p >= d * (k - 1) for k, p, d in zip(kernel, pad, dilation, strict=True))


def _pool_size_safe(call: ast.Call, functional: bool, is_max: bool) -> bool:
    """Whether a pooling layer keeps a 1x1 map valid: ceil mode and kernel < 1 + 2*pad + stride.

    ``F.max_pool2d(x, ...)`` takes the input first, so its arguments sit one place later.
    """
    shift = int(functional)
    kernel = _pair(_literal(_arg(call, shift, "kernel_size")))
    stride_value = _literal(_arg(call, shift + 1, "stride"))
    stride = kernel if stride_value is None else _pair(stride_value)
    pad = _pair(_literal(_arg(call, shift + 2, "padding"), 0))
    ceil_position = {(False, True): 5, (False, False): 3, (True, True): 5, (True, False): 4}[
        (functional, is_max)
    ]
    if _literal(_arg(call, ceil_position, "ceil_mode"), False) is not True:
        return False
    if is_max and _literal(_arg(call, shift + 3, "dilation"), 1) != 1:
        return False
    if kernel is None or stride is None or pad is None:
        return False
    return all(k < 1 + 2 * p + s for k, s, p in zip(kernel, stride, pad, strict=True))


class _Layers:
    """A parsed module and the network class in it: the layers and what each one does.

    Edits change the trees in place. Analyses are memoised until the statement lists change;
    an edit that changes nodes in place calls :meth:`touch`.
    """

    def __init__(self, tree: ast.Module, cls: ast.ClassDef) -> None:
        init, forward = _method(cls, "__init__"), _method(cls, "forward")
        if init is None or forward is None:
            raise _NoEdit("the network class needs both __init__ and forward")
        if len(forward.args.args) < 2:
            raise _NoEdit("forward takes no input tensor")
        self.tree, self.cls, self.init, self.forward = tree, cls, init, forward
        self._cache: dict[str, tuple[list[ast.stmt], object]] = {}

    def _cached(self, name: str, stmts: list[ast.stmt], compute: Callable[[], object]) -> object:
        """Memoise ``compute()`` until the statement list changes.

        Edits add or remove statements. The old statements themselves are kept in the cache, so
        a new statement can never reuse an old one's identity.
        """
        hit = self._cache.get(name)
        if hit is not None and len(hit[0]) == len(stmts):
            if all(a is b for a, b in zip(hit[0], stmts, strict=True)):
                return hit[1]
        value = compute()
        self._cache[name] = (list(stmts), value)
        return value

    def touch(self) -> None:
        """Forget memoised analyses after an edit that changed nodes in place."""
        self._cache.clear()

    # --- what is in the class ---------------------------------------------------------

    @property
    def input_name(self) -> str:
        """The forward's input variable."""
        return self.forward.args.args[1].arg

    def params(self) -> set[str]:
        """All of forward's parameter names."""
        a = self.forward.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
        return set(names)

    def module_attrs(self) -> dict[str, ast.Call]:
        """``self.X = Call(...)`` assignments at the top level of ``__init__``."""
        return self._cached("attrs", self.init.body, self._module_attrs)  # type: ignore[return-value]

    def _module_attrs(self) -> dict[str, ast.Call]:
        attrs: dict[str, ast.Call] = {}
        for stmt in self.init.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                attr = _self_attr(stmt.targets[0])
                if attr is not None and isinstance(stmt.value, ast.Call):
                    attrs[attr] = stmt.value
        return attrs

    def helpers(self) -> dict[str, str]:
        """Helper classes this mutator added, by class name -> template key."""
        return self._cached("helpers", self.tree.body, self._helpers)  # type: ignore[return-value]

    def _helpers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node is not self.cls:
                for helper, template in _HELPER_TEMPLATES.items():
                    renamed = copy.copy(node)
                    renamed.name = template.name
                    if ast.dump(renamed) == _HELPER_DUMPS[helper]:
                        found[node.name] = helper
        return found

    def taken_attrs(self) -> set[str]:
        """Attribute and method names already used in the class."""
        names = {n.attr for n in ast.walk(self.cls) if _self_attr(n) is not None}
        names |= {n.name for n in self.cls.body if isinstance(n, ast.FunctionDef)}
        return names

    def attr_uses(self) -> Counter[str]:
        """How often each ``self.X`` is read anywhere in the class."""
        return Counter(
            n.attr
            for n in ast.walk(self.cls)
            if _self_attr(n) is not None and isinstance(n.ctx, ast.Load)
        )

    def layer_count(self) -> int:
        """Layers built in ``__init__``; a container counts its elements."""

        def count(call: ast.expr) -> int:
            if _ctor_name(call) in ("Sequential", "ModuleList"):
                return sum(count(a) for a in call.args) or 1  # type: ignore[union-attr]
            return 1

        return sum(count(call) for call in self.module_attrs().values())

    # --- what the layers do -----------------------------------------------------------

    def ctor_kind(self, call: ast.expr) -> str | None:
        """The layer's class name, or the helper key for our helpers."""
        if not isinstance(call, ast.Call):
            return None
        name = _ctor_name(call)
        return self.helpers().get(name or "", name)

    def is_weighted(self, attr: str) -> bool:
        """Whether the layer ``self.attr`` has weights (it could be the classifier)."""
        if attr in {n.name for n in self.cls.body if isinstance(n, ast.FunctionDef)}:
            return False  # self.method(x) is not a layer
        call = self.module_attrs().get(attr)
        return True if call is None else self._weighted_call(call)

    def _weighted_call(self, call: ast.expr) -> bool:
        kind = self.ctor_kind(call)
        if kind in ("Sequential", "ModuleList"):
            return any(self._weighted_call(a) for a in call.args)  # type: ignore[union-attr]
        if kind in _WEIGHTED or kind in _HELPER_SOURCES:
            return True
        # A class defined in the module may hold weights; other torch.nn layers do not.
        local = {n.name for n in self.tree.body if isinstance(n, ast.ClassDef)}
        return isinstance(call, ast.Call) and _dotted(call.func) in local

    def agnostic(self, call: ast.expr | None) -> bool:
        """Whether a layer works for any input channel/feature count."""
        kind = self.ctor_kind(call) if call is not None else None
        if kind is None:
            return False
        if kind == "Sequential":
            return all(self.agnostic(a) for a in call.args)  # type: ignore[union-attr]
        if kind in _LAZY_CONVS or kind == "LazyLinear" or kind.startswith("LazyConvTranspose"):
            return _groups(call) == 1  # type: ignore[arg-type]
        return kind in _HELPER_SOURCES or kind in (
            _SHAPE_PRESERVING | _POOLS | _ADAPTIVE_POOLS | {"Flatten"}
        )

    def size_safe(self, call: ast.expr | None) -> bool:
        """Whether a layer accepts any spatial size down to 1x1."""
        kind = self.ctor_kind(call) if call is not None else None
        if kind is None:
            return False
        if kind == "Sequential":
            return all(self.size_safe(a) for a in call.args)  # type: ignore[union-attr]
        if kind in _LAZY_CONVS or kind in _EAGER_CONVS:
            return _conv_size_safe(call, 0 if kind in _LAZY_CONVS else 1)  # type: ignore[arg-type]
        if kind in _POOLS:
            return _pool_size_safe(call, False, kind.startswith("Max"))  # type: ignore[arg-type]
        return kind in (
            _SHAPE_PRESERVING | _ADAPTIVE_POOLS | {"Flatten", "conv_residual"}
            | {"LazyLinear", "Linear", "linear_residual", "recurrent"}
        )

    def protected_call(self, head_attr: str | None) -> ast.Call | None:
        """The classifier's constructor call (its output size is the number of classes)."""
        call = self.module_attrs().get(head_attr or "")
        return None if call is None else self._last_weighted(call)

    def _last_weighted(self, call: ast.expr) -> ast.Call | None:
        if self.ctor_kind(call) == "Sequential":
            for arg in reversed(call.args):  # type: ignore[union-attr]
                found = self._last_weighted(arg)
                if found is not None:
                    return found
            return None
        return call if isinstance(call, ast.Call) and self._weighted_call(call) else None

    # --- how a change of shape passes through one layer -------------------------------

    def transfer(
        self, call: ast.expr, state: tuple[bool, bool], size_check: bool
    ) -> tuple[bool, bool] | None:
        """The shape change after the layer ``call`` builds, or None if it cannot take it.

        ``state`` is (channel count changed, H and W changed), as in ``_Net.absorbs``.
        """
        kind = self.ctor_kind(call)
        if kind == "Sequential":
            for element in call.args:  # type: ignore[union-attr]
                state = self.transfer(element, state, size_check)  # type: ignore[assignment]
                if state is None:
                    return None
            return state
        changed_channels, changed_spatial = state
        if not (changed_channels or changed_spatial):
            return state
        if not self.agnostic(call):
            return None
        if changed_spatial and size_check and not self.size_safe(call):
            return None
        if kind == "Flatten":
            return True, False
        if kind in _ADAPTIVE_POOLS:
            changed_spatial = False
        if kind in _ABSORB_WIDTH:
            changed_channels = False
        return changed_channels, changed_spatial
