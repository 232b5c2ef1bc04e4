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
    ("feature", "why"),
    [
        # A weights file of the tests' own has no card, so no measured cost: fp32 even where bf16 runs.
        ("AVX512_BF16", "(auto: fp32; bf16 would be faster (this CPU has AVX512_BF16) but its cost to this "
         "model is not measured (--precision bf16 runs it anyway))"),
        (None, "(auto: this CPU has no AVX512_BF16 or AMX)"),
    ],
)  # fmt: skip
def test_precision_auto_is_the_default_and_the_first_line_says_why(
    monkeypatch, tmp_path, image, feature, why
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: feature)
    result = upscale(tmp_path, image)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("model tiny-compact.safetensors (compact, x4) on backend torch in fp32 " + why), (
        first
    )
    assert (tmp_path / "out" / "a_x4.png").exists()


def test_a_bundled_model_with_a_negligible_measured_cost_runs_bf16_under_auto(
    monkeypatch, tmp_path, image
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AVX512_BF16")
    argv = ["images", str(image), "-o", str(tmp_path / "out"), "--model", "compact", "--no-progress"]
    result = CliRunner().invoke(cli, [*argv, "--backend", "torch", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("model compact (compact, x4) on backend torch in bf16 (auto: this CPU has "), (
        first
    )
    assert "and bf16 costs this model 0.0" in first


def test_a_given_precision_is_not_explained_and_malloc_is_tuned(monkeypatch, tmp_path, image) -> None:
    tuned = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: tuned.append(True) or "done")
    result = upscale(tmp_path, image, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "auto" not in result.output.splitlines()[0]
    assert " in fp32; " in result.output.splitlines()[0]
    assert tuned == [True]


def test_auto_runs_int8_where_the_card_measured_it_negligible(monkeypatch, tmp_path, image) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.setattr(precision, "cpu_flags", lambda path=None: frozenset({"avx512_vnni"}))
    argv = ["images", str(image), "-o", str(tmp_path / "out"), "--model", "compact", "--no-progress"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(
        "model compact (compact, x4) on backend openvino in int8 (auto: this CPU has AVX512_VNNI, and int8 "
        "costs this model 0.028 dB (measured))"
    ), first
    assert (tmp_path / "out" / "a_x4.png").exists()
    # Without int8 dot products in the CPU, auto goes on to bf16 (or fp32).
    monkeypatch.setattr(precision, "cpu_flags", lambda path=None: frozenset())
    result = CliRunner().invoke(cli, [*argv, "--overwrite"])
    assert " in int8 " not in result.output.splitlines()[0]


def test_int8_refused_by_torch_in_one_line(tmp_path, image) -> None:
    result = upscale(tmp_path, image, "--precision", "int8")
    assert result.exit_code == 1
    assert "Error: --precision: the torch backend has no int8" in result.output
    assert "Hint: use --backend openvino for int8 on the CPU" in result.output
