"""What the rule mutator knows about PyTorch: layer and function names, and size choices.

Everything here is data: the names of the layers and tensor functions that the analyses
(which layer keeps a shape, which one is the classifier) and the edits test against, and
the sizes the edits choose from. It imports nothing, so every other module may read it.
"""

from __future__ import annotations

#: Every child starts with the seed network's three imports.
_HEADER = ("import torch", "import torch.nn as nn", "import torch.nn.functional as F")

#: Eager layer -> (its lazy twin, the keyword of the input size the lazy twin infers).
_LAZY_TWIN: dict[str, tuple[str, str]] = {
    **{f"Conv{d}d": (f"LazyConv{d}d", "in_channels") for d in (1, 2, 3)},
    **{f"ConvTranspose{d}d": (f"LazyConvTranspose{d}d", "in_channels") for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": (f"LazyBatchNorm{d}d", "num_features") for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": (f"LazyInstanceNorm{d}d", "num_features") for d in (1, 2, 3)},
    "Linear": ("LazyLinear", "in_features"),
}
#: Attribute reads that need a layer's real sizes (weight init, ``fc.in_features``). Lazy
#: modules have none before the first forward, so a module that reads them is left eager.
_SIZE_READS = frozenset(
    {"weight", "bias", "in_features", "in_channels", "num_features", "running_mean", "running_var"}
)

_LAZY_CONVS = frozenset({"LazyConv1d", "LazyConv2d", "LazyConv3d"})
_EAGER_CONVS = frozenset({"Conv1d", "Conv2d", "Conv3d"})
_LAZY_NORMS = frozenset(
    {f"LazyBatchNorm{d}d" for d in (1, 2, 3)} | {f"LazyInstanceNorm{d}d" for d in (1, 2, 3)}
)
_ACTIVATIONS = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish",
     "Hardsigmoid", "Sigmoid", "Tanh", "Softplus", "Softsign", "Softmax", "LogSoftmax", "Identity"}
)
_DROPOUTS = frozenset(
    {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
)
#: Layers that never change a tensor's shape: deleting one is always safe.
_SHAPE_PRESERVING = _ACTIVATIONS | _DROPOUTS | _LAZY_NORMS
_POOLS = frozenset({"MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d"})
_ADAPTIVE_POOLS = frozenset(
    {"AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"}
)
#: Layers with weights: the last one the forward calls is the classifier.
_WEIGHTED = frozenset(
    _EAGER_CONVS | _LAZY_CONVS | {"Linear", "LazyLinear", "Bilinear", "RNN", "GRU", "LSTM"}
    | {f"ConvTranspose{d}d" for d in (1, 2, 3)} | {f"LazyConvTranspose{d}d" for d in (1, 2, 3)}
)

#: Layers whose output width is fixed whatever comes in: they absorb a change of width.
_ABSORB_WIDTH = frozenset(
    _LAZY_CONVS | {"LazyLinear", "conv_residual", "linear_residual", "recurrent"}
    | {f"LazyConvTranspose{d}d" for d in (1, 2, 3)}
)

#: Functions a forward statement may wrap around a layer call and stay "simple" (they keep
#: the channel/feature count; the pools change only H and W).
_FUNC_POOLS = frozenset({"max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d"})
_FUNC_ADAPTIVE = frozenset(
    {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"}
)
_FUNC_ELEMENTWISE = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish",
     "sigmoid", "tanh", "softplus", "softmax", "log_softmax", "dropout", "dropout1d", "dropout2d",
     "alpha_dropout"}
)
_CHAIN_FUNCS = _FUNC_ELEMENTWISE | _FUNC_POOLS | _FUNC_ADAPTIVE
_FUNC_MODULES = frozenset({"F", "torch", "functional", "nn.functional", "torch.nn.functional"})
_REDUCTIONS = frozenset({"mean", "sum", "amax"})  # x.mean([2, 3]) flattens like global pooling

# Choices of sizes, from small to large; the temperature widens the choice around a reference.
_CONV_WIDTHS = (4, 8, 16, 32, 64, 128, 256)
_LINEAR_WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
_RNN_WIDTHS = (16, 32, 64, 128, 256)
_KERNELS = (1, 3, 5)
_DROPOUT_PS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: At most this many pooling layers before the flatten: 32x32 reaches 1x1 after 5.
_MAX_DOWNSAMPLES = 5
#: Output size of the adaptive pool put before the flatten when a hidden layer would
#: otherwise see the whole feature map: flat size <= max_channels * 4 * 4.
_GUARD_SIZE = 4

#: Normalisation layers and functions: no edit stacks one right next to another.
_NORM_KINDS = frozenset(
    {f"{lazy}{kind}{d}d" for lazy in ("", "Lazy") for kind in ("BatchNorm", "InstanceNorm")
     for d in (1, 2, 3)} | {"LayerNorm", "GroupNorm", "LocalResponseNorm", "RMSNorm"}
)
_FUNC_NORMS = frozenset(
    {"batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm",
     "normalize", "rms_norm"}
)

#: Kinds (helper keys included) whose first argument is a conv / linear width: the edits
#: read them as the reference for a new width, and bound them by the matching cap.
_CONV_KINDS = {"LazyConv2d", "conv_residual"}
_LINEAR_KINDS = {"LazyLinear", "linear_residual", "recurrent"}
