"""The options every model command shares: `--precision auto` says what it chose; malloc is tuned."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import tiny_weights
from upscaler import precision
from upscaler.cli import cli
from upscaler.system import allocator


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    assert cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8))
    return path


def upscale(tmp_path: Path, image: Path, *args: str):
    weights = tiny_weights(tmp_path, "compact")
    argv = ["images", str(image), "-o", str(tmp_path / "out"), "--model", str(weights), "--no-progress"]
    return CliRunner().invoke(cli, [*argv, "--backend", "torch", "--device", "cpu", *args])


@pytest.mark.parametrize(
    ("feature", "line"),
    [
        ("AVX512_BF16", "Precision: bf16 (auto: this CPU has AVX512_BF16)"),
        (None, "Precision: fp32 (auto: this CPU has no AVX512_BF16 or AMX)"),
    ],
)
def test_precision_auto_says_what_it_chose(monkeypatch, tmp_path, image, feature, line) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: feature)
    result = upscale(tmp_path, image, "--precision", "auto")
    assert result.exit_code == 0, result.output
    assert line in result.output.splitlines()
    assert (tmp_path / "out" / "a_x4.png").exists()


def test_a_given_precision_is_not_announced_and_malloc_is_tuned(monkeypatch, tmp_path, image) -> None:
    tuned = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: tuned.append(True) or "done")
    result = upscale(tmp_path, image)
    assert result.exit_code == 0, result.output
    assert "Precision:" not in result.output
    assert tuned == [True]
