"""The LightningModule that wraps a generated network, and how a candidate is measured.

The network is built elsewhere (from the LLM's code) and injected, as in
lightning-hydra-template: this module knows nothing about where ``net`` came from.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""


class NetModule(L.LightningModule):
    """Cross-entropy classification around an injected ``net``.

    Args:
        net: The network; it maps a batch of inputs to ``(batch, num_classes)`` logits.
        optimizer: A partial optimizer constructor (``_partial_: true`` in Hydra) that takes
            the parameters.
        scheduler: An optional partial learning-rate scheduler constructor that takes the
            optimizer; stepped after every batch. A ``total_steps`` (``OneCycleLR``) or
            ``T_max`` (``CosineAnnealingLR``) argument it leaves open is filled with the
            number of training steps of the run.
    """

    def __init__(self, *, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.last_loss = math.nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the network's logits."""
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """One cross-entropy step; stops training at the first non-finite loss."""
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss at batch {batch_idx}: {loss}")
        self.last_loss = float(loss.detach())
        return loss

    def configure_optimizers(self) -> Any:
        """Build the configured optimizer (and per-step scheduler) over the parameters."""
        # Lazy layers the forward never reached hold no weights to optimise.
        params = [p for p in self.parameters() if not torch.nn.parameter.is_lazy(p)]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        params = inspect.signature(self.scheduler_factory).parameters
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        for name in ("total_steps", "T_max"):
            if name in params and params[name].default in (inspect.Parameter.empty, None):
                kwargs[name] = steps
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# Module types counted as layers for depth (the reference code's definition): conv, norm,
# linear, dropout, recurrent, activation and pooling modules. Containers do not count.
_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.Linear,
    nn.Bilinear,
    nn.modules.dropout._DropoutNd,
    nn.RNNBase,
    nn.RNNCellBase,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Softplus,
    nn.Softmax,
    nn.LogSoftmax,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.MultiheadAttention,
)


def width_and_depth(net: nn.Module) -> tuple[int, int]:
    """Return (width, depth) of a network.

    Width is the largest ``out_channels`` / ``out_features`` / ``hidden_size`` of any
    layer; depth is the number of layer modules (at least 1).
    """
    from llmatic.qd import module_tree, raw_attribute

    width, depth = 0, 0
    for module in module_tree(net):  # raw walk: a candidate's overrides cannot lie
        if isinstance(module, _LAYER_TYPES):
            depth += 1
        for attr in ("out_channels", "out_features", "hidden_size"):
            value = raw_attribute(module, attr)
            if isinstance(value, int):
                width = max(width, value)
    return width, max(depth, 1)
