"""Prompt texts from the YAML templates of the ``operators`` config group."""

from __future__ import annotations

from collections.abc import Sequence


def _strip_trailing(code: str) -> str:
    return code.rstrip() + "\n"


def mutation_prompt(template: str, parent: str, instruction: str) -> str:
    """The paper's mutation prompt: the parent's code, then the instruction as a docstring."""
    return template.format(parent=_strip_trailing(parent), instruction=instruction)


def crossover_prompt(template: str, parents: Sequence[str], instruction: str) -> str:
    """The paper's crossover prompt: both parents' code, then the instruction."""
    a, b = parents
    return template.format(
        parent_a=_strip_trailing(a), parent_b=_strip_trailing(b), instruction=instruction
    )


def check_templates(mutation_template: str, crossover_template: str) -> None:
    """Fail fast when a template misses a placeholder (names the config key)."""
    for key, template, needed in (
        ("operators.mutation_template", mutation_template, ("{parent}", "{instruction}")),
        ("operators.crossover_template", crossover_template,
         ("{parent_a}", "{parent_b}", "{instruction}")),
    ):
        missing = [p for p in needed if p not in template]
        if missing:
            raise ValueError(f"{key} must contain {', '.join(missing)}")
        try:
            template.format(parent="", parent_a="", parent_b="", instruction="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{key} has an unknown placeholder or stray brace ({exc}); write literal "
                "braces as {{ and }}"
            ) from exc
