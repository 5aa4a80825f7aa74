"""Tests for llmatic.extract.network: completions written the way real models answer."""

from __future__ import annotations

import ast
import textwrap
import time
from collections.abc import Callable

import pytest

from llmatic.extract import DEFAULT_PREAMBLE, Extraction, extract_network
from llmatic.types import Status

# ---------------------------------------------------------------------------- fixtures

PARENT = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 1, 1)
        self.fc1 = nn.Linear(1024, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return x
"""

IMPROVED_NET = """class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.fc1(x)
"""

RESIDUAL_MODULE = '''import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution with padding."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = conv3x3(3, 16)
        self.layer1 = ResidualBlock(16, 32, stride=2)
        self.layer2 = ResidualBlock(32, 64, stride=2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.stem(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)
'''

CONSTANTS_MODULE = """import math
from typing import List

import torch
import torch.nn as nn

HIDDEN: int = 128
CHANNELS = [16, 32]
DROPOUT = 0.1 * 2


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Net(nn.Module):
    def __init__(self, widths: List[int] = CHANNELS):
        super().__init__()
        layers = []
        in_ch = 3
        for w in widths:
            layers += [nn.Conv2d(in_ch, w, 3, padding=1), Swish(), nn.MaxPool2d(2)]
            in_ch = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch * 8 * 8, HIDDEN)
        self.out = nn.Linear(HIDDEN, 10)
        self.scale = 1 / math.sqrt(HIDDEN)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.out(F.dropout(self.head(x), DROPOUT, self.training)) * self.scale
"""


def ok(result: Extraction, class_name: str) -> ast.Module:
    """Assert success and return the parsed source."""
    assert result.status is None, (result.status, result.error, result.notes)
    assert result.error is None
    assert result.class_name == class_name
    assert result.source is not None
    return ast.parse(result.source)


def class_names(tree: ast.Module) -> list[str]:
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)]


def class_dumps(source: str) -> list[str]:
    return [ast.dump(n) for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]


def has_note(result: Extraction, text: str) -> bool:
    return any(text in note for note in result.notes)


# ------------------------------------------------------------------ 1. markdown fences


def test_python_fence_with_prose_around_it():
    completion = (
        "Sure! Here's an improved version of the network with two convolutional layers, "
        "max pooling and dropout:\n\n```python\nimport torch\nimport torch.nn as nn\n"
        "import torch.nn.functional as F\n\n" + IMPROVED_NET + "```\n\n"
        "In this version, I added a second convolutional layer (`conv2`) with 32 filters and "
        "a max pooling layer after each convolution, which reduces the spatial size to 8x8.\n"
        "The dropout layer helps prevent overfitting."
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    assert class_names(tree) == ["Net"]
    assert "In this version" not in result.source
    assert has_note(result, "used fenced code block")
    assert has_note(result, "stripped prose")


@pytest.mark.parametrize("tag", ["", "py", "python3", "Python", "python title=model.py"])
def test_fence_tags(tag: str):
    completion = f"Here you go:\n```{tag}\n{PARENT}```\n"
    result = extract_network(completion)
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(PARENT)


def test_several_fenced_blocks_are_concatenated_in_order():
    helper, network = RESIDUAL_MODULE.split("class Net(nn.Module):")
    completion = (
        "To add residual connections, first install PyTorch if you haven't:\n\n"
        "```bash\npip install torch torchvision\n```\n\n"
        "Then define a residual block:\n\n"
        f"```python\n{helper.rstrip()}\n```\n\n"
        "Now the network itself, which stacks two residual blocks:\n\n"
        f"```python\nclass Net(nn.Module):{network}```\n\n"
        "You can test it like this:\n\n"
        "```python\nmodel = Net()\nx = torch.randn(2, 3, 32, 32)\nprint(model(x).shape)  "
        "# torch.Size([2, 10])\n```\n"
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    assert class_names(tree) == ["ResidualBlock", "Net"]
    assert class_dumps(result.source) == class_dumps(RESIDUAL_MODULE)
    assert "pip install" not in result.source
    assert "model = Net()" not in result.source and "print(" not in result.source
    assert "torch.randn" not in result.source  # `x` is read by forward, but as an argument
    assert has_note(result, "skipped 1 non-Python fenced block")
    assert has_note(result, "stripped top-level code (line")


def test_unclosed_final_fence_from_a_truncated_answer():
    # A Qwen-style answer cut by max_new_tokens inside its usage example.
    completion = (
        "Here is the network with an extra convolutional layer:\n\n```python\n"
        "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"
        + IMPROVED_NET
        + '\n# Example usage\nif __name__ == "__main__":\n    model = Net()\n'
        "    x = torch.randn(4, 3, 32, 32)\n    out = model(x"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "__main__" not in result.source and "Example usage" not in result.source
    assert has_note(result, "unclosed final fence")
    assert has_note(result, "cut truncated tail")


def test_usage_only_fence_falls_back_to_code_outside_fences():
    completion = PARENT + "\nUse it like this:\n```python\nmodel = Net()\nprint(model)\n```\n"
    result = extract_network(completion)
    ok(result, "Net")
    assert "print(model)" not in result.source


# ------------------------------------------------------------- 2. prose without fences


def test_prose_before_between_and_after_code():
    completion = (
        "Here is the improved network:\n\n"
        "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"
        "from the original network I kept conv1 and added a pooling layer:\n\n"
        + IMPROVED_NET
        + "\nThis adds a dropout layer which reduces overfitting, and the pooling layers "
        "shrink the feature maps so the linear layer stays small.\n"
        "1. conv2 doubles the channels\n2. the dropout rate is 0.25\n"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "Here is" not in result.source and "This adds" not in result.source
    assert "from the original" not in result.source
    assert result.source.startswith("import torch\nimport torch.nn as nn\n")
    assert has_note(result, "stripped prose")


def test_prose_lines_that_start_like_python():
    # "if"/"for"/"from" open prose lines too; they fail to parse and are dropped.
    completion = (
        RESIDUAL_MODULE.replace(
            "\n\nclass Net(", "\nif you want more capacity, widen the blocks.\n\nclass Net("
        )
        + "for example, use 64 channels in layer1.\nfrom here you can also add dropout.\n"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(RESIDUAL_MODULE)
    assert "if you want" not in result.source and "for example" not in result.source
    assert has_note(result, "stripped prose (3 lines)")


def test_indented_prose_right_after_the_class():
    completion = IMPROVED_NET + "   This network adds a second convolution and dropout.\n"
    result = extract_network(completion)
    ok(result, "Net")
    assert "This network" not in result.source


def test_qwen_answer_with_non_ascii_comments():
    completion = (
        "好的，下面是改进后的网络：\n\n```python\n"
        + IMPROVED_NET.replace(
            "self.dropout = ", "# 添加 dropout 层，防止过拟合\n        self.dropout = "
        ).replace("return self.fc1(x)", "return self.fc1(x)  # 输出 “logits”")
        + "```\n\n### 改进说明：\n1. **增加卷积层**：提高特征提取能力。\n"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "# 输出 “logits”" in result.source and "改进说明" not in result.source


def test_qwen_style_explanation_list_after_the_code():
    completion = (
        "```python\n"
        + PARENT.replace("nn.Linear(1024, 10)", "nn.Linear(1024, 256)")
        + "```\n\n### Explanation of changes:\n"
        "1. **Wider fully connected layer**: `fc1` now has 256 units.\n"
        "2. **Same forward pass**: the rest is unchanged.\n\n"
        "These changes should improve accuracy on CIFAR-10."
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "256" in result.source and "Explanation" not in result.source


# --------------------------------------------------------- 3. helpers and the network


def test_helpers_are_kept_and_the_network_is_picked():
    result = extract_network(RESIDUAL_MODULE)
    tree = ok(result, "Net")
    assert class_names(tree) == ["ResidualBlock", "Net"]
    assert any(isinstance(n, ast.FunctionDef) and n.name == "conv3x3" for n in tree.body)


def test_the_network_need_not_be_called_net():
    source = RESIDUAL_MODULE.replace("class Net(", "class TinyResNet(")
    source = source.replace("class ResidualBlock(", "class Bottleneck(").replace(
        "ResidualBlock(", "Bottleneck("
    )
    ok(extract_network(source), "TinyResNet")


def test_a_helper_defined_after_the_network_is_not_picked():
    completion = PARENT.replace("x = torch.flatten(x, 1)", "x = self.flatten(x)").replace(
        "self.fc1 = ", "self.flatten = Flatten()\n        self.fc1 = "
    ) + (
        "\n\nclass Flatten(nn.Module):\n    def forward(self, x):\n"
        "        return x.view(x.size(0), -1)\n"
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    assert class_names(tree) == ["Net", "Flatten"]


def test_no_arg_helper_before_the_network_keeps_the_last_class():
    ok(extract_network(CONSTANTS_MODULE), "Net")


def test_forward_and_init_are_inherited_within_the_file():
    completion = PARENT + textwrap.dedent(
        '''
        class DeepNet(Net):
            """Same as Net with a hidden layer."""

            def __init__(self):
                super().__init__()
                self.fc1 = nn.Sequential(nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 10))


        class Block(nn.Module):
            def __init__(self, channels):
                super().__init__()
                self.conv = nn.Conv2d(channels, channels, 3, padding=1)

            def forward(self, x):
                return self.conv(x)


        class WideBlock(Block):
            pass
        '''
    )
    result = extract_network(completion)
    tree = ok(result, "DeepNet")  # WideBlock inherits Block's required `channels`
    assert class_names(tree) == ["Net", "DeepNet", "Block", "WideBlock"]


def test_crossover_picks_the_combining_class():
    net2 = (
        PARENT.split("\n\n\n")[1]
        .replace("class Net", "class Net2")
        .replace("(3, 1, 1)", "(3, 1, 3, padding=1)")
    )
    completion = (
        PARENT.replace("class Net", "class Net1")
        + "\n\n"
        + net2
        + '\n"""Combine the above two neural networks and create a third neural network class '
        'that also inherits from nn.Module"""\n'
        "class Net3(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.a = Net1()\n        self.b = Net2()\n\n"
        "    def forward(self, x):\n        return (self.a(x) + self.b(x)) / 2\n"
    )
    result = extract_network(completion)
    tree = ok(result, "Net3")
    assert class_names(tree) == ["Net1", "Net2", "Net3"]


# ------------------------------------------------------ 4. repeated parent, new class


def test_repeated_parent_with_the_same_name_keeps_only_the_new_class():
    # CodeGen continuing the paper's prompt: parent, instruction docstring, new network.
    completion = PARENT + '\n"""Add dropout layer to improve the above network"""\n' + IMPROVED_NET
    result = extract_network(completion)
    tree = ok(result, "Net")
    assert class_names(tree) == ["Net"]
    assert "Dropout" in result.source
    assert "improve the above network" not in result.source
    assert has_note(result, "dropped earlier definition of Net")


@pytest.mark.parametrize("new_name", ["Net2", "NewNet", "ImprovedNet"])
def test_repeated_parent_then_a_renamed_class(new_name: str):
    completion = (
        "```python\n"
        + PARENT
        + "```\n\nImproved version:\n\n```python\n"
        + IMPROVED_NET.replace("Net", new_name)
        + "```\n"
    )
    result = extract_network(completion)
    tree = ok(result, new_name)
    assert class_names(tree) == ["Net", new_name]


def test_new_class_subclassing_the_parent_keeps_the_parent():
    completion = PARENT + textwrap.dedent(
        '''
        """Add a layer to improve the above network"""
        class Net(Net):
            def __init__(self):
                super().__init__()
                self.fc2 = nn.Linear(10, 10)

            def forward(self, x):
                return self.fc2(super().forward(x))
        '''
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    assert class_names(tree) == ["Net", "Net"]  # the first is the base of the second


# ------------------------------------------------------------------ 5. truncated tail


def test_truncated_new_class_falls_back_to_the_earlier_complete_class():
    completion = (
        PARENT
        + '"""Add convolutional layer to improve the above network"""\n'
        + "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv1 = nn.Conv2d(3, 16, 3)\n"
        "        self.conv2 = nn.Conv2d(16, 32, 3, padding=(1,"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(PARENT)
    assert has_note(result, "cut truncated tail")


def test_truncated_helper_function_after_the_network_is_dropped():
    completion = (
        PARENT + "\n\ndef train(model, loader, optimizer):\n    model.train()\n"
        "    for inputs, targets in loader:\n        optimizer.zero_grad()\n"
        "        loss = F.cross_entropy(model(inputs), targ"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "def train" not in result.source


def test_truncated_network_without_fallback_is_a_syntax_error():
    completion = (
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.features = nn.Sequential(\n            nn.Conv2d(3, 32, 3),\n"
        "            nn.ReLU(),\n            nn.MaxPool2d(2"
    )
    result = extract_network(completion)
    assert result.status is Status.SYNTAX_ERROR
    assert result.source is None and result.class_name is None
    assert result.error.startswith("line 9:")  # the innermost unclosed bracket
    assert "never closed" in result.error


def test_decorated_helpers_survive_a_broken_tail():
    # The broken tail forces statement-by-statement parsing; a decorator must stay with
    # the definition below it.
    completion = (
        "import functools\n\n\n@functools.lru_cache(maxsize=None)\n"
        "def width(level):\n    return 16 * 2 ** level\n\n\n"
        + IMPROVED_NET.replace("nn.Conv2d(3, 16,", "nn.Conv2d(3, width(0),")
        + "\n\nmodel = Net(\nprint(model"
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    assert function.name == "width" and len(function.decorator_list) == 1
    assert "model = Net(" not in result.source


def test_truncated_inside_an_instruction_docstring():
    completion = IMPROVED_NET + '\n"""Add a residual connection to improve the'
    ok(extract_network(completion), "Net")


# ----------------------------------------------------------- 6. special tokens / junk


def test_endoftext_stops_the_answer():
    completion = (
        IMPROVED_NET
        + "<|endoftext|>import numpy as np\n\n\ndef load_data(path):\n    return np.load(path)\n"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "numpy" not in result.source and "load_data" not in result.source
    assert has_note(result, "cut at <|endoftext|>")


def test_chat_template_tokens_and_a_hallucinated_next_turn():
    completion = (
        "<|im_start|>assistant\nHere is the improved network:\n```python\n"
        + PARENT
        + "```<|im_end|>\n<|im_start|>user\nNow make it deeper.<|im_end|>\n"
        "<|im_start|>assistant\n```python\nclass Other(nn.Module):\n    pass\n```"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert "Other" not in result.source and "<|" not in result.source


@pytest.mark.parametrize(
    "wrap",
    [
        lambda code: f"<s> {code}</s>",
        lambda code: f"Assistant: {code}",
        lambda code: f"### Response:\n{code}\n### Instruction:\nExplain",
        lambda code: f"<|endoftext|>{code}<|endoftext|>",
        lambda code: f"[INST] Improve the network [/INST] {code}",
        lambda code: f"<|start_header_id|>assistant<|end_header_id|>\n\n{code}<|eot_id|>",
    ],
)
def test_special_tokens_and_role_prefixes(wrap: Callable[[str], str]):
    result = extract_network(wrap(PARENT))
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(PARENT)
    assert "<" not in result.source


def test_instruction_docstrings_are_harmless():
    completion = (
        '"""Add a layer to improve the above network"""\n'
        + IMPROVED_NET
        + '\n"""Add a layer to improve the above network"""\n'
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert '"""' not in result.source


# ------------------------------------------------------------ 7. top-level statements


def test_top_level_code_that_would_run_is_stripped():
    completion = PARENT + textwrap.dedent(
        """
        NUM_EPOCHS = 10
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = Net()
        net.to('cuda')
        print(net)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

        for epoch in range(NUM_EPOCHS):
            running_loss = 0.0
            for i, (inputs, labels) in enumerate(trainloader):
                optimizer.zero_grad()
                loss = criterion(net(inputs), labels)
                loss.backward()
                optimizer.step()

        if __name__ == "__main__":
            x = torch.randn(1, 3, 32, 32)
            print(net(x).shape)
        """
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    for node in tree.body:
        assert isinstance(node, ast.Import | ast.ImportFrom | ast.ClassDef | ast.Assign), node
    assert "NUM_EPOCHS = 10" in result.source
    for gone in (
        "device =",
        "net = Net()",
        "net.to(",
        "print(",
        "criterion",
        "for epoch",
        "__main__",
    ):
        assert gone not in result.source, gone
    stripped = [n for n in result.notes if n.startswith("stripped top-level code")]
    assert len(stripped) == 7  # device, net, to, print, criterion, optimizer, for
    assert has_note(result, "stripped `if __name__ == '__main__'` block")


def test_assignment_read_by_the_network_is_kept():
    completion = (
        'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n\n'
        + PARENT.replace("x = F.relu(self.conv1(x))", "x = F.relu(self.conv1(x.to(device)))")
        + "\nmodel = Net().to(device)\n"
    )
    result = extract_network(completion)
    tree = ok(result, "Net")
    assigned = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
    assert assigned == ["device"]
    assert has_note(result, "kept top-level assignment used by a class")


# ------------------------------------------------------------------ 8. missing imports


def test_missing_preamble_imports_are_added():
    result = extract_network(IMPROVED_NET)
    tree = ok(result, "Net")
    assert result.source.startswith(DEFAULT_PREAMBLE)
    assert isinstance(tree.body[3], ast.ClassDef)
    assert has_note(result, "added missing imports")


def test_extra_imports_are_kept_and_equivalent_imports_count():
    completion = "from torch import nn\n" + CONSTANTS_MODULE.replace("import torch.nn as nn\n", "")
    result = extract_network(completion)
    ok(result, "Net")
    assert "import math" in result.source and "from typing import List" in result.source
    assert "import torch.nn as nn" not in result.source  # `from torch import nn` binds nn
    assert "import torch.nn.functional as F" in result.source


def test_custom_preamble_and_hoisted_imports():
    completion = (
        IMPROVED_NET + "\n```python\nimport torch.nn as nn\nfrom __future__ import annotations\n```"
    )
    result = extract_network(completion, preamble="import torch\n")
    tree = ok(result, "Net")
    assert isinstance(tree.body[0], ast.ImportFrom) and tree.body[0].module == "__future__"
    assert "functional" not in result.source
    assert has_note(result, "moved import to the top")


# ---------------------------------------------------------------- 9. failure statuses


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "   \n<|endoftext|>",
        "I'm sorry, but I can't help with modifying this network without more details.",
        "Sure:\n```python\nclass Net(nn.Module)\n    def forward(self, x):\n        return x\n```",
    ],
)
def test_nothing_parseable_is_a_syntax_error(completion: str):
    result = extract_network(completion)
    assert result.status is Status.SYNTAX_ERROR
    assert result.source is None and result.class_name is None
    assert result.error


def test_syntax_error_names_the_line():
    completion = "Here:\n\nclass Net(nn.Module)\n    def forward(self, x):\n        return x\n"
    result = extract_network(completion)
    assert result.status is Status.SYNTAX_ERROR
    assert result.error == "line 3: expected ':': class Net(nn.Module)"


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        (PARENT.replace("def forward", "def predict"), "Net (no forward())"),
        (
            RESIDUAL_MODULE.split("class Net(")[0],
            "ResidualBlock (__init__ needs arguments: in_channels, out_channels)",
        ),
        ("class Net:\n    def forward(self, x):\n        return x\n", "not an nn.Module subclass"),
        ("import torch\n\ndef forward(x):\n    return x\n", "no class definitions found"),
        (
            "class Net(nn.Module):\n    def __init__(self, *, num_classes):\n"
            "        super().__init__()\n\n    def forward(self, x):\n        return x\n",
            "__init__ needs arguments: num_classes",
        ),
    ],
)
def test_parseable_without_a_network_is_no_network(completion: str, reason: str):
    result = extract_network(completion)
    assert result.status is Status.NO_NETWORK, result
    assert result.source is None
    assert reason in result.error


# ------------------------------------------------------------- 10. whitespace quirks


def test_crlf_and_tab_indentation():
    completion = PARENT.replace("    ", "\t").replace("\n", "\r\n")
    result = extract_network(completion)
    ok(result, "Net")
    assert "\r" not in result.source and "\t" not in result.source
    assert class_dumps(result.source) == class_dumps(PARENT)
    assert has_note(result, "normalised line endings")


def test_mixed_tabs_and_spaces():
    completion = PARENT.replace("        x = torch.flatten", "\t\tx = torch.flatten")
    ok(extract_network(completion), "Net")


def test_code_indented_as_a_whole_inside_prose():
    completion = (
        "Here's the updated code:\n\n"
        + textwrap.indent(PARENT, "    ")
        + "\nThe only change is the wider first layer.\n"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(PARENT)
    assert has_note(result, "dedented")


def test_indented_code_inside_a_list_item_fence():
    completion = (
        "1. Replace the network:\n\n   ```python\n" + textwrap.indent(PARENT, "   ") + "   ```\n"
    )
    ok(extract_network(completion), "Net")


# ------------------------------------------------------------------------ prefix


def test_prefix_is_used_when_the_completion_continues_the_prompt():
    prefix = (
        PARENT
        + '"""Add fully connected layer to improve the above network"""\nclass Net(nn.Module):\n'
    )
    completion = IMPROVED_NET.split("\n", 1)[1]  # the class body: methods, indented
    assert extract_network(completion).status is not None  # methods alone: no class
    result = extract_network(completion, prefix=prefix)
    tree = ok(result, "Net")
    assert class_names(tree) == ["Net"] and "Dropout" in result.source
    assert result.notes[0] == "used prefix + completion"


def test_prefix_is_ignored_when_the_completion_has_a_network():
    result = extract_network(IMPROVED_NET, prefix="class Old(nn.Module):\n    pass\n")
    ok(result, "Net")
    assert "Old" not in result.source


# --------------------------------------------------------------------- properties


WRAPPERS: list[Callable[[str], str]] = [
    lambda code: code,
    lambda code: f"Here is the network:\n\n```python\n{code}```\n\nIt should train well.",
    lambda code: f"<|im_start|>assistant\nSure!\n```py\n{code}\n```<|im_end|>junk",
    lambda code: f"{code}\n<|endoftext|>\nimport os\nos.system('echo hi')\n",
    lambda code: f"Improved network:\n\n{code}\n\nThis adds a layer, which helps.",
    lambda code: "Code:\n\n" + textwrap.indent(code, "    ") + "\nDone.",
    lambda code: code.replace("\n", "\r\n") + "\r\nmodel = Net()\r\nprint(model)\r\n",
    lambda code: f"```\n{code}",
]


@pytest.mark.parametrize("module", [PARENT, RESIDUAL_MODULE, CONSTANTS_MODULE])
@pytest.mark.parametrize("wrap", WRAPPERS)
def test_wrapping_a_valid_module_gives_back_its_classes(module: str, wrap: Callable[[str], str]):
    result = extract_network(wrap(module))
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(module)
    # Extraction is idempotent on its own output.
    again = extract_network(result.source)
    assert again.source == result.source and again.class_name == "Net"


def test_nothing_is_executed(tmp_path):
    sentinel = tmp_path / "ran"
    completion = (
        f"import os\nopen({str(sentinel)!r}, 'w').close()\n"
        + PARENT.replace(
            "class Net(nn.Module):", f"class Net(nn.Module):\n    open({str(sentinel)!r}, 'w')"
        )
        + "\nraise SystemExit(1)\n"
    )
    result = extract_network(completion)
    ok(result, "Net")
    assert not sentinel.exists()
    assert "raise SystemExit" not in result.source


# -------------------------------------------------------------------- performance


def test_a_2000_line_completion_extracts_quickly():
    # 245 helper classes of 8 lines, prose every 20 classes, a network, a truncated tail.
    blocks = []
    for i in range(245):
        if i % 20 == 0:
            blocks.append(f"Next, helper group {i // 20}: these blocks refine the features.\n")
        blocks.append(
            f"class Block{i}(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
            f"        self.conv = nn.Conv2d(c, c, 3, padding=1)\n\n"
            f"    def forward(self, x):\n        return F.relu(self.conv(x)) + x\n\n"
        )
    completion = "".join(blocks) + IMPROVED_NET + "\n\ndef train(model):\n    for x in loader(\n"
    assert len(completion.splitlines()) > 1900
    # This thread's CPU time: a busy machine, or another thread of this test process (a
    # sandbox client's, torch's) still working after an earlier test, does not count.
    start = time.thread_time()
    result = extract_network(completion)
    elapsed = time.thread_time() - start
    ok(result, "Net")
    assert "class Block244" in result.source
    assert elapsed < 1.0, elapsed


def test_pathological_input_stays_bounded():
    # Thousands of broken statements, each a statement start that never parses.
    completion = "".join(f"x{i} = foo(\nprint('it's {i}')\n" for i in range(1000))
    # This thread's CPU time: a busy machine, or another thread of this test process (a
    # sandbox client's, torch's) still working after an earlier test, does not count.
    start = time.thread_time()
    result = extract_network(completion)
    elapsed = time.thread_time() - start
    assert result.status is Status.SYNTAX_ERROR
    assert elapsed < 1.0, elapsed


def test_long_code_followed_by_many_unclosed_brackets():
    # Each broken line could borrow the next ones; the borrowing and the budget keep this
    # linear, and the valid code before it is still found.
    completion = RESIDUAL_MODULE + "layers = (\n" * 150
    start = time.thread_time()  # this thread's CPU time (see above)
    result = extract_network(completion)
    elapsed = time.thread_time() - start
    ok(result, "Net")
    assert class_dumps(result.source) == class_dumps(RESIDUAL_MODULE)
    assert elapsed < 1.0, elapsed
