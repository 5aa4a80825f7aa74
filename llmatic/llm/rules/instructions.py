"""From instruction text to the name of an edit: :func:`classify_instruction`.

The mutator reads only a request's instruction, never its prompt. Case-insensitive keyword
patterns name the edit; the names are the keys of
:data:`~llmatic.llm.rules.edits.registry._MUTATIONS` (plus ``crossover`` for two parents).
"""

from __future__ import annotations

import re

# Checked in order, so that the specific instructions win over the generic ones.
_KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    (r"(output|final|logits?|last)\W+(layer\W+)?activation|activation\W+(\w+\W+){0,3}"
     r"(output|logits?)", "drop_output_activation"),
    (r"(widen|wider|increase|enlarge|replace|resize)\W+(\w+\W+){0,3}"
     r"\b(last hidden|penultimate|classifier|head)\b", "widen_head"),
    (r"(hidden layer|linear layer|fully[- ]connected layer)\W+(\w+\W+){0,3}"
     r"\b(classifier|head|output layer)\b", "add_head"),
    (r"\bdelete|\bremove", "delete"),
    (r"multiple residual|residual connections|residual blocks", "residuals"),
    (r"residual|skip connection|shortcut", "residual"),
    (r"recurren|\blstm\b|\bgru\b|\brnn\b", "recurrent"),
    (r"dropout", "dropout"),
    (r"normali[sz]|batch ?norm|layer ?norm|\bnorm\b", "norm"),
    (r"\bpool", "pool"),
    (r"\bconv", "conv"),
    (r"fully[- ]connected|\blinear\b|\bdense\b", "linear"),
)
_GROW = r"increas|larger|bigger|enlarg|expand|wider|deeper"
_SHRINK = r"reduc|decreas|smaller|shrink|narrower|shallower|compress"


def classify_instruction(instruction: str, n_parents: int = 1) -> str:
    """Map free instruction text to the name of an edit, by case-insensitive keywords.

    Args:
        instruction: The instruction text, e.g. ``"Add pooling layer to improve the above
            network"``.
        n_parents: Number of parents; two always means crossover.

    Returns:
        One of ``crossover``, ``delete``, ``residuals``, ``residual``, ``recurrent``,
        ``dropout``, ``norm``, ``pool``, ``conv``, ``linear``, ``widen``, ``narrow``,
        ``deepen``, ``shallow``, ``grow``, ``shrink``, ``add``, the classifier-head edits
        ``drop_output_activation`` (e.g. "Remove the activation on the output logits"),
        ``add_head`` ("Add a hidden layer before the classifier") and ``widen_head``
        ("Widen the last hidden layer before the classifier"), or ``random`` (anything else).
    """
    if n_parents >= 2:
        return "crossover"
    text = instruction.lower()
    for pattern, edit in _KEYWORD_RULES:
        if re.search(pattern, text):
            return edit
    grow, shrink = re.search(_GROW, text), re.search(_SHRINK, text)
    for dim, up, down in (("width", "widen", "narrow"), ("depth", "deepen", "shallow")):
        if dim in text and (grow or shrink):
            return down if shrink else up
    if shrink:
        return "shrink"
    if grow:
        return "grow"
    if re.search(r"\badd\b|\binsert", text):
        return "add"
    return "random"
