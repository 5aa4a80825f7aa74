"""Writing a child back out: prune what nothing uses, then unparse in a fixed order."""

from __future__ import annotations

import ast

from llmatic.llm.rules.astutil import _names, _self_attr
from llmatic.llm.rules.network import _Net
from llmatic.llm.rules.vocab import _HEADER


def _prune(net: _Net) -> None:
    """Remove layers nothing uses any more, then unused module-level classes."""
    uses = net.attr_uses()
    net.init.body = [
        s
        for s in net.init.body
        if not (
            isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.value, ast.Call)
            and _self_attr(s.targets[0]) is not None and uses[_self_attr(s.targets[0])] == 0
        )
    ] or [ast.Pass()]
    while True:
        unused = [
            n
            for n in net.tree.body
            if isinstance(n, ast.ClassDef) and n is not net.cls
            and not any(n.name in _names(o, ast.Load) for o in net.tree.body if o is not n)
        ]
        if not unused:
            return
        net.tree.body = [n for n in net.tree.body if n not in unused]


def _render(net: _Net) -> str:
    """Source of the child: the three imports, other imports, helpers, then the network."""
    imports: list[str] = list(_HEADER)
    others: list[str] = []
    for node in net.tree.body:
        if node is net.cls:
            continue
        text = ast.unparse(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if text not in imports:
                imports.append(text)
        else:
            others.append(text)
    return "\n\n\n".join(["\n".join(imports), *others, ast.unparse(net.cls)]) + "\n"
