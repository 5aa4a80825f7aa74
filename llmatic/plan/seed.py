"""The seed network of the paper, adapted to a dataset's input shape and class count."""

from __future__ import annotations

import math

# The paper's seed (CIFAR-10): conv1 = Conv2d(3, 1, 1), fc1 = Linear(1024, 10),
# forward relu(conv1) -> flatten -> relu(fc1). Kept verbatim in structure on purpose.
SEED_TEMPLATE = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d({in_channels}, 1, 1)
        self.fc1 = nn.Linear({flat_features}, {num_classes})

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return x
'''


def seed_network(input_shape: tuple[int, int, int], num_classes: int) -> str:
    """Return the source of the paper's seed network for images of ``input_shape`` (C, H, W)."""
    channels, height, width = input_shape
    # conv1 has one output channel and a 1x1 kernel, so the flattened size is H * W.
    flat = math.prod((1, height, width))
    return SEED_TEMPLATE.format(in_channels=channels, flat_features=flat, num_classes=num_classes)
