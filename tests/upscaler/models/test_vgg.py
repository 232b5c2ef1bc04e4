"""VGG19 features: torchvision's layout, loading its weights files, layer choice, and finding the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.vgg import (
    CONV_INDEX,
    VGG19_FILE,
    VGG19Features,
    feature_index,
    find_vgg_weights,
    load_vgg19_features,
)

# torchvision's vgg19().features, written out: conv indices and output channels.
TORCHVISION_CONVS = {
    0: 64, 2: 64, 5: 128, 7: 128, 10: 256, 12: 256, 14: 256, 16: 256,
    19: 512, 21: 512, 23: 512, 25: 512, 28: 512, 30: 512, 32: 512, 34: 512,
}  # fmt: skip
TORCHVISION_POOLS = (4, 9, 18, 27, 36)


def torchvision_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the layout of torchvision's VGG19 file, classifier included."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    channels = 3
    for index, width in TORCHVISION_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=generator) * 0.05
        state[f"features.{index}.bias"] = torch.randn(width, generator=generator) * 0.01
        channels = width
    state["classifier.0.weight"] = torch.randn(16, 8, generator=generator)
    state["classifier.0.bias"] = torch.zeros(16)
    state["classifier.6.weight"] = torch.randn(10, 16, generator=generator)
    return state


def test_layer_indices_are_torchvisions() -> None:
    assert {index for index in CONV_INDEX.values()} == set(TORCHVISION_CONVS)
    assert feature_index("conv5_4", before_activation=True) == 34
    assert feature_index("conv5_4", before_activation=False) == 35
    full = VGG19Features("conv5_4", before_activation=False).features
    for index, width in TORCHVISION_CONVS.items():
        assert isinstance(full[index], nn.Conv2d) and full[index].out_channels == width
        assert isinstance(full[index + 1], nn.ReLU)
    assert all(isinstance(full[index], nn.MaxPool2d) for index in TORCHVISION_POOLS[:4])


def test_stack_ends_at_the_chosen_output() -> None:
    before = VGG19Features("conv5_4", before_activation=True)
    after = VGG19Features("conv5_4", before_activation=False)
    assert len(before.features) == 35 and isinstance(before.features[-1], nn.Conv2d)
    assert len(after.features) == 36 and isinstance(after.features[-1], nn.ReLU)
    assert len(VGG19Features("conv2_2", before_activation=True).features) == 8


def test_unknown_layer_lists_the_known() -> None:
    with pytest.raises(ModelError, match="known: conv1_1"):
        VGG19Features("relu5_4")


def test_frozen_and_in_eval_mode() -> None:
    vgg = VGG19Features("conv1_2")
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())


def test_state_dict_is_torchvisions_features_only() -> None:
    keys = set(VGG19Features("conv5_4").state_dict())
    assert keys == {f"features.{i}.{kind}" for i in TORCHVISION_CONVS for kind in ("weight", "bias")}


def reference_features(state: dict[str, torch.Tensor], rgb: torch.Tensor, last: int) -> torch.Tensor:
    """torchvision's forward pass written out with functional ops: normalise, conv / relu / pool."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (rgb - mean) / std
    for index in range(last + 1):
        if index in TORCHVISION_CONVS:
            x = nn.functional.conv2d(
                x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1
            )
        elif index in TORCHVISION_POOLS:
            x = nn.functional.max_pool2d(x, 2)
        else:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize(("before", "last"), [(True, 34), (False, 35)])
def test_loads_torchvision_files_and_selects_the_layer(
    tmp_path: Path, suffix: str, before: bool, last: int
) -> None:
    state = torchvision_state_dict()
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    vgg = load_vgg19_features(path, "conv5_4", before_activation=before)
    assert not any(p.requires_grad for p in vgg.parameters())
    rgb = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = vgg(rgb)
    assert out.shape == (1, 512, 2, 2)
    assert torch.allclose(out, reference_features(state, rgb, last), atol=1e-5)
    if before:
        assert (out < 0).any()  # conv5_4 before the ReLU keeps negative responses
    else:
        assert (out >= 0).all()


def test_wrong_files_fail_clearly(tmp_path: Path) -> None:
    vgg16_like = {k: v for k, v in torchvision_state_dict().items() if not k.startswith("features.3")}
    torch.save(vgg16_like, tmp_path / "vgg16.pth")
    with pytest.raises(ModelError, match=r"not torchvision VGG19 weights: it lacks features\.30\.weight"):
        load_vgg19_features(tmp_path / "vgg16.pth")

    wrong_shape = torchvision_state_dict()
    wrong_shape["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(wrong_shape, tmp_path / "gray.pth")
    with pytest.raises(ModelError, match=r"features\.0\.weight has shape \(64, 1, 3, 3\)"):
        load_vgg19_features(tmp_path / "gray.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a valid PyTorch checkpoint"):
        load_vgg19_features(tmp_path / "junk.pth")

    with pytest.raises(ModelError, match="no such VGG19 weights file"):
        load_vgg19_features(tmp_path / "absent.pth")


def test_find_vgg_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError) as missing:
        find_vgg_weights(None)
    assert "needs ImageNet VGG19 weights" in missing.value.message
    expected = tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILE
    assert str(expected) in missing.value.hint and "--vgg-weights FILE" in missing.value.hint

    expected.parent.mkdir(parents=True)
    torch.save(torchvision_state_dict(), expected)
    assert find_vgg_weights(None) == expected

    explicit = tmp_path / "mine.safetensors"
    save_file(torchvision_state_dict(), str(explicit))
    assert find_vgg_weights(explicit) == explicit
    with pytest.raises(ModelError, match="no such VGG19 weights file"):
        find_vgg_weights(tmp_path / "absent.pth")
