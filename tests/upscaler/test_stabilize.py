"""--stabilize: still parts of the picture keep their output, moving parts take the new one, and a
resumed job gives the same frames as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import tests.upscaler.video_checks as check
import tests.upscaler.video_clips as clips
from upscaler.pipeline import StageError
from upscaler.quality.temporal import evaluate_clip
from upscaler.video.encode import EncodeSettings
from upscaler.video.job import run_video_job
from upscaler.video.plan import plan_video_job
from upscaler.video.stabilize import Stabilizer


def grain(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)


def test_a_still_input_keeps_its_first_output() -> None:
    source = np.full((8, 8, 3), 0.5, np.float32)
    stabilizer = Stabilizer()
    first = stabilizer.apply(source, 0.5 + grain(0, (32, 32, 3)))
    for seed in range(1, 4):
        shown = stabilizer.apply(source, 0.5 + grain(seed, (32, 32, 3)))
        np.testing.assert_array_equal(shown, first)


def test_what_moved_takes_the_new_output_and_the_rest_stays() -> None:
    still = np.full((16, 16, 3), 0.5, np.float32)
    stabilizer = Stabilizer()
    first = stabilizer.apply(still, np.zeros((64, 64, 3), np.float32))
    moved = still.copy()
    moved[:4, :4] = 1.0  # a bright object enters the top-left corner
    shown = stabilizer.apply(moved, np.ones((64, 64, 3), np.float32))
    assert (shown[:12, :12] == 1).all()  # where the input changed: the new output
    assert (shown[32:, 32:] == first[32:, 32:]).all()  # far from it: the kept output


def test_slow_change_adds_up_until_it_is_taken() -> None:
    stabilizer = Stabilizer()
    stabilizer.apply(np.full((8, 8, 3), 0.5, np.float32), np.full((16, 16, 3), 0.5, np.float32))
    taken = []
    for step in range(1, 10):  # 1.5 levels a frame: each step alone is below the threshold (4 levels)
        level = 0.5 + 1.5 * step / 255
        source, output = np.full((8, 8, 3), level, np.float32), np.full((16, 16, 3), level, np.float32)
        shown = stabilizer.apply(source, output)
        assert abs(shown.mean() - level) < 4 / 255  # never further behind than the threshold
        taken.append(bool(np.isclose(shown.mean(), level)))
    assert taken == [False, False, True] * 3


def test_a_keyframe_starts_afresh_and_integer_levels_stay_integers() -> None:
    source = np.full((4, 4, 3), 0.2, np.float32)
    stabilizer = Stabilizer()
    stabilizer.apply(source, np.full((8, 8, 3), 10, np.uint8))
    kept = stabilizer.apply(source, np.full((8, 8, 3), 99, np.uint8))
    assert kept.dtype == np.uint8 and (kept == 10).all()
    fresh = stabilizer.apply(source, np.full((8, 8, 3), 99, np.uint8), restart=True)
    assert (fresh == 99).all()


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold must be in"):
        Stabilizer(threshold=0)


def test_it_removes_the_flicker_eval_measures() -> None:
    scene = np.random.default_rng(0).random((64, 64, 3))
    frames = [np.rint(scene * 255).astype(np.uint8)] * 5
    shown = iter(range(100))

    def flickering(lr: np.ndarray) -> np.ndarray:
        big = lr.repeat(4, axis=0).repeat(4, axis=1)
        return np.clip(big + grain(next(shown), big.shape), 0, 1)

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    stabilizer = Stabilizer()
    before = evaluate_clip(flickering, iter(frames), 4, distance)
    after = evaluate_clip(lambda lr: stabilizer.apply(lr, flickering(lr)), iter(frames), 4, distance)
    assert after.tlp == 0 < before.tlp
    assert after.tof < before.tof


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_a_resumed_stabilized_job_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    # A still picture with the frame number in its top-left 8 x 8 corner: a "model" whose grain depends on
    # that number only is deterministic per frame, and flickers everywhere else.
    pictures = []
    for index in range(24):
        picture = clips.picture(0, 64, 48).copy()
        picture[:8, :8] = 8 * index
        pictures.append(picture)
    source = clips.write_clip(
        tmp_path / "still.mkv", frames=24, pictures=pictures, codec="ffv1", options={"g": "8"}
    )

    def flickering(rgb: np.ndarray) -> np.ndarray:
        big = rgb.repeat(2, axis=0).repeat(2, axis=1)
        return np.clip(big + grain(int(round(rgb[0, 0, 0] * 255)), big.shape), 0, 1)

    def plan(out: Path):
        settings = EncodeSettings(codec="ffv1")
        return plan_video_job(
            source, out, scale=2, model_key={}, settings=settings, part_frames=8, stabilize=True
        )

    clean = tmp_path / "clean.mkv"
    run_video_job(plan(clean), flickering)
    frames = _frames(clean)
    # away from the changing corner, each part shows its keyframe's output unchanged
    for first in (0, 8, 16):
        for frame in frames[first + 1 : first + 8]:
            np.testing.assert_array_equal(frame[24:, 24:], frames[first][24:, 24:])
    assert not np.array_equal(frames[0][24:, 24:], frames[8][24:, 24:])  # a new part starts afresh

    calls = iter(range(100))

    def fails_at_frame_13(rgb: np.ndarray) -> np.ndarray:
        if next(calls) == 13:
            raise RuntimeError("stopped")
        return flickering(rgb)

    resumed = tmp_path / "resumed.mkv"
    with pytest.raises(StageError, match="stopped"):
        run_video_job(plan(resumed), fails_at_frame_13)
    run_video_job(plan(resumed), flickering)
    assert check.decode(resumed).hashes == check.decode(clean).hashes


def test_stabilize_is_part_of_the_jobs_fingerprint(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=8, audio=False)
    plain = plan_video_job(source, tmp_path / "a.mkv", scale=2, model_key={})
    steady = plan_video_job(source, tmp_path / "a.mkv", scale=2, model_key={}, stabilize=True)
    assert plain.fingerprint != steady.fingerprint and steady.stabilize
