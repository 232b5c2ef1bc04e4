"""The discriminators of SRGAN and ESRGAN; both return one logit per image (N x 1).

The papers end with a sigmoid; here it lives in the loss (`train.losses.GANLoss`), where the
log-sigmoid can be computed stably. Both end in dense layers, so each is built for one input size and
refuses any other with a message that says which.
"""

from __future__ import annotations

import torch
from torch import nn

from upscaler.errors import ModelError


def _check_size(network: str, x: torch.Tensor, size: int) -> None:
    if x.ndim != 4 or x.shape[2] != size or x.shape[3] != size:
        shape = " x ".join(str(side) for side in x.shape[2:]) if x.ndim == 4 else f"shape {tuple(x.shape)}"
        raise ModelError(
            f"{network} was built for {size} x {size} inputs, got {shape}",
            hint="build the discriminator with input_size equal to the HR crop size",
        )


class SRGANDiscriminator(nn.Module):
    """SRGAN's discriminator (Ledig et al. 2017, figure 4).

    Eight 3 x 3 convs from num_feat to 8 * num_feat channels (64 -> 512), strides alternating 1 and 2,
    batch norm after all but the first, LeakyReLU 0.2; then dense 1024, LeakyReLU, dense 1. Four
    stride-2 convs make a 96 x 96 crop 6 x 6 x 512 before the dense layers. Convs followed by batch
    norm have no bias: the norm's shift replaces it.
    """

    def __init__(self, in_channels: int = 3, num_feat: int = 64, input_size: int = 96) -> None:
        super().__init__()
        if input_size < 16 or input_size % 16:
            raise ModelError(f"SRGANDiscriminator: input_size must be a multiple of 16 (got {input_size})")
        self.input_size = input_size
        widths = [num_feat, num_feat, 2 * num_feat, 2 * num_feat, 4 * num_feat, 4 * num_feat]
        widths += [8 * num_feat, 8 * num_feat]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for index in range(1, len(widths)):
            stride = 2 if index % 2 else 1
            layers += [
                nn.Conv2d(widths[index - 1], widths[index], 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(widths[index]),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        side = input_size // 16
        self.dense1 = nn.Linear(widths[-1] * side * side, 1024)
        self.dense2 = nn.Linear(1024, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size("SRGANDiscriminator", x, self.input_size)
        features = self.features(x).flatten(1)
        return self.dense2(self.lrelu(self.dense1(features)))


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's discriminator, with BasicSR's key names so its published checkpoints load.

    Pairs of convs per stage: 3 x 3 stride 1, then 4 x 4 stride 2, each with batch norm (but the very
    first conv) and LeakyReLU 0.2; channels num_feat, 2, 4, 8, 8 (x num_feat) for 128 x 128 inputs, a
    sixth stage of 8 for 256 x 256 (BasicSR's two sizes). The result, 4 x 4 x width, goes through
    dense 100, LeakyReLU, dense 1. Other sizes of 4 x 2^k take k stages on the same pattern (fewer for
    the small crops of quick experiments and tests); their weights only load into the same size.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        stages = (input_size // 4).bit_length() - 1
        if input_size < 8 or input_size != 4 * 2**stages:
            raise ModelError(
                f"VGGStyleDiscriminator: input_size must be 4 times a power of two, as 128 or 256 "
                f"(got {input_size})"
            )
        self.input_size = input_size
        widths = [num_feat * min(2**stage, 8) for stage in range(stages)]
        self.num_stages = stages
        previous = num_in_ch
        for stage, width in enumerate(widths):
            # The first conv has no norm after it, so it keeps its bias.
            setattr(self, f"conv{stage}_0", nn.Conv2d(previous, width, 3, 1, 1, bias=stage == 0))
            if stage:
                setattr(self, f"bn{stage}_0", nn.BatchNorm2d(width, affine=True))
            setattr(self, f"conv{stage}_1", nn.Conv2d(width, width, 4, 2, 1, bias=False))
            setattr(self, f"bn{stage}_1", nn.BatchNorm2d(width, affine=True))
            previous = width
        self.linear1 = nn.Linear(widths[-1] * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size("VGGStyleDiscriminator", x, self.input_size)
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for stage in range(1, self.num_stages):
            feat = self.lrelu(getattr(self, f"bn{stage}_0")(getattr(self, f"conv{stage}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{stage}_1")(getattr(self, f"conv{stage}_1")(feat)))
        return self.linear2(self.lrelu(self.linear1(feat.flatten(1))))
