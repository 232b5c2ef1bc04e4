"""SRVGGNetCompact, Real-ESRGAN's small VGG-style generator, in its published layout.

`body` is one flat list: conv (in -> num_feat), activation, then num_conv times (conv, activation),
then a conv to out*upscale^2 channels; PixelShuffle(upscale) follows and the nearest-upsampled input
is added. Keys are `body.N.weight` / `body.N.bias`: convs sit at the even indices whatever the
activation; with PReLU the odd indices hold its per-channel `body.N.weight` of shape [num_feat], with
ReLU or LeakyReLU they hold nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = ("prelu", "relu", "leakyrelu")


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(0.1)


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact generator: all convs at the input resolution, upsampling in the last."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        if act_type not in ACTIVATIONS:
            raise ValueError(f"unknown act_type {act_type!r}; known: {', '.join(ACTIVATIONS)}")
        if upscale < 1:
            raise ValueError(f"upscale must be at least 1, not {upscale}")
        if num_in_ch != num_out_ch:
            raise ValueError(
                f"SRVGGNetCompact adds its upsampled input to its output, so it needs as many output "
                f"channels as input channels (got {num_in_ch} in, {num_out_ch} out)"
            )
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_conv = num_conv
        self.upscale = upscale
        self.act_type = act_type

        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming init for the activation, and a last conv that starts small.

        PyTorch's default init shrinks a plain conv stack's signal about 2.5x per layer: through 18 layers
        the body's output starts some 1e-7 of the input, its gradients vanish, and training never leaves
        the nearest-neighbour baseline (measured: 1500 iterations on T91/BSD200 learned nothing). Kaiming
        init keeps the signal's scale through the stack; the last conv at a tenth of it makes the model
        start near its upsampled input, as the residual models' scaled init does.
        """
        slope = {"prelu": 0.25, "relu": 0.0, "leakyrelu": 0.1}[self.act_type]
        convs = [layer for layer in self.body if isinstance(layer, nn.Conv2d)]
        with torch.no_grad():
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(conv.bias)
            convs[-1].weight.mul_(0.1)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_conv": self.num_conv,
            "upscale": self.upscale,
            "act_type": self.act_type,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        return self.upsampler(out) + base
