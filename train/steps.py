"""One training iteration's two steps: the generator's (pixel, perceptual and adversarial losses) and,
in GAN recipes, the discriminator's on the detached SR batch.

A PSNR recipe is the generator step with only the pixel loss; a GAN recipe adds the VGG and adversarial
terms and the discriminator step. Each loss is weighted here by the recipe; the loss modules are
unweighted (train.losses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from train import distributed
from train.losses import GANLoss, PerceptualLoss, PixelLoss
from train.recipes.schema import LossConfig


@dataclass
class Objective:
    """The recipe's losses and their weights; `perceptual` and `gan` are None where a recipe has none."""

    weights: LossConfig
    pixel: PixelLoss
    perceptual: PerceptualLoss | None
    gan: GANLoss | None


@dataclass
class MixedPrecision:
    """Autocast and the gradient scaler (fp16 on CUDA; a no-op scaler otherwise)."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


def generator_step(
    net_g: nn.Module,
    net_d: nn.Module | None,
    lq: torch.Tensor,
    gt: torch.Tensor,
    objective: Objective,
    optim_g: torch.optim.Optimizer,
    precision: MixedPrecision,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's update on the recipe's losses; the SR batch and each weighted loss term.

    D is frozen meanwhile and called without its DDP wrapper (nothing of it to synchronise); its logits
    of the HR batch are constants to the generator (RaGAN compares with them)."""
    weights, values = objective.weights, {}
    if net_d is not None:
        distributed.unwrap(net_d).requires_grad_(False)
    with precision.autocast():
        sr = net_g(lq)
        if weights.pixel_weight > 0:
            values["pixel"] = weights.pixel_weight * objective.pixel(sr, gt)
        if objective.perceptual is not None:
            values["perceptual"] = weights.perceptual_weight * objective.perceptual(sr, gt)
        if objective.gan is not None:
            plain_d = distributed.unwrap(net_d)
            with torch.no_grad():
                real_logits = plain_d(gt)
            values["gan"] = weights.gan_weight * objective.gan.generator(real_logits, plain_d(sr))
        loss_g = sum(values.values())
    optim_g.zero_grad(set_to_none=True)
    precision.scaler.scale(loss_g).backward()
    precision.scaler.step(optim_g)
    return sr, values


def discriminator_step(
    net_d: nn.Module,
    sr: torch.Tensor,
    gt: torch.Tensor,
    gan: GANLoss,
    optim_d: torch.optim.Optimizer,
    precision: MixedPrecision,
) -> dict[str, torch.Tensor]:
    """D's update on real (HR) and the detached fake (SR) batch; its loss and mean logits."""
    distributed.unwrap(net_d).requires_grad_(True)
    with precision.autocast():
        real_logits = net_d(gt)
        fake_logits = net_d(sr.detach())
        loss_d = gan.discriminator(real_logits, fake_logits)
    optim_d.zero_grad(set_to_none=True)
    precision.scaler.scale(loss_d).backward()
    precision.scaler.step(optim_d)
    return {
        "d": loss_d,
        "d_real": real_logits.detach().float().mean(),
        "d_fake": fake_logits.detach().float().mean(),
    }
