"""Video evaluation against ground truth: per-frame scores and TecoGAN's tOF and tLP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import tiny_weights
from tests.upscaler.video_clips import write_clip
from upscaler.cli import cli
from upscaler.errors import InputError
from upscaler.quality.resampling import bicubic_resize
from upscaler.quality.temporal import evaluate_clip, optical_flow, read_frames


def pan(count: int = 6, size: int = 64, step: int = 2) -> list[np.ndarray]:
    """A textured scene that moves `step` pixels right each frame: real motion, for flow to find."""
    rng = np.random.default_rng(0)
    import cv2

    scene = cv2.GaussianBlur(rng.random((size, size + step * count, 3)).astype(np.float32), (0, 0), 1.5)
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    return [
        np.rint(scene[:, step * (count - i) : step * (count - i) + size] * 255).astype(np.uint8)
        for i in range(count)
    ]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    """A stand-in perceptual distance: tests need no LPIPS weights."""
    return float(np.abs(a - b).mean())


def test_flow_finds_a_known_shift() -> None:
    frames = pan(2, size=96, step=3)
    flow = optical_flow(frames[0], frames[1])
    inner = flow[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.3)


def test_the_truth_itself_scores_zero_flicker() -> None:
    frames = pan()
    outputs = iter(frames)
    report = evaluate_clip(lambda lr: next(outputs).astype(np.float32) / 255, iter(frames), 4, mean_abs)
    assert report.frames == 6 and report.size == (64, 64)
    assert all(value == float("inf") for value in report.psnr)
    assert report.tof == 0 and report.tlp == 0
    assert report.bicubic_tof > 0  # bicubic is not the truth


def test_an_upscaler_that_flickers_scores_worse_than_one_that_does_not() -> None:
    frames = [pan(1)[0]] * 6  # a still scene: any change between outputs is flicker
    rng = np.random.default_rng(1)
    grain = [rng.normal(0, 0.03, (64, 64, 3)).astype(np.float32) for _ in frames]

    def steady(lr: np.ndarray) -> np.ndarray:
        return np.clip(bicubic_resize(lr, 64, 64) + grain[0], 0, 1)

    shown = iter(grain)

    def flickering(lr: np.ndarray) -> np.ndarray:
        return np.clip(bicubic_resize(lr, 64, 64) + next(shown), 0, 1)

    calm = evaluate_clip(steady, iter(frames), 4, mean_abs)
    busy = evaluate_clip(flickering, iter(frames), 4, mean_abs)
    assert busy.tlp > calm.tlp
    assert busy.tof > calm.tof
    # per-frame quality alone cannot tell them apart: the same grain, the same amount
    assert np.mean(busy.psnr) == pytest.approx(np.mean(calm.psnr), abs=0.3)


def test_bicubic_alone_and_the_report_document() -> None:
    report = evaluate_clip(None, iter(pan(3)), 4)
    document = report.to_dict()
    assert document["psnr"] is None and document["tof"] is None
    assert len(document["bicubic_psnr_per_frame"]) == 3
    assert document["bicubic_lpips"] is None and document["bicubic_tlp"] is None
    assert document["bicubic_tof"] > 0


def test_frames_too_small_and_empty_clips_are_refused() -> None:
    with pytest.raises(InputError, match="too small for x4"):
        evaluate_clip(None, iter([np.zeros((6, 6, 3), np.uint8)]), 4)
    with pytest.raises(InputError, match="no frames"):
        evaluate_clip(None, iter([]), 4)


def test_read_frames_stops_at_the_limit(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=8, width=64, height=48)
    frames = list(read_frames(clip, 5))
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    (tmp_path / "not.mp4").write_bytes(b"no video here")
    with pytest.raises(InputError, match="cannot read"):
        list(read_frames(tmp_path / "not.mp4"))


def test_upscale_eval_video_end_to_end(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=6, width=64, height=48)
    weights = tiny_weights(tmp_path, "compact")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["eval", "--video", str(clip), "--frames", "4", "--model", str(weights), "--no-lpips", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["frames"] == 4 and document["size"] == [64, 48]
    assert len(document["psnr_per_frame"]) == 4
    assert document["tof"] >= 0 and document["tlp"] is None  # tLP needs LPIPS
    table = runner.invoke(
        cli, ["eval", "--video", str(clip), "--frames", "3", "--bicubic-only", "--no-lpips"]
    )
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["psnr", "lpips", "tOF", "tLP"]
    assert table.stdout.splitlines()[1].split()[0] == "bicubic"


def test_upscale_eval_wants_one_of_data_and_video(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "--bicubic-only"])
    assert result.exit_code == 2 and "give one of --data FOLDER (images) or --video CLIP" in result.output
    result = CliRunner().invoke(cli, ["eval", "--bicubic-only", "--video", str(tmp_path / "none.mp4")])
    assert result.exit_code == 1 and "--video: no such file" in result.output


def test_upscale_eval_video_stabilize(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=4, width=64, height=48)
    weights = tiny_weights(tmp_path, "compact")
    args = ["eval", "--video", str(clip), "--frames", "3", "--model", str(weights), "--no-lpips", "--json"]
    result = CliRunner().invoke(cli, [*args, "--stabilize"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stabilize"] is True and "--stabilize" in result.stderr
    refused = CliRunner().invoke(cli, ["eval", "--data", str(tmp_path), "--stabilize"])
    assert refused.exit_code == 2 and "--stabilize measures a model on a clip" in refused.output
