"""Prompt formats built from the real YAML templates."""

from __future__ import annotations

import ast

from conftest import compose_config
from omegaconf import OmegaConf

from llmatic.plan import PromptBuilder, seed_network

PARENT = {"solution": seed_network((1, 8, 8), 10), "objective": 0.42, "val_accuracy": 0.42,
          "params": 650, "flops": 704}
OTHER = {**PARENT, "solution": PARENT["solution"].replace("conv1", "conv9")}


def builder(fmt, **kw):
    cfg = compose_config()
    ops = cfg.operators
    return PromptBuilder(prompt_format=fmt, mutation_template=ops.mutation_template,
                         crossover_template=ops.crossover_template,
                         chat=OmegaConf.to_container(ops.chat), input_shape=(1, 8, 8),
                         num_classes=10, parent_stats_template=ops.parent_stats, **kw)


def test_completion_format_is_the_papers():
    prompt, messages = builder("completion").build(
        "Add a layer to improve the above network", [PARENT])
    assert messages is None
    assert prompt == PARENT["solution"] + '\n"""Add a layer to improve the above network"""\n'
    ast.parse(prompt)  # parent code + docstring is itself valid Python, as in the paper


def test_crossover_completion_has_both_parents_then_the_instruction():
    prompt, _ = builder("completion").build("Combine the above two", [PARENT, OTHER])
    assert prompt.index("conv1") < prompt.index("conv9") < prompt.index('"""Combine')


def test_chat_format_states_shape_and_classes():
    prompt, messages = builder("chat").build("Add dropout layer to improve the above network",
                                              [PARENT])
    system, user = messages
    assert system["role"] == "system" and user["role"] == "user"
    assert "(batch, 1, 8, 8)" in system["content"] and "(batch, 10)" in system["content"]
    assert "exactly one" in system["content"]
    assert PARENT["solution"].strip() in user["content"]
    assert user["content"].rstrip().endswith("Add dropout layer to improve the above network.")
    assert system["content"] in prompt and user["content"] in prompt


def test_parent_stats_are_off_by_default_and_optional():
    plain, _ = builder("completion").build("improve the above network", [PARENT])
    assert "validation accuracy" not in plain
    shown, _ = builder("completion", show_parent_stats=True).build(
        "improve the above network", [PARENT])
    assert "# validation accuracy 0.4200, 650 parameters, 704 FLOPs" in shown
    ast.parse(shown)
