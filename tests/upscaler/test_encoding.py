"""resolve_encoding's defaults and one-line errors; PartWriter's timestamps, colour tags, depth and files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

import upscaler.video.encode as encoding_module
from tests.conftest import shared_data
from tests.upscaler import video_clips as clips
from upscaler.errors import OutputError
from upscaler.video.decode import decode_frames
from upscaler.video.encode import (
    EncodeSettings,
    bound_lookahead,
    frame_size,
    lookahead_frames,
    resolve_encoding,
)
from upscaler.video.probe import ColourTags, VideoInfo, probe_video
from upscaler.video.writer import PartWriter, quantize


@pytest.fixture(scope="module")
def cfr(tmp_path_factory: pytest.TempPathFactory) -> VideoInfo:
    return probe_video(clips.cfr_clip(tmp_path_factory.mktemp("cfr"), frames=12))


@pytest.fixture(scope="module")
def ten_bit(tmp_path_factory: pytest.TempPathFactory) -> VideoInfo:
    return probe_video(clips.ten_bit_clip(tmp_path_factory.mktemp("tenbit")))


def test_defaults_by_container(cfr: VideoInfo) -> None:
    mp4 = resolve_encoding(Path("out.mp4"), cfr, EncodeSettings())
    assert (mp4.container, mp4.codec, mp4.pix_fmt, mp4.part_suffix) == ("mp4", "libx264", "yuv420p", ".nut")
    assert mp4.describe() == "libx264 crf 18 preset medium yuv420p"
    assert resolve_encoding(Path("out.MKV"), cfr, EncodeSettings()).container == "matroska"
    webm = resolve_encoding(Path("out.webm"), cfr, EncodeSettings(crf=33))
    assert webm.describe() == "libvpx-vp9 crf 33 yuv420p b=0 row-mt=1"
    chosen = resolve_encoding(
        Path("out.mkv"), cfr, EncodeSettings(codec="libx265", preset="fast", options=(("tune", "grain"),))
    )
    assert chosen.options["tune"] == "grain" and chosen.describe().startswith("libx265 crf 20 preset fast")


def test_ten_bit_source_gets_a_ten_bit_pixel_format(ten_bit: VideoInfo) -> None:
    assert resolve_encoding(Path("o.mp4"), ten_bit, EncodeSettings()).pix_fmt == "yuv420p10le"
    assert resolve_encoding(Path("o.mkv"), ten_bit, EncodeSettings(codec="libx265")).pix_fmt == "yuv420p10le"
    # libvpx-vp9 in PyAV's FFmpeg is 8-bit only: say so rather than drop two bits silently.
    with pytest.raises(OutputError, match="no pixel format deeper than 8 bits") as caught:
        resolve_encoding(Path("o.webm"), ten_bit, EncodeSettings())
    assert "--pix-fmt yuv420p" in caught.value.hint
    assert resolve_encoding(Path("o.webm"), ten_bit, EncodeSettings(pix_fmt="yuv420p")).pix_fmt == "yuv420p"


def test_full_range_source_keeps_its_range() -> None:
    info = probe_video(shared_data("video", "fixture-mjpeg.mov"))
    encoding = resolve_encoding(Path("o.mp4"), info, EncodeSettings())
    assert encoding.pix_fmt == "yuv420p"
    assert encoding.colour == ColourTags(range="pc", primaries=None, transfer=None, matrix="bt470bg")


@pytest.mark.parametrize(
    ("destination", "settings", "message"),
    [
        (
            "o.xyz",
            EncodeSettings(),
            r"^o.xyz: unknown video container '.xyz'; known: .m4v, .mkv, .mov, .mp4, .webm$",
        ),
        ("o.mp4", EncodeSettings(codec="nope"), r"^--codec: this FFmpeg has no encoder 'nope'$"),
        ("o.mp4", EncodeSettings(codec="aac"), r"^--codec: 'aac' encodes audio, not video$"),
        ("o.webm", EncodeSettings(codec="libx264"), r"^o.webm: a webm file cannot hold libx264 video$"),
        (
            "o.mp4",
            EncodeSettings(pix_fmt="rgb24"),
            r"^--pix-fmt: libx264 does not take 'rgb24'; it takes yuv420p",
        ),
        ("o.mp4", EncodeSettings(crf=60), r"^--crf: must be between 0 and 51 for libx264 \(got 60\)$"),
        (
            "o.mkv",
            EncodeSettings(codec="ffv1", crf=10),
            r"^--crf: ffv1 has no constant-quality \(crf\) setting$",
        ),
        ("o.mp4", EncodeSettings(preset="warp"), r"^--preset: libx264 knows ultrafast, .* \(got 'warp'\)$"),
        ("o.webm", EncodeSettings(preset="fast"), r"^--preset: libvpx-vp9 has no presets$"),
        (
            "o.mp4",
            EncodeSettings(options=(("bogus", "1"),)),
            r"^--encoder-option: libx264 has no option 'bogus'$",
        ),
        (
            "o.mp4",
            EncodeSettings(options=(("tune", "nonsense"),)),
            r"^--codec: libx264 .* cannot be opened: ",
        ),
    ],
)
def test_one_line_errors(cfr: VideoInfo, destination: str, settings: EncodeSettings, message: str) -> None:
    with pytest.raises(OutputError, match=message) as caught:
        resolve_encoding(Path(destination), cfr, settings)
    assert "\n" not in str(caught.value)


def test_odd_sides_are_padded_to_even_for_subsampled_chroma(cfr: VideoInfo) -> None:
    encoding = resolve_encoding(Path("o.mp4"), cfr, EncodeSettings())
    assert frame_size(encoding, 314, 273) == (314, 274)
    assert frame_size(encoding, 65, 48) == (66, 48)
    full_chroma = resolve_encoding(Path("o.mkv"), cfr, EncodeSettings(pix_fmt="yuv444p"))
    assert frame_size(full_chroma, 314, 273) == (314, 273)


def write_part(path: Path, info: VideoInfo, encoding, frames, width=None, height=None) -> None:
    with PartWriter(path, info, encoding, width or info.width, height or info.height) as writer:
        for frame in frames:
            writer.write(frame.pts, frame.rgb)


def test_part_keeps_variable_frame_rate_timestamps_exactly(tmp_path: Path) -> None:
    info = probe_video(clips.vfr_clip(tmp_path))
    encoding = resolve_encoding(tmp_path / "o.mkv", info, EncodeSettings(crf=0))
    write_part(tmp_path / "p.nut", info, encoding, decode_frames(info))
    with av.open(str(tmp_path / "p.nut")) as part:
        stream = part.streams.video[0]
        seconds = sorted(
            packet.pts * stream.time_base for packet in part.demux(stream) if packet.pts is not None
        )
        first = Fraction(part.metadata["upscale_first_pts"])
    # NUT shifts the whole part when the first decode time is negative; the recorded first pts undoes it.
    shift = seconds[0] - first
    assert [s - shift for s in seconds] == [Fraction(p, 1000) for p in clips.VFR_PTS]


def test_part_carries_colour_tags_and_ten_bits(tmp_path: Path, ten_bit: VideoInfo) -> None:
    encoding = resolve_encoding(tmp_path / "o.mp4", ten_bit, EncodeSettings(crf=0))
    write_part(tmp_path / "p.nut", ten_bit, encoding, decode_frames(ten_bit))
    part = probe_video(tmp_path / "p.nut")
    assert (part.pix_fmt, part.bit_depth) == ("yuv420p10le", 10)
    assert part.colour == ColourTags(range="tv", primaries="bt709", transfer="bt709", matrix="bt709")
    source = [frame.rgb for frame in decode_frames(ten_bit)]
    again = [frame.rgb for frame in decode_frames(part)]
    assert len(again) == len(source)
    # Lossless in YUV; the RGB round trip costs a fraction of an 8-bit level on average.
    assert np.mean([np.abs(a - b).mean() for a, b in zip(source, again, strict=True)]) * 255 < 0.5


def test_quantize_rounds_clips_and_picks_the_depth() -> None:
    rgb = np.array([[[-0.1, 0.0, 0.7 / 255]], [[0.5, 254.3 / 255, 1.2]]], dtype=np.float32)
    eight = quantize(rgb, 8)
    assert eight.dtype == np.uint8 and eight.shape == rgb.shape
    assert eight.ravel().tolist() == [0, 0, 1, 128, 254, 255]
    sixteen = quantize(rgb, 10)
    assert sixteen.dtype == np.uint16 and sixteen.ravel().tolist() == [0, 0, 180, 32768, 65355, 65535]


@pytest.mark.parametrize("source", ["cfr", "ten_bit"])
def test_part_from_levels_equals_part_from_floats(
    tmp_path: Path, source: str, request: pytest.FixtureRequest
) -> None:
    info: VideoInfo = request.getfixturevalue(source)
    encoding = resolve_encoding(tmp_path / "o.mkv", info, EncodeSettings(crf=0, preset="ultrafast"))
    frames = list(decode_frames(info))[:3]
    write_part(tmp_path / "floats.nut", info, encoding, frames)
    levels = [SimpleNamespace(pts=frame.pts, rgb=quantize(frame.rgb, encoding.bit_depth)) for frame in frames]
    assert levels[0].rgb.dtype == (np.uint16 if source == "ten_bit" else np.uint8)
    write_part(tmp_path / "levels.nut", info, encoding, levels)
    decoded = [
        [f.rgb for f in decode_frames(probe_video(tmp_path / name))] for name in ("floats.nut", "levels.nut")
    ]
    assert len(decoded[0]) == len(decoded[1]) == 3
    for a, b in zip(*decoded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_part_appears_only_when_complete(tmp_path: Path, cfr: VideoInfo) -> None:
    encoding = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings(preset="ultrafast"))
    frames = list(decode_frames(cfr))
    target = tmp_path / "p.nut"
    with PartWriter(target, cfr, encoding, cfr.width, cfr.height) as writer:
        writer.write(frames[0].pts, frames[0].rgb)
        assert not target.exists()
    assert target.exists() and list(tmp_path.glob(".*.tmp")) == []
    failed = tmp_path / "failed.nut"
    with pytest.raises(RuntimeError), PartWriter(failed, cfr, encoding, cfr.width, cfr.height) as writer:
        writer.write(frames[0].pts, frames[0].rgb)
        raise RuntimeError("stop")
    assert not failed.exists() and list(tmp_path.glob(".*.tmp")) == []


def test_part_pads_odd_sizes_and_checks_shapes(tmp_path: Path, cfr: VideoInfo) -> None:
    encoding = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings(preset="ultrafast"))
    odd = [SimpleNamespace(pts=frame.pts, rgb=frame.rgb[:47, :63]) for frame in decode_frames(cfr)]
    write_part(tmp_path / "odd.nut", cfr, encoding, odd, width=63, height=47)
    part = probe_video(tmp_path / "odd.nut")
    assert (part.width, part.height) == (64, 48)
    with (
        pytest.raises(ValueError, match=r"expected \(48, 64, 3\)"),
        PartWriter(tmp_path / "bad.nut", cfr, encoding, 64, 48) as writer,
    ):
        writer.write(0, np.zeros((48, 63, 3), np.float32))


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "options"),
    [("libx264rgb", None, ()), ("libvpx-vp9", "gbrp", (("lossless", "1"), ("deadline", "realtime")))],
)
def test_rgb_pixel_formats_are_tagged_rgb_and_keep_their_colours(
    tmp_path: Path, codec: str, pix_fmt: str | None, options: tuple
) -> None:
    # An RGB format tagged with the source's YUV matrix has its G, B, R planes read as Y, Cb, Cr.
    info = probe_video(clips.colour_bars_clip(tmp_path))
    settings = EncodeSettings(codec=codec, pix_fmt=pix_fmt, crf=0, options=options)
    encoding = resolve_encoding(tmp_path / "o.mkv", info, settings)
    assert encoding.colour.matrix == "gbr" and encoding.colour.range == "pc"
    write_part(tmp_path / "p.nut", info, encoding, decode_frames(info))
    part = probe_video(tmp_path / "p.nut")
    assert part.colour.matrix == "gbr" and not part.is_yuv
    means = clips.bar_means(next(decode_frames(part)).rgb)
    assert np.abs(means - np.array(clips.BARS)).max() <= 2.0


def test_lookahead_frames_are_the_chosen_then_the_presets(tmp_path: Path, cfr: VideoInfo) -> None:
    def held(path: str, **settings) -> int:
        return lookahead_frames(resolve_encoding(tmp_path / path, cfr, EncodeSettings(**settings)))

    assert held("o.mp4") == 40 and held("o.mp4", preset="veryfast") == 10
    assert held("o.mp4", options=(("rc-lookahead", "12"),)) == 12
    assert held("o.webm") == 0  # not x264


def test_libx264rgb_takes_crf_and_preset(cfr: VideoInfo) -> None:
    encoding = resolve_encoding(Path("o.mkv"), cfr, EncodeSettings(codec="libx264rgb", crf=0, preset="fast"))
    assert encoding.describe() == "libx264rgb crf 0 preset fast bgr0"


def test_x264_lookahead_is_bounded_for_large_frames(tmp_path: Path, cfr: VideoInfo) -> None:
    medium = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings())
    bounded, note = bound_lookahead(medium, 5120, 2880)
    # 256 MiB at 3 bytes a pixel: 6 frames of 5120x2880 instead of medium's 40
    assert bounded.options["rc-lookahead"] == "6" and medium.options.get("rc-lookahead") is None
    assert note is not None and "not preset medium's 40" in note and "rc-lookahead=N" in note
    assert "rc-lookahead=6" in bounded.describe()
    # frames small enough, presets that look ahead less, a user's choice and other encoders: unchanged
    assert bound_lookahead(medium, 1920, 1080) == (medium, None)
    superfast = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings(preset="superfast"))
    assert bound_lookahead(superfast, 7680, 4320) == (superfast, None)
    # never below 5 frames, however large the frame
    veryfast = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings(preset="veryfast"))
    assert bound_lookahead(veryfast, 7680, 4320)[0].options["rc-lookahead"] == "5"
    chosen = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings(options=(("rc-lookahead", "50"),)))
    assert bound_lookahead(chosen, 5120, 2880) == (chosen, None)
    vp9 = resolve_encoding(tmp_path / "o.webm", cfr, EncodeSettings())
    assert bound_lookahead(vp9, 5120, 2880) == (vp9, None)
    # x264 takes the option: a part encodes with it
    huge, _ = bound_lookahead(medium, 9000, 9000)
    assert huge.options["rc-lookahead"] == "5"
    write_part(tmp_path / "p.nut", cfr, huge, list(decode_frames(cfr))[:2])
    assert probe_video(tmp_path / "p.nut").width == cfr.width


@pytest.mark.parametrize("given", [None, "1"])
def test_x264_runs_one_thread_per_core_unless_told(
    tmp_path: Path, cfr: VideoInfo, given: str | None, monkeypatch
) -> None:
    # As on a 2-core machine, whatever this one has. x264 writes its settings into the stream (an SEI
    # message), threads=N among them; FFmpeg's own choice would be 3 here.
    monkeypatch.setattr(encoding_module, "ENCODER_THREADS", 2)
    options = () if given is None else (("threads", given),)
    encoding = resolve_encoding(tmp_path / "o.mp4", cfr, EncodeSettings(preset="ultrafast", options=options))
    write_part(tmp_path / "p.nut", cfr, encoding, list(decode_frames(cfr))[:2])
    settings = (tmp_path / "p.nut").read_bytes().split(b"options: ", 1)[1].split(b"\x00", 1)[0].split()
    expected = given or "2"
    assert f"threads={expected}".encode() in settings
