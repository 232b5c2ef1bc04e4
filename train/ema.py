"""Exponential moving average of the generator's weights, the network a GAN run ships."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`net` averaged over the run: after each step, ema = decay * ema + (1 - decay) * weights.

    Parameters are averaged; buffers (batch-norm statistics) are copied, since their own update is
    already a running average.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for average, current in zip(self.net.parameters(), net.parameters(), strict=True):
            average.mul_(self.decay).add_(current.detach(), alpha=1 - self.decay)
        for average, current in zip(self.net.buffers(), net.buffers(), strict=True):
            average.copy_(current)
