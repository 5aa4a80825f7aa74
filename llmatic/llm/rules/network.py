"""The network as the edits see it: :class:`_Net` and the layout of its ``forward``.

The layout finds the flatten, the classifier (the last layer with weights) and every
:class:`_Point` where a layer may go in, with what each point guarantees: whether the layers
after it adapt to a new channel count, or to a new height and width. :meth:`_Net.absorbs`
follows a change of shape through ``forward`` to decide that.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from llmatic.llm.rules.astutil import _arg, _literal, _self_attr
from llmatic.llm.rules.forward import _Chain, _live_vars, _Op, _stmt_chain
from llmatic.llm.rules.layers import _Layers, _pool_size_safe
from llmatic.llm.rules.vocab import _FUNC_ADAPTIVE, _FUNC_POOLS


@dataclass(frozen=True)
class _Point:
    """A place in ``forward`` where a layer may be inserted (before ``body[index]``)."""

    index: int
    var: str  # the variable that holds the tensor there
    region: str  # "spatial": (B, C, H, W); "flat": (B, F)
    reshape_ok: bool  # everything after adapts to a new channel/feature count
    resize_ok: bool  # (spatial) everything after also accepts any H, W >= 1
    first_flat: bool  # (flat) nothing with weights since the flatten: sees the whole map


@dataclass
class _Layout:
    """What ``forward`` looks like: chains, the flatten, the classifier, insertion points."""

    chains: list[_Chain | None]
    flatten: int | None
    head: int | None
    head_attr: str | None
    points: list[_Point]


class _Net(_Layers):
    """A parsed network, edited in place: its layers (see ``_Layers``) and its layout."""

    # --- the layout of forward --------------------------------------------------------

    def head(self) -> tuple[int | None, str | None]:
        """The statement that applies the classifier (the last layer with weights)."""
        body = self.forward.body
        for i in reversed(range(len(body))):
            for node in ast.walk(body[i]):  # breadth first: the outermost call wins
                if isinstance(node, ast.Call):
                    attr = _self_attr(node.func)
                    if attr is not None and self.is_weighted(attr):
                        return i, attr
        return None, None

    def layout(self) -> _Layout:
        """Find the flatten, the classifier and every place where a layer fits."""
        stmts = [*self.forward.body, *self.init.body]
        return self._cached("layout", stmts, self._layout)  # type: ignore[return-value]

    def _layout(self) -> _Layout:
        body = self.forward.body
        chains = [_stmt_chain(s) for s in body]
        flatten = next(
            (i for i, c in enumerate(chains) if c and any(self.is_flatten(op) for op in c.ops)),
            None,
        )
        head, head_attr = self.head()
        layout = _Layout(chains, flatten, head, head_attr, [])
        live = _live_vars(body, self.params())

        # Spatial: from the input, while each statement feeds the tensor on, up to the flatten
        # (and never past the classifier, e.g. in all-convolutional networks).
        var, end = self.input_name, 0
        if flatten is not None:
            end = flatten if head is None else min(flatten, head)
        for p in range(end + 1):
            if p > 0:
                chain = chains[p - 1]
                if chain is None or chain.source != var:
                    break
                var = chain.target
            if live[p] == {var}:
                reshape = self.absorbs(layout, p, channels=True)
                resize = self.absorbs(layout, p, spatial=True, size_check=True)
                layout.points.append(_Point(p, var, "spatial", reshape, resize, False))

        # Flat: after the flatten, up to and including the classifier's statement.
        if flatten is not None and head is not None and flatten < head:
            flat_chain = chains[flatten]
            # After global pooling a hidden layer sees just C features: nothing to guard.
            first = not any(op.kind == "flatten" and op.reduces for op in flat_chain.ops)  # type: ignore[union-attr]
            var = flat_chain.target  # type: ignore[union-attr]
            for p in range(flatten + 1, head + 1):
                if p > flatten + 1:
                    chain = chains[p - 1]
                    if chain is None or chain.source != var:
                        break
                    var = chain.target
                    if any(o.kind == "module" and self.is_weighted(o.name) for o in chain.ops):
                        first = False
                if live[p] == {var}:
                    reshape = self.absorbs(layout, p, channels=True)
                    layout.points.append(_Point(p, var, "flat", reshape, False, first))
        elif flatten is None and head is not None and self._linear_head(head, head_attr, body):
            # No flatten statement, but a linear classifier whose output is the network's
            # output: its input is (B, F).
            var = chains[head].source  # type: ignore[union-attr]
            if live[head] == {var}:
                reshape = self.absorbs(layout, head, channels=True)
                layout.points.append(_Point(head, var, "flat", reshape, False, False))
        return layout

    def _linear_head(self, head: int, attr: str | None, body: list[ast.stmt]) -> bool:
        """Whether the classifier is a linear layer whose output only activations follow."""
        if self.ctor_kind(self.module_attrs().get(attr or "")) not in ("Linear", "LazyLinear"):
            return False
        if _stmt_chain(body[head]) is None:
            return False
        for stmt in body[head + 1 :]:
            chain = _stmt_chain(stmt)
            plain = chain is not None and all(op.kind == "func" for op in chain.ops)
            if not (plain or isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Name)):
                return False
        return True

    def is_flatten(self, op: _Op) -> bool:
        """Whether a chain step flattens (B, C, H, W) to (B, F)."""
        if op.kind == "flatten":
            return True
        call = self.module_attrs().get(op.name) if op.kind == "module" else None
        if call is not None and self.ctor_kind(call) == "Flatten":
            return _literal(_arg(call, 0, "start_dim"), 1) == 1
        return False

    # --- how a change of shape travels ------------------------------------------------

    def absorbs(
        self,
        layout: _Layout,
        start: int,
        channels: bool = False,
        spatial: bool = False,
        size_check: bool = False,
    ) -> bool:
        """Whether forward, from ``body[start]`` on, absorbs a change of the tensor's shape.

        ``channels``: the channel (or feature) count changed; ``spatial``: H and W changed.
        The change travels through the layers until one absorbs it: a lazy convolution or
        linear layer fixes the channels, an adaptive pool fixes H and W, a flatten turns a
        change of H and W into a change of features. Every layer it meets before that must
        accept any size (and, with ``size_check``, H and W down to 1). If the change reaches
        code this cannot follow, or the output, the answer is no.
        """
        state: tuple[bool, bool] | None = (channels, spatial)
        attrs = self.module_attrs()
        for chain in layout.chains[start:]:
            if state == (False, False):
                return True
            if chain is None:
                return False
            for op in chain.ops:
                state = self._op_transfer(op, attrs, state, size_check)  # type: ignore[arg-type]
                if state is None:
                    return False
        return state == (False, False)

    def _op_transfer(
        self, op: _Op, attrs: dict[str, ast.Call], state: tuple[bool, bool], size_check: bool
    ) -> tuple[bool, bool] | None:
        """The shape change after one chain step, or None if the step cannot take it."""
        changed_channels, changed_spatial = state
        if op.kind == "module":
            call = attrs.get(op.name)
            if call is None:
                return None if any(state) else state
            return self.transfer(call, state, size_check)
        if op.kind == "flatten":
            return changed_channels or (changed_spatial and not op.reduces), False
        if op.name in _FUNC_ADAPTIVE:
            return changed_channels, False
        pool = op.name in _FUNC_POOLS
        if pool and changed_spatial and size_check:
            if not _pool_size_safe(op.call, True, op.name.startswith("max")):
                return None
        return state
