"""The one registry of the architectures `upscale` can run (the model ids are `upscaler.models.catalog`).

The table is written out by hand below; importing a module never adds to it. An architecture
entry recognises a state dict in BasicSR key names (older layouts are converted first, see `LAYOUTS`),
builds the network from a config, and says what its input must look like and how to tile it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.compact import SRVGGNetCompact
from upscaler.models.rrdbnet import (
    SPLIT_DENSE,
    RRDBNet,
    convert_esrgan_state_dict,
    convert_mmsr_state_dict,
    is_esrgan_state_dict,
    is_mmsr_state_dict,
    split_dense_blocks,
)
from upscaler.models.srresnet import MSRResNet, SRResNet, SRResNetInference
from upscaler.values import SizeRequirement

StateDict = Mapping[str, torch.Tensor]
Config = Mapping[str, Any]

# Peak activation estimates are per input pixel in fp32 (half for fp16/bf16 is the backend's call).
# Checked against the peak RSS of one eager CPU forward pass (torch 2.13, batch 1, output included)
# at the default widths: measured/estimated was 0.72 (compact), 0.69-0.75 (SRResNet x2, x4),
# 0.69-0.76 (MSRResNet x2-x4) and 0.77-0.89 (RRDBNet x1-x4); GPU libraries' workspaces come on top.
_BYTES = 4


def _block_count(state: StateDict, prefix: str) -> int:
    """One more than the highest N among keys `prefix.N....`; a gap then shows up as missing keys."""
    indices = [
        int(head)
        for key in state
        if key.startswith(prefix) and (head := key[len(prefix) :].split(".", 1)[0]).isdigit()
    ]
    return max(indices, default=-1) + 1


def _has(state: StateDict, *keys: str) -> bool:
    return all(key in state for key in keys)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# --- SRResNet (SRGAN) -------------------------------------------------------------------------------


def detect_srresnet(state: StateDict) -> dict[str, Any] | None:
    if not _has(state, "conv_first.weight", "conv_body.weight", "upsample.0.conv.weight", "conv_last.weight"):
        return None
    num_feat, num_in_ch = state["conv_first.weight"].shape[:2]
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": state["conv_last.weight"].shape[0],
        "num_feat": num_feat,
        "num_block": _block_count(state, "body."),
        "scale": 2 ** _block_count(state, "upsample."),
        "batch_norm": "bn_body.weight" in state,
    }


def _radius(levels: list[tuple[int, int]]) -> int:
    """How many input pixels away an output pixel's value can come from, through several resolutions.

    levels: from the output resolution down, (the radii of the convs at that resolution added up,
    how many times finer that resolution is than the next one down). r pixels at a resolution f times
    finer reach ceil(r / f) pixels below it: a sub-pixel, nearest or pixel-shuffle step maps output
    pixel j to floor(j / f), so j - r lands up to ceil(r / f) pixels away.
    """
    radius = 0
    for convs, factor in levels:
        radius = -(-(radius + convs) // factor)
    return radius


def _srresnet_radius(config: Config) -> int:
    # 9x9 tail at output resolution; a 3x3 sub-pixel conv below each x2 step; at input resolution the
    # first sub-pixel conv, conv_body, two per block and the 9x9 head.
    stages = int(math.log2(config["scale"]))
    levels = [(4, 2)] + [(1, 2)] * (stages - 1) + [(1 + 1 + 2 * config["num_block"] + 4, 1)]
    return _radius(levels)


def _srresnet_bytes(config: Config) -> int:
    num_feat, scale = config["num_feat"], config["scale"]
    # Widest maps: the last sub-pixel conv's output (num_feat * scale^2 values per input pixel), the
    # shuffled copy of it, and the conv's input or the next layer's output beside them: three at once.
    # The trunk at input resolution holds about four num_feat-wide maps.
    return _BYTES * (3 * num_feat * scale * scale + 4 * num_feat)


def _srresnet_inference(module: nn.Module) -> nn.Module:
    assert isinstance(module, SRResNet)
    return SRResNetInference(module)


# --- MSRResNet ----------------------------------------------------------------------------------------


def detect_msrresnet(state: StateDict) -> dict[str, Any] | None:
    if not _has(state, "conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight"):
        return None
    if not _has(state, "conv_last.weight"):
        return None
    num_feat, num_in_ch = state["conv_first.weight"].shape[:2]
    if "upconv2.weight" in state:
        upscale = 4
    else:
        # x2 and x3 have one upconv with upscale^2 times the features
        upscale = math.isqrt(max(state["upconv1.weight"].shape[0] // num_feat, 1))
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": state["conv_last.weight"].shape[0],
        "num_feat": num_feat,
        "num_block": _block_count(state, "body."),
        "upscale": upscale,
    }


def _msrresnet_radius(config: Config) -> int:
    # conv_hr and conv_last at output resolution; upconv2 at 2x for x4; upconv1, two per block and
    # conv_first at input resolution. The bilinear base reaches one input pixel, well inside that.
    upscale = config["upscale"]
    levels = [(2, 2), (1, 2)] if upscale == 4 else [(2, upscale)]
    return _radius([*levels, (1 + 2 * config["num_block"] + 1, 1)])


def _msrresnet_bytes(config: Config) -> int:
    # Unlike SRResNet it convolves at output resolution too: conv_hr's input, output and activation
    # are alive together with the last shuffle's output, four num_feat-wide maps at output size.
    num_feat, scale = config["num_feat"], config["upscale"]
    return _BYTES * (4 * num_feat * scale * scale + 4 * num_feat)


# --- RRDBNet (ESRGAN) ---------------------------------------------------------------------------------


def detect_rrdbnet(state: StateDict) -> dict[str, Any] | None:
    if not _has(state, "conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight"):
        return None
    if not _has(state, "conv_hr.weight", "conv_last.weight"):
        return None
    num_feat, first_in = state["conv_first.weight"].shape[:2]
    num_out_ch = state["conv_last.weight"].shape[0]
    stages = sum(1 for stage in range(1, 5) if f"conv_up{stage}.weight" in state)
    # ESRGAN+ (nESRGAN+): a 1x1 conv in every dense block
    plus = {"plus": True} if "body.0.rdb1.conv1x1.weight" in state else {}
    if stages != 2:
        # the original ESRGAN release's x1, x2 and x8: an upsampling stage per factor 2, no unshuffle
        return {
            "num_in_ch": first_in,
            "num_out_ch": num_out_ch,
            "scale": 2**stages,
            "num_feat": num_feat,
            "num_block": _block_count(state, "body."),
            "num_grow_ch": state["body.0.rdb1.conv1.weight"].shape[0],
            "unshuffle": False,
            **plus,
        }
    # Scales 2 and 1 pixel-unshuffle the input, so conv_first sees 4x or 16x the input channels.
    # Published models have as many input channels as output ones; that decides the scale.
    scale, num_in_ch = 4, first_in
    for candidate, factor in ((2, 4), (1, 16)):
        if first_in == num_out_ch * factor:
            scale, num_in_ch = candidate, num_out_ch
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "scale": scale,
        "num_feat": num_feat,
        "num_block": _block_count(state, "body."),
        "num_grow_ch": state["body.0.rdb1.conv1.weight"].shape[0],
        **plus,
    }


def _rrdbnet_unshuffle(config: Config) -> int:
    return 4 // config["scale"] if config.get("unshuffle", True) else 1


def _rrdbnet_stages(config: Config) -> int:
    return 2 if config.get("unshuffle", True) else int(math.log2(config["scale"]))


def _rrdbnet_radius(config: Config) -> int:
    # conv_up2, conv_hr, conv_last at 4x the body's resolution, conv_up1 at 2x, then conv_body, 15
    # convs per RRDB and conv_first; a body pixel is u x u input pixels. Exact when tiles start on
    # multiples of u, which they must anyway: unshuffling groups pixels from the frame's origin.
    u, stages = _rrdbnet_unshuffle(config), _rrdbnet_stages(config)
    body = 1 + 15 * config["num_block"] + 1
    if stages == 0:
        return _radius([(2 + body, 1)])
    return u * _radius([(3, 2)] + [(1, 2)] * (stages - 1) + [(body, 1)])


def _rrdbnet_bytes(config: Config) -> int:
    num_feat, scale, u = config["num_feat"], config["scale"], _rrdbnet_unshuffle(config)
    # Inside a dense block at the body's resolution: x, x1..x4, their concatenation, the output,
    # and the RRDB's and trunk's inputs, about 2*(num_feat + 4*grow) + 3*num_feat channels.
    body = 2 * (num_feat + 4 * config["num_grow_ch"]) + 3 * num_feat
    # After the last nearest upsampling: its output, conv_up2's output and its activation, conv_hr's.
    return _BYTES * (4 * num_feat * scale * scale + math.ceil(body / (u * u)))


# --- SRVGGNetCompact ----------------------------------------------------------------------------------

_COMPACT_KEY = re.compile(r"body\.(\d+)\.(weight|bias)")


def detect_compact(state: StateDict) -> dict[str, Any] | None:
    if not state or not all(_COMPACT_KEY.fullmatch(key) for key in state):
        return None
    if "body.0.weight" not in state or state["body.0.weight"].ndim != 4:
        return None
    convs = sorted(
        int(match.group(1))
        for key, value in state.items()
        if (match := _COMPACT_KEY.fullmatch(key)) and match.group(2) == "weight" and value.ndim == 4
    )
    last = convs[-1]
    if last < 2 or last % 2:
        return None
    num_feat, num_in_ch = state["body.0.weight"].shape[:2]
    if "body.1.weight" not in state:
        raise ModelError(
            "compact (SRVGGNetCompact) weights without PReLU parameters: the activation is ReLU or "
            "LeakyReLU, and the weights alone cannot tell which",
            hint="save them as .safetensors with their arch and config recorded "
            "(upscaler.models.save_weights(module, path, 'compact', config))",
        )
    last_out = state[f"body.{last}.weight"].shape[0]
    upscale = math.isqrt(last_out // num_in_ch)
    if upscale * upscale * num_in_ch != last_out:
        raise ModelError(
            f"compact (SRVGGNetCompact) weights: the last conv (body.{last}) has {last_out} output "
            f"channels, which is not {num_in_ch} input channels times a square scale",
        )
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_in_ch,
        "num_feat": num_feat,
        "num_conv": last // 2 - 1,
        "upscale": upscale,
        "act_type": "prelu",
    }


def _compact_bytes(config: Config) -> int:
    # Everything but the output runs at input resolution: a conv's input and output (num_feat each),
    # then the last conv's output, its shuffled copy and the upsampled input (out * scale^2 each).
    out = config["num_out_ch"] * config["upscale"] ** 2
    return _BYTES * (2 * config["num_feat"] + 3 * out + config["num_in_ch"])


# --- the architecture table ---------------------------------------------------------------------------


def _as_is(module: nn.Module) -> nn.Module:
    return module


@dataclass(frozen=True)
class Architecture:
    """One network family: how to recognise, build and tile it.

    overlap: the tiling hint, in input pixels: twice the receptive-field radius where that is small
    (the tiler blends across the inner half of the overlap, so each side of a seam needs a radius of
    context beyond the blend), capped at `overlap_cap` (see the table for why each cap).
    """

    name: str
    description: str
    cls: type[nn.Module]
    scale_key: str
    detect: Callable[[StateDict], dict[str, Any] | None]
    radius: Callable[[Config], int]
    overlap_cap: int
    bytes_per_pixel: Callable[[Config], int]
    multiple_of: Callable[[Config], int] = lambda config: 1
    inference: Callable[[nn.Module], nn.Module] = _as_is
    # Other forms of the inference module that an export may ask for by name, each the same function
    # computed another way that some runtime runs faster (see upscaler.export.cached_onnx).
    forms: Mapping[str, Callable[[nn.Module], nn.Module]] = field(default_factory=dict)

    def build(self, config: Config) -> nn.Module:
        return self.cls(**config)

    def scale(self, config: Config) -> int:
        return int(config[self.scale_key])

    def requirement(self, config: Config) -> SizeRequirement:
        return SizeRequirement(multiple_of=self.multiple_of(config))

    def overlap(self, config: Config) -> int:
        """Input pixels a tile should read beyond its own part, a multiple of what the input needs."""
        return _round_up(min(2 * self.radius(config), self.overlap_cap), self.multiple_of(config))


# Overlap caps. An overlap of twice the receptive-field radius makes tiling exact (see
# upscaler/tiling/runner.py), and the tiny nets in the tests get exactly that. The published depths reach far
# further in theory (compact-16: 18 pixels, SRResNet-16: 40, RRDBNet-23: 349), while a trained net's
# effective receptive field is much smaller than its theoretical one (Luo et al., NeurIPS 2016): the
# weight of a pixel falls off quickly with distance. Overlap costs time quadratically, so the caps are a
# judgement, growing with depth: 16 for compact, 24 for the 16-block SRResNets, 32 for RRDBNet. A user
# who sees seams raises --tile-overlap.
ARCHITECTURES: dict[str, Architecture] = {
    "srresnet": Architecture(
        name="srresnet",
        description="SRResNet, the SRGAN generator (batch norm, folded for inference)",
        cls=SRResNet,
        scale_key="scale",
        detect=detect_srresnet,
        radius=_srresnet_radius,
        overlap_cap=24,
        bytes_per_pixel=_srresnet_bytes,
        inference=_srresnet_inference,
    ),
    "msrresnet": Architecture(
        name="msrresnet",
        description="MSRResNet, BasicSR's SRResNet without batch norm",
        cls=MSRResNet,
        scale_key="upscale",
        detect=detect_msrresnet,
        radius=_msrresnet_radius,
        overlap_cap=24,
        bytes_per_pixel=_msrresnet_bytes,
    ),
    "rrdbnet": Architecture(
        name="rrdbnet",
        description="RRDBNet, the ESRGAN / Real-ESRGAN generator",
        cls=RRDBNet,
        scale_key="scale",
        detect=detect_rrdbnet,
        radius=_rrdbnet_radius,
        overlap_cap=32,
        bytes_per_pixel=_rrdbnet_bytes,
        multiple_of=_rrdbnet_unshuffle,
        forms={SPLIT_DENSE: split_dense_blocks},
    ),
    "compact": Architecture(
        name="compact",
        description="SRVGGNetCompact, Real-ESRGAN's small VGG-style generator",
        cls=SRVGGNetCompact,
        scale_key="upscale",
        detect=detect_compact,
        radius=lambda config: config["num_conv"] + 2,
        overlap_cap=16,
        bytes_per_pixel=_compact_bytes,
    ),
}


@dataclass(frozen=True)
class Layout:
    """A foreign key layout of a registered architecture, and how to rename it to BasicSR keys."""

    name: str
    matches: Callable[[StateDict], bool]
    convert: Callable[[StateDict], dict[str, torch.Tensor]]


LAYOUTS: tuple[Layout, ...] = (
    Layout("original ESRGAN", is_esrgan_state_dict, convert_esrgan_state_dict),
    Layout("mmsr ESRGAN", is_mmsr_state_dict, convert_mmsr_state_dict),
)


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ModelError(f"unknown architecture {name!r}; known: {known}") from None


def convert_state_dict(state: StateDict) -> dict[str, torch.Tensor]:
    """`state` with any foreign layout in `LAYOUTS` renamed to BasicSR keys."""
    for layout in LAYOUTS:
        if layout.matches(state):
            return layout.convert(state)
    return dict(state)


def detect_architecture(state: StateDict) -> tuple[str, dict[str, Any]] | None:
    """The architecture and config a state dict in BasicSR keys belongs to, or None if none claims it.

    Raises ModelError when an architecture recognises the keys but cannot tell its config from them.
    """
    for architecture in ARCHITECTURES.values():
        config = architecture.detect(state)
        if config is not None:
            return architecture.name, config
    return None


def build_model(arch: str, config: Config) -> nn.Module:
    """A freshly initialised network of architecture `arch` with `config`."""
    architecture = get_architecture(arch)
    try:
        return architecture.build(config)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build a {arch!r} network with config {dict(config)}: {exc}") from exc
