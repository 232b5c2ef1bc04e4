"""Encoding upscaled frames: the settings a user gives, checked against this FFmpeg and the destination
container (`resolve_encoding`), and the writer of one video-only part file (`PartWriter`).

Part files are NUT. NUT stores every timestamp exactly in the stream's own time base, whatever it is
(1/90000, 1/600, 1001/30000 ...), writes no edit list and takes every codec FFmpeg can encode, so a part
keeps the source's pts bit for bit: variable frame rate survives, and the final mux only copies packets.
(MP4/MOV rewrite the first timestamps through an edit list and Matroska rounds to milliseconds.)

Colour: frames are converted from RGB with the matrix and range that decoding used (the source's, or the
guess `VideoInfo.conversion` made), and the same tags are written on the stream, so a player undoes
exactly the conversion that was done. 10-bit (and deeper) sources are encoded with a 10-bit pixel format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from upscaler.errors import OutputError
from upscaler.video.probe import (
    MATRIX_NAMES,
    PRIMARIES_NAMES,
    RANGE_NAMES,
    TRANSFER_NAMES,
    ColourTags,
    VideoInfo,
    is_yuv_format,
)

# Destination suffix -> FFmpeg muxer. AVI and MPEG-TS are left out: AVI has no presentation times (so no
# B-frames, no variable frame rate) and MPEG-TS no text subtitles or chapters.
CONTAINERS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
}
# Muxer -> the encoder used when --codec is not given.
DEFAULT_CODECS: dict[str, str] = {
    "mp4": "libx264",
    "mov": "libx264",
    "matroska": "libx264",
    "webm": "libvpx-vp9",
}
# What each encoder does with --crf and --preset, and our defaults for them.
_CRF = {
    "libx264": (0, 51, 18),
    "libx264rgb": (0, 51, 18),
    "libx265": (0, 51, 20),
    "libvpx-vp9": (0, 63, 30),
    "libvpx": (4, 63, 10),
    "libsvtav1": (1, 63, 30),
}
# x264 (also its RGB build) and x265 share their preset names.
_X26X_PRESETS = (
    *("ultrafast", "superfast", "veryfast", "faster", "fast"),
    *("medium", "slow", "slower", "veryslow", "placebo"),
)
_PRESETS = {
    "libx264": _X26X_PRESETS,
    "libx264rgb": _X26X_PRESETS,
    "libx265": _X26X_PRESETS,
    "libsvtav1": tuple(str(n) for n in range(14)),
}
_DEFAULT_PRESETS = {"libx264": "medium", "libx264rgb": "medium", "libx265": "medium", "libsvtav1": "8"}
# Options every run of an encoder gets unless the user sets them: constant-quality mode for libvpx
# (it needs a zero or explicit bitrate next to crf), and x265 without its banner on stderr.
_BASE_OPTIONS = {
    "libvpx-vp9": {"b": "0", "row-mt": "1"},
    "libvpx": {"b": "0"},
    "libx265": {"x265-params": "log-level=error"},
    "libsvtav1": {"svtav1-params": "log-level=1"},
}
PART_SUFFIX = ".nut"
FIRST_PTS_KEY = "upscale_first_pts"
PART_FORMAT = "nut"


# Threads each part's encoder may use: one per core this process may run on. FFmpeg's own choice (0)
# lets x264 take half as many again (3 frame threads on 2 cores), and each frame thread holds frames: at
# 5120x2880 (`medium`, look-ahead 12) x264 alone peaked at 1737 MiB with 3 threads, 1518 with 2, 1302
# with 1 (benchmarks/encoder_memory.py). Fewer than one per core is slower with a CPU backend: a lone
# encoder thread stalls one of the model's threads at a time, and the other waits for it (320x180 x4
# with compact: 80% of the model's fps end to end against 89% with x264's own threads). To measure on a
# machine with a GPU: with a CPU-bound encoder (x265, AV1) the encode queue fills up.
def usable_cores() -> int:
    """The CPUs this process may run on: its affinity where the platform has one, else all; 0 if unknown."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0  # macOS, Windows


ENCODER_THREADS = usable_cores()
_DEEP_FORMATS = ("yuv420p10le", "yuv422p10le", "yuv444p10le", "yuv420p12le", "yuv420p16le", "p010le")


@dataclass(frozen=True)
class EncodeSettings:
    """What the user asked for; None means 'choose for me'."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Encoding:
    """Settings resolved and checked against this FFmpeg and the destination container."""

    container: str
    codec: str
    pix_fmt: str
    options: dict[str, str]
    part_suffix: str = PART_SUFFIX
    colour: ColourTags = ColourTags(range="tv", primaries=None, transfer=None, matrix="bt709")

    def describe(self) -> str:
        """One line for logs and the journal, e.g. 'libx264 crf 18 preset medium yuv420p'."""
        words = [self.codec]
        for key in ("crf", "preset"):
            if key in self.options:
                words += [key, self.options[key]]
        words.append(self.pix_fmt)
        extra = [
            f"{key}={value}" for key, value in sorted(self.options.items()) if key not in ("crf", "preset")
        ]
        return " ".join(words + extra)

    @property
    def bit_depth(self) -> int:
        return max(component.bits for component in av.VideoFormat(self.pix_fmt).components)


def container_for(destination: Path) -> str:
    """The muxer for `destination`'s suffix; OutputError naming the known suffixes otherwise."""
    suffix = destination.suffix.lower()
    if suffix not in CONTAINERS:
        known = ", ".join(sorted(CONTAINERS))
        raise OutputError(
            f"{destination.name}: unknown video container {suffix or '(no suffix)'!r}; known: {known}"
        )
    return CONTAINERS[suffix]


@functools.cache
def accepted_codecs(container: str) -> frozenset[str]:
    """Codec names (encoders and decoders) that FFmpeg says `container` can hold."""
    with av.open(io.BytesIO(), "w", format=container) as output:
        return frozenset(output.supported_codecs)


def _encoder(name: str) -> av.codec.Codec:
    try:
        codec = av.codec.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        raise OutputError(
            f"--codec: this FFmpeg has no encoder {name!r}",
            hint="codecs for video: libx264, libx265, libvpx-vp9, libsvtav1, ffv1",
        ) from None
    if codec.type != "video":
        raise OutputError(f"--codec: {name!r} encodes {codec.type}, not video")
    return codec


def _choose_pix_fmt(codec: av.codec.Codec, source: VideoInfo, wanted: str | None) -> str:
    formats = [fmt.name for fmt in codec.video_formats or ()]
    if wanted is not None:
        if formats and wanted not in formats:
            raise OutputError(
                f"--pix-fmt: {codec.name} does not take {wanted!r}; it takes {', '.join(formats)}"
            )
        return wanted
    # yuvj* only says 'full range', which the colour tags say already; encoders prefer the plain name.
    plain = source.pix_fmt.replace("yuvj", "yuv")
    if source.bit_depth > 8:
        if plain in formats:
            return plain
        for deep in _DEEP_FORMATS:
            if deep in formats:
                return deep
        raise OutputError(
            f"--codec: {codec.name} in this FFmpeg has no pixel format deeper than 8 bits, "
            f"and the source is {source.bit_depth}-bit ({source.pix_fmt})",
            hint="use --codec libx264, libx265 or libsvtav1, or accept 8 bits with --pix-fmt yuv420p",
        )
    if plain in formats and source.is_yuv and plain.startswith("yuv"):
        return plain
    if not formats or "yuv420p" in formats:
        return "yuv420p"
    return formats[0]


def _options(codec: str, settings: EncodeSettings) -> dict[str, str]:
    options = dict(_BASE_OPTIONS.get(codec, {}))
    crf = settings.crf
    if crf is not None and codec not in _CRF:
        raise OutputError(
            f"--crf: {codec} has no constant-quality (crf) setting", hint="use --encoder-option instead"
        )
    if codec in _CRF:
        low, high, default = _CRF[codec]
        crf = default if crf is None else crf
        if not low <= crf <= high:
            raise OutputError(f"--crf: must be between {low} and {high} for {codec} (got {crf})")
        options["crf"] = str(crf)
    preset = settings.preset
    if preset is not None and codec not in _PRESETS:
        raise OutputError(
            f"--preset: {codec} has no presets",
            hint="libvpx-vp9 trades speed with --encoder-option cpu-used=0..8 and deadline=good|realtime",
        )
    if codec in _PRESETS:
        preset = _DEFAULT_PRESETS[codec] if preset is None else preset
        if preset not in _PRESETS[codec]:
            raise OutputError(f"--preset: {codec} knows {', '.join(_PRESETS[codec])} (got {preset!r})")
        options["preset"] = preset
    known = _known_options(codec)
    for key, value in settings.options:
        if key not in known:
            raise OutputError(f"--encoder-option: {codec} has no option {key!r}")
        options[key] = value
    return options


@functools.cache
def _known_options(codec: str) -> frozenset[str]:
    context = av.codec.CodecContext.create(codec, "w")
    supported = context.supported_options
    return frozenset(option.name for option in (*supported.generic, *supported.private))


def resolve_encoding(destination: Path, source: VideoInfo, settings: EncodeSettings) -> Encoding:
    """Check `settings` for `destination` and fill in the defaults. OutputError (one line) for an unknown
    suffix, a codec this FFmpeg lacks, a container that cannot hold the codec, a pixel format or an option
    the encoder does not take. Opens the encoder once on a tiny frame size, which catches what FFmpeg
    alone knows (option values, time bases an encoder refuses)."""
    container = container_for(Path(destination))
    codec = _encoder(settings.codec or DEFAULT_CODECS[container])
    if codec.name not in accepted_codecs(container):
        raise OutputError(
            f"{Path(destination).name}: a {container} file cannot hold {codec.name} video",
            hint=f"the default for this container is {DEFAULT_CODECS[container]}",
        )
    if codec.name not in accepted_codecs(PART_FORMAT):
        raise OutputError(f"--codec: {codec.name} cannot be stored in the work files ({PART_FORMAT})")
    pix_fmt = _choose_pix_fmt(codec, source, settings.pix_fmt)
    encoding = Encoding(
        container=container,
        codec=codec.name,
        pix_fmt=pix_fmt,
        options=_options(codec.name, settings),
        colour=_output_colour(source, pix_fmt),
    )
    _try_open(encoding, source)
    return encoding


def _output_colour(source: VideoInfo, pix_fmt: str) -> ColourTags:
    """The tags the output carries: the conversion decoding used, except where the pixel format itself
    decides. RGB formats (libx264rgb's bgr0, --pix-fmt gbrp) have no YUV matrix and are full range: tagged
    with a YUV matrix, decoders read the G, B and R planes as Y, Cb and Cr. yuvj* formats are full range."""
    tags = source.conversion()
    if not is_yuv_format(pix_fmt):
        return ColourTags(range="pc", primaries=tags.primaries, transfer=tags.transfer, matrix="gbr")
    if pix_fmt.startswith("yuvj"):
        return ColourTags(range="pc", primaries=tags.primaries, transfer=tags.transfer, matrix=tags.matrix)
    return tags


def _try_open(encoding: Encoding, source: VideoInfo) -> None:
    context = av.codec.CodecContext.create(encoding.codec, "w")
    context.width, context.height = 64, 64
    context.pix_fmt = encoding.pix_fmt
    context.time_base = source.time_base
    if source.average_rate:
        context.framerate = source.average_rate
    context.options = dict(encoding.options)
    try:
        context.open()
    except av.error.FFmpegError as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise OutputError(f"--codec: {encoding.describe()} cannot be opened: {reason}") from None
    finally:
        with contextlib.suppress(Exception):
            context.close()


# x264 holds its whole look-ahead in memory, about 3 bytes per pixel per frame (measured at 5120x2880:
# 44 MB a frame; `medium`'s 40 frames took the encoder alone to 2.9 GB). Above this many bytes the default
# look-ahead is shortened, never below X264_SHORTEST_LOOKAHEAD, unless the user set it: `medium`'s 40
# up to 1080p, 24 at 1440p, 10 at 4K, 6 at 5K: x264 alone then stays near 1.2 GB at 5K, so that the
# whole of `upscale video` 720p x4 fits 2 GiB. The look-ahead feeds mb-tree, which moves bits towards
# frames that others reference; at 5120x2880 (`medium`, crf 18, 18 frames of a real clip, upscaled) 5
# frames gave a file 1% smaller than 12 at the same CRF (sizes only: quality not compared).
X264_LOOKAHEAD_BYTES = 256 * 1024**2
X264_BYTES_PER_PIXEL = 3
X264_SHORTEST_LOOKAHEAD = 5
_X264_LOOKAHEAD = dict(zip(_X26X_PRESETS, (0, 0, 10, 20, 30, 40, 50, 60, 60, 60), strict=True))


def bound_lookahead(encoding: Encoding, width: int, height: int) -> tuple[Encoding, str | None]:
    """`encoding` with x264's look-ahead shortened so that its frames at `width` x `height` fit
    X264_LOOKAHEAD_BYTES, and a line saying so; unchanged (and None) for other encoders, for an
    rc-lookahead the user chose, and wherever the preset's own look-ahead fits."""
    if encoding.codec not in ("libx264", "libx264rgb") or "rc-lookahead" in encoding.options:
        return encoding, None
    preset = encoding.options.get("preset", _DEFAULT_PRESETS[encoding.codec])
    default = _X264_LOOKAHEAD.get(preset, 40)
    frames = max(X264_SHORTEST_LOOKAHEAD, X264_LOOKAHEAD_BYTES // (width * height * X264_BYTES_PER_PIXEL))
    if frames >= default:
        return encoding, None
    options = {**encoding.options, "rc-lookahead": str(frames)}
    note = (
        f"{encoding.codec} looks ahead {frames} frames, not preset {preset}'s {default}: at {width}x{height} "
        f"that keeps its look-ahead near {X264_LOOKAHEAD_BYTES // 1024**2} MiB "
        "(--encoder-option rc-lookahead=N to choose)"
    )
    return dataclasses.replace(encoding, options=options), note


def lookahead_frames(encoding: Encoding) -> int:
    """The frames x264 holds before it emits the first (its rc-lookahead: the one set, else its preset's);
    0 for other encoders. A clip no longer than that is encoded only once its last frame is in."""
    if encoding.codec not in ("libx264", "libx264rgb"):
        return 0
    chosen = encoding.options.get("rc-lookahead")
    if chosen is not None and chosen.isdigit():
        return int(chosen)
    return _X264_LOOKAHEAD.get(encoding.options.get("preset", _DEFAULT_PRESETS[encoding.codec]), 40)


def frame_size(encoding: Encoding, width: int, height: int) -> tuple[int, int]:
    """The size a PartWriter encodes a `width` x `height` picture at: the next even size for pixel formats
    that halve chroma (4:2:0 needs even sides). The extra row/column repeats the edge pixels."""
    fmt = av.VideoFormat(encoding.pix_fmt)
    step_w = 2 if fmt.chroma_width(64) < 64 else 1
    step_h = 2 if fmt.chroma_height(64) < 64 else 1
    return width + (-width % step_w), height + (-height % step_h)


def _subsampled(pix_fmt: str) -> bool:
    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_width(64) < 64 or fmt.chroma_height(64) < 64


_CODE = {
    "range": {name: number for number, name in RANGE_NAMES.items()},
    "matrix": {name: number for number, name in MATRIX_NAMES.items()},
    "primaries": {name: number for number, name in PRIMARIES_NAMES.items()},
    "transfer": {name: number for number, name in TRANSFER_NAMES.items()},
}


def colour_numbers(tags: ColourTags) -> dict[str, int]:
    """`tags` as the codec context / frame attributes PyAV takes (AVCOL_* numbers); unset ones left out."""
    numbers = {}
    for attribute, key, value in (
        ("color_range", "range", tags.range),
        ("colorspace", "matrix", tags.matrix),
        ("color_primaries", "primaries", tags.primaries),
        ("color_trc", "transfer", tags.transfer),
    ):
        if value is not None and value in _CODE[key]:
            numbers[attribute] = _CODE[key][value]
    return numbers
