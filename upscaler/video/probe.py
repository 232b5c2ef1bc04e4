"""What a video file holds (`probe_video`): its streams, size, timing, depth and colour tags, read with
PyAV before anything is decoded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from upscaler.errors import InputError

# FFmpeg's names for its AVCOL_* enums (av_color_*_name); 2 ("unspecified") is left out on purpose.
RANGE_NAMES = {1: "tv", 2: "pc"}
MATRIX_NAMES = {
    0: "gbr",
    1: "bt709",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
}
PRIMARIES_NAMES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
TRANSFER_NAMES = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
# Matrix name -> swscale's colour-space constant (SWS_CS_*), which is what VideoReformatter takes.
SWSCALE_MATRIX = {
    "bt709": 1,
    "fcc": 4,
    "bt470bg": 5,
    "smpte170m": 5,
    "smpte240m": 7,
    "bt2020nc": 9,
    "bt2020c": 9,
}


@dataclass(frozen=True)
class ColourTags:
    """Colour description as the file states it, FFmpeg's names; None where the file says nothing."""

    range: str | None
    primaries: str | None
    transfer: str | None
    matrix: str | None


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream of the source."""

    index: int
    kind: str
    codec: str
    language: str | None
    title: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns about a file; every pts is in `time_base`."""

    path: Path
    format_name: str
    stream_index: int
    codec: str
    width: int
    height: int
    rotation: int
    time_base: Fraction
    average_rate: Fraction | None
    frame_count: int | None
    duration: float | None
    pix_fmt: str
    bit_depth: int
    colour: ColourTags
    interlaced: bool
    others: tuple[StreamInfo, ...]
    has_timestamps: bool
    start_pts: int = 0

    @property
    def is_yuv(self) -> bool:
        """True when pixels are YUV (or gray), so a matrix and a range apply to them."""
        return is_yuv_format(self.pix_fmt)

    def conversion(self) -> ColourTags:
        """The matrix and range that YUV <-> RGB conversions use for this source: the stated ones, else the
        players' guess. Encoders tag their output with these, so the guess is written down, not repeated
        by a player at the new (larger) size, where it would guess differently."""
        matrix = self.colour.matrix if self.colour.matrix in SWSCALE_MATRIX else None
        if matrix is None:
            matrix = "bt709" if self.height >= 720 or self.width >= 1280 or not self.is_yuv else "smpte170m"
        colour_range = self.colour.range
        if colour_range is None:
            colour_range = "pc" if self.pix_fmt.startswith("yuvj") else "tv"
        return ColourTags(
            range=colour_range, primaries=self.colour.primaries, transfer=self.colour.transfer, matrix=matrix
        )


def is_yuv_format(pix_fmt: str) -> bool:
    """True for YUV and gray pixel formats (FFmpeg's names), which a matrix and a range apply to."""
    return pix_fmt.startswith(("yuv", "nv", "gray", "p01", "p21", "y2", "uyv", "yuyv"))


def _bit_depth(pix_fmt: str) -> int:
    try:
        return max(component.bits for component in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.error.FFmpegError):
        return 8


def check_input_path(path: Path) -> None:
    """Refuse a path that cannot be a video file (missing, a folder) before anything is loaded."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video file")


def open_input(path: Path) -> av.container.InputContainer:
    check_input_path(path)
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"{path.name}: cannot be opened as a video ({reason})") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise InputError(
        f"{path.name}: has no video stream", hint="upscale video needs a file with moving pictures"
    )


def probe_video(path: Path) -> VideoInfo:
    """Open `path` and describe its first video stream (attached cover pictures are skipped).

    Decodes the first frame, because the display matrix and the frame's own colour tags reach us there.
    InputError when the file is missing, cannot be opened, has no video stream or no frame decodes.
    """
    path = Path(path)
    with open_input(path) as container:
        stream = _video_stream(container, path)
        context = stream.codec_context
        first = _first_frame(container, stream, path)
        pix_fmt = context.pix_fmt or first.format.name
        colour = ColourTags(
            range=RANGE_NAMES.get(context.color_range) or RANGE_NAMES.get(first.color_range),
            primaries=PRIMARIES_NAMES.get(context.color_primaries)
            or PRIMARIES_NAMES.get(first.color_primaries),
            transfer=TRANSFER_NAMES.get(context.color_trc) or TRANSFER_NAMES.get(first.color_trc),
            matrix=MATRIX_NAMES.get(context.colorspace) or MATRIX_NAMES.get(first.colorspace),
        )
        time_base = stream.time_base or Fraction(1, 1000)
        duration = _duration(container, stream, time_base)
        others = tuple(
            StreamInfo(
                index=other.index,
                kind=other.type,
                codec=_codec_name(other),
                language=other.metadata.get("language"),
                # MP4 keeps a track's title in a 'name' box, which FFmpeg reads back as 'name'.
                title=other.metadata.get("title") or other.metadata.get("name"),
            )
            for other in container.streams
            if other.index != stream.index
        )
        return VideoInfo(
            path=path,
            format_name=container.format.name,
            stream_index=stream.index,
            codec=context.name,
            width=context.width or first.width,
            height=context.height or first.height,
            rotation=round(first.rotation) % 360,
            time_base=time_base,
            average_rate=stream.average_rate or stream.guessed_rate,
            frame_count=stream.frames or None,
            duration=duration,
            pix_fmt=pix_fmt,
            bit_depth=_bit_depth(pix_fmt),
            colour=colour,
            # AVFieldOrder: 0 unknown, 1 progressive, 2..5 the four interlaced orders.
            interlaced=context.field_order >= 2 or first.interlaced_frame,
            others=others,
            has_timestamps=first.pts is not None,
            start_pts=stream.start_time or 0,
        )


def _duration(container, stream, time_base: Fraction) -> float | None:
    """The video stream's own duration where the file gives one (Matroska keeps it in a DURATION tag),
    else the container's, which may include longer audio."""
    if stream.duration:
        return float(stream.duration * time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        with contextlib.suppress(ValueError):
            hours, minutes, rest = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(rest)
    if container.duration:
        return container.duration / av.time_base
    return None


def _codec_name(stream: av.stream.Stream) -> str:
    # The codec's own name ('mp3'), not its decoder's ('mp3float').
    if stream.codec_context is not None:
        return stream.codec_context.codec.canonical_name or stream.codec_context.name
    return "none"


def _first_frame(container: av.container.InputContainer, stream, path: Path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as error:
        raise InputError(f"{path.name}: no video frame decodes ({error})") from None
    raise InputError(f"{path.name}: no video frame decodes")
