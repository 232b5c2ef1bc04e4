"""A video's frames as RGB levels in display order with their source timestamps (`decode_frames`).

YUV is turned into RGB with the source's own matrix and range (FFmpeg's swscale falls back to BT.601
limited range when a file says nothing, which shifts the colours of HD video); when the file does not
say, the matrix is guessed the way players do: BT.709 from 720 lines up, BT.601 below. Sources deeper
than 8 bits go through 16-bit RGB.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from upscaler.errors import InputError
from upscaler.video.probe import SWSCALE_MATRIX, VideoInfo, open_input

# The decoder may hold this many frames whose timestamps it mislabelled (see _display_order).
_REORDER_WINDOW = 4


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One decoded frame: source pts, whether it is a keyframe, and its H x W x 3 RGB levels as decoded
    (uint8, or uint16 from a source deeper than 8 bits).

    Frames wait to be upscaled as levels, a quarter (or half) of their float32 size, and `rgb` converts
    them where they are used: at 720p a frame is 2.7 MB against 11 MB.
    """

    pts: int
    key_frame: bool
    levels: np.ndarray

    @property
    def rgb(self) -> np.ndarray:
        """The levels as float32 RGB in [0, 1]: a new array on every access."""
        top = np.iinfo(self.levels.dtype).max
        return self.levels.astype(np.float32) * np.float32(1 / top)


def _first_tick_at(seconds: float, time_base: Fraction) -> int:
    """The smallest pts at or after `seconds`; exact, since 0.3 / (1/10) is 2.999... in floats."""
    return math.ceil(Fraction(repr(seconds)) / time_base)


def decode_frames(
    info: VideoInfo,
    *,
    start: float | None = None,
    duration: float | None = None,
    after_pts: int | None = None,
    deinterlace: bool = False,
    problems: list[str] | None = None,
) -> Iterator[VideoFrame]:
    """The frames of `info`'s video stream in display order, as RGB levels (`VideoFrame.rgb`: floats).

    Only frames with start <= t < start + duration, t in seconds from the stream's first timestamp, and
    pts > after_pts when given. Seeks to the keyframe before the first wanted frame. Decoding that stops
    early (a truncated or corrupt tail) ends the iteration and appends one line to `problems`; a file where
    no frame decodes raises InputError. `deinterlace` runs FFmpeg's bwdif filter (one frame per frame, so
    timestamps stay as they are).
    """
    converter = _Converter(info)
    with contextlib.closing(_wanted(info, start, duration, after_pts, deinterlace, problems)) as frames:
        for pts, frame in frames:
            yield VideoFrame(pts=pts, key_frame=bool(frame.key_frame), levels=converter.levels(frame))


def frame_stamps(
    info: VideoInfo,
    *,
    start: float | None = None,
    duration: float | None = None,
    deinterlace: bool = False,
    problems: list[str] | None = None,
) -> Iterator[tuple[int, bool]]:
    """(pts, keyframe) of every frame `decode_frames` gives with the same arguments, without turning any
    into RGB: where a job's parts will be cut (`upscaler.video.cuts`), known before any is made."""
    with contextlib.closing(_wanted(info, start, duration, None, deinterlace, problems)) as frames:
        for pts, frame in frames:
            yield pts, bool(frame.key_frame)


def _wanted(
    info: VideoInfo,
    start: float | None,
    duration: float | None,
    after_pts: int | None,
    deinterlace: bool,
    problems: list[str] | None,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """The (pts, frame) pairs `decode_frames` describes, as decoded."""
    wanted_from = None
    if start is not None and start > 0:
        wanted_from = info.start_pts + _first_tick_at(start, info.time_base)
    wanted_until = None
    if duration is not None:
        wanted_until = info.start_pts + _first_tick_at((start or 0.0) + duration, info.time_base)
    targets = [pts for pts in (wanted_from, after_pts) if pts is not None]
    seek_to = max(targets) if targets else None

    count = 0
    last_pts = None
    reason = None
    frames = _Decoded(info, seek_to, deinterlace)
    try:
        for pts, frame in frames:
            if wanted_until is not None and pts >= wanted_until:
                break
            if wanted_from is not None and pts < wanted_from:
                continue
            if after_pts is not None and pts <= after_pts:
                continue
            count += 1
            last_pts = pts
            yield pts, frame
        else:
            reason = frames.reason
    finally:
        frames.close()
    if reason is None and wanted_until is None and info.duration and last_pts is not None:
        reached = float((last_pts - info.start_pts) * info.time_base)
        if reached < info.duration - max(1.0, 0.05 * info.duration):
            reason = (
                f"the file ends at {reached:.2f} s but its header says {info.duration:.2f} s (truncated?)"
            )
    if reason is not None:
        if count == 0 and after_pts is None and wanted_from is None:
            raise InputError(f"{info.path.name}: no video frame decodes ({reason})")
        if problems is not None:
            problems.append(f"{info.path.name}: decoding stopped after {count} frames: {reason}")


class _Decoded:
    """(pts, av frame) pairs in display order; `reason` says why decoding stopped early, or None."""

    def __init__(self, info: VideoInfo, seek_to: int | None, deinterlace: bool) -> None:
        self.info = info
        self.seek_to = seek_to
        self.deinterlace = deinterlace
        self.reason: str | None = None
        self._container = None
        self._iterator = self._run()

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame]]:
        return self._iterator

    def close(self) -> None:
        self._iterator.close()
        if self._container is not None:
            self._container.close()

    def _run(self) -> Iterator[tuple[int, av.VideoFrame]]:
        frames = self._raw(self.seek_to)
        first = next(frames, None)
        if self.seek_to is not None and (
            first is None or (first.pts is not None and first.pts > self.seek_to)
        ):
            # The demuxer landed after the target (no index, or a container that seeks by bytes), or on a
            # frame the decoder cannot start from with no keyframe after it (MPEG-TS seeks to any packet,
            # whatever any_frame says): start over from the beginning rather than lose frames.
            frames.close()
            self.reason = None
            frames = self._raw(None)
            first = next(frames, None)
        if first is None:
            return
        frames = itertools.chain([first], frames)
        if self.deinterlace:
            frames = self._deinterlaced(frames)
        yield from _display_order(frames, self.info)

    def _raw(self, seek_to: int | None) -> Iterator[av.VideoFrame]:
        if self._container is not None:
            self._container.close()
        self._container = container = open_input(self.info.path)
        stream = container.streams[self.info.stream_index]
        stream.thread_type = "AUTO"
        if seek_to is not None and self.info.has_timestamps:
            with contextlib.suppress(av.error.FFmpegError):
                container.seek(seek_to, stream=stream, backward=True, any_frame=False)
        try:
            for packet in container.demux(stream):
                yield from packet.decode()
        except av.error.FFmpegError as error:
            self.reason = getattr(error, "strerror", None) or str(error)

    def _deinterlaced(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        graph = None
        for frame in frames:
            if graph is None:
                graph = av.filter.Graph()
                source = graph.add_buffer(
                    width=frame.width, height=frame.height, format=frame.format, time_base=self.info.time_base
                )
                # send_frame: one output per input frame, so pts and frame count are unchanged.
                bwdif = graph.add("bwdif", "mode=send_frame:parity=auto:deint=all")
                graph.link_nodes(source, bwdif, graph.add("buffersink")).configure()
            graph.push(frame)
            yield from self._restamped(_pulled(graph))
        if graph is not None:
            graph.push(None)
            yield from self._restamped(_pulled(graph))

    def _restamped(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        # bwdif halves its output time base (it could emit one frame per field); back to the source's.
        for frame in frames:
            if frame.pts is not None and frame.time_base and frame.time_base != self.info.time_base:
                frame.pts = round(frame.pts * frame.time_base / self.info.time_base)
                frame.time_base = self.info.time_base
            yield frame


def _pulled(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    # PyAV raises BlockingIOError when the filter wants more input and EOFError once it is drained.
    while True:
        try:
            yield graph.pull()
        except (BlockingIOError, EOFError):
            return


def _display_order(frames: Iterator[av.VideoFrame], info: VideoInfo) -> Iterator[tuple[int, av.VideoFrame]]:
    """Label each frame with a pts that increases.

    Decoders hand frames out in display order, but some containers (AVI, raw streams) carry decode-order
    stamps, so the labels arrive shuffled within a few frames (1, 2, 4, 3, 5, 7, 6 ...). Holding a few
    frames and giving each the smallest pending stamp restores display-order stamps; for well-stamped
    files it changes nothing. Frames without any stamp get one from the frame rate.
    """
    step = 1
    if info.average_rate:
        step = max(1, round(1 / (info.average_rate * info.time_base)))
    pending: list[int] = []
    held: list[av.VideoFrame] = []
    previous: int | None = None

    def label() -> tuple[int, av.VideoFrame]:
        nonlocal previous
        pts = heapq.heappop(pending)
        if previous is not None and pts <= previous:
            pts = previous + 1
        previous = pts
        return pts, held.pop(0)

    latest: int | None = None
    for frame in frames:
        pts = frame.pts
        if pts is None:
            pts = info.start_pts if latest is None else latest + step
        latest = pts if latest is None else max(latest, pts)
        heapq.heappush(pending, pts)
        held.append(frame)
        if len(held) > _REORDER_WINDOW:
            yield label()
    while held:
        yield label()


class _Converter:
    """Frame -> RGB levels (uint8, or uint16 above 8 bits) with the source's matrix and range; one swscale
    context reused."""

    def __init__(self, info: VideoInfo) -> None:
        self.reformatter = VideoReformatter()
        self.deep = info.bit_depth > 8
        self.format = "rgb48le" if self.deep else "rgb24"
        self.options: dict[str, object] = {}
        if info.is_yuv:
            tags = info.conversion()
            self.options = {
                "src_colorspace": SWSCALE_MATRIX[tags.matrix],
                "src_color_range": 2 if tags.range == "pc" else 1,
                "dst_color_range": 2,
            }
        # The picture keeps its size, so the filter only upsamples chroma: bicubic, every chroma sample
        # interpolated (FULL_CHR_H_INT), accurate rounding (flat areas stay on their exact level). Measured
        # on the 10-bit clip's round trip: 0.3 levels mean error; bilinear 2.5, without ACCURATE_RND ~1.
        self.interpolation = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT

    def levels(self, frame: av.VideoFrame) -> np.ndarray:
        converted = self.reformatter.reformat(
            frame, format=self.format, interpolation=self.interpolation, **self.options
        )
        # A row-major copy that owns its memory: to_ndarray may give a view of the frame's (padded)
        # plane, which would keep the whole frame alive while it waits in the decode queue.
        return np.array(converted.to_ndarray(), dtype=np.uint16 if self.deep else np.uint8)
