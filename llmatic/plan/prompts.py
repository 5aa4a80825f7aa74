"""Prompts from the YAML templates of the ``operators`` config group.

Two formats (``llm.prompt_format``):

* ``completion`` — the paper's zero-shot code completion for base models: the parent's code,
  then the instruction as a docstring (crossover: both parents, then the instruction);
* ``chat`` — for instruct models: a system message asking for exactly one ``nn.Module`` class
  for the dataset's input shape and class count, then the parent code and the instruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("completion", "chat")


def _code(text: str) -> str:
    return text.rstrip() + "\n"


def mutation_prompt(template: str, parent: str, instruction: str) -> str:
    """The paper's mutation prompt: the parent's code, then the instruction as a docstring."""
    return template.format(parent=_code(parent), instruction=instruction)


def crossover_prompt(template: str, parents: Sequence[str], instruction: str) -> str:
    """The paper's crossover prompt: both parents' code, then the instruction."""
    a, b = parents
    return template.format(parent_a=_code(a), parent_b=_code(b), instruction=instruction)


def parent_stats(template: str, elite: Mapping[str, Any]) -> str:
    """The optional stats line(s) shown above a parent's code."""
    return template.format(
        fitness=float(elite["objective"]),
        val_accuracy=float(elite["val_accuracy"]),
        params=int(elite["params"]),
        flops=int(elite["flops"]),
    )


class PromptBuilder:
    """Builds the prompt text (and chat messages) for one candidate.

    Args:
        prompt_format: ``completion`` or ``chat``.
        mutation_template: Completion-format mutation template.
        crossover_template: Completion-format crossover template.
        chat: ``{system, mutation, crossover}`` templates of the chat format.
        input_shape: (channels, height, width) of the dataset.
        num_classes: Number of classes of the dataset.
        show_parent_stats: Put each parent's fitness and size above its code.
        parent_stats_template: The stats template.
    """

    def __init__(
        self,
        *,
        prompt_format: str,
        mutation_template: str,
        crossover_template: str,
        chat: Mapping[str, str],
        input_shape: Sequence[int],
        num_classes: int,
        show_parent_stats: bool = False,
        parent_stats_template: str = "",
    ) -> None:
        if prompt_format not in FORMATS:
            raise ValueError(f"llm.prompt_format must be one of {FORMATS}, got {prompt_format!r}")
        self.format = prompt_format
        self.mutation_template = mutation_template
        self.crossover_template = crossover_template
        self.chat = dict(chat)
        channels, height, width = (int(v) for v in input_shape)
        self.shape = {"channels": channels, "height": height, "width": width,
                      "num_classes": int(num_classes)}
        self.show_parent_stats = bool(show_parent_stats)
        self.parent_stats_template = parent_stats_template

    def _parent_text(self, elite: Mapping[str, Any]) -> str:
        code = _code(str(elite["solution"]))
        if self.show_parent_stats:
            code = parent_stats(self.parent_stats_template, elite) + code
        return code

    def build(
        self, instruction: str, parents: Sequence[Mapping[str, Any]]
    ) -> tuple[str, tuple[dict[str, str], ...] | None]:
        """Return ``(prompt_text, messages)``; ``messages`` is None for the completion format."""
        texts = [self._parent_text(p) for p in parents]
        if self.format == "completion":
            if len(texts) == 2:
                return crossover_prompt(self.crossover_template, texts, instruction), None
            return mutation_prompt(self.mutation_template, texts[0], instruction), None
        if len(texts) == 2:
            user = self.chat["crossover"].format(
                parent_a=texts[0], parent_b=texts[1], instruction=instruction, **self.shape)
        else:
            user = self.chat["mutation"].format(
                parent=texts[0], instruction=instruction, **self.shape)
        system = self.chat["system"].format(**self.shape)
        messages = ({"role": "system", "content": system}, {"role": "user", "content": user})
        # A flat rendering of the chat, for logs and as a fallback for completion endpoints.
        return f"{system}\n\n{user}", messages


def check_templates(
    mutation_template: str, crossover_template: str, chat: Mapping[str, str] | None = None
) -> None:
    """Fail fast when a template misses a placeholder (names the config key)."""
    shape = {"channels": 1, "height": 1, "width": 1, "num_classes": 2}
    checks = [
        ("operators.mutation_template", mutation_template, ("{parent}", "{instruction}")),
        ("operators.crossover_template", crossover_template,
         ("{parent_a}", "{parent_b}", "{instruction}")),
    ]
    if chat is not None:
        checks += [
            ("operators.chat.system", chat.get("system", ""), ()),
            ("operators.chat.mutation", chat.get("mutation", ""), ("{parent}", "{instruction}")),
            ("operators.chat.crossover", chat.get("crossover", ""),
             ("{parent_a}", "{parent_b}", "{instruction}")),
        ]
    for key, template, needed in checks:
        if not isinstance(template, str):
            raise ValueError(f"{key} must be a string")
        missing = [p for p in needed if p not in template]
        if missing:
            raise ValueError(f"{key} must contain {', '.join(missing)}")
        try:
            template.format(parent="", parent_a="", parent_b="", instruction="", **shape)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{key} has an unknown placeholder or stray brace ({exc}); write literal "
                "braces as {{ and }}"
            ) from exc
