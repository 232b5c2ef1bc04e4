"""The video job: sizes, timing, streams, resume, journal, overwrite rules and clean failure."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av.logging
import numpy as np
import pytest

from tests.conftest import shared_data
from tests.upscaler import video_checks as check
from tests.upscaler import video_clips as clips
from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.pipeline import StageError
from upscaler.tiling.runner import Tiler
from upscaler.values import SizeRequirement
from upscaler.video import job as video_job
from upscaler.video.encode import EncodeSettings
from upscaler.video.events import Note, Progress
from upscaler.video.job import run_video_job
from upscaler.video.plan import plan_video_job
from upscaler.video.resume import lock as video_lock
from upscaler.video.resume import parts as video_parts
from upscaler.video.resume.journal import Journal, PartRecord, read_journal, write_journal
from upscaler.video.resume.lock import hold_output

LOSSLESS = EncodeSettings(codec="ffv1")
KEY = {"model": "nearest-x2"}


def nearest(rgb: np.ndarray) -> np.ndarray:
    """A stand-in model: x2 by repeating pixels, so a run costs nothing and is exactly reproducible."""
    return rgb.repeat(2, axis=0).repeat(2, axis=1)


class Counting:
    """`nearest` that counts its calls and can fail at one call."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.calls == self.fail_at:
            raise UpscaleError("the model gave up")
        self.calls += 1
        return nearest(rgb)


def plan(source: Path, destination: Path, **options):
    options.setdefault("part_frames", 8)
    options.setdefault("model_key", KEY)
    return plan_video_job(source, destination, scale=2, **options)


_HOLDER = """
import sys
from pathlib import Path
from upscaler.video.resume.lock import hold_output
with hold_output(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held_by_another_process(destination: Path) -> Iterator[subprocess.Popen]:
    """Another process holding `destination` (as a running `upscale video` does) until the block ends; the
    block may kill it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(destination)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        if holder.poll() is None:
            holder.stdin.close()
        holder.wait(timeout=30)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------------------------- the result


def test_size_frames_timestamps_and_audio_bytes_are_kept(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    out = tmp_path / "out.mp4"
    report = run_video_job(plan(source, out), nearest)

    before, after = check.decode(source), check.decode(out)
    assert (after.width, after.height) == (2 * before.width, 2 * before.height)
    assert len(after.times) == len(before.times) == report.frames == 24
    assert check.relative_times(after.times) == check.relative_times(before.times)
    assert check.packet_hashes(out, "audio") == check.packet_hashes(source, "audio")
    assert report.parts == 3 and report.resumed_parts == 0
    assert leftovers(tmp_path, {"cfr.mp4", "out.mp4"}) == []


class Streaming:
    """`nearest` through a real Tiler, taking frames as a stream so tiles of consecutive frames share
    batches (as `Upscaler` does); records each batch's size and can fail at one batch."""

    def __init__(self, tile: int, batch_size: int = 3, fail_at_batch: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_at_batch = fail_at_batch
        self.tiler = Tiler(self._infer, 2, SizeRequirement(), tile=tile, overlap=4, batch_size=batch_size)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if len(self.batches) == self.fail_at_batch:
            raise UpscaleError("the model gave up")
        self.batches.append(batch.shape[0])
        return batch.repeat(2, axis=2).repeat(2, axis=3)

    def upscale_stream(self, frames, finish=None):
        chw = ((key, rgb.transpose(2, 0, 1)) for key, rgb in frames)
        for key, output in self.tiler.upscale_stream(chw, finish):
            yield key, output if finish else np.ascontiguousarray(output.transpose(1, 2, 0))

    def one_frame(self, rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.tiler.upscale(rgb.transpose(2, 0, 1)).transpose(1, 2, 0))


# 64x48 frames: one tile of 64, or several of 16; the clip's frame count is not a multiple of 3.
@pytest.mark.parametrize(("tile", "tiles"), [(64, 1), (16, 12)])
def test_batches_across_frames_give_the_same_frames_and_timestamps(
    tmp_path: Path, tile: int, tiles: int
) -> None:
    source = clips.vfr_clip(tmp_path)
    alone, batched = tmp_path / "alone.mkv", tmp_path / "batched.mkv"
    run_video_job(plan(source, alone, settings=LOSSLESS, part_frames=4), Streaming(tile).one_frame)
    streaming = Streaming(tile)
    report = run_video_job(plan(source, batched, settings=LOSSLESS, part_frames=4), streaming)
    assert report.frames == len(clips.VFR_PTS) and report.frames % 3
    expected, got = check.decode(alone), check.decode(batched)
    assert got.hashes == expected.hashes
    assert got.times == expected.times
    assert check.relative_times(got.times) == [t - clips.VFR_PTS[0] for t in clips.VFR_PTS]
    full, rest = divmod(report.frames * tiles, 3)
    assert streaming.batches == [3] * full + ([rest] if rest else [])


def test_a_failing_batch_across_frames_names_its_first_frame(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=12, audio=False)
    out = tmp_path / "out.mkv"
    with pytest.raises(StageError) as caught:
        run_video_job(plan(source, out), Streaming(64, fail_at_batch=2))
    # Batches of three one-tile frames: the third holds frames 6, 7 and 8.
    assert str(caught.value) == "infer failed at frame 6: the model gave up"
    assert leftovers(tmp_path, {"cfr.mp4"}) == []


@pytest.mark.parametrize(
    ("size", "upscaled", "depths"),
    [
        ((64, 48), (128, 96), (video_job.DECODE_QUEUE_FRAMES, video_job.ENCODE_QUEUE_FRAMES)),
        ((3840, 2160), (7680, 4320), (2, 2)),  # 4K in (100 MB a frame), 8K out (400 MB)
        ((1280, 720), (5120, 2880), (6, 2)),  # 720p in (11 MB), 5K out (177 MB)
        ((640, 360), (2560, 1440), (video_job.DECODE_QUEUE_FRAMES, 2)),
        ((7680, 4320), (30720, 17280), (2, 2)),  # never below two frames
    ],
)
def test_queue_depths_are_capped_in_bytes(size, upscaled, depths) -> None:
    decoded = size[0] * size[1] * 3 * 4
    encoded = upscaled[0] * upscaled[1] * 3 * 4
    got = (
        video_job._queue_depth(video_job.DECODE_QUEUE_FRAMES, decoded),
        video_job._queue_depth(video_job.ENCODE_QUEUE_FRAMES, encoded),
    )
    assert got == depths


def test_variable_frame_rate_stays_variable(tmp_path: Path) -> None:
    source = clips.vfr_clip(tmp_path)
    out = tmp_path / "out.mkv"
    run_video_job(plan(source, out, settings=LOSSLESS, part_frames=4), nearest)
    times = check.relative_times(check.decode(out).times)
    assert times == [t - clips.VFR_PTS[0] for t in clips.VFR_PTS]


def test_subtitles_and_stream_languages_are_kept(tmp_path: Path) -> None:
    source = clips.subtitle_clip(tmp_path, "mkv")
    out = tmp_path / "out.mkv"
    run_video_job(plan(source, out), nearest)
    assert (
        check.streams(out)[1:]
        == check.streams(source)[1:]
        == [
            ("audio", "aac", "fra"),
            ("subtitle", "srt", "deu"),
        ]
    )
    assert check.packet_hashes(out, "subtitle") == check.packet_hashes(source, "subtitle")


def test_rotation_is_kept(tmp_path: Path) -> None:
    source = clips.rotated_clip(tmp_path, rotation=90)
    out = tmp_path / "out.mp4"
    run_video_job(plan(source, out), nearest)
    decoded = check.decode(out)
    assert decoded.rotation == check.decode(source).rotation == 90
    assert (decoded.width, decoded.height) == (128, 96)  # coded size; players turn it


def test_ten_bit_stays_ten_bit(tmp_path: Path) -> None:
    import av

    source = clips.ten_bit_clip(tmp_path)
    out = tmp_path / "out.mkv"
    run_video_job(plan(source, out), nearest)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert len(check.decode(out).times) == 12


def test_outscale_resizes_after_the_model(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    out = tmp_path / "out.mkv"
    report = run_video_job(plan(source, out, outscale=1.5), nearest)
    decoded = check.decode(out)
    assert (decoded.width, decoded.height) == (96, 72) == (report.width, report.height)


def test_an_odd_size_for_4_2_0_is_padded_with_a_warning(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    planned = plan(source, tmp_path / "out.mp4", outscale=1.1)
    assert (planned.width, planned.height) == (70, 53)
    assert planned.warnings == (
        "yuv420p needs even sides: 70x53 is encoded as 70x54 "
        "(the last row or column repeated; another --outscale avoids it)",
    )


def test_start_and_duration_upscale_a_window(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    out = tmp_path / "out.mkv"
    report = run_video_job(plan(source, out, start=0.25, duration=0.5), nearest)
    assert report.frames == 12  # 24 fps: frames 6 to 17
    assert len(check.decode(out).times) == 12


def test_a_truncated_file_gives_the_frames_that_decode_and_a_warning(tmp_path: Path) -> None:
    whole = clips.write_clip(tmp_path / "whole.mkv", frames=96, width=32, height=24, options={"g": "8"})
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 5])
    out = tmp_path / "out.mkv"
    report = run_video_job(plan(cut, out), nearest)
    assert 0 < report.frames < 96
    assert len(check.decode(out).times) == report.frames
    assert [line.split(":")[0] for line in report.warnings] == ["cut.mkv"]
    assert f"decoding stopped after {report.frames} frames" in report.warnings[0]


def test_a_window_after_the_end_is_refused(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    with pytest.raises(InputError, match="--start 30"):
        plan(source, tmp_path / "out.mkv", start=30)


@pytest.mark.parametrize("window", [{"duration": float("inf")}, {"start": float("nan")}, {"start": -1.0}])
def test_a_window_that_is_not_a_finite_time_is_refused(tmp_path: Path, window: dict) -> None:
    # An infinite --duration once reached the decoder and failed there as an internal error.
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    with pytest.raises(InputError, match="^--(start|duration): must be"):
        plan(source, tmp_path / "out.mkv", **window)


def test_interlaced_input_without_deinterlace_is_warned_about(tmp_path: Path) -> None:
    source = shared_data("video", "fixture-raw.mts")
    # 1920x1080 x2: also x264's look-ahead, shortened at 3840x2160 (a warning of its own)
    lookahead = (
        "libx264 looks ahead 10 frames, not preset medium's 40: at 3840x2160 that keeps its look-ahead "
        "near 256 MiB (--encoder-option rc-lookahead=N to choose)"
    )
    warned = plan(source, tmp_path / "out.mkv").warnings
    assert warned == (
        lookahead,
        "fixture-raw.mts is interlaced; upscaling its fields as frames gives combing "
        "(--deinterlace deinterlaces it first)",
    )
    assert plan(source, tmp_path / "out.mkv", deinterlace=True).warnings == (lookahead,)


def test_progress_reaches_the_total(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    events: list = []
    run_video_job(plan(source, tmp_path / "out.mkv"), nearest, events=events.append, progress_interval=0)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.frames for p in progress] == sorted(p.frames for p in progress)
    assert progress[-1].frames == progress[-1].total == 24
    assert progress[-1].parts_done == 3
    assert all(p.fps is None or p.fps > 0 for p in progress)


# ---------------------------------------------------------------------------------------- resume


def interrupted_then_resumed(tmp_path: Path, source: Path, fail_at: int) -> tuple[Path, Counting]:
    out = tmp_path / "resumed.mkv"
    first = Counting(fail_at=fail_at)
    with pytest.raises(StageError) as caught:
        run_video_job(plan(source, out, settings=LOSSLESS), first)
    assert caught.value.stage == "infer" and caught.value.frame == fail_at
    assert "run the same command again to resume" in caught.value.hint
    assert not out.exists()
    second = Counting()
    events: list = []
    report = run_video_job(plan(source, out, settings=LOSSLESS), second, events=events.append)
    assert report.resumed_frames == fail_at // 8 * 8
    assert any(isinstance(e, Note) and e.message.startswith("resuming") for e in events)
    return out, second


def test_resume_gives_the_same_video_as_a_clean_run(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=40)  # keyframes every 8 frames: parts of 8
    clean = tmp_path / "clean.mkv"
    run_video_job(plan(source, clean, settings=LOSSLESS), nearest)
    resumed, second = interrupted_then_resumed(tmp_path, source, fail_at=21)
    assert second.calls == 40 - 16  # the two finished parts were not upscaled again
    a, b = check.decode(clean), check.decode(resumed)
    assert b.hashes == a.hashes and b.times == a.times
    assert check.packet_hashes(resumed, "audio") == check.packet_hashes(clean, "audio")
    assert not (tmp_path / ".resumed.mkv.upscale-parts").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_part_is_made_again_with_every_later_part(tmp_path: Path, damage: str) -> None:
    source = clips.cfr_clip(tmp_path, frames=40, audio=False)
    out = tmp_path / "out.mkv"
    with pytest.raises(StageError):
        run_video_job(plan(source, out, settings=LOSSLESS), Counting(fail_at=30))  # 2 or 3 parts done
    work = tmp_path / ".out.mkv.upscale-parts"
    journal = read_journal(work / "journal.json")
    assert len(journal.parts) >= 2
    assert all(p.size > 0 and len(p.sha256) == 64 for p in journal.parts)
    second = work / journal.parts[1].file
    data = second.read_bytes()
    if damage == "truncate":  # a crash before the OS flushed it, as a disk error would leave it
        second.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        second.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        second.unlink()
    counting, events = Counting(), []
    report = run_video_job(plan(source, out, settings=LOSSLESS), counting, events=events.append)
    kept = journal.parts[0].frames
    assert report.resumed_frames == kept and counting.calls == 40 - kept and report.frames == 40
    warned = [e.message for e in events if isinstance(e, Note) and e.warning]
    later = len(journal.parts) - 2
    assert any(
        m.startswith(f"{journal.parts[1].file} ") and f"the {later} part(s) after" in m for m in warned
    )
    clean = tmp_path / "clean.mkv"
    run_video_job(plan(source, clean, settings=LOSSLESS), nearest)
    assert check.decode(out).hashes == check.decode(clean).hashes


def test_a_kill_during_the_mux_leaves_a_temporary_the_next_run_removes(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=8, audio=False)
    out = tmp_path / "out.mkv"
    stale = tmp_path / ".out.0123abcd.partial.mkv"  # what a SIGKILL during the mux leaves
    stale.write_bytes(b"x" * 1000)
    mine = tmp_path / ".outer.0123abcd.partial.mkv"  # another output's: not ours to remove
    mine.write_bytes(b"y")
    run_video_job(plan(source, out, settings=LOSSLESS), nearest)
    assert not stale.exists() and mine.exists() and out.is_file()


def test_a_failing_progress_callback_stops_the_job_and_the_parts_survive(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"

    def stop_after_first_part(event) -> None:
        if isinstance(event, Progress) and event.parts_done == 1:
            raise RuntimeError("stop")

    with pytest.raises(StageError) as caught:
        run_video_job(plan(source, out, settings=LOSSLESS), nearest, events=stop_after_first_part)
    assert caught.value.stage == "encode"
    journal = read_journal(tmp_path / ".out.mkv.upscale-parts" / "journal.json")
    assert journal is not None and [p.frames for p in journal.parts] == [8]
    counting = Counting()
    report = run_video_job(plan(source, out, settings=LOSSLESS), counting)
    assert counting.calls == 16 and report.frames == 24
    clean = tmp_path / "clean.mkv"
    run_video_job(plan(source, clean, settings=LOSSLESS), nearest)
    assert check.decode(out).hashes == check.decode(clean).hashes


def test_a_journal_for_other_settings_is_discarded(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"
    with pytest.raises(StageError):
        run_video_job(plan(source, out, settings=LOSSLESS), Counting(fail_at=20))
    events: list = []
    counting = Counting()
    other = plan(source, out, settings=LOSSLESS, model_key={"model": "another"})
    report = run_video_job(other, counting, events=events.append)
    assert counting.calls == 24 and report.resumed_frames == 0
    assert any(isinstance(e, Note) and "other settings" in e.message for e in events)


def test_restart_discards_a_matching_journal(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"
    with pytest.raises(StageError):
        run_video_job(plan(source, out, settings=LOSSLESS), Counting(fail_at=20))
    counting = Counting()
    report = run_video_job(plan(source, out, settings=LOSSLESS), counting, resume=False)
    assert counting.calls == 24 and report.resumed_frames == 0


def test_a_source_without_timestamps_restarts_with_a_warning(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"
    planned = plan(source, out, settings=LOSSLESS)
    planned = dataclasses.replace(planned, source=dataclasses.replace(planned.source, has_timestamps=False))
    with pytest.raises(StageError):
        run_video_job(planned, Counting(fail_at=20))
    counting = Counting()
    report = run_video_job(planned, counting)
    assert counting.calls == 24
    assert any("cannot resume" in line for line in report.warnings)


def test_the_fingerprint_follows_the_source_and_the_settings(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    out = tmp_path / "out.mkv"
    base = plan(source, out).fingerprint
    assert plan(source, out).fingerprint == base
    assert plan(source, out, audio=False).fingerprint == base  # the mux runs again anyway
    assert plan(source, out, settings=EncodeSettings(crf=30)).fingerprint != base
    assert plan(source, out, outscale=1).fingerprint != base
    assert plan(source, out, start=0.1).fingerprint != base
    assert plan(source, out, model_key={"model": "other"}).fingerprint != base
    clips.cfr_clip(tmp_path, frames=7, audio=False)  # the same name, other content
    assert plan(source, out).fingerprint != base


def test_journal_round_trip_and_unreadable_journals(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    journal = Journal("abc", [PartRecord("part-00000.mkv", 8, 0, 7, 1234, "ab" * 32)], complete=False)
    write_journal(path, journal)
    assert read_journal(path) == journal
    path.write_text("{not json")
    assert read_journal(path) is None
    path.write_text(json.dumps({"version": 99}))
    assert read_journal(path) is None
    # a version-1 journal recorded no size or digest: not trusted
    path.write_text(
        json.dumps(
            {"version": 1, "fingerprint": "abc", "complete": False,
             "parts": [{"file": "p.mkv", "frames": 8, "first_pts": 0, "last_pts": 7}]}
        )
    )  # fmt: skip
    assert read_journal(path) is None


# ------------------------------------------------------------------------------- refusals, failure


def test_an_existing_output_is_not_overwritten_without_overwrite(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    out = tmp_path / "out.mkv"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists") as caught:
        plan(source, out)
    assert caught.value.hint == "--overwrite replaces it"
    run_video_job(plan(source, out, overwrite=True), nearest)
    assert len(check.decode(out).times) == 6


def test_the_input_is_never_overwritten(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False, name="in.mkv")
    for target in (source, tmp_path / "." / "in.mkv"):
        with pytest.raises(OutputError, match="is the input"):
            plan(source, target, overwrite=True)
    link = tmp_path / "link.mkv"
    link.symlink_to(source)
    with pytest.raises(OutputError, match="is the input"):
        plan(source, link, overwrite=True)


def test_a_failure_leaves_no_file_behind(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=6, audio=False)
    out = tmp_path / "out.mkv"
    with pytest.raises(StageError) as caught:
        run_video_job(plan(source, out), Counting(fail_at=2))
    assert str(caught.value) == "infer failed at frame 2: the model gave up"
    assert "resume" not in (caught.value.hint or "")  # nothing finished, nothing kept
    assert leftovers(tmp_path, {"cfr.mp4"}) == []


def test_an_interrupt_keeps_finished_parts_and_leaves_no_output(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"

    def interrupt(rgb: np.ndarray) -> np.ndarray:
        interrupt.calls += 1
        if interrupt.calls == 12:
            raise KeyboardInterrupt
        return nearest(rgb)

    interrupt.calls = 0
    with pytest.raises(KeyboardInterrupt):
        # With two frames per queue, the encoder has taken frame 8 (which closes the first part)
        # before frame 11 is upscaled.
        run_video_job(plan(source, out, settings=LOSSLESS), interrupt, queue_size=(2, 2))
    assert leftovers(tmp_path, {"cfr.mp4"}) == [".out.mkv.upscale-parts"]
    work = tmp_path / ".out.mkv.upscale-parts"
    assert sorted(p.name for p in work.iterdir()) == ["journal.json", "part-00000.nut"]


def test_a_failed_mux_leaves_no_output_and_the_next_run_only_muxes(tmp_path: Path, monkeypatch) -> None:
    import upscaler.video.job

    source = clips.cfr_clip(tmp_path, frames=12)
    out = tmp_path / "out.mp4"
    mux = upscaler.video.job.mux_output

    def failing_mux(parts, source, destination, encoding, **options):
        destination.write_bytes(b"half a file")
        raise OutputError("the disk is full")

    monkeypatch.setattr(upscaler.video.job, "mux_output", failing_mux)
    with pytest.raises(OutputError) as caught:
        run_video_job(plan(source, out), nearest)
    assert "the same command muxes them again" in caught.value.hint
    assert leftovers(tmp_path, {"cfr.mp4"}) == [".out.mp4.upscale-parts"]

    monkeypatch.setattr(upscaler.video.job, "mux_output", mux)
    counting = Counting()
    report = run_video_job(plan(source, out), counting)
    assert counting.calls == 0 and report.frames == report.resumed_frames == 12
    assert len(check.decode(out).times) == 12
    assert leftovers(tmp_path, {"cfr.mp4", "out.mp4"}) == []


def test_a_failed_mux_names_the_output_not_its_temporary_file(tmp_path: Path, monkeypatch) -> None:
    import upscaler.video.job

    def failing_mux(parts, source, destination, encoding, **options):
        destination.write_bytes(b"half a file")
        raise OutputError(f"{destination.name}: writing failed: No space left on device")

    monkeypatch.setattr(upscaler.video.job, "mux_output", failing_mux)
    source = clips.cfr_clip(tmp_path, frames=4, audio=False)
    with pytest.raises(OutputError) as caught:
        run_video_job(plan(source, tmp_path / "out.mkv"), nearest)
    assert str(caught.value) == "out.mkv: writing failed: No space left on device"
    assert leftovers(tmp_path, {"cfr.mp4"}) == [".out.mkv.upscale-parts"]


def test_a_failed_rename_is_an_output_error(tmp_path: Path, monkeypatch) -> None:
    import upscaler.video.job

    replace = os.replace

    def failing_replace(source, destination):
        if Path(destination).name == "out.mkv":
            raise PermissionError(13, "Permission denied")
        replace(source, destination)

    monkeypatch.setattr(upscaler.video.job.os, "replace", failing_replace)
    source = clips.cfr_clip(tmp_path, frames=4, audio=False)
    with pytest.raises(OutputError, match="out.mkv: cannot be written: Permission denied"):
        run_video_job(plan(source, tmp_path / "out.mkv"), nearest)


def test_a_file_without_video_is_refused(tmp_path: Path) -> None:
    source = clips.audio_only_clip(tmp_path)
    with pytest.raises(InputError, match="tone.m4a"):
        plan(source, tmp_path / "out.mp4")
    assert leftovers(tmp_path, {"tone.m4a"}) == []


# ------------------------------------------------------------------------------ one run per output


def test_a_second_run_for_the_same_output_stops_at_once_and_changes_nothing(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"
    with pytest.raises(StageError):
        run_video_job(plan(source, out, settings=LOSSLESS), Counting(fail_at=13))
    work = tmp_path / ".out.mkv.upscale-parts"
    before = snapshot(work)
    assert "journal.json" in before and "part-00000.nut" in before
    with held_by_another_process(out) as holder:
        second = Counting()
        with pytest.raises(OutputError) as caught:
            run_video_job(plan(source, out, settings=LOSSLESS), second, resume=False)
        assert caught.value.message == f"{out} is being written by another upscale video (pid {holder.pid})"
        assert caught.value.hint is None
        assert second.calls == 0 and not out.exists()
        assert snapshot(work) == {**before, "lock": f"{holder.pid}\n".encode()}
        # The lock goes with its process, however that ends.
        holder.kill()
        holder.wait(timeout=30)
        report = run_video_job(plan(source, out, settings=LOSSLESS), nearest)
    assert report.resumed_parts == 1 and out.exists()
    assert not work.exists()


def test_a_job_holds_its_output_while_it_runs(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=8, audio=False)
    out = tmp_path / "out.mkv"
    seen: list[str] = []

    def upscale(rgb: np.ndarray) -> np.ndarray:
        if not seen:
            # From another process, as a second `upscale video` would try it.
            result = subprocess.run(
                [sys.executable, "-c", _HOLDER, str(out)],
                input="",
                capture_output=True,
                text=True,
                cwd=Path(__file__).parents[2],
            )
            seen.append(result.stderr.strip().splitlines()[-1])
        return nearest(rgb)

    with hold_output(out):  # held by the caller too (as the CLI does): nesting in one process is fine
        run_video_job(plan(source, out), upscale)
        assert (tmp_path / ".out.mkv.upscale-parts" / "lock").exists()
    assert seen == [
        f"upscaler.errors.OutputError: {out} is being written by another upscale video (pid {os.getpid()})"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfr.mp4", "out.mkv"]


def test_without_flock_a_lock_file_of_a_live_process_stops_and_a_stale_one_is_taken_over(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(video_lock, "fcntl", None)
    out = tmp_path / "out.mkv"
    work = tmp_path / ".out.mkv.upscale-parts"
    work.mkdir()
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    ) as live:
        (work / "lock").write_text(f"{live.pid}\n")
        with (
            pytest.raises(
                OutputError, match=rf"is being written by another upscale video \(pid {live.pid}\)"
            ),
            hold_output(out),
        ):
            pass
        live.stdin.close()
    assert (work / "lock").read_text() == f"{live.pid}\n"
    # live has ended: its lock file is stale.
    with hold_output(out):
        assert (work / "lock").read_text() == f"{os.getpid()}\n"
    assert not work.exists()


# ----------------------------------------------------------------------- what encoder libraries print


def test_an_encoder_option_the_encoder_refuses_is_named_with_its_reason_and_nothing_else_printed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = clips.cfr_clip(tmp_path, frames=4, audio=False)
    capfd.readouterr()
    with pytest.raises(OutputError) as caught:
        plan(
            source,
            tmp_path / "out.mp4",
            settings=EncodeSettings(options=(("preset", "slow"), ("tune", "bogus"))),
        )
    # x264 writes `x264 [error]: invalid tune 'bogus'` to stderr itself; its words belong in our line.
    assert caught.value.message == "--encoder-option tune=bogus: libx264 refused it: invalid tune 'bogus'"
    with pytest.raises(OutputError) as caught:
        plan(
            source,
            tmp_path / "out.mkv",
            settings=EncodeSettings(codec="libvpx-vp9", options=(("deadline", "bogus"),)),
        )
    # libvpx-vp9's reason comes through FFmpeg's log.
    assert caught.value.message.startswith("--encoder-option deadline=bogus: libvpx-vp9 refused it: ")
    assert '"deadline"' in caught.value.message
    assert capfd.readouterr().err == ""
    assert av.logging.get_level() is None  # FFmpeg's log is as quiet as before
    assert plan(source, tmp_path / "out.mp4", settings=EncodeSettings(options=(("tune", "film"),)))


def test_with_ffmpeg_logging_turned_on_the_libraries_speak_for_themselves(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = clips.cfr_clip(tmp_path, frames=4, audio=False)
    av.logging.set_level(av.logging.ERROR)
    try:
        with pytest.raises(OutputError, match="tune=bogus"):
            plan(source, tmp_path / "out.mp4", settings=EncodeSettings(options=(("tune", "bogus"),)))
    finally:
        av.logging.set_level(None)
    assert "x264 [error]: invalid tune 'bogus'" in capfd.readouterr().err


def test_a_full_disk_is_said_as_such_and_the_finished_parts_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"
    written = []

    class FillingWriter(video_parts.PartWriter):
        def write(self, pts, rgb):
            written.append(pts)
            if len(written) == 12:  # in the second part
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write(pts, rgb)

    monkeypatch.setattr(video_parts, "PartWriter", FillingWriter)
    with pytest.raises(OutputError) as caught:
        run_video_job(plan(source, out, settings=LOSSLESS), nearest)
    message = caught.value.message
    assert message.startswith(f"no space left on the device that holds {tmp_path} (")
    assert "free); the job needs about " in message and "please report" not in (caught.value.hint or "")
    assert (
        "free some space" in caught.value.hint and "run the same command again to resume" in caught.value.hint
    )
    journal = read_journal(tmp_path / ".out.mkv.upscale-parts" / "journal.json")
    assert journal is not None and len(journal.parts) == 1 and not out.exists()
    monkeypatch.undo()
    report = run_video_job(plan(source, out, settings=LOSSLESS), nearest)
    assert report.resumed_frames == journal.frames and report.frames == 24
