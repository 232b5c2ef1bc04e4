"""`upscale export-onnx`, `upscale build-engine`, and the onnxruntime backend from the command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import shared_data, tiny_weights
from upscaler.cli import cli
from upscaler.export import read_onnx_metadata
from upscaler.models import load_model
from upscaler.system.places import CACHE_ENV

HAS_TENSORRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("command", ["export-onnx", "build-engine"])
def test_help(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_build_engine_help_names_the_options() -> None:
    output = run("build-engine", "--help").output
    for flag in (
        "--model",
        "--precision",
        "--tile-size",
        "--min-shape",
        "--opt-shape",
        "--max-shape",
        "--batch",
        "-o",
    ):
        assert flag in output


def test_export_onnx_end_to_end(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "rrdbnet")
    out = tmp_path / "net.onnx"
    result = run("export-onnx", "--model", weights, out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: tiny-rrdbnet.safetensors (rrdbnet, x4), fp32, opset 17" in result.output
    assert "verified with ONNX Runtime: max |onnx - torch| = " in result.output
    assert read_onnx_metadata(out)["weights_digest"] == load_model(weights).digest

    again = run("export-onnx", "--model", weights, out)
    assert again.exit_code == 1
    assert f"Error: {out} exists" in again.output and "--overwrite" in again.output
    half = run("export-onnx", "--model", weights, "--precision", "fp16", "--overwrite", "--no-verify", out)
    assert half.exit_code == 0, half.output
    assert read_onnx_metadata(out)["precision"] == "fp16"


def test_export_onnx_of_a_missing_model_is_one_error(tmp_path: Path) -> None:
    result = run("export-onnx", "--model", tmp_path / "nope.pth", tmp_path / "x.onnx")
    assert result.exit_code == 1
    assert "Error: no such weights file" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(HAS_TENSORRT, reason="this machine can run TensorRT")
def test_build_engine_without_tensorrt_is_one_clear_line(tmp_path: Path) -> None:
    # the model need not exist: the backend is checked first
    result = run("build-engine", "--model", "compact", "--tile-size", "128")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0] in (
        "Error: TensorRT needs an NVIDIA GPU with CUDA; none found",
        "Error: tensorrt is not installed: pip install 'upscaler[tensorrt]'",
    )


def test_build_engine_names_the_install_command_where_a_gpu_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import backends.tensorrt

    monkeypatch.setattr(backends.tensorrt, "nvidia_driver_present", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = run("build-engine", "--model", "compact")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: tensorrt is not installed: pip install 'upscaler[tensorrt]'"


def test_build_engine_shapes_are_parsed() -> None:
    result = run("build-engine", "--min-shape", "1x3x16")
    assert result.exit_code == 2
    assert "expected four positive sizes N x C x H x W" in result.output


def test_backends_lists_onnxruntime_and_why_tensorrt_cannot_run() -> None:
    result = run("backends")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert "unavailable" not in lines["onnxruntime"]
    if not HAS_TENSORRT:
        assert "unavailable: " in lines["tensorrt"]


def test_images_with_the_onnxruntime_backend_match_torch(tmp_path: Path, cache_dir: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    src = tmp_path / "in"
    src.mkdir()
    photo = cv2.imread(str(Path(__file__).resolve().parents[2] / "examples" / "images" / "0014.jpg"))
    assert cv2.imwrite(str(src / "photo.png"), photo[:40, :52])
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        result = run(
            "images",
            src,
            "-o",
            out,
            "--model",
            weights,
            "--backend",
            backend,
            "--tile-size",
            "24",
            "--no-progress",
        )
        assert result.exit_code == 0, result.output
        assert f"on backend {backend}" in result.output
        outputs[backend] = cv2.imread(str(out / "photo_x4.png")).astype(int)
    assert outputs["torch"].shape == (160, 208, 3)
    assert np.abs(outputs["torch"] - outputs["onnxruntime"]).max() <= 1
    assert list((cache_dir / "onnx").glob("*.onnx")), "the exported graph is cached"


def test_auto_names_the_backend_it_picked(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    src = tmp_path / "in"
    src.mkdir()
    assert cv2.imwrite(str(src / "a.png"), np.full((8, 8, 3), 128, np.uint8))
    result = run(
        "images", src, "-o", tmp_path / "out", "--model", weights, "--device", "cpu", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert "on backend torch" in result.output


@pytest.mark.slow
def test_video_with_the_onnxruntime_backend(tmp_path: Path) -> None:
    clip = shared_data("video", "realshort.mp4")
    weights = tiny_weights(tmp_path, "compact")
    out = tmp_path / "out.mp4"
    result = run("video", clip, out, "--model", weights, "--backend", "onnxruntime", "--duration", "0.1")
    assert result.exit_code == 0, result.output
    assert "on backend onnxruntime" in result.output
    assert out.is_file() and out.stat().st_size > 0
