"""The `upscale` command line, end to end through click's test runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import shared_data, tiny_weights
from upscaler.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


@pytest.mark.parametrize("command", [[], ["images"], ["models"], ["backends"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_images_help_names_the_options() -> None:
    output = run("images", "--help").output
    for flag in (
        "--model",
        "--backend",
        "--tile-size",
        "--outscale",
        "--overwrite",
        "--skip-existing",
        "--glob",
    ):
        assert flag in output


def test_models_lists_the_ids_with_their_measured_quality() -> None:
    from upscaler.models import list_models

    result = run("models")
    assert result.exit_code == 0
    lines: dict[str, str] = {}
    for line in result.output.splitlines():
        if line.strip():
            lines.setdefault(line.split()[0], line)  # the first table: one row an id
    for entry in list_models():
        if entry.unbundled:
            assert f"not bundled ({entry.unbundled})" in lines[entry.id]
            continue
        card = entry.card
        assert f"bundled ({card['weights_dtype']})" in lines[entry.id]
        set5, set14 = card["evaluation"]["Set5"], card["evaluation"]["Set14"]
        assert f"Set5 {set5['psnr_y']:.2f} dB, Set14 {set14['psnr_y']:.2f} dB" in lines[entry.id]
    assert "not bundled (paper's size, not trained here)" in lines["esrgan-23x64"]
    # the quality table: bicubic as measured, each bundled model, the paper's rows as printed
    assert "bicubic                 28.43 / 0.8113 / 0.3406   26.09 / 0.7049 / 0.4400" in result.output
    assert "SRResNet (SRGAN paper)  32.05 / 0.9019 / -        28.49 / 0.8184 / -" in result.output


def test_backends_lists_torch_as_available() -> None:
    result = run("backends")
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if line.startswith("torch"))
    assert "available" in line and "unavailable" not in line


def test_images_end_to_end(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    write(src / "rgb.png", rng.integers(0, 256, (10, 13, 3), dtype=np.uint8))
    write(src / "sub" / "gray.png", rng.integers(0, 256, (7, 9), dtype=np.uint8))
    write(src / "deep.png", rng.integers(0, 65536, (6, 5, 4), dtype=np.uint16))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    result = run("images", src, "-o", out, "--model", weights, "--no-progress")
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output
    assert "3 written, 0 skipped, 1 failed" in result.output
    rgb = cv2.imread(str(out / "rgb_x4.png"), cv2.IMREAD_UNCHANGED)
    gray = cv2.imread(str(out / "sub" / "gray_x4.png"), cv2.IMREAD_UNCHANGED)
    deep = cv2.imread(str(out / "deep_x4.png"), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (40, 52, 3)
    assert gray.shape == (28, 36)
    assert deep.shape == (24, 20, 4) and deep.dtype == np.uint16
    assert not list(out.rglob("*.part")), "a temporary file was left behind"


def test_the_same_command_again_finishes_the_job(tmp_path: Path, compact_weights: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    first = run("images", tmp_path, "--model", compact_weights, "--no-progress")
    assert first.exit_code == 0 and "3 written, 0 skipped, 0 failed" in first.output
    (tmp_path / "b_x4.png").unlink()  # as if the run had been killed before writing it
    again = run("images", tmp_path, "--model", compact_weights, "--no-progress")
    assert again.exit_code == 0, again.output
    assert "1 image(s) to upscale; 2 already done by an earlier run" in again.output
    assert "1 written, 2 skipped, 0 failed" in again.output
    assert not list(tmp_path.glob("*_x4_x4.png"))


def test_an_animated_gif_is_said_to_be_upscaled_as_its_first_frame(
    tmp_path: Path, compact_weights: Path
) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (8, 6), (40 * i, 80, 120)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.new("RGB", (8, 6)).save(tmp_path / "still.gif")
    result = run("images", tmp_path / "anim.gif", tmp_path / "still.gif", "--model", compact_weights,
                 "--no-progress", "--format", "png")  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        f"Warning: {tmp_path / 'anim.gif'} is animated (3 frames): only its first frame is upscaled "
        "(upscale video reads animations and upscales every frame)"
    ]


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, compact_weights: Path) -> None:
    write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    existing = tmp_path / "a_x4.png"
    existing.write_bytes(b"precious")
    result = run("images", tmp_path / "a.png", "--model", compact_weights, "--no-progress")
    assert result.exit_code == 1
    assert existing.read_bytes() == b"precious"
    result = run("images", tmp_path / "a.png", "--model", compact_weights, "--no-progress", "--overwrite")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(existing)).shape == (32, 32, 3)


def test_outscale_and_format(tmp_path: Path, compact_weights: Path) -> None:
    write(tmp_path / "a.png", np.zeros((8, 10, 3), np.uint8))
    result = run(
        "images",
        tmp_path / "a.png",
        "-o",
        tmp_path / "o",
        "--model",
        compact_weights,
        "--outscale",
        "2",
        "--format",
        "jpg",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "o" / "a_x2.jpg")).shape == (16, 20, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "no-such-model"],
            "Error: model 'no-such-model' is neither a known model id nor an existing file; known ids: ",
        ),
        (
            ["--model", "esrgan-23x64"],
            "Error: model 'esrgan-23x64' has no bundled weights: the paper's 23 x 64 RRDBNet costs",
        ),
        (["--backend", "nope"], "Error: unknown backend 'nope'; known: "),
        (["--precision", "fp16", "--device", "cpu"], "Error: --precision: fp16 is not supported on the CPU"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, compact_weights: Path, args, message) -> None:
    write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    if "--model" not in args:
        args = [*args, "--model", compact_weights]
    result = run("images", tmp_path / "a.png", "-o", tmp_path / "o", "--no-progress", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_tile_size_must_fit_the_model(tmp_path: Path) -> None:
    import torch

    from upscaler.models import build_model, save_weights

    config = {"num_in_ch": 3, "num_out_ch": 3, "scale": 1, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}
    torch.manual_seed(0)
    weights = save_weights(build_model("rrdbnet", config), tmp_path / "x1.safetensors", "rrdbnet", config)
    write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    result = run("images", tmp_path / "a.png", "--model", weights, "--tile-size", "250", "--no-progress")
    assert result.exit_code == 1
    assert "--tile-size: must be a multiple of 4" in result.output and "(got 250)" in result.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run("images", tmp_path, "--tile-size", "big")
    assert result.exit_code == 2
    assert "must be 'auto' or a whole number of pixels" in result.output


def test_missing_input_is_an_error(tmp_path: Path, compact_weights: Path) -> None:
    result = run("images", tmp_path / "nowhere", "--model", compact_weights)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "images", tmp_path / "nowhere.png", "--model", "no-such-model")
    assert result.exit_code == 1
    assert "Traceback" in result.output


def test_edge_cases_folder_with_a_corrupt_file(tmp_path: Path, compact_weights: Path) -> None:
    """Real inputs: RGBA, 16-bit RGBA, gray PNG and EXIF gray JPEG, with a corrupt file among them."""
    src = tmp_path / "edge"
    shutil.copytree(shared_data("images", "edge-cases"), src)
    for path in src.iterdir():
        path.chmod(0o644)
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    out = tmp_path / "out"
    result = run("images", src, "-o", out, "--model", compact_weights, "--no-progress")
    assert result.exit_code == 1
    assert "corrupt.jpg" in result.output
    inputs = [p for p in src.iterdir() if p.name != "corrupt.jpg"]
    assert f"{len(inputs)} written, 0 skipped, 1 failed" in result.output
    for path in inputs:
        before = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        after = cv2.imread(str(out / f"{path.stem}_x4{path.suffix}"), cv2.IMREAD_UNCHANGED)
        assert after.shape[:2] == (before.shape[0] * 4, before.shape[1] * 4), path.name
        assert after.ndim == before.ndim and after.dtype == before.dtype, path.name
        if before.ndim == 3:
            assert after.shape[2] == before.shape[2], path.name
    deep = cv2.imread(str(out / "tree_alpha_16bit_x4.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape[2] == 4
    assert np.unique(deep).size > 256, "16-bit output holds only 8-bit levels"


def test_opencv_logs_nothing_of_its_own_about_a_broken_file(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    header = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0"
    (tmp_path / "in" / "bad.png").write_bytes(header + b"junk")  # a PNG cut short: OpenCV warns
    weights = tiny_weights(tmp_path, "compact")
    env = {key: value for key, value in os.environ.items() if key != "OPENCV_LOG_LEVEL"}
    code = "import sys; from upscaler.cli import main; sys.argv[0] = 'upscale'; main()"
    args = ["images", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(weights)]
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--no-progress"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert "failed: cannot read" in result.stderr
    assert "WARN" not in result.stderr and "ERROR:" not in result.stderr, result.stderr
