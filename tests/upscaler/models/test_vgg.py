"""VGG19 features: torchvision's layout, loading its weights files, layer choice, and finding the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.vgg import (
    CAFFE_GAIN,
    CONV_INDEX,
    KERAS_VGG19_FILE,
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
    with pytest.raises(ModelError, match=r"vgg16.pth is not VGG19 weights: it lacks features\.30\.weight"):
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
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path / "ours"))
    with pytest.raises(ModelError) as missing:
        find_vgg_weights(None)
    assert "needs ImageNet VGG19 weights" in missing.value.message
    expected = tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILE
    assert str(expected) in missing.value.hint and "--vgg-weights FILE" in missing.value.hint
    assert "upscale weights install vgg19" in missing.value.hint

    expected.parent.mkdir(parents=True)
    torch.save(torchvision_state_dict(), expected)
    assert find_vgg_weights(None) == expected

    explicit = tmp_path / "mine.safetensors"
    save_file(torchvision_state_dict(), str(explicit))
    assert find_vgg_weights(explicit) == explicit
    with pytest.raises(ModelError, match="no such VGG19 weights file"):
        find_vgg_weights(tmp_path / "absent.pth")


def test_the_installed_keras_file_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path / "ours"))
    hub = tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILE
    hub.parent.mkdir(parents=True)
    torch.save(torchvision_state_dict(), hub)
    keras = write_keras_file(tmp_path / "ours" / KERAS_VGG19_FILE)
    assert find_vgg_weights(None) == keras


# ----------------------------------------------------------------------------- Keras's .h5 (Caffe's input)

KERAS_WIDTHS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def write_keras_file(path: Path, seed: int = 0, skip: str = "", bad_shape: str = "") -> Path:
    """A random VGG19 in the layout of Keras's notop .h5: a group per layer, `weight_names` attributes,
    HWIO kernels; `skip` leaves a layer out and `bad_shape` gives one a wrong kernel."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        names = []
        channels = 3
        for block, widths in enumerate(KERAS_WIDTHS, start=1):
            for number, width in enumerate(widths, start=1):
                name = f"block{block}_conv{number}"
                names.append(name)
                if name == skip:
                    channels = width
                    continue
                group = handle.create_group(name)
                shape = (3, 3, channels, width) if name != bad_shape else (3, 3, channels + 1, width)
                group.attrs["weight_names"] = [f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()]
                group[f"{name}_W_1:0"] = (rng.standard_normal(shape) * 0.02).astype(np.float32)
                group[f"{name}_b_1:0"] = (rng.standard_normal(width) * 0.1).astype(np.float32)
                channels = width
            names.append(f"block{block}_pool")
            handle.create_group(f"block{block}_pool").attrs["weight_names"] = np.zeros(0)
        handle.attrs["layer_names"] = [name.encode() for name in names]
    return path


def numpy_conv(image: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 3x3 'same' convolution of a C x H x W image with an HWIO kernel, written out in numpy."""
    channels, height, width = image.shape
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((kernel.shape[3], height, width), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("chw,co->ohw", padded[:, dy : dy + height, dx : dx + width], kernel[dy, dx])
    return out + bias[:, None, None]


def test_keras_weights_use_caffes_convention_exactly(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = write_keras_file(tmp_path / "vgg19.h5")
    vgg = load_vgg19_features(path, "conv1_2", before_activation=True)
    assert vgg.convention == "caffe"
    rgb = np.random.default_rng(1).random((3, 12, 10)).astype(np.float32)
    with h5py.File(path) as handle:
        k1, b1 = (np.asarray(handle["block1_conv1"][n]) for n in ("block1_conv1_W_1:0", "block1_conv1_b_1:0"))
        k2, b2 = (np.asarray(handle["block1_conv2"][n]) for n in ("block1_conv2_W_1:0", "block1_conv2_b_1:0"))
    # Caffe's input: BGR, 0-255, minus the per-channel means (B, G, R), no std
    bgr = rgb[::-1].astype(np.float64) * 255 - np.array([103.939, 116.779, 123.68])[:, None, None]
    expected = numpy_conv(np.maximum(numpy_conv(bgr, k1, b1), 0), k2, b2) * CAFFE_GAIN
    with torch.no_grad():
        got = vgg(torch.from_numpy(rgb)[None])[0].numpy()
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


def test_the_convention_comes_from_the_content_not_the_name(tmp_path: Path) -> None:
    keras = write_keras_file(tmp_path / "renamed.pth")
    assert load_vgg19_features(keras, "conv2_1").convention == "caffe"
    torchvision = tmp_path / "renamed.h5"
    torch.save(torchvision_state_dict(), torchvision)
    assert load_vgg19_features(torchvision, "conv2_1").convention == "torchvision"


def test_bad_keras_files_fail_with_one_line_and_the_command_to_run(tmp_path: Path) -> None:
    whole = write_keras_file(tmp_path / "whole.h5").read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(whole[: len(whole) // 2])
    cases = {
        truncated: "not a readable Keras VGG19 weights file",
        write_keras_file(tmp_path / "short.h5", skip="block5_conv4"): "it has no layer block5_conv4",
        write_keras_file(tmp_path / "shape.h5", bad_shape="block3_conv2"): "block3_conv2 has kernel shape",
    }
    for path, message in cases.items():
        with pytest.raises(ModelError, match=message) as error:
            load_vgg19_features(path)
        assert "\n" not in error.value.message
        assert "upscale weights install vgg19" in error.value.hint


def test_without_h5py_a_keras_file_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = write_keras_file(tmp_path / "vgg19.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ModelError, match="needs the h5py package") as error:
        load_vgg19_features(path)
    assert "pip install h5py" in error.value.hint


@pytest.mark.slow
def test_the_real_keras_file_sees_imagenet_features() -> None:
    """Keras's genuine file (installed by `upscale weights install vgg19`): a natural image's conv5_4
    features differ from those of the same image in the wrong channel order, which random weights would
    not distinguish as strongly."""
    from tests.conftest import REAL_WEIGHTS_DIR

    path = REAL_WEIGHTS_DIR / KERAS_VGG19_FILE
    if not path.is_file():
        pytest.skip(f"needs Keras's VGG19 file at {path} (upscale weights install vgg19)")
    vgg = load_vgg19_features(path, "conv1_1", before_activation=True)
    assert vgg.convention == "caffe"
    # conv1_1 of ImageNet VGG19 holds colour-opponent filters: RGB and BGR inputs differ
    rgb = torch.zeros(1, 3, 8, 8)
    rgb[:, 0] = 1.0
    with torch.no_grad():
        red, blue = vgg(rgb), vgg(rgb.flip(1))
    assert (red - blue).abs().mean() > 1.0


def test_several_layers_come_out_together_as_each_alone() -> None:
    state = torchvision_state_dict()
    both = VGG19Features("conv2_2,conv1_2", before_activation=True)
    both.load_state_dict({k: v for k, v in state.items() if k in both.state_dict()})
    rgb = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        shallow, deep = both(rgb)
    for layer, got in (("conv1_2", shallow), ("conv2_2", deep)):
        alone = VGG19Features(layer, before_activation=True)
        alone.load_state_dict({k: v for k, v in state.items() if k in alone.state_dict()})
        with torch.no_grad():
            assert torch.allclose(alone(rgb), got)
    assert (shallow < 0).any()  # before the ReLU, and not changed in place by the next one
