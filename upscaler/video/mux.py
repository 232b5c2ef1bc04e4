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
import io
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from upscaler.errors import InputError, OutputError
from upscaler.video.encode import FIRST_PTS_KEY, Encoding, colour_numbers
from upscaler.video.probe import VideoInfo
from upscaler.video.tags import fresh, stream_tags
from upscaler.video.transcode import AUDIO_TARGET, TEXT_TARGET, AudioTranscoder, SubtitleTranscoder

# Audio codecs (canonical names) each container is known to carry for common players; None: whatever
# FFmpeg accepts.
_AUDIO_COPY: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_u8"}),
    "webm": frozenset({"opus", "vorbis"}),
    "matroska": None,
}
_SUBTITLE_COPY: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"mov_text"}),
    "mov": frozenset({"mov_text"}),
    "webm": frozenset({"webvtt"}),
    "matroska": None,
}


@dataclass(frozen=True)
class _Window:
    """Which source times (seconds from the video's first timestamp) go to the output, and the shift that
    moves them. With --start the output's time 0 is the first kept video frame (`zero`, in source seconds)
    and every stream moves by the same amount, so audio stays in step; without, source timestamps stay as
    they are."""

    origin: float
    start: float | None
    end: float | None
    zero: Fraction | None = None

    def holds(self, seconds: float, length: float = 0.0) -> bool:
        """Whether a packet at `seconds` (source time) lasting `length` belongs in the output: it must end
        after the new time 0 and begin before the window's end."""
        if self.zero is not None and seconds + length <= self.zero:
            return False
        if self.zero is None and self.start is not None and seconds - self.origin < self.start:
            return False
        return self.end is None or seconds - self.origin < self.end

    @property
    def shift(self) -> Fraction:
        return self.zero if self.start and self.zero is not None else Fraction(0)

    def ticks(self, time_base: Fraction) -> int:
        """The shift in `time_base` units."""
        return round(self.shift / time_base)


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
    window = _Window(origin=origin, start=start if start else None, end=end)
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
    window: _Window,
) -> list[str]:
    warnings: list[str] = []
    try:
        src = av.open(str(source.path))
    except av.error.FFmpegError as error:
        raise InputError(f"{source.path.name}: cannot be opened again for muxing ({error})") from None
    with contextlib.ExitStack() as stack:
        stack.enter_context(src)
        first = stack.enter_context(_open_part(parts[0]))
        template = first.streams.video[0]
        if window.start:
            window = dataclasses.replace(window, zero=_first_frame_time(first))
        options = _muxer_options(encoding.container, template.time_base)
        out = stack.enter_context(av.open(str(destination), "w", format=encoding.container, options=options))
        out.metadata.update(fresh(src.metadata))
        video = _video_stream_like(out, template)
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
        transcoders: dict[int, _Transcoder] = {}
        for stream in src.streams:
            if stream.index == source.stream_index:
                continue
            line = _plan_stream(out, stream, encoding.container, audio, subtitles, src, copies, transcoders)
            if line:
                warnings.append(line)
        out.set_chapters(_chapters(src, window))

        streams = [_video_packets(parts, video, extradata, window)]
        wanted = [src.streams[index] for index in (*copies, *transcoders)]
        if wanted:
            streams.append(_source_packets(src, wanted, copies, transcoders, window, warnings))
        try:
            for _, _, packet in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
                out.mux(packet)
        except av.error.FFmpegError as error:
            raise OutputError(f"{destination.name}: writing failed: {error}") from None
    return warnings


def _open_part(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise OutputError(
            f"{Path(path).name}: video part cannot be read ({error})",
            hint="delete the work folder beside the output and run again",
        ) from None


def _first_frame_time(part: av.container.InputContainer) -> Fraction:
    """The source time of a part's first frame, as the part writer recorded it (else its first packet's pts;
    the container is used only as a template afterwards)."""
    written = part.metadata.get(FIRST_PTS_KEY)
    if written is not None:
        return Fraction(written)
    stream = part.streams.video[0]
    first = next((packet.pts for packet in part.demux(stream) if packet.pts is not None), 0)
    return first * stream.time_base


def _video_stream_like(out: av.container.OutputContainer, template: av.stream.Stream) -> av.stream.Stream:
    """A stream for the parts' packets. PyAV looks up an *encoder* named like the part's decoder, which
    fails where the names differ (AV1 parts decode with 'libdav1d'); then the decoder's context is used as
    it is, which is all a remux needs."""
    try:
        return out.add_stream_from_template(template)
    except av.codec.codec.UnknownCodecError:
        return out.add_stream_from_template(template, opaque=True)


def _muxer_options(container: str, time_base: Fraction) -> dict[str, str]:
    if container in ("matroska", "webm"):
        # Matroska stores no decode times, so a negative one (B-frames) needs no shift of every timestamp.
        return {"avoid_negative_ts": "disabled"}
    if container in ("mp4", "mov"):
        # A late first frame (MPEG-TS sources start near 1.4 s) becomes an empty edit counted in the movie
        # time scale, 1/1000 by default, which moves every frame by up to half a millisecond.
        return {"movie_timescale": str(time_base.denominator)}
    return {}


def _describe(stream: av.stream.Stream) -> str:
    language = stream.metadata.get("language")
    codec = _canonical(stream)
    return f"{stream.type} stream {stream.index} ({codec}{', ' + language if language else ''})"


def _canonical(stream: av.stream.Stream) -> str:
    context = stream.codec_context
    if context is None:
        return "no codec"
    return context.codec.canonical_name or context.name


def _fits(container: str, stream: av.stream.Stream) -> bool:
    """True when `container` takes `stream`'s packets as they are (policy, then a trial header)."""
    codec = _canonical(stream)
    policy = (_AUDIO_COPY if stream.type == "audio" else _SUBTITLE_COPY).get(container)
    if policy is not None and codec not in policy:
        return False
    try:
        with av.open(io.BytesIO(), "w", format=container) as trial:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
    except (ValueError, av.error.FFmpegError):
        return False
    return True


def _plan_stream(
    out: av.container.OutputContainer,
    stream: av.stream.Stream,
    container: str,
    audio: bool,
    subtitles: bool,
    src: av.container.InputContainer,
    copies: dict[int, av.stream.Stream],
    transcoders: dict[int, _Transcoder],
) -> str | None:
    """Add `stream`'s counterpart to `out` (a copy or a transcoder); return a warning line or None."""
    what = _describe(stream)
    if stream.type == "audio":
        if not audio:
            return None
        if _fits(container, stream):
            copies[stream.index] = _copy_stream(out, stream)
            return None
        target = AUDIO_TARGET[container]
        try:
            transcoders[stream.index] = AudioTranscoder(out, stream, target)
        except (ValueError, av.error.FFmpegError) as error:
            reason = f"the {container} container cannot carry it and it does not decode ({error})"
            return f"{what}: dropped, {reason}"
        return (
            f"{what}: the {container} container cannot carry it; transcoded to {target.removeprefix('lib')}"
        )
    if stream.type == "subtitle":
        if not subtitles:
            return None
        if _fits(container, stream):
            copies[stream.index] = _copy_stream(out, stream)
            return None
        codec = stream.codec_context.codec if stream.codec_context is not None else None
        target = TEXT_TARGET.get(container)
        if codec is not None and codec.text_sub and target is not None:
            transcoders[stream.index] = SubtitleTranscoder(out, stream, target)
            return f"{what}: the {container} container cannot carry it; converted to {target}"
        return f"{what}: dropped, the {container} container cannot carry it"
    if stream.type == "attachment" and container == "matroska":
        copies[stream.index] = out.add_stream_from_template(stream)
        return None
    if stream.type == "data" and src.chapters() and src.format.name.startswith("mov"):
        # MP4/MOV keep chapter titles in a text track that the demuxer shows as a data stream; the
        # chapters themselves are copied with set_chapters.
        return None
    return f"{what}: dropped, streams of this kind are not carried"


def _copy_stream(out: av.container.OutputContainer, stream: av.stream.Stream) -> av.stream.Stream:
    copy = out.add_stream_from_template(stream)
    copy.metadata.update(stream_tags(stream, out.format.name))
    with contextlib.suppress(ValueError, AttributeError):
        copy.disposition = stream.disposition
    return copy


def _chapters(src: av.container.InputContainer, window: _Window) -> list[dict]:
    kept = []
    for chapter in src.chapters():
        base = chapter["time_base"]
        begin, finish = float(chapter["start"] * base), float(chapter["end"] * base)
        low = float(window.zero) if window.zero is not None else window.origin + (window.start or 0.0)
        high = None if window.end is None else window.origin + window.end
        if finish <= low or (high is not None and begin >= high):
            continue
        shift = window.ticks(base)
        start = max(chapter["start"] - shift, 0)
        end = chapter["end"] - shift if high is None else min(chapter["end"], round(high / base)) - shift
        kept.append({**chapter, "id": len(kept) + 1, "start": start, "end": end})
    return kept


def _video_packets(
    parts: Sequence[Path], video: av.stream.Stream, extradata: bytes | None, window: _Window
) -> Iterator[tuple[float, int, av.Packet]]:
    """Packets of every part in order, stamped for `video`, with decode times that keep increasing."""
    last_dts: int | None = None
    for path in parts:
        with _open_part(path) as part:
            stream = part.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise OutputError(
                    f"{Path(path).name}: encoded with other settings than {Path(parts[0]).name}",
                    hint="delete the work folder beside the output and run again",
                )
            time_base = stream.time_base
            packets = _with_decode_times(part.demux(stream))
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


def _with_decode_times(packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
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
            _stamp_head(head)
            last = head[-1].dts
            yield from head
    if known < 2:
        _stamp_head(head)
        yield from head


def _stamp_head(head: list[av.Packet]) -> None:
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


def _source_packets(
    src: av.container.InputContainer,
    streams: list[av.stream.Stream],
    copies: dict[int, av.stream.Stream],
    transcoders: dict[int, _Transcoder],
    window: _Window,
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
                if packet.size == 2 and bytes(packet) == b"\0\0" and _canonical(packet.stream) == "mov_text":
                    continue  # an empty gap cue; the MP4 muxer writes its own between the cues
                yield from _stamped([packet], copies[index], window)
            else:
                yield from _stamped(transcoders[index].packets(packet), transcoders[index].stream, window)
    except av.error.FFmpegError as error:
        warnings.append(f"{src.name}: reading audio/subtitles stopped early: {error}")
    for transcoder in transcoders.values():
        yield from _stamped(transcoder.flush(), transcoder.stream, window)


def _stamped(
    packets: Sequence[av.Packet], stream: av.stream.Stream, window: _Window
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


_Transcoder = AudioTranscoder | SubtitleTranscoder
