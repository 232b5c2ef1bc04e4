"""`upscale degrade-set` end to end."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.train.fixtures import make_images
from upscaler.cli import cli


def test_help_shows_an_example() -> None:
    result = CliRunner().invoke(cli, ["degrade-set", "--help"])
    assert result.exit_code == 0 and "upscale degrade-set ../shared/data/eval/Set14" in result.output


def test_it_writes_a_set_that_upscale_eval_reads(tmp_path: Path) -> None:
    make_images(tmp_path / "set" / "HR", count=2, size=64)
    runner = CliRunner()
    result = runner.invoke(cli, ["degrade-set", str(tmp_path / "set"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Wrote 2 HR/LR_x4 pairs" in result.output and "libx264 CRF 28" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "LR_x4").iterdir()) == ["img0.png", "img1.png"]
    measured = runner.invoke(cli, ["eval", "--bicubic-only", "--data", str(tmp_path / "out"), "--no-lpips"])
    assert measured.exit_code == 0, measured.output
    assert "LR: LR_x4/ files" in measured.output


def test_a_missing_source_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["degrade-set", str(tmp_path / "none"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: SOURCE: no such folder: {tmp_path / 'none'}"
    assert not (tmp_path / "out").exists()
