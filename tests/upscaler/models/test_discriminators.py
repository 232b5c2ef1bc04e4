"""The SRGAN and ESRGAN discriminators: shapes, logits, parameter counts, and the input size they need."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.discriminators import SRGANDiscriminator, VGGStyleDiscriminator


def conv(cin: int, cout: int, k: int, bias: bool) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(channels: int) -> int:
    return 2 * channels  # weight and bias; running statistics are buffers


def dense(fin: int, fout: int) -> int:
    return fin * fout + fout


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_srgan_counts_and_shapes() -> None:
    network = SRGANDiscriminator()
    # Figure 4 of the SRGAN paper: k3n64s1, then k3 n64/128/128/256/256/512/512 with BN, strides 2,1,2,...
    widths = [64, 64, 128, 128, 256, 256, 512, 512]
    expected = conv(3, 64, 3, bias=True)
    expected += sum(conv(a, b, 3, bias=False) + bn(b) for a, b in zip(widths[:-1], widths[1:], strict=True))
    expected += dense(6 * 6 * 512, 1024) + dense(1024, 1)
    assert expected == 23_563_649  # 18.9 M of them in the first dense layer
    assert count(network) == expected
    strides = [m.stride[0] for m in network.features if isinstance(m, nn.Conv2d)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 2]
    x = torch.rand(2, 3, 96, 96)
    assert network.features(x).shape == (2, 512, 6, 6)
    assert network(x).shape == (2, 1)


def test_vgg_style_counts_keys_and_shapes() -> None:
    network = VGGStyleDiscriminator()
    widths = [64, 128, 256, 512, 512]
    expected = conv(3, 64, 3, bias=True) + conv(64, 64, 4, bias=False) + bn(64)
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        expected += conv(a, b, 3, bias=False) + bn(b) + conv(b, b, 4, bias=False) + bn(b)
    expected += dense(512 * 4 * 4, 100) + dense(100, 1)
    assert expected == 14_499_401
    assert count(network) == expected
    keys = set(network.state_dict())
    # BasicSR's names, so its ESRGAN discriminator checkpoints load as they are.
    for key in ("conv0_0.weight", "conv0_0.bias", "conv0_1.weight", "bn0_1.running_var", "conv4_1.weight"):
        assert key in keys
    assert (
        {"linear1.weight", "linear2.bias"} <= keys
        and "conv0_1.bias" not in keys
        and "bn0_0.weight" not in keys
    )
    assert network(torch.rand(2, 3, 128, 128)).shape == (2, 1)


def test_vgg_style_256_has_a_sixth_stage() -> None:
    network = VGGStyleDiscriminator(input_size=256, num_feat=8)
    assert "conv5_1.weight" in network.state_dict()
    assert network(torch.rand(1, 3, 256, 256)).shape == (1, 1)


def test_logits_are_unbounded_not_probabilities() -> None:
    torch.manual_seed(0)
    network = SRGANDiscriminator(num_feat=8, input_size=32)
    with torch.no_grad():
        network.dense2.bias.fill_(5.0)
        assert (network.eval()(torch.rand(3, 3, 32, 32)) > 1).all()


@pytest.mark.parametrize(
    ("network", "size", "wrong"),
    [
        (SRGANDiscriminator(num_feat=8), 96, 128),
        (VGGStyleDiscriminator(num_feat=8), 128, 96),
    ],
)
def test_wrong_input_size_is_named(network: nn.Module, size: int, wrong: int) -> None:
    with pytest.raises(ModelError, match=f"built for {size} x {size} inputs, got {wrong} x {wrong}") as error:
        network(torch.rand(1, 3, wrong, wrong))
    assert "HR crop size" in error.value.hint


def test_sizes_they_cannot_be_built_for() -> None:
    with pytest.raises(ModelError, match="multiple of 16"):
        SRGANDiscriminator(input_size=100)
    for size in (192, 4, 100):
        with pytest.raises(ModelError, match="4 times a power of two, as 128 or 256"):
            VGGStyleDiscriminator(input_size=size)


def test_vgg_style_small_crops_for_quick_runs() -> None:
    network = VGGStyleDiscriminator(num_feat=4, input_size=32)
    assert network.num_stages == 3 and "conv2_1.weight" in network.state_dict()
    assert "conv3_0.weight" not in network.state_dict()
    assert network.linear1.in_features == 16 * 4 * 4
    assert network(torch.rand(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize(("arch", "size"), [("srgan", 32), ("vgg", 128)])
def test_both_train_on_a_few_steps(arch: str, size: int) -> None:
    # Gradients reach every parameter and the logits of two batches can be pushed apart.
    torch.manual_seed(0)
    network = (
        SRGANDiscriminator(num_feat=4, input_size=32)
        if arch == "srgan"
        else VGGStyleDiscriminator(num_feat=2)
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    real, fake = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size) * 0.2
    labels = torch.cat([torch.ones(2, 1), torch.zeros(2, 1)])
    for _ in range(8):
        loss = nn.functional.binary_cross_entropy_with_logits(network(torch.cat([real, fake])), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())
    assert loss.item() < 0.5
