"""Edits of the classifier head: drop the logits' activation, widen or add a hidden layer.

Also :func:`output_activation`, the public question "what activation does this network
apply to its logits?", answered by reading the network as these edits do.
"""

from __future__ import annotations

import ast

from llmatic.llm.rules.astutil import _arg, _fresh, _int_literal, _Swap
from llmatic.llm.rules.edits.context import _Ctx
from llmatic.llm.rules.edits.insert import _at_cap, _ensure_guard, _insert_layer, _widths
from llmatic.llm.rules.edits.resize import _resizable_calls
from llmatic.llm.rules.forward import _Op
from llmatic.llm.rules.layers import _groups
from llmatic.llm.rules.load import _load
from llmatic.llm.rules.network import _Net
from llmatic.llm.rules.vocab import (
    _ACTIVATIONS,
    _CONV_WIDTHS,
    _DROPOUTS,
    _FUNC_ELEMENTWISE,
    _LINEAR_KINDS,
    _LINEAR_WIDTHS,
)

#: Functions that may be dropped from the logits: they squash or clip them. ``log_softmax``
#: only shifts the logits (harmless under cross-entropy), dropout is not an activation.
_LOGIT_FUNCS = _FUNC_ELEMENTWISE - {"log_softmax", "dropout", "dropout1d", "dropout2d",
                                     "alpha_dropout"}
_LOGIT_MODULES = _ACTIVATIONS - {"LogSoftmax", "Identity"}


def _output_path(net: _Net) -> list[int] | None:
    """Indices of the statements from the classifier's to the ``return``, or None.

    None unless every statement from the classifier on is a simple chain on one variable and
    the last one returns that variable, so that what follows the classifier is the output.
    """
    layout = net.layout()
    if layout.head is None or layout.chains[layout.head] is None:
        return None
    body = net.forward.body
    var = layout.chains[layout.head].target  # type: ignore[union-attr]
    path = [layout.head]
    for j in range(layout.head + 1, len(body)):
        stmt = body[j]
        if isinstance(stmt, ast.Return):
            return path if isinstance(stmt.value, ast.Name) and stmt.value.id == var else None
        chain = layout.chains[j]
        if chain is None or chain.source != var or chain.target != var:
            return None
        path.append(j)
    return None


def _output_activations(net: _Net) -> list[tuple[str, int, object]]:
    """Activations applied to the logits: ``("op", statement, _Op)`` or ``("seq", k, call)``.

    They are the elementwise functions and activation layers applied after the classifier
    (``F.relu(self.fc(x))``, ``x = torch.relu(x); return x``, ``self.act(x)``), and the
    activations after the last layer with weights of an ``nn.Sequential`` classifier.
    """
    path = _output_path(net)
    if path is None:
        return []
    layout, attrs = net.layout(), net.module_attrs()
    found: list[tuple[str, int, object]] = []
    head_call = attrs.get(layout.head_attr or "")
    if head_call is not None and net.ctor_kind(head_call) == "Sequential":
        elements = head_call.args
        weighted = [k for k, e in enumerate(elements) if net._weighted_call(e)]
        for k in range(weighted[-1] + 1 if weighted else len(elements), len(elements)):
            if net.ctor_kind(elements[k]) in _LOGIT_MODULES:
                found.append(("seq", k, head_call))
    uses = net.attr_uses()
    for j in path:
        ops = layout.chains[j].ops  # type: ignore[union-attr]
        if j == layout.head:
            ops = ops[next(i for i, op in enumerate(ops) if op.name == layout.head_attr) + 1 :]
        for op in ops:
            if op.kind == "func" and op.name in _LOGIT_FUNCS:
                found.append(("op", j, op))
            elif op.kind == "module" and net.ctor_kind(attrs.get(op.name)) in _LOGIT_MODULES:
                if uses[op.name] == 1:
                    found.append(("op", j, op))
            elif op.kind != "func":
                return []  # something else acts on the logits: leave the output alone
    return found


def output_activation(source: str) -> str | None:
    """The activation the network applies to its logits (e.g. ``"relu"``), or None.

    It reads the network as the rule mutator does; a network whose output it cannot follow
    counts as having none.
    """
    net = _load(source)
    names = []
    for where, index, item in _output_activations(net):
        if where == "seq":
            names.append(net.ctor_kind(item.args[index]))  # type: ignore[attr-defined]
        else:
            op: _Op = item  # type: ignore[assignment]
            kind = net.ctor_kind(net.module_attrs().get(op.name))
            names.append(op.name if op.kind == "func" else kind)
    return ", ".join(n for n in names if n) or None


def _drop_output_activation(net: _Net, ctx: _Ctx) -> str | None:
    """Remove every activation applied to the logits: the classifier's output is the output."""
    found = _output_activations(net)
    if not found:
        return None
    names: list[str] = []
    for where, index, item in reversed(found):  # later ones first: indices stay valid
        if where == "seq":
            names.append(net.ctor_kind(item.args[index]) or "?")  # type: ignore[attr-defined]
            del item.args[index]  # type: ignore[attr-defined]
            continue
        op: _Op = item  # type: ignore[assignment]
        names.append(op.name)
        net.forward.body[index] = _Swap(op.call, op.call.args[0]).visit(net.forward.body[index])
    net.touch()
    body = net.forward.body
    net.forward.body = [
        s for s in body
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name) and isinstance(s.value, ast.Name)
                and s.value.id == s.targets[0].id)
    ]
    net.touch()
    return f"drop output activation {', '.join(reversed(names))}"


def _last_hidden(net: _Net) -> tuple[ast.Call | None, bool]:
    """The constructor of the last layer with weights before the classifier, or None.

    Only a plain layer used once (``self.X = nn.LazyLinear(...)``/``LazyConv2d``/eager twins)
    counts. The flag says whether only activations and dropout lie between it and the
    classifier (nothing else that could depend on its width).
    """
    layout, attrs, uses = net.layout(), net.module_attrs(), net.attr_uses()
    plain = True
    if layout.head is None:
        return None, plain
    for j in reversed(range(layout.head + 1)):
        chain = layout.chains[j]
        if chain is None:
            return None, plain
        ops = chain.ops
        if j == layout.head:
            names = [op.name for op in ops]
            if layout.head_attr not in names:
                return None, plain
            ops = ops[: names.index(layout.head_attr)]
        for op in reversed(ops):
            if op.kind != "module":
                plain = plain and op.kind == "func" and op.name in _FUNC_ELEMENTWISE
                continue
            call = attrs.get(op.name)
            if call is None or not net.is_weighted(op.name):
                plain = plain and net.ctor_kind(call) in _ACTIVATIONS | _DROPOUTS
                continue  # a pool, norm or dropout layer keeps the width
            if uses[op.name] != 1:
                return None, plain
            kind = net.ctor_kind(call)
            if kind not in ("LazyLinear", "Linear", "LazyConv2d", "Conv2d") or _groups(call) != 1:
                return None, plain
            return call, plain
    return None, plain


def _widen_head(net: _Net, ctx: _Ctx) -> str | None:
    """Widen (or, at the cap, re-size) the last hidden layer before the classifier.

    Lazy layers after it adapt; an eager ``nn.Linear`` classifier right after an eager linear
    hidden layer gets the new ``in_features``.
    """
    call, plain = _last_hidden(net)
    if call is None:
        return None
    kind = net.ctor_kind(call) or ""
    eager = kind in ("Linear", "Conv2d")
    position = 1 if eager else 0
    keyword = "out_features" if "Linear" in kind else "out_channels"
    arg = _arg(call, position, keyword)
    old = _int_literal(arg)
    if old is None:
        return None
    follow: ast.expr | None = None
    if call in _resizable_calls(net):
        pass
    elif kind == "Linear":
        head = net.protected_call(net.layout().head_attr)
        follow = _arg(head, 0, "in_features") if head is not None else None
        if not plain or head is None or net.ctor_kind(head) != "Linear":
            return None
        if _int_literal(follow) != old:
            return None
    else:
        return None
    linear = "Linear" in kind
    options, cap = (_LINEAR_WIDTHS, ctx.max_features) if linear else (_CONV_WIDTHS,
                                                                       ctx.max_channels)
    wider = [w for w in options if old < w <= cap and (linear or w <= 4 * max(old, 4))]
    other = [w for w in options if w != old and w <= cap]
    choices = wider or other
    if not choices:
        return None
    new = int(ctx.pick(choices, 2 * old))
    arg.value = new  # type: ignore[union-attr]
    if follow is not None:
        follow.value = new  # type: ignore[union-attr]
    net.touch()
    verb = "widen" if new > old else "resize"
    return f"{verb} the last hidden layer {kind} {old} -> {new}"


def _add_head(net: _Net, ctx: _Ctx) -> str | None:
    """Insert ``relu(LazyLinear(f))`` right before the classifier."""
    if _at_cap(net, ctx):
        return None
    layout = net.layout()
    before = [p for p in layout.points if p.region == "flat" and p.reshape_ok
              and p.index == layout.head]
    if not before:
        return None
    if before[0].first_flat and _ensure_guard(net):
        layout = net.layout()
        before = [p for p in layout.points if p.region == "flat" and p.reshape_ok
                  and p.index == layout.head]
    elif before[0].first_flat:
        return None
    if not before:
        return None
    ref = max(_widths(net, _LINEAR_KINDS) + [64])
    f = int(ctx.pick(_LINEAR_WIDTHS, ref, ctx.max_features))
    attr = _fresh("fc", net.taken_attrs())
    _insert_layer(net, before[0], attr, f"nn.LazyLinear({f})", "F.relu(self.{a}({x}))")
    return f"add {attr}: hidden linear {f} before the classifier"


#: Chance that an edit (any kind but the head's own, and crossover) also drops an activation
#: applied to the logits. An activation there (the seed's ``relu(fc1(x))``) only hurts: with
