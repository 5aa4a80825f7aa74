"""The rule-based mutator on real networks: every child is parsed, built and run.

The mutator itself never executes code; these tests do, because the code is our own output.
"""

from __future__ import annotations

import ast
import difflib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from llmatic.llm.rules import RuleBasedMutator, classify_instruction
from llmatic.plan import seed_network
from llmatic.types import Completion, GenerationRequest

pytestmark = pytest.mark.filterwarnings("ignore:Lazy modules:UserWarning")

PAPER_INSTRUCTIONS = [
    "Add a layer to improve the above network",
    "Delete a layer to improve the above network",
    "improve the above network",
    "improve the above network by reducing the size drastically",
    "improve the above network by increasing the size drastically",
    "Add fully connected layer to improve the above network",
    "Add convolutional layer to improve the above network",
    "Add pooling layer to improve the above network",
    "Add residual connection to improve the above network",
    "Add multiple residual connections to improve the above network",
    "Add dropout layer to improve the above network",
    "Add normalization layer to improve the above network",
    "Add recurrent layer to improve the above network",
]
OPTIONAL_INSTRUCTIONS = [
    "Increase the width of the above neural network",
    "Decrease the width of the above neural network",
    "Increase the depth of the above neural network",
    "Decrease the depth of the above neural network",
]
INSTRUCTIONS = PAPER_INSTRUCTIONS + OPTIONAL_INSTRUCTIONS
CROSSOVER = (
    "Combine the above two neural networks and create a third neural network class that also "
    "inherits from nn.Module"
)
SHAPES = [(1, 8, 8), (3, 32, 32)]
NUM_CLASSES = 10
PARAM_CAP = 10_000_000  # default caps keep children far below this

LENET = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


net = Net()
print(net)
"""

# A hand-written skip connection around a user block: most edits cannot be proven safe here.
HAND_WRITTEN_SKIP = """
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(self.c1(x)) + x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = Block(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.stem(x))
        identity = out
        out = self.block(out)
        out = out + identity
        out = out.mean([2, 3])
        return self.fc(out)
"""


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small forwards run fastest, and most predictably, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Built:
    """A child network, built and run on a batch of two."""

    source: str
    output: torch.Tensor
    params: int
    kinds: Counter[str]  # module class name -> count, after lazy modules materialised
    leaves: int  # modules without children
    names: set[str]  # attribute names of the network's direct children


def build(source: str, shape: tuple[int, int, int]) -> Built:
    tree = ast.parse(source)
    net_name = [n.name for n in tree.body if isinstance(n, ast.ClassDef)][-1]
    namespace: dict[str, object] = {}
    exec(compile(source, "<child>", "exec"), namespace)
    model = namespace[net_name]()  # type: ignore[operator]
    with torch.no_grad():
        output = model(torch.randn(2, *shape))
    modules = list(model.modules())
    return Built(
        source=source,
        output=output,
        params=sum(p.numel() for p in model.parameters()),
        kinds=Counter(type(m).__name__ for m in modules),
        leaves=sum(1 for m in modules if not list(m.children())),
        names={name for name, _ in model.named_children()},
    )


def request(instruction: str, *parents: str, temperature: float = 0.6, seed: int = 0):
    return GenerationRequest(
        prompt="", temperature=temperature, instruction=instruction, parents=parents, seed=seed
    )


def child(mutator: RuleBasedMutator, instruction: str, *parents: str, **kw) -> str:
    (completion,) = mutator.generate([request(instruction, *parents, **kw)])
    assert completion.error is None, completion.error
    assert completion.text.startswith(
        "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
    )
    return completion.text


def count(built: Built, *kinds: str) -> int:
    return sum(built.kinds[k] for k in kinds)


CONVS = ("Conv2d",)
LINEARS = ("Linear",)
POOLS = ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d")
DROPOUTS = ("Dropout", "Dropout2d")
NORMS = ("BatchNorm1d", "BatchNorm2d")
RNNS = ("GRU", "LSTM", "RNN")
RESIDUALS = ("ConvResidual", "LinearResidual")

# What each instruction must do to the seed network (before, after).
EFFECTS: dict[str, Callable[[Built, Built], bool]] = {
    PAPER_INSTRUCTIONS[0]: lambda b, a: a.leaves > b.leaves,
    PAPER_INSTRUCTIONS[1]: lambda b, a: a.leaves < b.leaves,
    PAPER_INSTRUCTIONS[2]: lambda b, a: (a.kinds, a.params) != (b.kinds, b.params),
    PAPER_INSTRUCTIONS[3]: lambda b, a: a.params < b.params,
    PAPER_INSTRUCTIONS[4]: lambda b, a: a.params > b.params,
    PAPER_INSTRUCTIONS[5]: lambda b, a: count(a, *LINEARS) > count(b, *LINEARS),
    PAPER_INSTRUCTIONS[6]: lambda b, a: count(a, *CONVS) > count(b, *CONVS),
    PAPER_INSTRUCTIONS[7]: lambda b, a: count(a, *POOLS) > count(b, *POOLS),
    PAPER_INSTRUCTIONS[8]: lambda b, a: count(a, *RESIDUALS) >= 1,
    PAPER_INSTRUCTIONS[9]: lambda b, a: count(a, *RESIDUALS) >= 2,
    PAPER_INSTRUCTIONS[10]: lambda b, a: count(a, *DROPOUTS) > count(b, *DROPOUTS),
    PAPER_INSTRUCTIONS[11]: lambda b, a: count(a, *NORMS) > count(b, *NORMS),
    PAPER_INSTRUCTIONS[12]: lambda b, a: count(a, *RNNS) >= 1,
    OPTIONAL_INSTRUCTIONS[0]: lambda b, a: a.params > b.params,
    OPTIONAL_INSTRUCTIONS[1]: lambda b, a: a.params < b.params,
    OPTIONAL_INSTRUCTIONS[2]: lambda b, a: a.leaves > b.leaves,
    OPTIONAL_INSTRUCTIONS[3]: lambda b, a: a.leaves < b.leaves,
}


def test_identifies_itself_as_not_an_llm():
    mutator = RuleBasedMutator()
    assert mutator.is_llm is False
    assert "not an LLM" in mutator.name
    assert "not a language model" in (RuleBasedMutator.__doc__ or "").lower().replace("\n", " ")


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        *zip(
            INSTRUCTIONS,
            ["add", "delete", "random", "shrink", "grow", "linear", "conv", "pool", "residual",
             "residuals", "dropout", "norm", "recurrent", "widen", "narrow", "deepen", "shallow"],
            strict=True,
        ),
        ("ADD A CONVOLUTIONAL LAYER, PLEASE", "conv"),
        ("something else entirely", "random"),
    ],
)
def test_instruction_keywords(instruction: str, expected: str):
    assert classify_instruction(instruction) == expected


def test_two_parents_mean_crossover():
    assert classify_instruction(CROSSOVER, n_parents=2) == "crossover"
    assert classify_instruction(CROSSOVER, n_parents=1) == "random"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[2]}")
@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_every_instruction_gives_a_valid_network_with_its_effect(instruction, shape):
    mutator = RuleBasedMutator(seed=0)
    parent = seed_network(shape, NUM_CLASSES)
    before = build(parent, shape)
    for temperature in (0.1, 1.0):
        for seed in range(3):
            source = child(mutator, instruction, parent, temperature=temperature, seed=seed)
            after = build(source, shape)
            assert after.output.shape == (2, NUM_CLASSES)
            assert "class Net(nn.Module)" in source
            assert EFFECTS[instruction](before, after), (temperature, seed, source)


def run_chain(mutator: RuleBasedMutator, shape, rng: np.random.Generator, steps: int):
    """Random mutations and crossovers from the seed; returns (valid steps, params seen)."""
    population = [seed_network(shape, NUM_CLASSES)]
    valid, params = 0, []
    for _ in range(steps):
        temperature = float(rng.choice([0.1, 0.4, 0.7, 1.0]))
        if len(population) > 1 and rng.random() < 0.3:
            i, j = rng.choice(len(population), size=2, replace=False)
            req = request(CROSSOVER, population[i], population[j], temperature=temperature,
                          seed=int(rng.integers(1 << 30)))
        else:
            req = request(str(rng.choice(INSTRUCTIONS)), population[-1],
                          temperature=temperature, seed=int(rng.integers(1 << 30)))
        (completion,) = mutator.generate([req])
        if completion.error is not None:
            continue
        try:
            built = build(completion.text, shape)
        except Exception:  # an invalid child counts against the ratio
            continue
        if built.output.shape == (2, NUM_CLASSES) and torch.isfinite(built.output).all():
            valid += 1
            params.append(built.params)
            population.append(completion.text)
    return valid, params


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[2]}")
def test_chains_of_mutations_and_crossovers_stay_valid_and_small(shape):
    mutator = RuleBasedMutator(seed=7)
    steps, chains = 15, 3
    valid, params = 0, []
    for chain in range(chains):
        v, p = run_chain(mutator, shape, np.random.default_rng(chain), steps)
        valid += v
        params += p
    ratio = valid / (steps * chains)
    print(f"valid ratio {shape}: {ratio:.3f}; max params {max(params)}")
    assert ratio >= 0.9
    assert max(params) < PARAM_CAP


def test_crossover_combines_layers_from_both_parents():
    shape = (3, 32, 32)
    mutator = RuleBasedMutator(seed=0)
    seed = seed_network(shape, NUM_CLASSES)
    # A: an extra conv (conv2) before the flatten and an extra linear (fc2) after it.
    parent_a = child(mutator, "Add convolutional layer", seed, temperature=0.1)
    parent_a = child(mutator, "Add fully connected layer", parent_a, temperature=0.1)
    # B: a pool (pool1) before the flatten and a recurrent block (rnn1) after it.
    parent_b = child(mutator, "Add pooling layer", seed, temperature=0.1)
    parent_b = child(mutator, "Add recurrent layer", parent_b, temperature=0.1)
    only_a, only_b = {"conv2", "fc2"}, {"pool1", "rnn1"}
    assert only_a <= build(parent_a, shape).names and only_b <= build(parent_b, shape).names
    both = 0
    for s in range(8):
        source = child(mutator, CROSSOVER, parent_a, parent_b, temperature=0.1, seed=s)
        built = build(source, shape)
        assert built.output.shape == (2, NUM_CLASSES)
        both += bool(built.names & only_a) and bool(built.names & only_b)
    # When cold, the cut is at the flatten: one parent's features, the other's head.
    assert both >= 6


def test_crossover_never_gives_back_a_parent():
    """Two parents with the same head (a conv stack, then flatten -> fc1), cut at the flatten,
    give back the first parent: 19 of 62 crossovers in four default searches were such
    copies (each a wasted candidate). Now another cut is tried, or the crossover says so."""
    from llmatic.search import source_key

    shape = (1, 8, 8)
    mutator = RuleBasedMutator(seed=0)
    seed = seed_network(shape, NUM_CLASSES)
    a = child(mutator, "Add convolutional layer", seed, temperature=0.1, seed=1)
    b = child(mutator, "Add normalization layer", seed, temperature=0.1, seed=2)
    b = child(mutator, "Add pooling layer", b, temperature=0.1, seed=3)
    parents = {source_key(a), source_key(b)}
    for s in range(16):
        for t in (0.1, 0.9):
            source = child(mutator, CROSSOVER, a, b, temperature=t, seed=s)
            assert source_key(source) not in parents, (s, t)
            assert build(source, shape).output.shape == (2, NUM_CLASSES)


LINEAR = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x
"""


def test_a_crossover_whose_every_splice_is_a_parent_says_so():
    # Real parents where every cut gives a parent back: a linear classifier crossed with
    # itself (its only shape-compatible splices rebuild it), cold and hot, either order.
    for s in range(3):
        for t in (0.1, 0.9):
            (same,) = RuleBasedMutator(seed=s).generate(
                [request(CROSSOVER, LINEAR, LINEAR, temperature=t, seed=s)])
            assert same.text == "", (s, t)
            assert "every shape-compatible splice gives back one of the parents" in same.error
    # The same parent with a hidden layer has other cuts: a child that is not a copy.
    from llmatic.search import source_key

    deeper = child(RuleBasedMutator(seed=0), "Add fully connected layer", LINEAR,
                   temperature=0.1, seed=0)
    source = child(RuleBasedMutator(seed=0), CROSSOVER, deeper, LINEAR, temperature=0.9,
                   seed=1)
    assert source_key(source) not in {source_key(deeper), source_key(LINEAR)}


def test_hot_crossover_of_two_chains_stays_valid():
    shape = (1, 8, 8)
    mutator = RuleBasedMutator(seed=1)
    seed = seed_network(shape, NUM_CLASSES)
    a = child(mutator, "Add residual connection", seed, temperature=1.0, seed=1)
    a = child(mutator, "Add dropout layer", a, temperature=1.0, seed=2)
    b = child(mutator, "Add multiple residual connections", seed, temperature=1.0, seed=3)
    b = child(mutator, "Add normalization layer", b, temperature=1.0, seed=4)
    for s in range(6):
        built = build(child(mutator, CROSSOVER, a, b, temperature=1.0, seed=s), shape)
        assert built.output.shape == (2, NUM_CLASSES)


def test_same_request_gives_identical_text():
    parent = seed_network((3, 32, 32), NUM_CLASSES)
    for instruction in ["improve the above network", PAPER_INSTRUCTIONS[8], CROSSOVER]:
        parents = (parent, parent) if instruction == CROSSOVER else (parent,)
        req = request(instruction, *parents, temperature=0.9, seed=5)
        first = RuleBasedMutator(seed=3).generate([req, req])
        second = RuleBasedMutator(seed=3).generate([req])
        assert first[0].text == first[1].text == second[0].text
        assert first[0].text


def test_different_seeds_give_different_children():
    parent = seed_network((3, 32, 32), NUM_CLASSES)
    mutator = RuleBasedMutator(seed=0)
    texts = {
        child(mutator, "improve the above network", parent, temperature=1.0, seed=s)
        for s in range(5)
    }
    assert len(texts) > 1
    other = RuleBasedMutator(seed=1)
    assert any(
        child(mutator, PAPER_INSTRUCTIONS[6], parent, temperature=1.0, seed=s)
        != child(other, PAPER_INSTRUCTIONS[6], parent, temperature=1.0, seed=s)
        for s in range(5)
    )


@pytest.mark.parametrize(
    "parent",
    [
        "def broken(:\n    pass\n",
        "x = 1\n",
        "",
        "import torch.nn as nn\n\nclass Net:\n    def forward(self, x):\n        return x\n",
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n",
        "\0",
    ],
    ids=["syntax-error", "no-class", "empty", "not-a-module", "no-forward", "null-byte"],
)
def test_bad_parent_gives_an_error_completion(parent):
    mutator = RuleBasedMutator()
    good = seed_network((1, 8, 8), NUM_CLASSES)
    completions = mutator.generate(
        [request(PAPER_INSTRUCTIONS[6], parent), request(CROSSOVER, parent, good, seed=1)]
    )
    for completion in completions:
        assert isinstance(completion, Completion)
        assert completion.text == ""
        assert completion.error is not None and completion.error.startswith("rules:")


def test_no_parent_gives_an_error_completion():
    (completion,) = RuleBasedMutator().generate([request("improve the above network")])
    assert completion.error is not None


def network_class(source: str) -> list[str]:
    """The network class (the module's last class), formatted by ``ast.unparse``."""
    classes = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    return ast.unparse(classes[-1]).splitlines()


def changed_lines(before: str, after: str) -> int:
    """Lines added or removed in the network class (helper classes and formatting aside)."""
    diff = difflib.unified_diff(network_class(before), network_class(after), lineterm="", n=0)
    return sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")))


def test_higher_temperature_makes_larger_edits():
    mutator = RuleBasedMutator(seed=0)
    # A parent the mutator wrote (already lazy), so that only the edits show in the diff.
    parent = child(mutator, "Add convolutional layer", seed_network((3, 32, 32), NUM_CLASSES))
    mean = {}
    for temperature in (0.1, 1.0):
        sizes = [
            changed_lines(
                parent,
                child(mutator, "improve the above network", parent, temperature=temperature,
                      seed=s),
            )
            for s in range(20)
        ]
        mean[temperature] = sum(sizes) / len(sizes)
    print(f"mean changed lines in the network class: {mean}")
    assert mean[1.0] > 1.5 * mean[0.1]


def test_llm_style_parent_is_normalised_and_edited_safely():
    shape = (3, 32, 32)
    mutator = RuleBasedMutator(seed=2)
    for instruction in INSTRUCTIONS:
        source = child(mutator, instruction, LENET, temperature=1.0, seed=1)
        built = build(source, shape)
        assert built.output.shape == (2, NUM_CLASSES)
        # Eager layers became lazy, the hard-coded view a flatten, the script code is gone.
        assert "nn.Conv2d(" not in source and "nn.Linear(" not in source
        assert "view(" not in source and "print(" not in source
        assert "nn.LazyLinear(10)" in source  # the classifier keeps its 10 outputs


def test_unprovable_edits_are_refused_not_broken():
    shape = (3, 32, 32)
    mutator = RuleBasedMutator(seed=0)
    outcomes = Counter()
    for instruction in INSTRUCTIONS:
        (completion,) = mutator.generate([request(instruction, HAND_WRITTEN_SKIP, seed=3)])
        if completion.error is not None:
            outcomes["refused"] += 1
            continue
        assert build(completion.text, shape).output.shape == (2, NUM_CLASSES)
        outcomes["valid"] += 1
    assert outcomes["valid"] > 0 and outcomes["refused"] > 0


def test_layer_cap_is_respected():
    mutator = RuleBasedMutator(seed=0, max_layers=3)
    parent = seed_network((1, 8, 8), NUM_CLASSES)
    parent = child(mutator, PAPER_INSTRUCTIONS[10], parent, temperature=0.1)  # 3 layers now
    (completion,) = mutator.generate([request(PAPER_INSTRUCTIONS[6], parent)])
    assert completion.error is not None and "cap" in completion.error


def test_repeated_pooling_never_shrinks_below_one_pixel():
    shape = (1, 8, 8)
    mutator = RuleBasedMutator(seed=0)
    source = seed_network(shape, NUM_CLASSES)
    for s in range(8):  # 8x8 is 1x1 after three poolings; more must stay valid or be refused
        (completion,) = mutator.generate([request(PAPER_INSTRUCTIONS[7], source, seed=s)])
        if completion.error is not None:
            assert "pool" in completion.error
            continue
        source = completion.text
        assert build(source, shape).output.shape == (2, NUM_CLASSES)
    assert count(build(source, shape), *POOLS) > 3


def test_widening_respects_the_channel_cap_and_keeps_the_classes():
    shape = (3, 32, 32)
    mutator = RuleBasedMutator(seed=0, max_channels=32)
    source = child(mutator, PAPER_INSTRUCTIONS[6], seed_network(shape, NUM_CLASSES))
    for s in range(5):
        (completion,) = mutator.generate(
            [request(OPTIONAL_INSTRUCTIONS[0], source, temperature=1.0, seed=s)]
        )
        if completion.error is not None:  # everything already at the cap
            assert "cap" in completion.error
            break
        source = completion.text
    built = build(source, shape)
    assert built.output.shape == (2, NUM_CLASSES)
    convs = [m for m in ast.walk(ast.parse(source)) if isinstance(m, ast.Call)
             and getattr(m.func, "attr", "") == "LazyConv2d"]
    assert convs and all(isinstance(c.args[0], ast.Constant) and c.args[0].value <= 32
                         for c in convs)
