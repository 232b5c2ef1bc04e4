from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every weight, bias, PReLU slope and BN statistic set to something other than its default."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.ndim == 4:
                # fan-in scaling keeps activations near 1 through the net, so tolerances mean something
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return module.eval()


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    return _randomize
