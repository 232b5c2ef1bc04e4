"""The final mux: the parts' video packets with the source's audio, subtitles, metadata, chapters,
colour tags and rotation, into one file.

Audio and subtitle packets are copied byte for byte when the destination container takes their codec in
practice (FFmpeg's own list is wider: it lets Vorbis into MP4 and text into MPEG-TS, which players do not
read), else transcoded to the container's usual codec with a warning; streams that cannot be carried at
all are dropped with a warning. Packets of all streams are merged by time, so the file is interleaved and
memory does not grow with the video's length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error

from upscaler.errors import InputError, OutputError
from upscaler.video.encode import FIRST_PTS_KEY, Encoding, colour_numbers
from upscaler.video.mux.packets import open_part, source_packets, video_packets
from upscaler.video.mux.streams import (
    Window,
    muxer_options,
    plan_stream,
    source_chapters,
    video_stream_like,
)
from upscaler.video.mux.tags import fresh, stream_tags
from upscaler.video.mux.transcode import Transcoder
from upscaler.video.probe import VideoInfo


def mux_output(
    parts: Sequence[Path],
    source: VideoInfo,
    destination: Path,
    encoding: Encoding,
    *,
    audio: bool = True,
    subtitles: bool = True,
    start: float | None = None,
    duration: float | None = None,
) -> list[str]:
    """Write `destination` from the video `parts` and the source's other streams; return warning lines
    (one per transcoded or dropped stream). OutputError when a part is missing or was encoded differently
    from the first; a failed mux leaves no file at `destination`."""
    if not parts:
        raise OutputError(f"{Path(destination).name}: no video parts to mux")
    for part in parts:
        if not Path(part).exists():
            raise OutputError(
                f"{Path(part).name}: video part is missing", hint="run the command again to redo it"
            )
    origin = float(source.start_pts * source.time_base)
    end = None if duration is None else (start or 0.0) + duration
    window = Window(origin=origin, start=start if start else None, end=end)
    try:
        return _mux(parts, source, Path(destination), encoding, audio, subtitles, window)
    except (av.error.FFmpegError, OSError) as error:
        # Closing the file writes its trailer, which can fail too (a full disk): not only muxing packets.
        with contextlib.suppress(FileNotFoundError):
            Path(destination).unlink()
        reason = getattr(error, "strerror", None) or str(error)
        raise OutputError(f"{Path(destination).name}: writing failed: {reason}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(destination).unlink()
        raise


def _mux(
    parts: Sequence[Path],
    source: VideoInfo,
    destination: Path,
    encoding: Encoding,
    audio: bool,
    subtitles: bool,
    window: Window,
) -> list[str]:
    warnings: list[str] = []
    try:
        src = av.open(str(source.path))
    except av.error.FFmpegError as error:
        raise InputError(f"{source.path.name}: cannot be opened again for muxing ({error})") from None
    with contextlib.ExitStack() as stack:
        stack.enter_context(src)
        first = stack.enter_context(open_part(parts[0]))
        template = first.streams.video[0]
        if window.start:
            window = dataclasses.replace(window, zero=_first_frame_time(first))
        options = muxer_options(encoding.container, template.time_base)
        out = stack.enter_context(av.open(str(destination), "w", format=encoding.container, options=options))
        out.metadata.update(fresh(src.metadata))
        video = video_stream_like(out, template)
        video.metadata.update(stream_tags(src.streams[source.stream_index], out.format.name))
        with contextlib.suppress(ValueError, AttributeError):
            video.disposition = src.streams[source.stream_index].disposition
        # NUT parts keep colour tags only where the bitstream does (H.264 VUI has all four, VP9 no
        # primaries or transfer); the container's own colour fields get them from the encoding.
        for attribute, number in colour_numbers(encoding.colour).items():
            setattr(video.codec_context, attribute, number)
        if source.rotation:
            video.set_display_rotation(source.rotation)
        if encoding.container in ("mp4", "mov") and template.codec_context.name == "hevc":
            # FFmpeg tags HEVC 'hev1' (parameter sets in the samples); Apple's players play only 'hvc1'
            # (parameter sets in the header), which is what every part carries.
            video.codec_context.codec_tag = "hvc1"
        extradata = template.codec_context.extradata

        copies: dict[int, av.stream.Stream] = {}
        transcoders: dict[int, Transcoder] = {}
        for stream in src.streams:
            if stream.index == source.stream_index:
                continue
            line = plan_stream(out, stream, encoding.container, audio, subtitles, src, copies, transcoders)
            if line:
                warnings.append(line)
        out.set_chapters(source_chapters(src, window))

        streams = [video_packets(parts, video, extradata, window)]
        wanted = [src.streams[index] for index in (*copies, *transcoders)]
        if wanted:
            streams.append(source_packets(src, wanted, copies, transcoders, window, warnings))
        try:
            for _, _, packet in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
                out.mux(packet)
        except av.error.FFmpegError as error:
            raise OutputError(f"{destination.name}: writing failed: {error}") from None
    return warnings


def _first_frame_time(part: av.container.InputContainer) -> Fraction:
    """The source time of a part's first frame, as the part writer recorded it (else its first packet's pts;
    the container is used only as a template afterwards)."""
    written = part.metadata.get(FIRST_PTS_KEY)
    if written is not None:
        return Fraction(written)
    stream = part.streams.video[0]
    first = next((packet.pts for packet in part.demux(stream) if packet.pts is not None), 0)
    return first * stream.time_base
