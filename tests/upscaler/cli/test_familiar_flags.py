"""What Real-ESRGAN and ffmpeg users type: short forms that do not clash, and a pointer for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import tiny_weights
from upscaler.cli import COMMANDS, cli


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    Image.new("RGB", (12, 8), (200, 20, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (12, 8), (20, 200, 20)).save(tmp_path / "b.png")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "ours"),
    [
        (("video", "in.mp4", "out.mp4", "-crf", "18"), "--crf N"),
        (("video", "in.mp4", "out.mp4", "-c:v", "libx265"), "--codec NAME"),
        (("video", "in.mp4", "out.mp4", "-an"), "--no-audio"),
        (("video", "-i", "in.mp4", "out.mp4"), "the input as the first argument"),
        (("video", "in.mp4", "out.mp4", "-y"), "--overwrite"),
        (("images", "a.png", "--fp32"), "--precision fp32"),
        (("images", "a.png", "--ext", "png"), "--format NAME"),
    ],
)
def test_foreign_spellings_name_ours(args: tuple[str, ...], ours: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert (
        f"Error: no such option {args[args.index(next(a for a in args if a.startswith('-')))]}"
        in result.output
    )
    assert f"upscale spells it {ours}" in result.output


def test_short_forms_and_an_underscore_before_the_suffix(folder: Path) -> None:
    weights = tiny_weights(folder, "compact")
    result = run(
        "images", folder / "a.png", "-n", weights, "-t", "32", "-s", "2", "--suffix", "out", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert Image.open(folder / "a_out.png").size == (24, 16)


def test_o_with_an_image_name_writes_that_file(folder: Path) -> None:
    weights = tiny_weights(folder, "compact")
    result = run("images", folder / "a.png", "-o", folder / "big.jpg", "-m", weights, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (folder / "big.jpg").is_file() and Image.open(folder / "big.jpg").format == "JPEG"
    several = run("images", folder, "-o", folder / "all.png", "-m", weights, "--no-progress")
    assert (
        several.exit_code == 1
        and "-o " in several.output
        and "names one file, but 2 images" in several.output
    )
    assert not (folder / "all.png").exists()


def test_quality_and_the_long_format_names(folder: Path) -> None:
    weights = tiny_weights(folder, "compact")
    sizes = {}
    for quality in (30, 95):
        target = folder / f"q{quality}.jpg"
        result = run(
            "images", folder / "a.png", "-o", target, "-m", weights, "--quality", quality, "--no-progress"
        )
        assert result.exit_code == 0, result.output
        sizes[quality] = target.stat().st_size
    assert sizes[30] < sizes[95]
    result = run("images", folder / "b.png", "--format", "jpeg", "-m", weights, "--no-progress")
    assert result.exit_code == 0 and (folder / "b_x4.jpg").is_file()
    result = run("images", folder / "b.png", "--format", "TIFF", "-m", weights, "--no-progress")
    assert result.exit_code == 0 and (folder / "b_x4.tif").is_file()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_shows_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and f"upscale {command}" in result.output
