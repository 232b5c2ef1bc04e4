"""Tiny video clips made with PyAV for the video tests: constant and variable frame rate, 10-bit, audio,
subtitles, rotation and colour bars with explicit colour tags.

Every `*_clip` function writes one file into `folder` and returns its path. Clips are small (96x64 or
less, a few dozen frames) so a test that makes one costs milliseconds. Pictures differ from frame to frame
(a moving square over a gradient) so frame hashes tell frames apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from upscaler.video.mux.transcode import ASS_HEADER

# 100% colour bars (white, yellow, cyan, green, magenta, red, blue, black), 8-bit RGB.
BARS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (255, 255, 0),
    (0, 255, 255),
    (0, 255, 0),
    (255, 0, 255),
    (255, 0, 0),
    (0, 0, 255),
    (0, 0, 0),
)
# Irregular frame times in milliseconds (time base 1/1000): a truly variable frame rate.
VFR_PTS: tuple[int, ...] = (0, 33, 50, 117, 133, 250, 267, 300, 420, 437, 500, 583, 600, 750, 767, 800)


def picture(index: int, width: int, height: int) -> np.ndarray:
    """An H x W x 3 uint8 RGB picture: a gradient with a square whose place depends on `index`."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), np.full_like(x, 128)], axis=-1
    ).astype(np.uint8)
    side = max(4, min(width, height) // 4)
    left = (index * 5) % max(width - side, 1)
    top = (index * 3) % max(height - side, 1)
    rgb[top : top + side, left : left + side] = (255 - 20 * (index % 8), 40, 220)
    return rgb


def bars_picture(width: int, height: int) -> np.ndarray:
    """BARS as eight vertical stripes of equal width (`width` must be a multiple of 8)."""
    stripe = width // len(BARS)
    row = np.repeat(np.array(BARS, dtype=np.uint8), stripe, axis=0)
    return np.repeat(row[None], height, axis=0)


def bar_means(rgb: np.ndarray) -> np.ndarray:
    """Mean 8-bit RGB of each of the 8 bars, from the middle of each (away from chroma edges)."""
    stripe = rgb.shape[1] // len(BARS)
    return np.array(
        [rgb[4:-4, i * stripe + 3 : (i + 1) * stripe - 3].reshape(-1, 3).mean(axis=0) * 255 for i in range(8)]
    )


def write_clip(
    path: Path,
    *,
    pts: Sequence[int] | None = None,
    frames: int = 12,
    rate: Fraction = Fraction(24),
    time_base: Fraction | None = None,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    audio: str | None = None,
    subtitle: str | None = None,
    rotation: int = 0,
    colour: dict[str, int] | None = None,
    pictures: Sequence[np.ndarray] | None = None,
    metadata: dict[str, str] | None = None,
    chapters: bool = False,
) -> Path:
    """Encode a clip; every other function here is a preset of this one.

    `pts` (in `time_base`, default 1/rate) gives irregular frame times; `audio` names an audio encoder
    (a 440 Hz tone as long as the video); `subtitle` a text subtitle encoder (a 0.2 s cue every
    0.25 s);
    `rotation` is counter-clockwise degrees as PyAV's `VideoFrame.rotation` reads it back; `colour`
    holds codec-context colour tags (color_range, colorspace, color_primaries, color_trc as FFmpeg's
    AVCOL_* numbers) that are also used for the RGB -> YUV conversion.
    """
    if pts is None:
        pts = list(range(frames))
    time_base = time_base or 1 / Fraction(rate)
    colour = colour or {}
    with av.open(str(path), "w") as container:
        if metadata:
            container.metadata.update(metadata)
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        # swscale (below) puts subsampled chroma between luma samples; say so, as PartWriter does.
        video.codec_context.options = {"chroma_sample_location": "center", **(options or {})}
        video.metadata["language"] = "eng"
        video.metadata["title"] = "picture"
        for name, value in colour.items():
            setattr(video.codec_context, name, value)
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = container.add_stream(audio, rate=48000)
            sound.layout = "mono"
            sound.metadata["language"] = "fra"
            sound.metadata["title"] = "tone"
        text = None
        if subtitle:
            text = container.add_stream(subtitle)
            text.time_base = Fraction(1, 1000)
            text.codec_context.subtitle_header = ASS_HEADER
            text.metadata["language"] = "deu"
        if chapters:
            end = int((pts[-1] + 1) * time_base * 1000)
            container.set_chapters(
                [
                    {
                        "id": 1,
                        "start": 0,
                        "end": end // 2,
                        "time_base": Fraction(1, 1000),
                        "metadata": {"title": "one"},
                    },
                    {
                        "id": 2,
                        "start": end // 2,
                        "end": end,
                        "time_base": Fraction(1, 1000),
                        "metadata": {"title": "two"},
                    },
                ]
            )
        for index, stamp in enumerate(pts):
            rgb = pictures[index] if pictures is not None else picture(index, width, height)
            frame = _yuv_frame(rgb, pix_fmt, colour)
            frame.pts = stamp
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        seconds = float((pts[-1] + 1) * time_base)
        if sound is not None:
            _write_tone(container, sound, seconds)
        if text is not None:
            _write_cues(container, text, seconds)
    return path


def _yuv_frame(rgb: np.ndarray, pix_fmt: str, colour: dict[str, int]) -> av.VideoFrame:
    if rgb.dtype == np.uint16:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le")
    else:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    # Untagged clips are small, and readers take small untagged video for BT.601 (AVCOL_SPC 6).
    matrix = colour.get("colorspace", 6)
    # swscale's colour-space numbers (SWS_CS_*) are not FFmpeg's AVCOL_SPC_*: 709 is 1 in both, but
    # BT.601 (AVCOL_SPC 5 or 6) is SWS_CS 5 and BT.2020 (AVCOL_SPC 9 or 10) is SWS_CS 9.
    sws = {1: 1, 5: 5, 6: 5, 9: 9, 10: 9}[matrix]
    out = frame.reformat(
        format=pix_fmt,
        dst_colorspace=sws,
        dst_color_range=colour.get("color_range", 1),
        interpolation=av.video.reformatter.Interpolation.BICUBIC
        | av.video.reformatter.Interpolation.ACCURATE_RND,
    )
    for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
        if name in colour:
            setattr(out, name, colour[name])
    return out


def _write_tone(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    samples = int(seconds * 48000)
    size = 1024
    for start in range(0, samples, size):
        t = (np.arange(start, start + size) / 48000).astype(np.float32)
        chunk = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = 48000
        frame.pts = start
        frame.time_base = Fraction(1, 48000)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _write_cues(container: av.container.OutputContainer, stream: av.stream.Stream, seconds: float) -> None:
    step = 0.25
    cue = 0
    while cue * step < seconds:
        start = int(cue * step * 1000)
        # The text is in ASS dialogue form, which every text subtitle encoder takes.
        subtitle = av.subtitles.subtitle.SubtitleSet.create(
            f"{cue},0,Default,,0,0,0,,line {cue}".encode(), 0, 200, pts=start
        )
        packet = stream.codec_context.encode_subtitle(subtitle)
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = start
        packet.duration = 200
        container.mux(packet)
        cue += 1


def cfr_clip(folder: Path, name: str = "cfr.mp4", *, frames: int = 24, audio: bool = True) -> Path:
    """H.264 yuv420p 64x48 at 24 fps in MP4 with an AAC tone; lossless (qp 0) so pixels survive remuxing."""
    return write_clip(
        folder / name, frames=frames, options={"qp": "0", "g": "8"}, audio="aac" if audio else None
    )


def vfr_clip(folder: Path, name: str = "vfr.mkv") -> Path:
    """H.264 in Matroska (time base 1/1000) with the irregular frame times VFR_PTS and AAC audio."""
    return write_clip(
        folder / name,
        pts=VFR_PTS,
        rate=Fraction(24),
        time_base=Fraction(1, 1000),
        options={"qp": "0", "g": "5"},
        audio="aac",
    )


def ten_bit_clip(folder: Path, name: str = "tenbit.mkv", *, codec: str = "libx264") -> Path:
    """10-bit 4:2:0 (yuv420p10le), bt709 tv range, 12 frames, from 16-bit RGB pictures."""
    pictures = [picture(i, 64, 48).astype(np.uint16) * 257 for i in range(12)]
    return write_clip(
        folder / name,
        codec=codec,
        pix_fmt="yuv420p10le",
        options={"qp": "0"} if codec == "libx264" else {},
        pictures=pictures,
        colour={"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1},
    )


def subtitle_clip(folder: Path, container: str = "mp4") -> Path:
    """A clip with AAC audio and a text subtitle stream: mov_text in MP4, SubRip in MKV, ASS in .ass.mkv."""
    codec = {"mp4": "mov_text", "mkv": "subrip", "ass.mkv": "ass"}[container]
    return write_clip(
        folder / f"subtitled.{container}",
        frames=24,
        options={"qp": "0"},
        audio="aac",
        subtitle=codec,
        metadata={"title": "a subtitled clip"},
        chapters=True,
    )


def rotated_clip(folder: Path, name: str = "rotated.mp4", rotation: int = 90) -> Path:
    """A 64x48 clip whose display matrix rotates it by `rotation` degrees counter-clockwise."""
    return write_clip(folder / name, options={"qp": "0"}, rotation=rotation, audio="aac")


def colour_bars_clip(folder: Path, *, full_range: bool = False, codec: str = "libx264") -> Path:
    """BARS at 96x64, 6 frames, lossless, tagged bt709 primaries/transfer/matrix, tv range or pc range."""
    name = "bars-full.mkv" if full_range else "bars-tv.mkv"
    bars = bars_picture(96, 64)
    return write_clip(
        folder / name,
        frames=6,
        width=96,
        height=64,
        codec=codec,
        pix_fmt="yuv420p",
        options={"qp": "0"} if codec == "libx264" else {},
        pictures=[bars] * 6,
        colour={"color_range": 2 if full_range else 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1},
    )


def raw_h264_clip(folder: Path, name: str = "raw.h264") -> Path:
    """A raw H.264 elementary stream: 12 frames and no timestamps at all (FFmpeg assumes 25 fps)."""
    return write_clip(folder / name, frames=12, options={"qp": "0"})


def audio_only_clip(folder: Path, name: str = "tone.m4a") -> Path:
    """An AAC file without any video stream."""
    path = folder / name
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        _write_tone(container, stream, 0.5)
    return path
