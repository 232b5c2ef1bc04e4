"""probe_video and decode_frames on the shared real clips and on clips generated with PyAV."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from tests.upscaler import video_clips as clips
from upscaler.errors import InputError
from upscaler.video.decode import decode_frames
from upscaler.video.probe import ColourTags, probe_video

# name: (coded width, height, rotation, frames that decode, interlaced, kinds of the other streams)
REAL_CLIPS = {
    "realshort.mp4": (320, 240, 0, 36, False, ("audio",)),
    "big_buck_bunny_432_433.webm": (1280, 720, 0, 24, False, ("audio",)),
    "no_duration.webm": (1280, 720, 0, 74, False, ("audio",)),
    "test.avi": (320, 240, 0, 164, False, ("audio",)),
    "fixture-mjpeg.mov": (640, 480, 0, 15, False, ("audio",)),
    "fixture-raw.mts": (1920, 1080, 0, 31, True, ("audio",)),
    "fixture.3gp": (352, 288, 0, 166, False, ("audio",)),
    "fixture.flv": (268, 156, 0, 25, False, ()),
    "iphone_rotated.mov": (568, 320, 270, 66, False, ("audio",)),
    "pigs_in_a_polka.gif": (314, 273, 0, 30, False, ()),
    "fixture2.mkv": (720, 404, 0, 37, False, ("audio",)),
}


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clips_probe_and_decode_in_display_order(name: str) -> None:
    width, height, rotation, frames, interlaced, others = REAL_CLIPS[name]
    info = probe_video(shared_data("video", name))
    assert (info.width, info.height, info.rotation, info.interlaced) == (width, height, rotation, interlaced)
    assert tuple(other.kind for other in info.others) == others
    assert info.has_timestamps
    problems: list[str] = []
    decoded = list(decode_frames(info, problems=problems))
    assert len(decoded) == frames
    pts = [frame.pts for frame in decoded]
    assert pts == sorted(set(pts)), "timestamps must increase strictly, in display order"
    assert decoded[0].key_frame
    assert decoded[0].rgb.shape == (height, width, 3) and decoded[0].rgb.dtype == np.float32
    assert decoded[0].rgb.min() >= 0.0 and decoded[0].rgb.max() <= 1.0
    assert (problems != []) == (name == "fixture2.mkv")


def test_smpte_bars_probe_and_window() -> None:
    info = probe_video(shared_data("video", "smpte-2997.mp4"))
    assert (info.width, info.height, info.frame_count, info.bit_depth) == (1920, 1080, 251, 8)
    assert info.colour == ColourTags(range="tv", primaries="bt709", transfer="bt709", matrix="bt709")
    window = list(decode_frames(info, start=2.0, duration=0.2))
    assert [frame.pts for frame in window] == [25600 + 512 * i for i in range(5)]  # 25 fps in 1/12800


def test_iphone_audio_is_stream_zero_and_video_stream_one() -> None:
    info = probe_video(shared_data("video", "iphone_rotated.mov"))
    assert info.stream_index == 1
    assert [(other.index, other.kind, other.codec) for other in info.others] == [(0, "audio", "aac")]


def test_avi_decode_order_stamps_become_display_order() -> None:
    # AVI carries decode-order stamps (1, 2, 4, 3, ...) on frames that come out in display order.
    info = probe_video(shared_data("video", "test.avi"))
    assert [frame.pts for frame in decode_frames(info)][:8] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_truncated_file_decodes_what_it_has_and_says_so() -> None:
    info = probe_video(shared_data("video", "fixture2.mkv"))
    problems: list[str] = []
    assert len(list(decode_frames(info, problems=problems))) == 37
    assert len(problems) == 1
    assert problems[0].startswith("fixture2.mkv: decoding stopped after 37 frames:")


def test_corrupt_missing_and_videoless_files_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^fixture-corrupt.mkv: cannot be opened as a video"):
        probe_video(shared_data("video", "fixture-corrupt.mkv"))
    with pytest.raises(InputError, match="no such file"):
        probe_video(tmp_path / "absent.mp4")
    with pytest.raises(InputError, match=r"^tone.m4a: has no video stream$"):
        probe_video(clips.audio_only_clip(tmp_path))


def test_generated_clips_probe(tmp_path: Path) -> None:
    vfr = probe_video(clips.vfr_clip(tmp_path))
    assert vfr.time_base == Fraction(1, 1000)
    assert [frame.pts for frame in decode_frames(vfr)] == list(clips.VFR_PTS)
    assert [(other.kind, other.codec, other.language, other.title) for other in vfr.others] == [
        ("audio", "aac", "fra", "tone")
    ]
    rotated = probe_video(clips.rotated_clip(tmp_path, rotation=90))
    assert rotated.rotation == 90
    subtitled = probe_video(clips.subtitle_clip(tmp_path, "mkv"))
    assert [(other.kind, other.codec) for other in subtitled.others] == [
        ("audio", "aac"),
        ("subtitle", "subrip"),
    ]


def test_frames_without_timestamps_get_them_from_the_frame_rate(tmp_path: Path) -> None:
    info = probe_video(clips.raw_h264_clip(tmp_path))
    assert not info.has_timestamps and info.average_rate == 25
    step = round(1 / (info.average_rate * info.time_base))
    assert [frame.pts for frame in decode_frames(info)] == [step * i for i in range(12)]
    assert [frame.pts for frame in decode_frames(info, after_pts=7 * step)] == [
        step * i for i in range(8, 12)
    ]


def test_ten_bit_decodes_through_16_bit_rgb(tmp_path: Path) -> None:
    info = probe_video(clips.ten_bit_clip(tmp_path))
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p10le", 10)
    frame = next(decode_frames(info))
    assert frame.levels.dtype == np.uint16
    rgb = frame.rgb
    levels = rgb * 255
    # Through rgb24 every value would sit on an 8-bit level.
    assert np.abs(levels - np.round(levels)).max() > 0.1


def test_frames_wait_as_levels_and_convert_to_floats_on_use(tmp_path: Path) -> None:
    frame = next(decode_frames(probe_video(clips.cfr_clip(tmp_path, frames=2, audio=False))))
    assert frame.levels.dtype == np.uint8 and frame.levels.flags.owndata
    rgb = frame.rgb
    assert rgb.dtype == np.float32 and rgb.shape == frame.levels.shape
    np.testing.assert_allclose(rgb * 255, frame.levels, rtol=0, atol=1e-4)
    rgb[...] = 0  # a new array each time: the frame keeps its levels
    assert frame.rgb.max() > 0


@pytest.mark.parametrize("full_range", [False, True])
def test_colour_bars_decode_with_the_source_matrix_and_range(tmp_path: Path, full_range: bool) -> None:
    info = probe_video(clips.colour_bars_clip(tmp_path, full_range=full_range))
    assert info.colour == ColourTags(
        range="pc" if full_range else "tv", primaries="bt709", transfer="bt709", matrix="bt709"
    )
    assert np.abs(clips.bar_means(next(decode_frames(info)).rgb) - np.array(clips.BARS)).max() <= 2.0
    # The same pixels read with BT.601 instead are far off: the test sees the matrix.
    wrong = dataclasses.replace(info, colour=dataclasses.replace(info.colour, matrix="smpte170m"))
    assert np.abs(clips.bar_means(next(decode_frames(wrong)).rgb) - np.array(clips.BARS)).max() > 10.0


def test_window_and_after_pts(tmp_path: Path) -> None:
    info = probe_video(clips.cfr_clip(tmp_path, frames=24))
    step = 512  # 24 fps in MP4's 1/12288
    everything = list(decode_frames(info))
    assert [frame.pts for frame in everything] == [step * i for i in range(24)]
    window = list(decode_frames(info, start=0.25, duration=0.5))
    assert [frame.pts for frame in window] == [step * i for i in range(6, 18)]
    after = list(decode_frames(info, after_pts=step * 13))
    assert [frame.pts for frame in after] == [step * i for i in range(14, 24)]
    # Seeking lands on a keyframe and decodes forward: the pixels equal those of a full decode.
    for late, full in zip(after, everything[14:], strict=True):
        np.testing.assert_array_equal(late.rgb, full.rgb)


def test_deinterlace_keeps_every_frame_and_its_timestamp(tmp_path: Path) -> None:
    info = probe_video(clips.cfr_clip(tmp_path, frames=8, audio=False))
    plain = list(decode_frames(info))
    woven = list(decode_frames(info, deinterlace=True))
    assert [frame.pts for frame in woven] == [frame.pts for frame in plain]
    assert any(not np.array_equal(a.rgb, b.rgb) for a, b in zip(plain, woven, strict=True))


def test_deinterlace_real_interlaced_clip() -> None:
    info = probe_video(shared_data("video", "fixture-raw.mts"))
    plain = [frame.pts for frame in decode_frames(info, duration=0.2)]
    woven = [frame.pts for frame in decode_frames(info, duration=0.2, deinterlace=True)]
    assert woven == plain and len(plain) == 6


def test_mpeg_ts_resume_after_a_seek_that_decodes_nothing() -> None:
    # MPEG-TS seeks to any packet, keyframe or not; after the last keyframe the decoder then gives no
    # frame at all, and a resumed job used to finish with the frames after `after_pts` silently missing.
    info = probe_video(shared_data("video", "fixture-raw.mts"))
    pts = [frame.pts for frame in decode_frames(info)]
    for index in (5, 17, 29):
        assert [frame.pts for frame in decode_frames(info, after_pts=pts[index])] == pts[index + 1 :]
