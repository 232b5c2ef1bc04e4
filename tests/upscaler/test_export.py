"""ONNX export: every architecture, checked graph, dynamic axes, metadata, fp16 variant, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from tests.conftest import TINY_CONFIGS, shared_data, tiny_weights
from upscaler.errors import OutputError, UpscaleError
from upscaler.export import (
    EXPORT_FORMAT,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    cached_onnx,
    compare_with_torch,
    default_cache_dir,
    export_onnx,
    find_fp16_overflows,
    read_onnx_metadata,
)
from upscaler.models import build_model, load_model, save_weights
from upscaler.system.files import write_bytes_atomically
from upscaler.system.places import CACHE_ENV
from upscaler.values import Precision

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
# Every architecture, and RRDBNet at each of its scales (x2 and x1 pixel-unshuffle their input).
VARIANTS = {
    "compact": ("compact", TINY_CONFIGS["compact"]),
    "srresnet": ("srresnet", TINY_CONFIGS["srresnet"]),
    "msrresnet": ("msrresnet", TINY_CONFIGS["msrresnet"]),
    "rrdbnet-x4": ("rrdbnet", TINY_CONFIGS["rrdbnet"]),
    "rrdbnet-x2": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 2}),
    "rrdbnet-x1": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 1}),
}


def variant_weights(tmp_path: Path, variant: str) -> Path:
    arch, config = VARIANTS[variant]
    torch.manual_seed(0)
    return save_weights(build_model(arch, config), tmp_path / f"{variant}.safetensors", arch, config)


def real_batch(height: int, width: int, multiple_of: int) -> np.ndarray:
    """Two crops of real photographs as an N x 3 x H x W batch in [0, 1]."""
    height, width = -(-height // multiple_of) * multiple_of, -(-width // multiple_of) * multiple_of
    crops = []
    for name, (top, left) in (("0014.jpg", (40, 30)), ("children-alpha.png", (120, 200))):
        image = cv2.imread(str(EXAMPLES / name), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[top : top + height, left : left + width]
        crops.append(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
    return np.stack(crops)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_matches_pytorch_on_real_images(tmp_path: Path, variant: str) -> None:
    model = load_model(variant_weights(tmp_path, variant))
    result = export_onnx(model, tmp_path / "model.onnx")
    assert result.path.is_file() and result.opset == OPSET
    multiple = model.info.requirement.multiple_of
    # two sizes, neither the one traced at export, and two images per batch: the axes are dynamic
    for height, width in ((36, 52), (61, 29)):
        batch = real_batch(height, width, multiple)
        assert compare_with_torch(model, result.path, batch) <= 1e-4


def test_export_matches_pytorch_on_a_benchmark_image(tmp_path: Path) -> None:
    image = cv2.imread(str(shared_data("eval", "Set5", "LR_x4", "img_001_SRF_4_LR.png")), cv2.IMREAD_COLOR)
    batch = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    model = load_model(variant_weights(tmp_path, "rrdbnet-x2"))
    path = export_onnx(model, tmp_path / "model.onnx").path
    assert compare_with_torch(model, path, batch) <= 1e-4


def test_the_graph_is_checked_with_dynamic_axes_opset_and_metadata(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    path = export_onnx(model, tmp_path / "compact.onnx").path
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")] == [OPSET]
    (graph_input,) = proto.graph.input
    (graph_output,) = proto.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert graph_input.type.tensor_type.elem_type == TensorProto.FLOAT
    metadata = read_onnx_metadata(path)
    assert metadata["arch"] == "compact"
    assert metadata["scale"] == "4"
    assert metadata["weights_digest"] == model.digest
    assert metadata["precision"] == "fp32"
    assert metadata["export_format"] == str(EXPORT_FORMAT)
    assert '"num_conv": 2' in metadata["config"]


@pytest.mark.parametrize("variant", ["compact", "rrdbnet-x4", "srresnet", "msrresnet"])
def test_fp16_variant_keeps_fp32_input_and_output_and_stays_close(tmp_path: Path, variant: str) -> None:
    model = load_model(variant_weights(tmp_path, variant))
    result = export_onnx(model, tmp_path / "half.onnx", Precision.FP16)
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    weights = [init for init in proto.graph.initializer if len(init.dims) == 4]
    assert weights and all(init.data_type == TensorProto.FLOAT16 for init in weights)
    assert read_onnx_metadata(result.path)["precision"] == "fp16"
    batch = real_batch(32, 40, model.info.requirement.multiple_of)
    assert compare_with_torch(model, result.path, batch) <= 1e-2


def test_layers_near_fp16_range_are_found_and_kept_in_fp32(tmp_path: Path) -> None:
    config = TINY_CONFIGS["compact"]
    torch.manual_seed(0)
    network = build_model("compact", config)
    with torch.no_grad():
        # body.2 is the second conv: its outputs become about 1000 times larger than any other layer's
        network.body[2].weight.mul_(1000.0)
        network.body[4].weight.div_(1000.0)
    model = load_model(save_weights(network, tmp_path / "loud.safetensors", "compact", config))
    assert find_fp16_overflows(model) == []
    peaks = find_fp16_overflows(model, limit=0.0)
    assert "body.2" in peaks and "upsampler" in peaks
    loud = find_fp16_overflows(model, limit=100.0)
    assert loud[0] == "body.2"

    result = export_onnx(model, tmp_path / "mixed.onnx", Precision.FP16, fp32_layers=["body.2"])
    assert result.fp32_layers == ("body.2",)
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    by_name = {init.name: init for init in proto.graph.initializer}
    conv_weights = [
        by_name[node.input[1]]
        for node in proto.graph.node
        if node.op_type == "Conv" and node.input[1] in by_name
    ]
    kinds = [init.data_type for init in conv_weights]
    assert kinds.count(TensorProto.FLOAT) == 1 and kinds.count(TensorProto.FLOAT16) == len(kinds) - 1
    assert read_onnx_metadata(result.path)["fp32_layers"] == "body.2"


def test_bf16_export_is_refused_with_the_reason(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    with pytest.raises(UpscaleError, match="bf16 is not supported.*opset 22"):
        export_onnx(model, tmp_path / "x.onnx", Precision.BF16)


def test_a_failed_export_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))

    def broken(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(model, tmp_path / "out" / "x.onnx")
    assert list((tmp_path / "out").iterdir()) == []


def test_cached_export_is_made_once_per_digest_and_precision(tmp_path: Path, monkeypatch) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    first = cached_onnx(model, Precision.FP32, tmp_path / "cache")
    assert first.path.parent == tmp_path / "cache" / "onnx"
    assert model.digest in first.path.name
    stamp = first.path.stat().st_mtime_ns

    def must_not_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("upscaler.export.export_onnx", must_not_export)
    again = cached_onnx(model, Precision.FP32, tmp_path / "cache")
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="exported again"):
        cached_onnx(model, Precision.FP16, tmp_path / "cache")


def test_a_damaged_cached_export_is_made_again(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    path = cached_onnx(model, Precision.FP32, tmp_path).path
    path.write_bytes(b"not a protobuf at all")
    again = cached_onnx(model, Precision.FP32, tmp_path)
    assert read_onnx_metadata(again.path)["weights_digest"] == model.digest


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "upscaler"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "upscaler"


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    write_bytes_atomically(target, b"first")
    write_bytes_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.bin"]


def test_exports_get_the_mode_of_any_new_file_not_mkstemps_private_one(tmp_path: Path) -> None:
    # mkstemp makes 0o600 temporaries: renamed as they were, an export only its owner could read
    previous = os.umask(0o022)
    try:
        written = write_bytes_atomically(tmp_path / "file.bin", b"data")
        exported = export_onnx(load_model(tiny_weights(tmp_path, "compact")), tmp_path / "m.onnx").path
    finally:
        os.umask(previous)
    assert written.stat().st_mode & 0o777 == 0o644
    assert exported.stat().st_mode & 0o777 == 0o644


def test_atomic_write_to_an_unwritable_place_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OutputError, match="cannot write"):
        write_bytes_atomically(blocker / "below" / "x.bin", b"data")


def test_a_form_is_exported_where_the_architecture_has_it(tmp_path: Path) -> None:
    rrdb = load_model(variant_weights(tmp_path, "rrdbnet-x4"))
    split = cached_onnx(rrdb, Precision.FP32, tmp_path, form="split-dense")
    plain = cached_onnx(rrdb, Precision.FP32, tmp_path)
    assert split.path != plain.path and "split-dense" in split.path.name
    assert read_onnx_metadata(split.path)["form"] == "split-dense"
    assert read_onnx_metadata(plain.path)["form"] == ""
    # the same function: concatenations only of the new features, so narrower ones
    assert compare_with_torch(rrdb, split.path, real_batch(24, 32, 1)) < 1e-4

    def widest_concat(path: Path) -> int:
        graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
        shapes = {v.name: v.type.tensor_type.shape.dim for v in graph.value_info}
        concats = [n.output[0] for n in graph.node if n.op_type == "Concat" and n.output[0] in shapes]
        return max(shapes[name][1].dim_value for name in concats)

    assert widest_concat(split.path) < widest_concat(plain.path)
    # an architecture without that form shares the plain export
    compact = load_model(variant_weights(tmp_path, "compact"))
    assert cached_onnx(compact, Precision.FP32, tmp_path, form="split-dense").path == (
        cached_onnx(compact, Precision.FP32, tmp_path).path
    )


def test_a_cached_export_is_checked_without_importing_onnx(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    weights = tiny_weights(tmp_path, "compact")
    cache = tmp_path / "cache"
    export = cached_onnx(load_model(weights), Precision.FP32, cache)
    sidecar = export.path.with_name(export.path.name + ".json")
    assert not sidecar.exists()  # made when a cached file is first checked, from its own metadata
    assert cached_onnx(load_model(weights), Precision.FP32, cache).path == export.path
    kept = json.loads(sidecar.read_text())
    assert kept["metadata"]["weights_digest"] == load_model(weights).digest
    code = (
        "import sys\nfrom pathlib import Path\nfrom upscaler.export import cached_onnx\n"
        "from upscaler.models import load_model\nfrom upscaler.values import Precision\n"
        f"export = cached_onnx(load_model({str(weights)!r}), Precision.FP32, Path({str(cache)!r}))\n"
        "print(export.path.name, 'onnx' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [export.path.name, "False"]
    # A file changed since (another size or time) is read again, not trusted on the sidecar's word.
    os.utime(export.path, ns=(0, 0))
    assert cached_onnx(load_model(weights), Precision.FP32, cache).path == export.path
    assert json.loads(sidecar.read_text())["mtime_ns"] == 0
