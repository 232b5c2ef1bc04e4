"""Weight initialisation shared by the residual architectures."""

from __future__ import annotations

import torch
from torch import nn


def init_scaled(modules: list[nn.Module], scale: float) -> None:
    """Kaiming-normal convs shrunk by `scale`, zero biases (BasicSR's recipe).

    A deep residual stack without batch norm trains stably only if it starts near identity; shrinking
    the initial weights keeps each block's contribution small, instead of growing block by block.
    """
    with torch.no_grad():
        for module in modules:
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight)
                    layer.weight.mul_(scale)
                    if layer.bias is not None:
                        layer.bias.zero_()
