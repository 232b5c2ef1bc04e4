"""RRDBNet, the ESRGAN generator, with BasicSR / Real-ESRGAN state-dict keys.

Keys (BasicSR, so Real-ESRGAN's published weights load unchanged):

    conv_first                      in (x4, x16 after pixel-unshuffle for scale 2, 1) -> num_feat
    body.N.rdb{1,2,3}.conv{1..5}    residual-in-residual dense blocks
    conv_body                       after the blocks; its output is added to conv_first's
    conv_up1, conv_up2              each after a nearest x2 upsampling
    conv_hr, conv_last

Two older layouts of the same network are converted to these keys: the original ESRGAN release
(`model.0`, `model.1.sub.N.RDB1.conv1.0`, ...) and mmsr's (`RRDB_trunk`, `trunk_conv`, `HRconv`, ...).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from upscaler.errors import ModelError
from upscaler.models.weight_init import init_scaled


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; the fifth's output, scaled by 0.2, is added to the input.

    plus: ESRGAN+'s block (Rakotonirina & Rasoanaivo, ICASSP 2020), with two more residual paths: a
    bias-free 1x1 conv of the input added to the second conv's activation, and that sum added to the
    fourth's. (Its training-time Gaussian noise does nothing at inference.)
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, plus: bool = False) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(num_feat, num_grow_ch, 1, bias=False) if plus else None
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)
        init_scaled([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        if self.conv1x1 is not None:
            x2 = x2 + self.conv1x1(x)
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        if self.conv1x1 is not None:
            x4 = x4 + x2
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Three residual dense blocks in a row; their output, scaled by 0.2, is added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, plus: bool = False) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, plus)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, plus)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, plus)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        if torch.onnx.is_in_onnx_export():
            # The same scaling as a per-channel 1x1 convolution: ONNX Runtime's blocked (NCHWc) layout
            # takes a convolution, with the residual Add fused into it, but not a scalar Mul. With the
            # Mul, every RRDB's output went back to NCHW, and each concatenation of the next dense
            # blocks with it: RRDBNet ran 9% slower, 11% of its time in layout reorders.
            # num_feat, not out.shape[1]: a shape read while tracing is not a constant
            weight = torch.full((self.num_feat, 1, 1, 1), 0.2, dtype=out.dtype, device=out.device)
            return F.conv2d(out, weight, groups=self.num_feat) + x
        return out * 0.2 + x


# The export form of RRDBNet with SplitDenseBlocks (upscaler.models.registry.Architecture.forms).
SPLIT_DENSE = "split-dense"


class SplitDenseBlock(nn.Module):
    """A ResidualDenseBlock computed another way; the same function up to rounding.

    Each of its convolutions reads [x, x1, ..., xk]; by linearity that is one convolution of x plus one
    of [x1, ..., xk], summed. The parts on x are computed first, so the concatenations hold only the
    new features, half the channels. OpenVINO ran RRDBNet 6-9% faster this way in bf16 (0.463 s against
    0.491 at 320x180) and 2% in fp32, while ONNX Runtime ran it 10% slower (it cannot keep the sums in
    its blocked layout): an export form a backend asks for (`Architecture.forms`), not the default.
    """

    def __init__(self, block: ResidualDenseBlock) -> None:
        super().__init__()
        convs = (block.conv1, block.conv2, block.conv3, block.conv4, block.conv5)
        width = block.conv1.in_channels
        self.on_input = nn.ModuleList(_part(conv, 0, width, bias=True) for conv in convs)
        self.on_features = nn.ModuleList(
            _part(conv, width, conv.in_channels, bias=False) for conv in convs[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [conv(x) for conv in self.on_input]
        features = [F.leaky_relu(parts[0], 0.2)]
        for part, conv in zip(parts[1:-1], self.on_features[:-1], strict=True):
            joined = features[0] if len(features) == 1 else torch.cat(features, 1)
            features.append(F.leaky_relu(part + conv(joined), 0.2))
        return (parts[-1] + self.on_features[-1](torch.cat(features, 1))) * 0.2 + x


def _part(conv: nn.Conv2d, start: int, stop: int, *, bias: bool) -> nn.Conv2d:
    """The convolution of `conv`'s input channels start..stop alone (with its bias, or none)."""
    part = nn.Conv2d(stop - start, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=bias)
    with torch.no_grad():
        part.weight.copy_(conv.weight[:, start:stop])
        if bias:
            part.bias.copy_(conv.bias)
    return part.requires_grad_(False)


def split_dense_blocks(module: nn.Module) -> nn.Module:
    """A copy of an RRDBNet whose dense blocks are SplitDenseBlocks (the same function); an ESRGAN+
    network (whose blocks have more paths) is copied as it is."""
    assert isinstance(module, RRDBNet)
    split = copy.deepcopy(module)
    if module.plus:
        return split.eval()
    for rrdb in split.body:
        rrdb.rdb1, rrdb.rdb2, rrdb.rdb3 = (SplitDenseBlock(b) for b in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3))
    return split.eval()


# Real-ESRGAN keeps the x4 body for scales 2 and 1 by folding pixels into channels first.
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


_PLAIN_STAGES = {1: 0, 2: 1, 4: 2, 8: 3}


class RRDBNet(nn.Module):
    """ESRGAN's generator; scale 2 and 1 pixel-unshuffle the input by 2 and 4, as Real-ESRGAN does.

    unshuffle False is the original ESRGAN release's other scales (community x1, x2 and x8 models): no
    unshuffling, and one nearest x2 upsampling with its conv (`conv_up1`, `conv_up2`, `conv_up3`) per
    factor of 2 of the scale instead; at x4 both are the same network.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        unshuffle: bool = True,
        plus: bool = False,
    ) -> None:
        super().__init__()
        allowed = _UNSHUFFLE if unshuffle else _PLAIN_STAGES
        if scale not in allowed:
            spelled = ", ".join(map(str, sorted(allowed)))
            raise ValueError(
                f"RRDBNet{'' if unshuffle else ' without unshuffle'} supports scale {spelled}, not {scale}"
            )
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.scale = scale
        self.num_feat = num_feat
        self.num_block = num_block
        self.num_grow_ch = num_grow_ch
        self.plain = not unshuffle
        self.plus = plus
        self.unshuffle = _UNSHUFFLE[scale] if unshuffle else 1
        self.stages = 2 if unshuffle else _PLAIN_STAGES[scale]

        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch, plus) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for stage in range(1, self.stages + 1):
            setattr(self, f"conv_up{stage}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "scale": self.scale,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            # only where it differs from the default, so configs written before it existed still match
            **({"unshuffle": False} if self.plain else {}),
            **({"plus": True} if self.plus else {}),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for stage in range(1, self.stages + 1):
            conv = getattr(self, f"conv_up{stage}")
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


StateDict = dict[str, torch.Tensor]

_ESRGAN_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)")
_ESRGAN_PLUS = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv1x1\.weight")
_ESRGAN_BODY = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)")
_ESRGAN_TOP = re.compile(r"model\.(\d+)\.(weight|bias)")
_MMSR_RDB = re.compile(r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)")
_MMSR_NAMES = {
    "conv_first": "conv_first",
    "trunk_conv": "conv_body",
    "upconv1": "conv_up1",
    "upconv2": "conv_up2",
    "HRconv": "conv_hr",
    "conv_last": "conv_last",
}


def is_esrgan_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether `state` uses the original ESRGAN release's `model.N` keys."""
    return "model.0.weight" in state and any(key.startswith("model.1.sub.") for key in state)


def is_mmsr_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether `state` uses mmsr's (and the later ESRGAN repository's) `RRDB_trunk` keys."""
    return "trunk_conv.weight" in state or any(key.startswith("RRDB_trunk.") for key in state)


def convert_esrgan_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The original ESRGAN layout renamed to BasicSR keys (x1, x2, x4 and x8: `convert` loads the ones
    other than x4 as RRDBNet without unshuffle).

    That release is one flat `model` Sequential: 0 conv_first, 1 a shortcut around the RRDB trunk
    (`sub.N` blocks, then `sub.{num_block}` = conv_body), then per x2 stage an upsample, a conv and an
    activation, then HR conv, activation, last conv. Keys this function does not know are kept as they
    are, so that loading names them.
    """
    top = sorted({int(match.group(1)) for key in state if (match := _ESRGAN_TOP.fullmatch(key))} - {0})
    stages = len(top) - 2
    if stages not in (0, 1, 2, 3):
        raise ModelError(
            f"original-ESRGAN weights with {max(stages, 0)} upsampling stages are not supported; "
            "that layout's x1, x2, x4 and x8 models are",
        )
    names = [f"conv_up{stage}" for stage in range(1, stages + 1)] + ["conv_hr", "conv_last"]
    tail = dict(zip(top, names, strict=True))
    converted: StateDict = {}
    for key, value in state.items():
        if match := _ESRGAN_RDB.fullmatch(key):
            block, rdb, conv, kind = match.groups()
            converted[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        elif match := _ESRGAN_PLUS.fullmatch(key):
            block, rdb = match.groups()
            converted[f"body.{block}.rdb{rdb}.conv1x1.weight"] = value
        elif match := _ESRGAN_BODY.fullmatch(key):
            # the only tensors directly under the trunk are the conv after the last block
            converted[f"conv_body.{match.group(2)}"] = value
        elif (match := _ESRGAN_TOP.fullmatch(key)) and match.group(1) == "0":
            converted[f"conv_first.{match.group(2)}"] = value
        elif (match := _ESRGAN_TOP.fullmatch(key)) and int(match.group(1)) in tail:
            converted[f"{tail[int(match.group(1))]}.{match.group(2)}"] = value
        else:
            converted[key] = value
    return converted


def convert_mmsr_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """mmsr's RRDBNet layout (`RRDB_trunk.N.RDB1.conv1`, `trunk_conv`, `HRconv`...) renamed to BasicSR keys.

    Keys this function does not know are kept as they are, so that loading names them.
    """
    converted: StateDict = {}
    for key, value in state.items():
        if match := _MMSR_RDB.fullmatch(key):
            block, rdb, conv, kind = match.groups()
            converted[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
            continue
        name, _, kind = key.rpartition(".")
        converted[f"{_MMSR_NAMES[name]}.{kind}" if name in _MMSR_NAMES else key] = value
    return converted
