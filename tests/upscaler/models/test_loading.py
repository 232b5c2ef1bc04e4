"""Loading ids and files: wrappers, metadata, bundled weights, and every error a person can act on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from upscaler.errors import ModelError, OutputError
from upscaler.models import (
    build_model,
    catalog,
    find_model,
    list_models,
    load_model,
    read_weights,
    registry,
    save_weights,
)

COMPACT = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 2, "upscale": 2, "act_type": "prelu"}
RRDB = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}


@pytest.fixture
def compact(randomize):
    return randomize(build_model("compact", COMPACT))


@pytest.fixture
def no_bundled_weights(tmp_path, monkeypatch) -> Path:
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(catalog, "WEIGHTS_DIR", weights)
    return weights


def _same_output(loaded, net) -> bool:
    x = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return torch.equal(loaded.module(x), net(x))


# --- wrappers, prefixes, precision -----------------------------------------------------------------


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "state_dict", "model"])
def test_wrapped_state_dicts_unwrap(wrapper, compact, tmp_path):
    torch.save({wrapper: compact.state_dict(), "iter": 1000}, tmp_path / "net.pth")
    assert _same_output(load_model(tmp_path / "net.pth"), compact)


def test_params_ema_wins_over_params(compact, tmp_path, randomize):
    other = randomize(build_model("compact", COMPACT), seed=9)
    torch.save({"params": other.state_dict(), "params_ema": compact.state_dict()}, tmp_path / "net.pth")
    assert _same_output(load_model(tmp_path / "net.pth"), compact)


def test_nested_wrappers_unwrap(compact, tmp_path):
    torch.save({"state_dict": {"model": compact.state_dict()}, "epoch": 3}, tmp_path / "net.ckpt")
    assert _same_output(load_model(tmp_path / "net.ckpt"), compact)


def test_module_prefix_is_stripped(compact, tmp_path):
    torch.save({f"module.{k}": v for k, v in compact.state_dict().items()}, tmp_path / "net.pt")
    assert _same_output(load_model(tmp_path / "net.pt"), compact)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_become_float32(dtype, compact, tmp_path):
    torch.save({k: v.to(dtype) for k, v in compact.state_dict().items()}, tmp_path / "half.pth")
    loaded = load_model(tmp_path / "half.pth")
    assert {parameter.dtype for parameter in loaded.module.parameters()} == {torch.float32}
    state, _ = read_weights(tmp_path / "half.pth")
    assert all(value.dtype == torch.float32 for value in state.values())


def test_srresnet_with_batch_norm_loads_folded(randomize, tmp_path):
    config = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 2, "scale": 4, "batch_norm": True}
    net = randomize(build_model("srresnet", config))
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "srgan.pth")  # other tools may leave the BN counter out
    loaded = load_model(tmp_path / "srgan.pth")
    assert loaded.info.config["batch_norm"] is False
    assert not any(isinstance(layer, torch.nn.BatchNorm2d) for layer in loaded.module.modules())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), net(x), atol=1e-5, rtol=0)


# --- metadata and save_weights -----------------------------------------------------------------------


def test_save_weights_records_arch_and_config(compact, tmp_path):
    path = save_weights(compact, tmp_path / "net.safetensors", "compact", COMPACT)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["arch"] == "compact"
    assert json.loads(metadata["config"]) == COMPACT
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]  # no temporary file left


def test_metadata_wins_over_detection(tmp_path, randomize):
    config = {**COMPACT, "act_type": "leakyrelu"}
    net = randomize(build_model("compact", config))
    save_weights(net.state_dict(), tmp_path / "net.safetensors", "compact", config)
    loaded = load_model(tmp_path / "net.safetensors")
    assert isinstance(loaded.module.body[1], torch.nn.LeakyReLU)
    x = torch.rand(1, 3, 5, 5) - 0.5
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net(x))


def test_save_weights_refuses_weights_that_do_not_fit(compact, tmp_path):
    with pytest.raises(ModelError, match="do not fit a 'compact' network") as error:
        save_weights(compact, tmp_path / "net.safetensors", "compact", {**COMPACT, "num_feat": 16})
    assert "body.0.weight is (8, 3, 3, 3), expected (16, 3, 3, 3)" in error.value.message
    assert not any(tmp_path.iterdir())


def test_save_weights_into_a_missing_folder_is_an_output_error(compact, tmp_path):
    with pytest.raises(OutputError, match="cannot write weights"):
        save_weights(compact, tmp_path / "missing" / "net.safetensors", "compact", COMPACT)


def test_save_weights_replaces_an_existing_file(compact, tmp_path, randomize):
    path = tmp_path / "net.safetensors"
    save_weights(randomize(build_model("compact", COMPACT), seed=5), path, "compact", COMPACT)
    save_weights(compact, path, "compact", COMPACT)
    assert _same_output(load_model(path), compact)


def test_save_weights_unknown_arch(compact, tmp_path):
    with pytest.raises(ModelError, match="unknown architecture 'vdsr'; known: srresnet, msrresnet"):
        save_weights(compact, tmp_path / "net.safetensors", "vdsr", COMPACT)


# --- ids and bundled weights -------------------------------------------------------------------------


def test_unknown_id_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as error:
        load_model("esrgan-plus")
    message = error.value.message
    assert "'esrgan-plus' is neither a known model id nor an existing file" in message
    assert "known ids: rrdb-psnr, srresnet, compact, esrgan, srgan" in message
    assert error.value.hint


def test_missing_file_path_is_named(tmp_path):
    with pytest.raises(ModelError, match="no such weights file: .*nothing.pth") as raised:
        load_model(tmp_path / "nothing.pth")
    assert "esrgan" in raised.value.hint


def test_a_word_that_is_no_id_nor_file_lists_the_ids():
    with pytest.raises(
        ModelError, match="neither a known model id nor an existing file; known ids: rrdb-psnr"
    ):
        load_model("realesrgan")


def test_a_folder_is_not_a_weights_file(tmp_path):
    with pytest.raises(ModelError, match="is not a file"):
        load_model(tmp_path)


def test_a_bundled_id_whose_file_is_gone(no_bundled_weights):
    with pytest.raises(ModelError) as error:
        load_model("compact")
    expected = f"the bundled weights of model 'compact' are missing ({no_bundled_weights / 'compact'}"
    assert error.value.message == expected + ".safetensors)"
    assert error.value.hint.startswith("reinstall upscaler, or pass a weights file")


def test_an_id_without_weights_says_why_and_what_to_use():
    with pytest.raises(ModelError) as error:
        load_model("esrgan-23x64")
    assert error.value.message.startswith("model 'esrgan-23x64' has no bundled weights: the paper's 23 x 64")
    assert error.value.hint.startswith("use --model esrgan (the same recipe at 6 blocks of 32 features")
    assert "upscale train --recipe esrgan --data HR_DIR" in error.value.hint
    assert find_model("esrgan").weights_present


def test_every_bundled_id_ships_weights_that_load_with_its_config():
    for entry in list_models():
        if entry.unbundled:
            assert not entry.weights_present and entry.unbundled_why and entry.hint
            continue
        loaded = load_model(entry.id)
        card = entry.card
        assert loaded.info.arch == entry.arch == card["arch"]
        assert card["config"] == entry.config
        assert loaded.info.scale == entry.scale == 4
        assert card["weights_sha256"] == hashlib.sha256(entry.weights.read_bytes()).hexdigest()
        assert json.dumps(card["evaluation"])  # figures recorded


def test_bundled_id_with_weights(no_bundled_weights, randomize):
    config = {**COMPACT, "upscale": 4}
    net = randomize(build_model("compact", config))
    save_weights(net, no_bundled_weights / "compact.safetensors", "compact", config)
    loaded = load_model("compact")
    assert loaded.name == "compact"
    assert loaded.source == no_bundled_weights / "compact.safetensors"
    assert _same_output(loaded, net)


def test_bundled_weights_of_the_wrong_architecture(no_bundled_weights, compact):
    save_weights(compact, no_bundled_weights / "rrdb-psnr.safetensors", "compact", COMPACT)
    with pytest.raises(ModelError, match="'rrdb-psnr' are a 'compact' network, expected 'rrdbnet'"):
        load_model("rrdb-psnr")


def test_list_models(no_bundled_weights):
    entries = {entry.id: entry for entry in list_models()}
    assert list(entries) == [
        "rrdb-psnr",
        "srresnet",
        "compact",
        "esrgan",
        "srgan",
        "realvideo",
        "esrgan-23x64",
    ]
    assert {entry.arch for entry in entries.values()} == {"srresnet", "rrdbnet", "compact"}
    assert all(
        entry.scale == 4 and not entry.weights_present and entry.description for entry in entries.values()
    )
    assert entries["esrgan"].weights == no_bundled_weights / "esrgan.safetensors"
    # the published counts of ESRGAN / RealESRGAN_x4plus and of realesr-animevideov3
    assert entries["esrgan-23x64"].parameters == 16_697_987
    assert entries["esrgan"].parameters == entries["rrdb-psnr"].parameters  # its GAN stage, same shape
    assert entries["esrgan"].psnr_model == "rrdb-psnr" and entries["srgan"].psnr_model == "srresnet"
    assert entries["compact"].parameters == 621_424


def test_default_hints():
    def info(arch, config):
        architecture = registry.ARCHITECTURES[arch]
        return architecture.overlap(config), architecture.requirement(config).multiple_of

    entries = {entry.id: entry for entry in list_models()}
    assert info("rrdbnet", entries["esrgan"].config) == (32, 1)
    assert info("srresnet", entries["srgan"].config) == (24, 1)
    assert info("compact", entries["compact"].config) == (16, 1)
    assert info("rrdbnet", {**entries["esrgan"].config, "scale": 2}) == (32, 2)
    assert info("rrdbnet", {**entries["esrgan"].config, "scale": 1}) == (32, 4)


# --- files that cannot be used ---------------------------------------------------------------------


def test_unknown_layout_names_the_keys(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2), "encoder.bias": torch.zeros(2)}, tmp_path / "odd.pth")
    with pytest.raises(ModelError) as error:
        load_model(tmp_path / "odd.pth")
    assert error.value.message == (
        "odd.pth: unrecognised network: 2 tensors, starting with encoder.weight, encoder.bias"
    )
    assert "RRDBNet" in error.value.hint


def test_wrong_shapes_are_named(randomize, tmp_path):
    state = randomize(build_model("rrdbnet", RRDB)).state_dict()
    state["body.1.rdb2.conv3.weight"] = torch.zeros(4, 7, 3, 3)
    del state["conv_hr.bias"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelError) as error:
        load_model(tmp_path / "bad.pth")
    message = error.value.message
    assert message.startswith("bad.pth: weights do not fit a 'rrdbnet' network with config")
    assert "body.1.rdb2.conv3.weight is (4, 7, 3, 3), expected (4, 16, 3, 3)" in message
    assert "missing: conv_hr.bias" in message


def test_compact_without_prelu_and_without_metadata_says_why(randomize, tmp_path):
    net = build_model("compact", {**COMPACT, "act_type": "relu"})
    torch.save(net.state_dict(), tmp_path / "relu.pth")
    with pytest.raises(ModelError, match="cannot tell which") as error:
        load_model(tmp_path / "relu.pth")
    assert "save_weights" in error.value.hint


class _RunsCode:
    """Unpickling this would call os.mkdir: exactly what weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_code_is_refused(compact, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"params": compact.state_dict(), "hook": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ModelError) as error:
        load_model(tmp_path / "evil.pth")
    assert error.value.message.startswith("refusing to load evil.pth: it holds pickled Python objects")
    assert "mkdir" in error.value.message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_raw_pickle_with_code_is_refused_in_one_line(compact, tmp_path, protocol, recwarn):
    import pickle

    marker = tmp_path / "ran"
    path = tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps({"params": {"w": 1}, "hook": _RunsCode(marker)}, protocol=protocol))
    with pytest.raises(ModelError) as error:
        load_model(path)
    assert error.value.message.startswith("refusing to load raw.pth: it holds pickled Python objects")
    assert "mkdir" in error.value.message and "weights_only" not in error.value.message
    assert "weights_only" not in (error.value.hint or "")
    assert not marker.exists()
    assert not [w for w in recwarn if "torch" in str(w.filename)]  # torch's UserWarning stays quiet


@pytest.mark.parametrize("name", ["junk.pth", "junk.safetensors", "junk.ckpt"])
def test_corrupt_files(name, tmp_path):
    (tmp_path / name).write_bytes(os.urandom(256))
    with pytest.raises(ModelError, match=f"cannot read weights file {name}: not a valid"):
        load_model(tmp_path / name)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files(suffix, compact, tmp_path):
    path = tmp_path / f"net{suffix}"
    if suffix == ".pth":
        torch.save(compact.state_dict(), path)
    else:
        safetensors.torch.save_file(compact.state_dict(), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_model(path)


def test_unknown_suffix(tmp_path):
    (tmp_path / "net.onnx").write_bytes(b"\0")
    with pytest.raises(ModelError, match="unknown suffix '.onnx'") as error:
        load_model(tmp_path / "net.onnx")
    assert ".safetensors" in error.value.hint


def test_a_bare_tensor_is_not_a_state_dict(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(ModelError, match="t.pth: holds a Tensor, not a state dict"):
        load_model(tmp_path / "t.pth")


def test_a_dict_without_tensors(tmp_path):
    torch.save({"params": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(ModelError, match="opt.pth: holds no tensors"):
        load_model(tmp_path / "opt.pth")


def test_metadata_of_another_tool_is_ignored(compact, tmp_path):
    metadata = {"arch": "RealESRGAN", "config": "not ours"}
    safetensors.torch.save_file(compact.state_dict(), str(tmp_path / "s.safetensors"), metadata=metadata)
    assert load_model(tmp_path / "s.safetensors").info.config == COMPACT


def test_metadata_config_that_is_not_json(compact, tmp_path):
    metadata = {"arch": "compact", "config": "{num_feat: 8"}
    safetensors.torch.save_file(compact.state_dict(), str(tmp_path / "s.safetensors"), metadata=metadata)
    with pytest.raises(ModelError, match="s.safetensors: its metadata holds a config that is not JSON"):
        load_model(tmp_path / "s.safetensors")


def test_metadata_config_that_cannot_build(compact, tmp_path):
    metadata = {"arch": "compact", "config": json.dumps({**COMPACT, "act_type": "gelu"})}
    safetensors.torch.save_file(compact.state_dict(), str(tmp_path / "s.safetensors"), metadata=metadata)
    with pytest.raises(ModelError, match="s.safetensors: cannot build a 'compact' network .*gelu"):
        load_model(tmp_path / "s.safetensors")


def test_digest_is_of_the_file_bytes(compact, tmp_path):
    path = save_weights(compact, tmp_path / "net.safetensors", "compact", COMPACT)
    assert load_model(path).digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_saved_weights_get_the_mode_of_any_new_file(tmp_path: Path) -> None:
    # A temporary from mkstemp is 0o600: renamed as it was, weights only their owner could read.
    config = COMPACT
    previous = os.umask(0o022)
    try:
        path = save_weights(build_model("compact", config), tmp_path / "w.safetensors", "compact", config)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_model_loaded_before_starts_without_torch(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import tiny_weights
    from upscaler.models import load_model

    weights = tiny_weights(tmp_path, "compact")
    first = load_model(weights)  # builds the network and keeps its info
    code = (
        "import sys\nfrom upscaler.models import load_model\n"
        f"model = load_model({str(weights)!r})\n"
        "print('torch' in sys.modules, model.info.scale, model.digest)\n"
        "model.module\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "4", first.digest, "True"]
