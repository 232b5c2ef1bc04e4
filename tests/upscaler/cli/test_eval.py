"""`upscale eval` end to end through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import shared_data, tiny_weights
from upscaler.cli import cli


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_names_the_options() -> None:
    result = run("eval", "--help")
    assert result.exit_code == 0
    for flag in (
        *("--data", "--scale", "--json", "--bicubic-only", "--no-progress"),
        *("--model", "--backend", "--tile-size"),
    ):
        assert flag in result.output


def test_bicubic_only_on_set5_prints_the_published_mean() -> None:
    result = run(
        "eval", "--bicubic-only", "--data", shared_data("eval", "Set5"), "--no-progress", "--no-lpips"
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("bicubic only; 5 image(s)")
    assert lines[1].split() == ["image", "bicubic", "psnr", "bicubic", "ssim"]
    assert lines[-1].split()[:2] == ["mean", "28.43"]


def test_tiny_model_on_set14_table_and_json(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    result = run(
        "eval", "--model", weights, "--data", shared_data("eval", "Set14"), "--no-progress", "--no-lpips"
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "(compact, x4)" in lines[0] and "14 image(s)" in lines[0]
    assert lines[1].split() == ["image", "psnr", "ssim", "bicubic", "psnr", "bicubic", "ssim"]
    assert len(lines) == 2 + 14 + 1
    mean = lines[-1].split()
    assert mean[0] == "mean" and mean[3] == "26.09"
    assert 0 < float(mean[1]) < 40  # a random model: finite, worse than bicubic

    result = CliRunner().invoke(
        cli, ["eval", "--model", str(weights), "--data", str(shared_data("eval", "Set5")), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert document["scale"] == 4 and document["border"] == 4 and document["lr_source"] == "LR_x4/ files"
    assert len(document["images"]) == 5
    assert all(np.isfinite(image["psnr"]) and 0 < image["ssim"] < 1 for image in document["images"])
    assert document["mean"]["bicubic_psnr"] == pytest.approx(28.43, abs=0.02)


def test_progress_bar_on_stderr_names_the_image_and_leaves_json_alone(tmp_path: Path) -> None:
    # A big model on a CPU takes minutes an image: eval showed nothing until the end
    weights = tiny_weights(tmp_path, "compact")
    args = ["eval", "--model", str(weights), "--data", str(shared_data("eval", "Set5")), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # the bar goes to stderr: stdout is still one JSON document
    assert "0/5" in result.stderr and "5/5" in result.stderr and "image" in result.stderr
    assert "img_001_SRF_4_HR.png" in result.stderr  # the image under way
    quiet = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert quiet.exit_code == 0, quiet.output
    assert "/5" not in quiet.stderr and "img_001" not in quiet.stderr
    assert json.loads(quiet.stdout)["mean"] == json.loads(result.stdout)["mean"]


def write_set(root: Path, hr_size: tuple[int, int], lr_size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    (root / "HR").mkdir(parents=True)
    (root / "LR_x4").mkdir()
    cv2.imwrite(str(root / "HR" / "a.png"), rng.integers(0, 256, (*hr_size, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "LR_x4" / "a.png"), rng.integers(0, 256, (*lr_size, 3), dtype=np.uint8))
    return root


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("absent", [], "Error: {data}: no such folder"),
        ("empty", [], "Error: no images found in {data}"),
        ("mismatch", [], "Error: a.png: HR is 48 x 48 but LR 8 x 8 x4 is 32 x 32"),
        ("ok", ["--scale", "2"], "Error: --scale: 2 does not match model 'tiny-compact.safetensors'"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, setup: str, extra: list[str], message: str) -> None:
    weights = tiny_weights(tmp_path, "compact")
    data = tmp_path / "data"
    if setup == "empty":
        data.mkdir()
    elif setup == "mismatch":
        write_set(data, (48, 48), (8, 8))
    elif setup == "ok":
        write_set(data, (32, 32), (8, 8))
    result = run("eval", "--model", weights, "--data", data, *extra)
    assert result.exit_code == 1
    assert message.format(data=data) in result.output
    assert "Traceback" not in result.output


def test_bicubic_only_refuses_a_model(tmp_path: Path) -> None:
    result = run("eval", "--bicubic-only", "--model", "srgan", "--data", tmp_path)
    assert result.exit_code == 2
    assert "--bicubic-only measures no model" in result.output


def _install_random_lpips(folder: Path) -> None:
    from safetensors.torch import save_file

    from tests.upscaler.models.test_lpips import random_state
    from upscaler.models.lpips import LPIPS_FILE

    folder.mkdir(parents=True, exist_ok=True)
    save_file(random_state(), str(folder / LPIPS_FILE))


def test_lpips_is_measured_where_its_weights_are_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path / "weights"))
    weights = tiny_weights(tmp_path, "compact")
    data = shared_data("eval", "Set5")
    absent = run("eval", "--model", weights, "--data", data, "--no-progress")
    assert absent.exit_code == 0, absent.output
    assert (
        "LPIPS: not measured (its weights are not installed: upscale weights install lpips)" in absent.output
    )
    refused = run("eval", "--model", weights, "--data", data, "--no-progress", "--lpips")
    assert refused.exit_code == 1
    assert (
        "Error: LPIPS needs its weights" in refused.output
        and "Hint: run `upscale weights install lpips`" in (refused.output)
    )

    _install_random_lpips(tmp_path / "weights")
    result = run("eval", "--model", weights, "--data", data, "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert all(image["lpips"] > 0 and image["bicubic_lpips"] > 0 for image in report["images"])
    assert report["mean"]["lpips"] == pytest.approx(np.mean([image["lpips"] for image in report["images"]]))
    table = run("eval", "--model", weights, "--data", data, "--no-progress").output.splitlines()
    assert table[1].split() == ["image", "psnr", "ssim", "lpips", "bicubic", "psnr", "bicubic", "ssim"] + [
        "bicubic",
        "lpips",
    ]
    skipped = run("eval", "--model", weights, "--data", data, "--no-progress", "--no-lpips")
    assert "lpips" not in skipped.output.splitlines()[1]
