"""The output's packets in time order: the parts' video with decode times, and the source's other
streams shifted into the output's window."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error

from upscaler.errors import OutputError
from upscaler.video.encode import FIRST_PTS_KEY
from upscaler.video.mux.streams import (
    Window,
    canonical_codec,
)
from upscaler.video.mux.transcode import Transcoder


def video_packets(
    parts: Sequence[Path], video: av.stream.Stream, extradata: bytes | None, window: Window
) -> Iterator[tuple[float, int, av.Packet]]:
    """Packets of every part in order, stamped for `video`, with decode times that keep increasing."""
    last_dts: int | None = None
    for path in parts:
        with open_part(path) as part:
            stream = part.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise OutputError(
                    f"{Path(path).name}: encoded with other settings than {Path(parts[0]).name}",
                    hint="delete the work folder beside the output and run again",
                )
            time_base = stream.time_base
            packets = with_decode_times(part.demux(stream))
            first = next(packets, None)
            if first is None:
                raise OutputError(
                    f"{Path(path).name}: video part holds no frames", hint="run the command again"
                )
            # Undo the muxer's shift: the first packet of a part is its first frame (an IDR frame).
            written = part.metadata.get(FIRST_PTS_KEY)
            shift = window.ticks(time_base)
            if written is not None:
                shift += first.pts - round(Fraction(written) / time_base)
            for packet in itertools.chain([first], packets):
                packet.pts -= shift
                packet.dts -= shift
                if last_dts is not None and packet.dts <= last_dts:
                    # Each part's encoder starts its decode times a little before its first pts, which
                    # can reach back past the previous part's last one; nudge, never past the pts.
                    packet.dts = last_dts + 1
                    if packet.dts > packet.pts:
                        raise OutputError(
                            f"{Path(path).name}: its frames overlap the previous part in time",
                            hint="delete the work folder beside the output and run again",
                        )
                last_dts = packet.dts
                packet.stream = video
                yield float(packet.dts * time_base), 0, packet


def with_decode_times(packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """NUT stores no decode times; its demuxer derives them from the pts order (the display times shifted
    by the encoder's reorder delay), except for the first few packets of a stream with B-frames. Those get
    times before the first known one, one frame duration apart (the gap between the first two known
    decode times), as the encoder stamped them: MP4 takes each sample's duration from the decode times, so
    shorter gaps would shrink the first samples and the whole track."""
    head: list[av.Packet] = []  # the packets up to and including the second with a known decode time
    known = 0
    last: int | None = None
    for packet in packets:
        if packet.pts is None:
            continue  # the demuxer's end-of-stream marker
        if known >= 2:
            if packet.dts is None:
                packet.dts = last + 1
            last = packet.dts
            yield packet
            continue
        if packet.dts is not None or known:
            if packet.dts is None:
                packet.dts = head[-1].dts + 1
            known += 1
        head.append(packet)
        if known == 2:
            stamp_head(head)
            last = head[-1].dts
            yield from head
    if known < 2:
        stamp_head(head)
        yield from head


def stamp_head(head: list[av.Packet]) -> None:
    """Give the packets before the first known decode time theirs, one frame step apart."""
    waiting = [packet for packet in head if packet.dts is None]
    if not waiting:
        return
    known = [packet.dts for packet in head if packet.dts is not None]
    step = known[1] - known[0] if len(known) == 2 else 0
    if step <= 0:
        # Too short a part to tell: the smallest gap between display times is one frame.
        ordered = sorted(packet.pts for packet in head)
        step = min((b - a for a, b in itertools.pairwise(ordered) if b > a), default=1)
    first = known[0] if known else min(packet.pts for packet in head)
    for ahead, held in enumerate(waiting):
        held.dts = min(first - (len(waiting) - ahead) * step, held.pts)


def source_packets(
    src: av.container.InputContainer,
    streams: list[av.stream.Stream],
    copies: dict[int, av.stream.Stream],
    transcoders: dict[int, Transcoder],
    window: Window,
    warnings: list[str],
) -> Iterator[tuple[float, int, av.Packet]]:
    """Audio/subtitle packets of the window in file order, copied or transcoded, with output times."""
    if window.start:
        with contextlib.suppress(av.error.FFmpegError):
            src.seek(int((window.origin + window.start - 1.0) * av.time_base), backward=True)
    try:
        for packet in src.demux(streams):
            index = packet.stream.index
            if packet.dts is None and packet.pts is None:
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if not window.holds(
                float(stamp * packet.time_base), float((packet.duration or 0) * packet.time_base)
            ):
                if (
                    window.end is not None
                    and float(stamp * packet.time_base) - window.origin >= window.end + 5
                ):
                    break
                continue
            if index in copies:
                if (
                    packet.size == 2
                    and bytes(packet) == b"\0\0"
                    and canonical_codec(packet.stream) == "mov_text"
                ):
                    continue  # an empty gap cue; the MP4 muxer writes its own between the cues
                yield from stamped_packets([packet], copies[index], window)
            else:
                yield from stamped_packets(
                    transcoders[index].packets(packet), transcoders[index].stream, window
                )
    except av.error.FFmpegError as error:
        warnings.append(f"{src.name}: reading audio/subtitles stopped early: {error}")
    for transcoder in transcoders.values():
        yield from stamped_packets(transcoder.flush(), transcoder.stream, window)


def stamped_packets(
    packets: Sequence[av.Packet], stream: av.stream.Stream, window: Window
) -> Iterator[tuple[float, int, av.Packet]]:
    for packet in packets:
        shift = window.ticks(packet.time_base)
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        if stream.type == "subtitle" and packet.pts is not None and packet.pts < 0 and packet.duration:
            # A cue shown across the new time 0 is shown from 0 for the rest of its time. (Audio keeps its
            # negative time: players skip the samples before 0, and the rest stays in step.)
            packet.duration = max(1, packet.duration + packet.pts)
            packet.pts = packet.dts = 0
        packet.stream = stream
        stamp = packet.dts if packet.dts is not None else packet.pts
        yield float((stamp or 0) * packet.time_base), 1 + stream.index, packet


def open_part(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise OutputError(
            f"{Path(path).name}: video part cannot be read ({error})",
            hint="delete the work folder beside the output and run again",
        ) from None
