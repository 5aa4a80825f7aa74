"""The helper classes a child may gain: a conv and a linear residual block, a recurrent block.

A residual or recurrent edit adds the class to the child's module once and calls it like any
layer. :class:`~llmatic.llm.rules.layers._Layers` recognises them again in a later
generation by comparing syntax trees with the templates here, so a helper keeps its meaning
(its width argument, that it adapts to any input) however often it is copied or renamed.
"""

from __future__ import annotations

import ast

# Helper classes added to a child. Every layer in them is lazy, so they fit any input.
_HELPER_SOURCES: dict[str, str] = {
    "conv_residual": '''
class ConvResidual(nn.Module):
    """Two same-padded convolutions plus a 1x1-projected skip (added by the rule mutator)."""

    def __init__(self, channels, kernel_size=3):
        super().__init__()
        self.conv1 = nn.LazyConv2d(channels, kernel_size, padding=kernel_size // 2)
        self.bn1 = nn.LazyBatchNorm2d()
        self.conv2 = nn.LazyConv2d(channels, kernel_size, padding=kernel_size // 2)
        self.bn2 = nn.LazyBatchNorm2d()
        self.skip = nn.LazyConv2d(channels, 1)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.skip(x))
''',
    "linear_residual": '''
class LinearResidual(nn.Module):
    """Two linear layers plus a linearly projected skip (added by the rule mutator)."""

    def __init__(self, features):
        super().__init__()
        self.fc1 = nn.LazyLinear(features)
        self.fc2 = nn.LazyLinear(features)
        self.skip = nn.LazyLinear(features)

    def forward(self, x):
        return F.relu(self.fc2(F.relu(self.fc1(x))) + self.skip(x))
''',
    "recurrent": '''
class RecurrentBlock(nn.Module):
    """A linear projection, then an RNN over the features as a length-1 sequence, plus the
    projection as a skip, layer-normalised (added by the rule mutator)."""

    def __init__(self, hidden, cell="gru"):
        super().__init__()
        self.proj = nn.LazyLinear(hidden)
        recurrent = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell]
        self.rnn = recurrent(hidden, hidden, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x):
        h = self.proj(x)
        out, _ = self.rnn(h.unsqueeze(1))
        return self.norm(h + out.squeeze(1))
''',
}
_HELPER_TEMPLATES: dict[str, ast.ClassDef] = {
    key: ast.parse(src).body[0] for key, src in _HELPER_SOURCES.items()  # type: ignore[misc]
}
_HELPER_DUMPS = {key: ast.dump(node) for key, node in _HELPER_TEMPLATES.items()}
#: Keyword of each helper's width argument, and which cap bounds it.
_HELPER_WIDTH = {"conv_residual": "channels", "linear_residual": "features", "recurrent": "hidden"}
