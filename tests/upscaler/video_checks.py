"""Reading back what a video job wrote, for the video job and `upscale video` tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av


@dataclass(frozen=True)
class Decoded:
    """The video stream of a file: frame times in seconds, each frame's RGB hash, its coded size and
    rotation, and the stream's start time in seconds (the origin of --start/--duration)."""

    times: list[Fraction]
    hashes: list[str]
    width: int
    height: int
    rotation: int
    start: Fraction


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams.video if not _attached_picture(s))
        origin = stream.start_time  # read before decoding, which may update it
        frames = list(container.decode(stream))
        times = [frame.pts * frame.time_base for frame in frames]
        hashes = [hashlib.sha256(frame.to_ndarray(format="rgb24").tobytes()).hexdigest() for frame in frames]
        rotation = int(frames[0].rotation) if frames else 0
        start = origin * stream.time_base if origin is not None else min(times)
        size = (stream.codec_context.width, stream.codec_context.height)
        return Decoded(times, hashes, *size, rotation, start)


def relative_times(times: list[Fraction]) -> list[int]:
    """Frame times in display order from the first one, in milliseconds rounded to 1 (containers differ in
    time base; a decoder may hand out frames of packed B-frames out of order)."""
    ordered = sorted(times)
    return [round(float(t - ordered[0]) * 1000) for t in ordered]


def same_times(a: list[int], b: list[int], tolerance: int = 1) -> bool:
    """Equal lengths and every pair within `tolerance` ms (Matroska keeps times in whole milliseconds)."""
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def packet_hashes(path: Path, kind: str) -> list[str]:
    """One sha256 per stream of `kind` ("audio", "subtitle") over its packets' bytes, in stream order."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        digests = {s.index: hashlib.sha256() for s in streams}
        for packet in container.demux(streams):
            if packet.size:
                digests[packet.stream.index].update(bytes(packet))
        return [digests[s.index].hexdigest() for s in streams]


def streams(path: Path) -> list[tuple[str, str, str | None]]:
    """(type, codec, language) of every stream."""
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name, s.metadata.get("language")) for s in container.streams]


def _attached_picture(stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)
