"""Validation during training: each image upscaled whole and scored as `upscale eval` scores it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from upscaler.quality.metrics import psnr, ssim, to_uint8
from upscaler.values import SizeRequirement

# How many validation images samples.png shows.
SAMPLE_IMAGES = 4


@torch.no_grad()
def upscale_whole(
    network: nn.Module, lq: np.ndarray, scale: int, device: torch.device, requirement: SizeRequirement
) -> np.ndarray:
    """SR of an H x W x 3 image; padded at the bottom and right to a size the network takes, as the
    inference pipeline pads (`upscaler.tiling.runner`), and the padding's output cropped off."""
    height, width = lq.shape[:2]
    image = lq.transpose(2, 0, 1)
    for axis, size in ((1, height), (2, width)):
        pad = requirement.padded(size) - size
        if pad:
            widths = [(0, 0)] * 3
            widths[axis] = (0, pad)
            image = np.pad(image, widths, mode="reflect" if pad < size else "symmetric")
    tensor = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).to(device)
    sr = network(tensor)[:, :, : height * scale, : width * scale].clamp_(0, 1)
    return sr[0].float().cpu().numpy().transpose(1, 2, 0)


def validate_images(
    network: nn.Module, images, scale: int, device: torch.device, requirement: SizeRequirement
):
    """Mean PSNR and SSIM (Y, border = scale, SR rounded to 8 bits first) and bicubic/SR/HR triples."""
    network.eval()
    psnrs, ssims, triples = [], [], []
    for image in images:
        sr = upscale_whole(network, image.lq, scale, device, requirement)
        sr8, hr8 = to_uint8(sr), to_uint8(image.hr)
        psnrs.append(psnr(sr8, hr8, border=scale))
        ssims.append(ssim(sr8, hr8, border=scale))
        triples.append((image.bicubic, sr, image.hr))
    return (float(np.mean(psnrs)), float(np.mean(ssims))), triples


def measure_bicubic(images, scale: int) -> tuple[float, float]:
    if not images:
        return (float("nan"), float("nan"))
    pairs = [(to_uint8(image.bicubic), to_uint8(image.hr)) for image in images]
    return (
        float(np.mean([psnr(a, b, border=scale) for a, b in pairs])),
        float(np.mean([ssim(a, b, border=scale) for a, b in pairs])),
    )
