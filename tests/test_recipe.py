"""The default training recipe ranks networks, not initialisations (docs/method.md §3.8).

Both reference networks are evaluated exactly as the search evaluates a candidate, at the
default config on digits (``dataset=digits``: its recipe, 15 epochs): a plain MLP and a small
CNN with global average pooling must each reach 0.95 validation accuracy, within a few seconds
of training. ``llmatic-evaluate`` runs in this process (its ``main``): both networks share one
sandbox server; the command as a process is tested in test_evaluate_cli.py.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # trains reference networks with the full default recipe

MLP = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))
'''

CNN_GAP = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1)
        return self.fc(torch.flatten(x, 1))
'''


@pytest.mark.parametrize("name,source", [("mlp", MLP), ("cnn_gap", CNN_GAP)])
def test_default_recipe_trains_reference_networks(tmp_path, name, source, capsys):
    from llmatic.cli.evaluate import main

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    code = main([str(path), "dataset=digits"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    out = json.loads(printed.out.strip().splitlines()[-1])
    assert out["status"] == "ok", out
    assert out["val_accuracy"] >= 0.95, out
    # Its speed is measured by `make bench` (benchmarks/mnist5k_recipe.py), not asserted here.
