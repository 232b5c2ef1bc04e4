"""decode -> PartWriter -> mux_output -> decode: timing, streams, colour, metadata and rotation survive."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import shared_data
from tests.upscaler import video_clips as clips
from upscaler.errors import OutputError
from upscaler.video.decode import decode_frames
from upscaler.video.encode import EncodeSettings, resolve_encoding
from upscaler.video.mux.output import mux_output
from upscaler.video.probe import VideoInfo, probe_video
from upscaler.video.writer import PartWriter

LOSSLESS = EncodeSettings(crf=0)  # libx264 qp 0 with its default B-frames
CANNOT = ": the mp4 container cannot carry it; transcoded to aac"


def upscale_at_1x(
    source: Path,
    destination: Path,
    settings: EncodeSettings = LOSSLESS,
    *,
    part_frames: int = 8,
    start: float | None = None,
    duration: float | None = None,
    **mux,
) -> tuple[VideoInfo, list[Path], list[str]]:
    """What the video job does, minus the model: parts close at the first keyframe after `part_frames`."""
    info = probe_video(source)
    encoding = resolve_encoding(destination, info, settings)
    work = destination.parent / f"{destination.name}.parts"
    work.mkdir()
    parts: list[Path] = []
    writer = None
    count = 0
    for frame in decode_frames(info, start=start, duration=duration):
        if writer is None or (count >= part_frames and frame.key_frame):
            if writer is not None:
                writer.close()
            parts.append(work / f"part-{len(parts):03d}{encoding.part_suffix}")
            writer = PartWriter(parts[-1], info, encoding, info.width, info.height)
            count = 0
        writer.write(frame.pts, frame.rgb)
        count += 1
    writer.close()
    warnings = mux_output(parts, info, destination, encoding, start=start, duration=duration, **mux)
    return info, parts, warnings


def seconds(info: VideoInfo) -> list[Fraction]:
    return [frame.pts * info.time_base for frame in decode_frames(info)]


def packet_hashes(path: Path, kind: str) -> list[str]:
    """Hashes of the packets of every `kind` stream; empty mov_text gap cues (2 zero bytes) left out."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(streams) if p.size > 2]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_cfr_with_audio_keeps_every_frame_and_the_audio_bytes(tmp_path: Path, suffix: str) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    info, parts, warnings = upscale_at_1x(source, tmp_path / f"out{suffix}")
    assert len(parts) == 3 and warnings == []
    out = probe_video(tmp_path / f"out{suffix}")
    expected = seconds(info)
    got = seconds(out)
    assert len(got) == 24
    if suffix == ".mkv":  # Matroska counts in milliseconds
        assert [round(s * 1000) for s in expected] == [round(s * 1000) for s in got]
    else:
        assert got == expected
    assert packet_hashes(tmp_path / f"out{suffix}", "audio") == packet_hashes(source, "audio")
    assert [(o.kind, o.codec, o.language) for o in out.others] == [("audio", "aac", "fra")]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_stays_variable(tmp_path: Path, suffix: str) -> None:
    info, parts, _ = upscale_at_1x(clips.vfr_clip(tmp_path), tmp_path / f"out{suffix}", part_frames=4)
    assert len(parts) >= 3
    assert seconds(probe_video(tmp_path / f"out{suffix}")) == [Fraction(p, 1000) for p in clips.VFR_PTS]


def test_parts_concatenate_frame_for_frame_in_order(tmp_path: Path) -> None:
    _, parts, _ = upscale_at_1x(clips.cfr_clip(tmp_path, frames=24), tmp_path / "out.mkv", part_frames=5)
    assert len(parts) >= 3
    from_parts = [frame.rgb for part in parts for frame in decode_frames(probe_video(part))]
    from_output = [frame.rgb for frame in decode_frames(probe_video(tmp_path / "out.mkv"))]
    assert len(from_output) == len(from_parts) == 24
    for a, b in zip(from_parts, from_output, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ten_bit_stays_ten_bit_with_its_colour_tags(tmp_path: Path) -> None:
    info, _, _ = upscale_at_1x(clips.ten_bit_clip(tmp_path), tmp_path / "out.mp4")
    out = probe_video(tmp_path / "out.mp4")
    assert (out.pix_fmt, out.bit_depth, out.colour) == ("yuv420p10le", 10, info.colour)


VP9_LOSSLESS = EncodeSettings(crf=0, options=(("lossless", "1"), ("deadline", "realtime"), ("cpu-used", "8")))


@pytest.mark.parametrize(
    ("full_range", "suffix", "settings"),
    [(False, ".mp4", LOSSLESS), (True, ".mp4", LOSSLESS), (False, ".webm", VP9_LOSSLESS)],
)
def test_colour_bars_keep_their_levels_and_tags(
    tmp_path: Path, full_range: bool, suffix: str, settings: EncodeSettings
) -> None:
    source = clips.colour_bars_clip(tmp_path, full_range=full_range)
    info, _, _ = upscale_at_1x(source, tmp_path / f"out{suffix}", settings)
    out = probe_video(tmp_path / f"out{suffix}")
    assert out.colour == info.colour
    before = clips.bar_means(next(decode_frames(info)).rgb)
    after = clips.bar_means(next(decode_frames(out)).rgb)
    assert np.abs(after - before).max() <= 2.0
    assert np.abs(after - np.array(clips.BARS)).max() <= 2.0


def test_subtitles_chapters_and_metadata_are_copied(tmp_path: Path) -> None:
    source = clips.subtitle_clip(tmp_path, "mp4")
    _, _, warnings = upscale_at_1x(source, tmp_path / "out.mp4")
    assert warnings == []
    assert packet_hashes(tmp_path / "out.mp4", "subtitle") == packet_hashes(source, "subtitle")
    with av.open(str(source)) as before, av.open(str(tmp_path / "out.mp4")) as after:
        assert after.metadata["title"] == "a subtitled clip"
        assert [c["metadata"]["title"] for c in after.chapters()] == ["one", "two"]
        assert [float(c["start"] * c["time_base"]) for c in after.chapters()] == [
            float(c["start"] * c["time_base"]) for c in before.chapters()
        ]
        assert after.streams.subtitles[0].metadata["language"] == "deu"


@pytest.mark.parametrize(("container", "codec"), [("mkv", "subrip"), ("ass.mkv", "ass")])
def test_text_subtitles_become_mov_text_in_mp4(tmp_path: Path, container: str, codec: str) -> None:
    _, _, warnings = upscale_at_1x(clips.subtitle_clip(tmp_path, container), tmp_path / "out.mp4")
    assert warnings == [
        f"subtitle stream 2 ({codec}, deu): the mp4 container cannot carry it; converted to mov_text"
    ]
    with av.open(str(tmp_path / "out.mp4")) as out:
        stream = out.streams.subtitles[0]
        assert stream.codec_context.name == "mov_text" and stream.metadata["language"] == "deu"
        texts = []
        for packet in out.demux(stream):
            cue = stream.codec_context.decode2(packet) if packet.size > 2 else None
            if cue is not None and len(cue):
                texts.append((packet.pts * packet.time_base, cue[0].ass.decode().rsplit(",", 1)[-1]))
    assert texts[:2] == [(0, "line 0"), (Fraction(1, 4), "line 1")]


def test_mov_text_becomes_subrip_in_matroska(tmp_path: Path) -> None:
    _, _, warnings = upscale_at_1x(clips.subtitle_clip(tmp_path, "mp4"), tmp_path / "out.mkv")
    assert warnings == [
        "subtitle stream 2 (mov_text, deu): the matroska container cannot carry it; converted to subrip"
    ]
    assert [(o.kind, o.codec) for o in probe_video(tmp_path / "out.mkv").others] == [
        ("audio", "aac"),
        ("subtitle", "subrip"),
    ]


def test_no_audio_and_no_subtitles(tmp_path: Path) -> None:
    _, _, warnings = upscale_at_1x(
        clips.subtitle_clip(tmp_path, "mkv"), tmp_path / "out.mkv", audio=False, subtitles=False
    )
    assert warnings == [] and probe_video(tmp_path / "out.mkv").others == ()


def test_start_and_duration_cut_every_stream_and_start_at_zero(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    _, _, _ = upscale_at_1x(source, tmp_path / "out.mp4", start=0.25, duration=0.5)
    out = probe_video(tmp_path / "out.mp4")
    # Frames 6..17 of 24 fps; time 0 of the output is the --start point.
    assert seconds(out) == [Fraction(i, 24) - Fraction(1, 4) for i in range(6, 18)]
    with av.open(str(tmp_path / "out.mp4")) as container:
        audio = container.streams.audio[0]
        times = [p.pts * p.time_base for p in container.demux(audio) if p.size]
    assert 0.4 < float(max(times) - min(times)) < 0.55


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_rotation_is_carried(tmp_path: Path, suffix: str) -> None:
    upscale_at_1x(clips.rotated_clip(tmp_path, rotation=90), tmp_path / f"out{suffix}")
    assert probe_video(tmp_path / f"out{suffix}").rotation == 90


def test_iphone_rotation_and_audio_in_stream_zero(tmp_path: Path) -> None:
    source = shared_data("video", "iphone_rotated.mov")
    fast = EncodeSettings(preset="ultrafast")
    _, _, warnings = upscale_at_1x(source, tmp_path / "out.mp4", fast, part_frames=30)
    out = probe_video(tmp_path / "out.mp4")
    assert warnings == [] and out.rotation == 270 and len(list(decode_frames(out))) == 66
    assert packet_hashes(tmp_path / "out.mp4", "audio") == packet_hashes(source, "audio")


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("big_buck_bunny_432_433.webm", f"audio stream 1 (vorbis){CANNOT}"),
        ("fixture.3gp", f"audio stream 1 (amr_nb, eng){CANNOT}"),
        ("fixture-raw.mts", None),  # AC-3 is at home in MP4: copied
    ],
)
def test_real_audio_into_mp4(tmp_path: Path, name: str, warning: str | None) -> None:
    fast = EncodeSettings(preset="ultrafast")
    _, _, warnings = upscale_at_1x(shared_data("video", name), tmp_path / "out.mp4", fast, duration=0.3)
    assert warnings == ([warning] if warning else [])
    others = probe_video(tmp_path / "out.mp4").others
    assert [o.codec for o in others] == (["aac"] if warning else ["ac3"])


def test_vorbis_is_copied_into_webm(tmp_path: Path) -> None:
    source = shared_data("video", "big_buck_bunny_432_433.webm")
    fast = EncodeSettings(options=(("deadline", "realtime"), ("cpu-used", "8")))
    _, _, warnings = upscale_at_1x(source, tmp_path / "out.webm", fast, part_frames=100)
    assert warnings == []
    assert packet_hashes(tmp_path / "out.webm", "audio") == packet_hashes(source, "audio")


def test_missing_or_mismatched_parts_fail_and_leave_nothing(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    info, parts, _ = upscale_at_1x(source, tmp_path / "first.mp4")
    encoding = resolve_encoding(tmp_path / "out.mp4", info, LOSSLESS)
    with pytest.raises(OutputError, match=r"^absent.nut: video part is missing$"):
        mux_output([*parts, tmp_path / "absent.nut"], info, tmp_path / "out.mp4", encoding)
    # A part left by a run with other settings (say, resumed with another --codec) must not be spliced in.
    other = tmp_path / "other.nut"
    x265 = resolve_encoding(tmp_path / "o.mp4", info, EncodeSettings(codec="libx265"))
    with PartWriter(other, info, x265, info.width, info.height) as writer:
        for frame in decode_frames(info, after_pts=7 * 512):
            writer.write(frame.pts, frame.rgb)
    with pytest.raises(OutputError, match=r"^other.nut: encoded with other settings than part-000.nut$"):
        mux_output([parts[0], other], info, tmp_path / "out.mp4", encoding)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_mp4_sample_durations_are_whole_frames_across_parts(tmp_path: Path, suffix: str) -> None:
    # MP4 takes each sample's duration from the decode times; the first packets of every part (B-frames
    # delay them) once got decode times 1 ms apart, which made those samples 1 ms long and the track
    # two frames short.
    source = clips.cfr_clip(tmp_path, frames=24)
    _, parts, _ = upscale_at_1x(source, tmp_path / f"out{suffix}", part_frames=8)
    assert len(parts) == 3
    with av.open(str(tmp_path / f"out{suffix}")) as out:
        video = out.streams.video[0]
        durations = {p.duration * p.time_base for p in out.demux(video) if p.size}
        assert video.duration * video.time_base == 1
    assert durations == {Fraction(1, 24)}


def test_mp4_track_titles_are_kept(tmp_path: Path) -> None:
    # MP4 reads a track's title back as 'name' but writes it only from 'title'.
    source = clips.cfr_clip(tmp_path, frames=8)
    for suffix in (".mp4", ".mkv"):
        upscale_at_1x(source, tmp_path / f"out{suffix}")
        assert [o.title for o in probe_video(tmp_path / f"out{suffix}").others] == ["tone"]
        with av.open(str(tmp_path / f"out{suffix}")) as out:
            assert out.streams.video[0].metadata.get("title", out.streams.video[0].metadata.get("name")) == (
                "picture"
            )


@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="this FFmpeg has no libsvtav1")
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_av1_parts_mux(tmp_path: Path, suffix: str) -> None:
    # AV1 parts decode with 'libdav1d', a name PyAV's add_stream_from_template looked up as an encoder.
    source = clips.cfr_clip(tmp_path, frames=12, audio=False)
    upscale_at_1x(source, tmp_path / f"out{suffix}", EncodeSettings(codec="libsvtav1", preset="12"))
    out = probe_video(tmp_path / f"out{suffix}")
    assert out.codec in ("libdav1d", "av1", "libaom-av1") and len(seconds(out)) == 12


def test_a_write_failing_as_the_file_is_closed_is_one_output_error(tmp_path: Path) -> None:
    # A full disk often shows only when the muxer flushes and writes its trailer on close, which was
    # outside the error handling: "internal error: OSError ... please report it".
    import resource
    import signal

    source = clips.cfr_clip(tmp_path, frames=12)
    info, parts, _ = upscale_at_1x(source, tmp_path / "first.mkv")
    size = (tmp_path / "first.mkv").stat().st_size
    assert size < 32768  # all of it sits in FFmpeg's write buffer until the file is closed
    encoding = resolve_encoding(tmp_path / "out.mkv", info, LOSSLESS)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, hard))
    try:
        with pytest.raises(OutputError, match=r"^out.mkv: writing failed: File too large$"):
            mux_output(parts, info, tmp_path / "out.mkv", encoding)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert not (tmp_path / "out.mkv").exists()


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_hevc_in_mp4_is_tagged_hvc1_for_apple_players(tmp_path: Path, suffix: str) -> None:
    source = clips.cfr_clip(tmp_path, frames=8, audio=False)
    upscale_at_1x(source, tmp_path / f"out{suffix}", EncodeSettings(codec="libx265", preset="ultrafast"))
    with av.open(str(tmp_path / f"out{suffix}")) as out:
        assert out.streams.video[0].codec_context.codec_tag == "hvc1"
        assert len(list(out.decode(video=0))) == 8


def test_mov_keeps_languages_it_knows_under_their_other_iso_code(tmp_path: Path) -> None:
    # QuickTime stores Macintosh language codes, which FFmpeg finds under one ISO 639-2 spelling only
    # ('ger', but 'fra'); the other ('deu') used to be dropped as unknown.
    source = clips.subtitle_clip(tmp_path, "mp4")
    upscale_at_1x(source, tmp_path / "out.mov")
    languages = {o.kind: o.language for o in probe_video(tmp_path / "out.mov").others}
    assert (languages["audio"], languages["subtitle"]) == ("fra", "ger")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_start_between_frames_puts_the_first_kept_frame_at_zero_and_keeps_av_sync(
    tmp_path: Path, suffix: str
) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    out = tmp_path / f"out{suffix}"
    # 0.3 s falls between frames 7 (0.2917 s) and 8 (0.3333 s): frame 8 is the first kept, and every
    # stream moves back by its time.
    upscale_at_1x(source, out, start=0.3)
    shift = Fraction(8, 24)
    got = seconds(probe_video(out))
    assert got[0] == 0 and len(got) == 16
    assert [round(s * 1000) for s in got] == [round((Fraction(i, 24) - shift) * 1000) for i in range(8, 24)]

    def audio_times(path: Path) -> dict[str, Fraction]:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            return {
                hashlib.sha256(bytes(p)).hexdigest(): p.pts * p.time_base
                for p in container.demux(stream)
                if p.size and p.pts is not None
            }

    before, after = audio_times(source), audio_times(out)
    frame = Fraction(1024, 48000)
    assert -frame < min(after.values()) < frame
    # The packet that played at T in the source plays at T - shift: audio and video stay in step.
    common = before.keys() & after.keys()
    assert len(common) > 20
    tick = Fraction(1, 1000) if suffix == ".mkv" else Fraction(1, 48000)
    for digest in common:
        assert abs(after[digest] - (before[digest] - shift)) <= tick


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_cue_shown_across_the_new_zero_is_shown_from_zero(tmp_path: Path, suffix: str) -> None:
    source = clips.subtitle_clip(tmp_path, "mkv")  # 0.2 s cues every 0.25 s
    out = tmp_path / f"out{suffix}"
    upscale_at_1x(source, out, start=0.37)  # frame 9 (0.375 s) is the new zero; the 0.25 s cue runs to 0.45 s
    with av.open(str(out)) as container:
        stream = container.streams.subtitles[0]
        cues = [
            (p.pts * p.time_base, p.duration * p.time_base) for p in container.demux(stream) if p.size > 2
        ]
    assert cues[:2] == [(0, Fraction(75, 1000)), (Fraction(125, 1000), Fraction(200, 1000))]
