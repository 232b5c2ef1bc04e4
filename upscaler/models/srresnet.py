"""SRResNet, the SRGAN generator, and MSRResNet, its batch-norm-free relative from BasicSR.

SRResNet (Ledig et al., 2017) state-dict keys, all chosen here:

    conv_first            9x9 conv, in -> num_feat
    prelu_first           PReLU (one parameter, as nn.PReLU())
    body.N.conv1 / bn1 / prelu / conv2 / bn2
                          residual block: conv3x3-BN-PReLU-conv3x3-BN, plus the block's input
    conv_body, bn_body    conv3x3-BN after the blocks; its output is added to prelu_first's output
    upsample.N.conv       3x3 conv num_feat -> 4*num_feat, then PixelShuffle(2) and
    upsample.N.prelu      PReLU; one stage for x2, two for x4
    conv_last             9x9 conv, num_feat -> out

Every conv has a bias, including those followed by batch norm: the bias is redundant while training,
but it keeps the key set of the batch-norm model and of its folded form (`fold_batch_norm`) the same
apart from the `bn*` entries, so one file layout serves both.

MSRResNet keys are BasicSR's, so its published weights load unchanged: `conv_first`,
`body.N.conv1`, `body.N.conv2`, `upconv1`, `upconv2` (x4 only), `conv_hr`, `conv_last`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from upscaler.models.weight_init import init_scaled


class SRResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip; BN is Identity when folded or absent."""

    def __init__(self, num_feat: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn1: nn.Module = nn.BatchNorm2d(num_feat) if batch_norm else nn.Identity()
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn2: nn.Module = nn.BatchNorm2d(num_feat) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(x)))
        return x + self.bn2(self.conv2(out))


class SubPixelUpsample(nn.Module):
    """x2 sub-pixel upsampling: conv to 4x the channels, PixelShuffle(2), PReLU."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """The SRGAN generator. `batch_norm=False` is the folded inference form (see `fold_batch_norm`)."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        scale: int = 4,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"SRResNet supports scale 2 or 4, not {scale}")
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_block = num_block
        self.scale = scale
        self.batch_norm = batch_norm

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 9, 1, 4)
        self.prelu_first = nn.PReLU()
        self.body = nn.Sequential(*(SRResidualBlock(num_feat, batch_norm) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn_body: nn.Module = nn.BatchNorm2d(num_feat) if batch_norm else nn.Identity()
        self.upsample = nn.Sequential(*(SubPixelUpsample(num_feat) for _ in range(int(math.log2(scale)))))
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 9, 1, 4)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "scale": self.scale,
            "batch_norm": self.batch_norm,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.prelu_first(self.conv_first(x))
        out = self.bn_body(self.conv_body(self.body(feat))) + feat
        return self.conv_last(self.upsample(out))


def _conv_bn_pairs(model: SRResNet) -> list[tuple[str, str]]:
    pairs = []
    for index in range(model.num_block):
        pairs.append((f"body.{index}.conv1", f"body.{index}.bn1"))
        pairs.append((f"body.{index}.conv2", f"body.{index}.bn2"))
    pairs.append(("conv_body", "bn_body"))
    return pairs


def fold_batch_norm(model: SRResNet) -> SRResNet:
    """An equivalent SRResNet for inference, with each BN merged into the conv before it.

    Uses the running statistics, i.e. the eval-mode behaviour, whatever mode `model` is in. The
    result is a new model in eval mode; `model` is left as it is. A model without BN is copied.
    """
    if not model.batch_norm:
        return copy.deepcopy(model).eval()
    reference = next(model.parameters())
    folded = SRResNet(**{**model.config, "batch_norm": False}).to(reference.device, reference.dtype)
    source = model.state_dict()
    state = {key: value for key, value in source.items() if key in folded.state_dict()}
    for conv, bn in _conv_bn_pairs(model):
        # float64 so the folded weights round once, not once per operation
        weight = source[f"{conv}.weight"].double()
        bias = source[f"{conv}.bias"].double()
        gamma = source[f"{bn}.weight"].double()
        beta = source[f"{bn}.bias"].double()
        mean = source[f"{bn}.running_mean"].double()
        var = source[f"{bn}.running_var"].double()
        eps = model.get_submodule(bn).eps
        factor = gamma / torch.sqrt(var + eps)
        state[f"{conv}.weight"] = (weight * factor[:, None, None, None]).to(reference.dtype)
        state[f"{conv}.bias"] = ((bias - mean) * factor + beta).to(reference.dtype)
    folded.load_state_dict(state)
    return folded.eval()


class _LeakyBlock(nn.Module):
    """A folded residual block: conv3x3-PReLU-conv3x3 plus its input, the PReLU as a leaky ReLU."""

    def __init__(self, block: SRResidualBlock) -> None:
        super().__init__()
        self.conv1, self.conv2 = block.conv1, block.conv2
        self.slope = _slope(block.prelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(_leaky(self.conv1(x), self.slope))
        return out.add_(x)


_TAIL_MULTIPLE = 16


class SRResNetInference(nn.Module):
    """SRResNet rearranged for fast inference; its outputs equal the model's in eval mode up to rounding.

    - batch norm folded into the convolutions (`fold_batch_norm`);
    - each single-slope PReLU applied as a leaky ReLU with that slope (the same function, and in place);
    - the last x2 stage's PixelShuffle moved behind `conv_last`: the 9x9 convolution with 3 outputs at
      full resolution becomes a 5x5 one from the 4*num_feat channels before the shuffle to 4*3
      channels, shuffled into place (see `phase_kernel`). On this project's CPUs the 9x9 one ran at
      3 GFLOP/s against 12 for a 3x3 64->64 convolution, a third of SRResNet's time; the 5x5 one takes
      a third of that time for 1.23x its FLOPs, and the shuffle moves 3 channels instead of 64.
    """

    def __init__(self, model: SRResNet) -> None:
        super().__init__()
        folded = fold_batch_norm(model)
        self._config = folded.config
        self.conv_first = folded.conv_first
        self.slope_first = _slope(folded.prelu_first)
        self.body = nn.Sequential(*(_LeakyBlock(block) for block in folded.body))
        self.conv_body = folded.conv_body
        *early, last = folded.upsample
        self.upsample_convs = nn.ModuleList(stage.conv for stage in early)
        self.upsample_slopes = [_slope(stage.prelu) for stage in early]
        self.conv_up_last = last.conv
        self.slope_last = _slope(last.prelu)
        weight, bias = phase_kernel(folded.conv_last.weight, folded.conv_last.bias)
        # Zero filters pad the outputs to a multiple of 16, a whole AVX-512 vector of fp32 outputs
        # (4*3 = 12 left a quarter of each empty); the extra channels are sliced off before the
        # shuffle. SRResNet ran 4% faster on OpenVINO's bf16 kernels (0.69 -> 0.66 s at 320x180),
        # the same in torch and ONNX Runtime; 32 outputs were slower everywhere.
        self.tail_channels = weight.shape[0]
        padded = -(-self.tail_channels // _TAIL_MULTIPLE) * _TAIL_MULTIPLE
        self.conv_tail = nn.Conv2d(weight.shape[1], padded, weight.shape[2], 1, weight.shape[2] // 2)
        with torch.no_grad():
            self.conv_tail.weight.zero_()
            self.conv_tail.bias.zero_()
            self.conv_tail.weight[: self.tail_channels].copy_(weight)
            self.conv_tail.bias[: self.tail_channels].copy_(bias)
        self.eval().requires_grad_(False)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = _leaky(self.conv_first(x), self.slope_first)
        out = self.conv_body(self.body(feat)).add_(feat)
        for conv, slope in zip(self.upsample_convs, self.upsample_slopes, strict=True):
            out = _leaky(F.pixel_shuffle(conv(out), 2), slope)
        out = _leaky(self.conv_up_last(out), self.slope_last)
        return F.pixel_shuffle(self.conv_tail(out)[:, : self.tail_channels], 2)


def phase_kernel(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution on the input of PixelShuffle(2) that equals `weight` (odd k x k, 'same' zero
    padding) applied after it, followed by PixelShuffle(2).

    Output pixel (2I+p, 2J+q) of channel o reads input pixel (2I+p+dy, 2J+q+dx), which is channel
    4c+2a+b of the unshuffled map at (I+floor((p+dy)/2), J+floor((q+dx)/2)) with a, b the remainders;
    so the new kernel has 4*C_in inputs, 4*C_out outputs (4o+2p+q, PixelShuffle's order) and side
    2*((k//2 + 1)//2) + 1 (5 for k = 9: offsets -2..2). Zero padding matches: padded rows of the small
    map are exactly the padded rows of the large one.
    """
    out_ch, in_ch, k, k2 = weight.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"phase_kernel needs an odd square kernel, got {k}x{k2}")
    radius = k // 2
    half = (radius + 1) // 2  # the largest |floor((p + d) / 2)| over p in {0, 1}, |d| <= radius
    side = 2 * half + 1
    source = weight.detach().double()
    result = torch.zeros(4 * out_ch, 4 * in_ch, side, side, dtype=torch.float64)
    for p in range(2):
        for q in range(2):
            for dy in range(-radius, radius + 1):
                iy, a = divmod(p + dy, 2)
                for dx in range(-radius, radius + 1):
                    ix, b = divmod(q + dx, 2)
                    result[2 * p + q :: 4, 2 * a + b :: 4, iy + half, ix + half] += source[
                        :, :, dy + radius, dx + radius
                    ]
    new_bias = bias.detach().double().repeat_interleave(4)
    return result.to(weight.dtype), new_bias.to(bias.dtype)


def _leaky(x: torch.Tensor, slope: float) -> torch.Tensor:
    # In place saves a pass over memory, but autograd cannot go back through it (tests take gradients).
    return F.leaky_relu(x, slope, inplace=not x.requires_grad)


def _slope(prelu: nn.Module) -> float:
    assert isinstance(prelu, nn.PReLU) and prelu.weight.numel() == 1, "SRResNet's PReLUs have one slope"
    return float(prelu.weight.detach())


class ResidualBlockNoBN(nn.Module):
    """conv3x3-ReLU-conv3x3 with an identity skip (residual scale 1), as in BasicSR."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        init_scaled([self.conv1, self.conv2], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """BasicSR's modified SRResNet: no BN, LeakyReLU(0.1), a bilinear-upsampled input added at the end."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f"MSRResNet supports upscale 2, 3 or 4, not {upscale}")
        if num_in_ch != num_out_ch:
            raise ValueError(
                f"MSRResNet adds its upsampled input to its output, so it needs as many output "
                f"channels as input channels (got {num_in_ch} in, {num_out_ch} out)"
            )
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_block = num_block
        self.upscale = upscale

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_block)))
        if upscale == 4:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1)

        init_scaled([self.conv_first, self.upconv1, self.conv_hr, self.conv_last], 0.1)
        if upscale == 4:
            init_scaled([self.upconv2], 0.1)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "upscale": self.upscale,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        base = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return out + base
