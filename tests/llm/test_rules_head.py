"""The rule-based mutator edits the classifier head: the output activation, the last hidden layer.

The seed network applies ``relu`` to its logits; before these edits every descendant kept it.
Every child here is built and run on a digits-shaped batch (no training, no sandbox).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from llmatic.llm import rules
from llmatic.llm.rules import RuleBasedMutator, classify_instruction
from llmatic.plan import seed_network
from llmatic.types import GenerationRequest

pytestmark = pytest.mark.filterwarnings("ignore:Lazy modules:UserWarning")

SHAPE = (1, 8, 8)  # digits
NUM_CLASSES = 10
SEED = seed_network(SHAPE, NUM_CLASSES)
DROP = "Remove the activation applied to the output logits"
WIDEN = "Widen the last hidden layer before the classifier"
ADD = "Add a hidden layer before the classifier"
PAPER = yaml.safe_load(
    (Path(__file__).parents[2] / "conf" / "operators" / "paper.yaml").read_text()
)["mutation_instructions"]

MLP = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.relu(self.fc2(x))
"""
TORCH_RELU = MLP.replace(
    "        return F.relu(self.fc2(x))\n",
    "        x = torch.relu(self.fc2(x))\n        return x\n",
)
# Reads a layer's weights, so it stays eager: widening must update fc2's in_features itself.
EAGER = MLP.replace(
    "        self.fc2 = nn.Linear(32, 10)\n",
    "        self.fc2 = nn.Linear(32, 10)\n        nn.init.zeros_(self.fc2.bias)\n",
)
SEQUENTIAL = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10), nn.ReLU()
        )

    def forward(self, x):
        return self.head(self.features(x))
"""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(source: str, batch: int = 16) -> tuple[torch.Tensor, int]:
    """Build the network, run it on a random digits batch; (output, parameter count)."""
    namespace: dict[str, object] = {}
    exec(compile(source, "<child>", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["Net"]()  # type: ignore[operator]
    with torch.no_grad():
        out = model(torch.randn(batch, *SHAPE))
    return out, sum(p.numel() for p in model.parameters())


def squashed(source: str) -> bool:
    """Whether the output looks clipped at zero: a relu'd output is never negative."""
    out, _ = run(source)
    return bool((out >= 0).all())


def mutate(source: str, instruction: str, seed: int = 0, temperature: float = 0.5):
    (completion,) = RuleBasedMutator(seed=0).generate(
        [
            GenerationRequest(
                prompt="",
                temperature=temperature,
                instruction=instruction,
                parents=(source,),
                seed=seed,
            )
        ]
    )
    return completion


def child(source: str, instruction: str, **kw) -> str:
    completion = mutate(source, instruction, **kw)
    assert completion.error is None, completion.error
    return completion.text


def test_head_instructions_name_their_edits():
    assert classify_instruction(DROP) == "drop_output_activation"
    assert classify_instruction("Drop the final activation") == "drop_output_activation"
    assert classify_instruction(WIDEN) == "widen_head"
    assert classify_instruction("Replace the last hidden layer") == "widen_head"
    assert classify_instruction(ADD) == "add_head"
    # The paper's own instructions keep their meanings.
    assert classify_instruction(PAPER[1]) == "delete"
    assert classify_instruction(PAPER[5]) == "linear"


def test_the_seed_squashes_its_logits():
    assert squashed(SEED)
    assert rules.output_activation(SEED) == "relu"


@pytest.mark.parametrize("seed", [0, 1])
def test_dropping_the_output_activation_of_the_seed(seed):
    text = child(SEED, DROP, seed=seed)
    forward = [
        n
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.FunctionDef) and n.name == "forward"
    ][0]
    # The classifier's output is returned as it is: nothing wraps self.fc1(...).
    assert "x = self.fc1(x)" in ast.unparse(forward)
    assert "F.relu(self.conv1(x))" in ast.unparse(forward)  # the hidden activation stays
    out, params = run(text)
    assert out.shape == (16, NUM_CLASSES)
    assert not squashed(text)
    assert params == run(SEED)[1]  # only the activation went
    assert rules.output_activation(text) is None


@pytest.mark.parametrize(
    "parent",
    [MLP, TORCH_RELU, EAGER, SEQUENTIAL],
    ids=["return-relu", "torch-relu", "eager", "sequential"],
)
def test_dropping_the_output_activation_in_other_forms(parent):
    assert squashed(parent)
    text = child(parent, DROP)
    out, params = run(text)
    assert out.shape == (16, NUM_CLASSES)
    assert not squashed(text)
    assert params == run(parent)[1]


def test_a_network_without_output_activation_is_reported_not_copied():
    plain = child(SEED, DROP)
    completion = mutate(plain, DROP)
    assert completion.text == ""
    assert completion.error is not None and "drop_output_activation" in completion.error
    assert "no activation" in completion.error


def test_an_edit_that_changes_nothing_is_reported(monkeypatch):
    # An edit that claims success but leaves the parent as it was.
    monkeypatch.setitem(rules._MUTATIONS, "delete", lambda net, ctx: ["pretend"])
    completion = mutate(SEED, "Delete a layer to improve the above network")
    assert completion.text == ""
    assert completion.error is not None and "unchanged" in completion.error


@pytest.mark.parametrize("parent", [SEED, MLP, EAGER], ids=["seed", "mlp", "eager"])
@pytest.mark.parametrize("instruction", [WIDEN, ADD])
def test_widening_or_adding_before_the_classifier_keeps_shapes(parent, instruction):
    # The seed's last hidden layer is conv1 (one channel): widening makes it wider.
    completion = mutate(parent, instruction)
    if parent is EAGER and instruction == ADD:
        # An eager classifier cannot take a new input width: said so, not broken.
        assert completion.error is not None and "add_head" in completion.error
        return
    assert completion.error is None, completion.error
    out, params = run(completion.text)
    assert out.shape == (16, NUM_CLASSES)
    assert params != run(parent)[1]
    linears = completion.text.count("Linear(")
    if instruction == ADD:
        assert linears > parent.count("Linear(")
    else:
        assert linears == parent.count("Linear(")


def test_widening_at_the_cap_resizes_instead():
    capped = MLP.replace("nn.Linear(64, 32)", "nn.Linear(64, 512)").replace(
        "nn.Linear(32, 10)", "nn.Linear(512, 10)"
    )
    text = child(capped, WIDEN)
    out, params = run(text)
    assert out.shape == (16, NUM_CLASSES)
    assert params != run(capped)[1]


def test_a_sequential_head_without_a_plain_hidden_layer_is_reported():
    completion = mutate(SEQUENTIAL, WIDEN)
    assert completion.text == "" and "widen_head" in (completion.error or "")


@pytest.mark.parametrize("chain", range(6))
def test_the_paper_instructions_reach_an_unsquashed_output(chain):
    """From the seed, random paper instructions remove the output relu within a few steps."""
    rng = np.random.default_rng(chain)
    source = SEED
    for _ in range(15):
        instruction = PAPER[int(rng.integers(len(PAPER)))]
        completion = mutate(source, instruction, seed=int(rng.integers(1 << 30)), temperature=0.6)
        if completion.error is None:
            source = completion.text
        if not squashed(source):
            break
    out, _ = run(source)
    assert out.shape == (16, NUM_CLASSES)
    assert not squashed(source), source


def _narrowest_hidden(source: str) -> int:
    """The fewest output units of any hidden conv / linear layer (the classifier excluded)."""
    widths = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("LazyConv2d", "LazyLinear", "Conv2d", "Linear"):
            lazy = node.func.attr.startswith("Lazy")
            args = node.args[0 if lazy else 1: 1 if lazy else 2]
            if args and isinstance(args[0], ast.Constant) and args[0].value != NUM_CLASSES:
                widths.append(int(args[0].value))
    return min(widths) if widths else 1 << 30


def test_one_edit_of_the_seed_usually_fixes_its_head_and_its_bottleneck():
    """Any paper instruction (not only the head's), once: the logits' relu and the seed's
    1-channel conv are gone in most children, as an LLM rewriting the network would do.

    Effect measured over every paper instruction x 8 seeds; before this rule 5 of 13 kinds
    dropped the relu half the time and none widened the bottleneck.
    """
    fixed_head = fixed_width = total = 0
    for instruction in PAPER:
        for seed in range(8):
            completion = mutate(SEED, instruction, seed=seed, temperature=0.6)
            if completion.error is not None:
                continue
            total += 1
            fixed_head += not squashed(completion.text)
            fixed_width += _narrowest_hidden(completion.text) >= 4
    assert total >= 0.9 * len(PAPER) * 8
    assert fixed_head / total >= 0.65, (fixed_head, total)
    assert fixed_width / total >= 0.55, (fixed_width, total)


def test_shrinking_never_narrows_a_layer_below_four_units():
    source = MLP.replace("nn.Linear(64, 32)", "nn.Linear(64, 8)").replace(
        "nn.Linear(32, 10)", "nn.Linear(8, 10)")
    for seed in range(10):
        completion = mutate(source, "improve the above network by reducing the size drastically",
                            seed=seed, temperature=0.9)
        if completion.error is None:
            assert _narrowest_hidden(completion.text) >= 4, completion.text


def test_stacked_recurrent_blocks_still_learn():
    """Four of the mutator's recurrent blocks in a row (chains of "Add recurrent layer" build
    them) train at the default recipe (Adam 0.02, one-cycle, batch 32): the projection's skip
    carries the gradient. Without it the same stack predicts one class (0.463 here, 3 of 3
    seeds) and such networks sat at chance on digits (0.108 / 0.087; with it 0.92 / 0.86)."""
    namespace: dict[str, object] = {"nn": torch.nn, "torch": torch}
    exec(rules._HELPER_SOURCES["recurrent"], namespace)
    block = namespace["RecurrentBlock"]
    torch.manual_seed(0)
    net = torch.nn.Sequential(block(32, "gru"), block(32, "lstm"), block(64, "rnn"),
                              block(128, "lstm"), torch.nn.Linear(128, 10))
    gen = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(512, 64, generator=gen) * 2)  # like relu'd conv features
    y = (x @ torch.randn(64, 10, generator=gen)).argmax(1)  # a learnable rule
    net(x)  # lazy modules
    steps = 200
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=steps)
    for _ in range(steps):
        idx = torch.randint(0, 512, (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == y).float().mean())
    assert accuracy > 0.7, accuracy


NORMED = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.LazyConv2d(16, 1)
        self.bn1 = nn.LazyBatchNorm2d()
        self.conv2 = nn.LazyConv2d(16, 1)
        self.bn2 = nn.LazyBatchNorm2d()
        self.fc1 = nn.LazyLinear(10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.bn1(x)
        x = F.relu(self.conv2(x))
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        return x
"""


def _stacked_norms(source: str) -> list[tuple[str, str]]:
    """Pairs of normalisation layers applied one right after the other (flatten and dropout
    between them do not separate them), read from the module's forward, executed in order."""
    namespace: dict[str, object] = {}
    exec(compile(source, "<child>", "exec"), namespace)
    model = namespace["Net"]()  # type: ignore[operator]
    order: list[tuple[str, str]] = []  # (name, "norm" | "other") as the forward runs them
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    for name, module in model.named_children():
        kind = ("norm" if isinstance(module, norms) else
                "skip" if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)) else "other")
        module.register_forward_hook(
            lambda m, i, o, name=name, kind=kind: order.append((name, kind)))
    model(torch.randn(4, *SHAPE))
    ops = [(n, k) for n, k in order if k != "skip"]
    return [(a, b) for (a, ka), (b, kb) in zip(ops, ops[1:], strict=False) if ka == kb == "norm"]


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_adding_normalisation_never_stacks_it_next_to_another(temperature):
    """Three or four norms in a row train to chance (measured in a search: a 0.979 network
    scored 0.094 after one "Add normalization layer"): the edit avoids their neighbours."""
    instruction = PAPER[11]  # "Add normalization layer to improve the above network"
    assert _stacked_norms(NORMED) == []
    for seed in range(12):
        source = NORMED
        for _ in range(3):  # chains of the same instruction, as a search makes them
            completion = mutate(source, instruction, seed=seed, temperature=temperature)
            if completion.error is not None:
                assert "not right next to another" in completion.error
                break
            source = completion.text
            assert _stacked_norms(source) == [], source
