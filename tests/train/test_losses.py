"""The papers' losses against formulas written out by hand on fixed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import GANLoss, PerceptualLoss, PixelLoss
from upscaler.errors import UpscaleError
from upscaler.models.vgg import VGG19Features

REAL = torch.tensor([[2.0], [0.5], [-1.0]])
FAKE = torch.tensor([[-0.5], [1.0], [0.0]])


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_pixel_losses() -> None:
    sr = torch.tensor([0.0, 0.5, 1.0])
    hr = torch.tensor([0.25, 0.5, 0.5])
    assert PixelLoss("l1")(sr, hr).item() == pytest.approx((0.25 + 0 + 0.5) / 3)
    assert PixelLoss("mse")(sr, hr).item() == pytest.approx((0.0625 + 0 + 0.25) / 3)


def test_vanilla_by_hand() -> None:
    real, fake = REAL.flatten().tolist(), FAKE.flatten().tolist()
    loss = GANLoss("vanilla")
    # SRGAN: the generator minimises -log D(G(lr)).
    assert loss.generator(REAL, FAKE).item() == pytest.approx(mean([-math.log(sigmoid(f)) for f in fake]))
    expected_d = mean([-math.log(sigmoid(r)) for r in real]) + mean([-math.log(1 - sigmoid(f)) for f in fake])
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(expected_d)


def test_ragan_by_hand() -> None:
    real, fake = REAL.flatten().tolist(), FAKE.flatten().tolist()
    mean_real, mean_fake = mean(real), mean(fake)
    loss = GANLoss("ragan")
    # D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)]), ESRGAN eq. 1-2.
    expected_d = (
        mean([-math.log(sigmoid(r - mean_fake)) for r in real])
        + mean([-math.log(1 - sigmoid(f - mean_real)) for f in fake])
    ) / 2
    expected_g = (
        mean([-math.log(1 - sigmoid(r - mean_fake)) for r in real])
        + mean([-math.log(sigmoid(f - mean_real)) for f in fake])
    ) / 2
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(expected_d)
    assert loss.generator(REAL, FAKE).item() == pytest.approx(expected_g)


def test_extreme_logits_stay_finite() -> None:
    big = torch.tensor([[80.0], [-80.0]])
    for kind in GANLoss.KINDS:
        assert torch.isfinite(GANLoss(kind).generator(big, -big))
        assert torch.isfinite(GANLoss(kind).discriminator(big, -big))


def test_ragan_generator_treats_real_logits_as_constants() -> None:
    real = REAL.clone().requires_grad_(True)
    fake = FAKE.clone().requires_grad_(True)
    GANLoss("ragan").generator(real, fake).backward()
    assert real.grad is None
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_a_better_discriminator_has_a_lower_loss() -> None:
    for kind in GANLoss.KINDS:
        loss = GANLoss(kind)
        confident = loss.discriminator(torch.full((4, 1), 3.0), torch.full((4, 1), -3.0))
        fooled = loss.discriminator(torch.full((4, 1), -3.0), torch.full((4, 1), 3.0))
        assert confident < fooled
        assert loss.generator(torch.full((4, 1), 3.0), torch.full((4, 1), -3.0)) > loss.generator(
            torch.full((4, 1), -3.0), torch.full((4, 1), 3.0)
        )


def tiny_vgg(before_activation: bool) -> VGG19Features:
    torch.manual_seed(0)
    vgg = VGG19Features("conv2_2", before_activation=before_activation)
    for module in vgg.features:
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.1)
    return vgg


@pytest.mark.parametrize("criterion", ["l1", "mse"])
def test_perceptual_loss_compares_scaled_features(criterion: str) -> None:
    vgg = tiny_vgg(before_activation=False)
    sr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    scale = 1 / 12.75
    difference = vgg(sr) * scale - vgg(hr) * scale
    expected = difference.abs().mean() if criterion == "l1" else (difference**2).mean()
    loss = PerceptualLoss(vgg, criterion, feature_scale=scale)(sr, hr)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert PerceptualLoss(vgg, criterion)(hr, hr).item() == 0.0


def test_perceptual_gradients_reach_sr_but_not_vgg() -> None:
    vgg = tiny_vgg(before_activation=True)
    loss_fn = PerceptualLoss(vgg, "l1")
    loss_fn.train()  # a training loop does this; the VGG must stay frozen and in eval mode
    assert not vgg.training
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    hr = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss_fn(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())


def test_unknown_kinds_name_the_known_ones() -> None:
    with pytest.raises(UpscaleError, match="known: vanilla, ragan"):
        GANLoss("wgan")  # type: ignore[arg-type]
    with pytest.raises(UpscaleError, match="known: l1, mse"):
        PixelLoss("huber")  # type: ignore[arg-type]
    with pytest.raises(UpscaleError, match="known: l1, mse"):
        PerceptualLoss(tiny_vgg(True), "charbonnier")  # type: ignore[arg-type]


def test_a_perceptual_loss_over_several_layers_weighs_each() -> None:
    from upscaler.models.vgg import VGG19Features

    torch.manual_seed(0)
    vgg = VGG19Features("conv1_2,conv2_2")
    sr, hr = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    loss = PerceptualLoss(vgg, "l1", 1.0, (0.1, 2.0))(sr, hr)
    with torch.no_grad():
        (a1, a2), (b1, b2) = vgg(sr), vgg(hr)
    expected = 0.1 * torch.nn.functional.l1_loss(a1, b1) + 2.0 * torch.nn.functional.l1_loss(a2, b2)
    assert torch.allclose(loss, expected)
