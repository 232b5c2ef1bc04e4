"""The losses of the SRGAN and ESRGAN papers: pixel, perceptual (VGG features) and adversarial.

Each loss is unweighted; the recipes hold the weights (SRGAN's 1e-3 adversarial, ESRGAN's 5e-3 and
1e-2). Discriminators return logits, so the papers' sigmoid and log live here, in the numerically
stable `binary_cross_entropy_with_logits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from upscaler.errors import UpscaleError

_CRITERIA = {"l1": F.l1_loss, "mse": F.mse_loss}


def _criterion(kind: str, what: str):
    if kind not in _CRITERIA:
        raise UpscaleError(f"unknown {what} criterion {kind!r}; known: {', '.join(_CRITERIA)}")
    return _CRITERIA[kind]


class PixelLoss(nn.Module):
    """Mean absolute (`l1`, ESRGAN) or squared (`mse`, SRResNet) difference of SR and HR pixels."""

    def __init__(self, kind: Literal["l1", "mse"] = "l1") -> None:
        super().__init__()
        self.kind = kind
        self.criterion = _criterion(kind, "pixel loss")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.criterion(sr, hr)


class PerceptualLoss(nn.Module):
    """The difference of VGG features of SR and HR, both multiplied by `feature_scale` first.

    SRGAN's VGG54: relu5_4 features, `mse`, feature_scale 1 / 12.75. ESRGAN's: conv5_4 before the
    activation, `l1`, feature_scale 1. `vgg` is frozen (see `upscaler.models.vgg`); HR features are
    computed without a graph, and gradients reach `sr` only.
    """

    def __init__(
        self,
        vgg: nn.Module,
        criterion: Literal["l1", "mse"] = "l1",
        feature_scale: float = 1.0,
        layer_weights: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.vgg = vgg
        self.kind = criterion
        self.criterion = _criterion(criterion, "perceptual loss")
        self.feature_scale = feature_scale
        self.layer_weights = tuple(layer_weights)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_features = self.vgg(sr)
        with torch.no_grad():
            hr_features = self.vgg(hr)
        if isinstance(sr_features, torch.Tensor):
            return self.criterion(sr_features * self.feature_scale, hr_features * self.feature_scale)
        # several layers (Real-ESRGAN's form): a weighted sum of each layer's difference
        weights = self.layer_weights or (1.0,) * len(sr_features)
        return sum(
            weight * self.criterion(a * self.feature_scale, b * self.feature_scale)
            for weight, a, b in zip(weights, sr_features, hr_features, strict=True)
        )


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


class GANLoss:
    """Adversarial losses on discriminator logits of real (HR) and fake (SR) batches.

    `vanilla` (SRGAN): the generator minimises -log D(G(lr)); the discriminator
    -log D(hr) - log(1 - D(G(lr))). `ragan` (ESRGAN, relativistic average): with
    D_Ra(a, b) = sigmoid(C(a) - mean C(b)), the discriminator minimises
    (-log D_Ra(hr, sr) - log(1 - D_Ra(sr, hr))) / 2 and the generator the same with real and fake
    swapped, as in ESRGAN's code. Each term is a mean over the batch.

    `generator` detaches the real logits: to the generator they are constants. `discriminator` takes
    the logits as given; pass the discriminator's logits of a detached SR batch so that its step
    leaves the generator alone.
    """

    KINDS = ("vanilla", "ragan")

    def __init__(self, kind: Literal["vanilla", "ragan"] = "vanilla") -> None:
        if kind not in self.KINDS:
            raise UpscaleError(f"unknown GAN loss {kind!r}; known: {', '.join(self.KINDS)}")
        self.kind = kind

    def generator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "vanilla":
            return _bce(fake_logits, real=True)
        real_logits = real_logits.detach()
        return (
            _bce(real_logits - fake_logits.mean(), real=False)
            + _bce(fake_logits - real_logits.mean(), real=True)
        ) / 2

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "vanilla":
            return _bce(real_logits, real=True) + _bce(fake_logits, real=False)
        return (
            _bce(real_logits - fake_logits.mean(), real=True)
            + _bce(fake_logits - real_logits.mean(), real=False)
        ) / 2
