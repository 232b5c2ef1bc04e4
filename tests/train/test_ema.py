"""The EMA of the generator: warm-up, then the recipe's decay."""

from __future__ import annotations

import torch
from torch import nn

from train.ema import EMA


def test_the_average_forgets_the_initial_weights_early_then_decays_as_asked() -> None:
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(0.0)  # training moved away from the initial weights
    for step in range(1, 501):
        ema.update(net, step)
    # With a fixed 0.999 the initial weights would still weigh 0.999^500 = 0.61.
    assert float(ema.net.weight.max()) < 0.03
    # Late in a run the decay is the recipe's.
    with torch.no_grad():
        ema.net.weight.fill_(1.0)
    ema.update(net, 100_000)
    assert torch.allclose(ema.net.weight, torch.full((2, 2), 0.999))
