"""One RRDBNet saved in BasicSR's, the original ESRGAN's and mmsr's key layouts loads the same each time."""

from __future__ import annotations

import re

import pytest
import torch

from upscaler.errors import ModelError
from upscaler.models import (
    RRDBNet,
    convert_esrgan_state_dict,
    convert_mmsr_state_dict,
    load_model,
)

CONFIG = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 8, "num_block": 3, "num_grow_ch": 4}
_RDB = re.compile(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)")
_PLUS = re.compile(r"body\.(\d+)\.rdb(\d)\.conv1x1\.weight")


def to_esrgan(state: dict[str, torch.Tensor], num_block: int, stages: int = 2) -> dict[str, torch.Tensor]:
    """BasicSR keys -> the original ESRGAN release's flat `model.N` Sequential: after the trunk, each
    upsampling stage is (upsample, conv, activation), then conv, activation, conv."""
    tail = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}"}
    tail |= {f"conv_up{stage}": f"model.{3 * stage}" for stage in range(1, stages + 1)}
    tail |= {"conv_hr": f"model.{3 * stages + 2}", "conv_last": f"model.{3 * stages + 4}"}
    out = {}
    for key, value in state.items():
        if match := _RDB.fullmatch(key):
            block, rdb, conv, kind = match.groups()
            out[f"model.1.sub.{block}.RDB{rdb}.conv{conv}.0.{kind}"] = value
        elif match := _PLUS.fullmatch(key):
            block, rdb = match.groups()
            out[f"model.1.sub.{block}.RDB{rdb}.conv1x1.weight"] = value
        else:
            name, kind = key.rsplit(".", 1)
            out[f"{tail[name]}.{kind}"] = value
    return out


def to_mmsr(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR keys -> mmsr's (and the later ESRGAN repository's) RRDBNet."""
    names = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_up1": "upconv1"}
    names |= {"conv_up2": "upconv2", "conv_hr": "HRconv", "conv_last": "conv_last"}
    out = {}
    for key, value in state.items():
        if match := _RDB.fullmatch(key):
            block, rdb, conv, kind = match.groups()
            out[f"RRDB_trunk.{block}.RDB{rdb}.conv{conv}.{kind}"] = value
        else:
            name, kind = key.rsplit(".", 1)
            out[f"{names[name]}.{kind}"] = value
    return out


@pytest.fixture
def net(randomize) -> RRDBNet:
    return randomize(RRDBNet(**CONFIG))


def test_the_inverse_converters_write_the_published_key_names(net):
    esrgan = to_esrgan(net.state_dict(), CONFIG["num_block"])
    assert {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.3.weight"} <= set(esrgan)
    assert {"model.3.weight", "model.6.weight", "model.8.weight", "model.10.bias"} <= set(esrgan)
    mmsr = to_mmsr(net.state_dict())
    assert {"RRDB_trunk.2.RDB3.conv5.weight", "trunk_conv.weight", "upconv1.weight", "HRconv.bias"} <= set(
        mmsr
    )


def test_converters_restore_basicsr_keys(net):
    state = net.state_dict()
    assert convert_esrgan_state_dict(to_esrgan(state, CONFIG["num_block"])).keys() == state.keys()
    assert convert_mmsr_state_dict(to_mmsr(state)).keys() == state.keys()


@pytest.mark.parametrize("layout", ["basicsr", "esrgan", "mmsr"])
def test_every_layout_loads_to_the_same_network(layout, net, tmp_path):
    state = net.state_dict()
    saved = {"basicsr": state, "esrgan": to_esrgan(state, CONFIG["num_block"]), "mmsr": to_mmsr(state)}[
        layout
    ]
    torch.save(saved, tmp_path / "net.pth")

    loaded = load_model(tmp_path / "net.pth")

    assert loaded.info.arch == "rrdbnet"
    assert loaded.info.config == CONFIG
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net(x))


def test_original_layout_with_a_data_parallel_prefix(net, tmp_path):
    saved = {f"module.{k}": v for k, v in to_esrgan(net.state_dict(), CONFIG["num_block"]).items()}
    torch.save(saved, tmp_path / "net.pth")
    assert load_model(tmp_path / "net.pth").info.config == CONFIG


@pytest.mark.parametrize(("scale", "stages"), [(1, 0), (2, 1), (8, 3)])
def test_original_layout_x1_x2_x8_load_natively(scale: int, stages: int, randomize, tmp_path) -> None:
    # the original release's other scales upsample once per factor 2 and never unshuffle: not
    # Real-ESRGAN's x1/x2, and loaded as what they are
    plain = randomize(RRDBNet(**{**CONFIG, "scale": scale}, unshuffle=False))
    torch.save(to_esrgan(plain.state_dict(), CONFIG["num_block"], stages), tmp_path / f"x{scale}.pth")
    loaded = load_model(tmp_path / f"x{scale}.pth")
    assert loaded.info.scale == scale
    assert loaded.info.config == {**CONFIG, "scale": scale, "unshuffle": False}
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        expected = plain(x)
        assert expected.shape == (1, 3, 9 * scale, 11 * scale)
        assert torch.equal(loaded.module(x), expected)
    assert loaded.info.requirement.multiple_of == 1  # nothing is unshuffled: any size goes


def test_at_x4_the_two_forms_are_one_network(net) -> None:
    plain = RRDBNet(**CONFIG, unshuffle=False)
    plain.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain(x), net(x))
    assert "unshuffle" not in net.config and plain.config["unshuffle"] is False


def esrgan_plus_block(block, x: torch.Tensor) -> torch.Tensor:
    """ESRGAN+'s dense block written out from its paper's equations, with F's ops: the reference."""
    act = torch.nn.functional.leaky_relu
    conv = torch.nn.functional.conv2d
    x1 = act(conv(x, block.conv1.weight, block.conv1.bias, padding=1), 0.2)
    x2 = act(conv(torch.cat((x, x1), 1), block.conv2.weight, block.conv2.bias, padding=1), 0.2)
    x2 = x2 + conv(x, block.conv1x1.weight)
    x3 = act(conv(torch.cat((x, x1, x2), 1), block.conv3.weight, block.conv3.bias, padding=1), 0.2)
    x4 = act(conv(torch.cat((x, x1, x2, x3), 1), block.conv4.weight, block.conv4.bias, padding=1), 0.2)
    x4 = x4 + x2
    x5 = conv(torch.cat((x, x1, x2, x3, x4), 1), block.conv5.weight, block.conv5.bias, padding=1)
    return x5 * 0.2 + x


@pytest.mark.parametrize("scale", [2, 4])
def test_esrgan_plus_in_the_original_layout_loads_and_matches_its_equations(scale, randomize, tmp_path):
    plus = randomize(RRDBNet(**{**CONFIG, "scale": scale}, unshuffle=False, plus=True))
    block = plus.body[0].rdb1
    x = torch.rand(1, CONFIG["num_feat"], 6, 7)
    with torch.no_grad():
        assert torch.allclose(block(x), esrgan_plus_block(block, x), atol=1e-6)
    saved = to_esrgan(plus.state_dict(), CONFIG["num_block"], {2: 1, 4: 2}[scale])
    assert "model.1.sub.0.RDB1.conv1x1.weight" in saved
    torch.save(saved, tmp_path / "nESRGANplus.pth")
    loaded = load_model(tmp_path / "nESRGANplus.pth")
    assert loaded.info.config["plus"] is True and loaded.info.scale == scale
    image = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(loaded.module(image), plus(image))


def test_original_layout_with_four_stages_is_refused_by_name(net, tmp_path):
    saved = to_esrgan(net.state_dict(), CONFIG["num_block"])
    saved |= {"model.20.weight": saved["model.3.weight"], "model.22.weight": saved["model.6.weight"]}
    torch.save(saved, tmp_path / "x16.pth")
    with pytest.raises(ModelError, match="4 upsampling stages are not supported"):
        load_model(tmp_path / "x16.pth")


def test_original_layout_in_the_legacy_serialization_loads(net, tmp_path):
    # the original release predates PyTorch's zip format
    saved = to_esrgan(net.state_dict(), CONFIG["num_block"])
    torch.save(saved, tmp_path / "RRDB_ESRGAN_x4.pth", _use_new_zipfile_serialization=False)
    loaded = load_model(tmp_path / "RRDB_ESRGAN_x4.pth")
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net(x))
