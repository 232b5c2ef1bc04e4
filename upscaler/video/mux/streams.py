"""Which of the source's streams go to the output and how (copied, transcoded or dropped, per
container), the time window, and the chapters inside it."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from upscaler.video.mux.tags import stream_tags
from upscaler.video.mux.transcode import (
    AUDIO_TARGET,
    TEXT_TARGET,
    AudioTranscoder,
    SubtitleTranscoder,
    Transcoder,
)

# Audio codecs (canonical names) each container is known to carry for common players; None: whatever
# FFmpeg accepts.
AUDIO_COPY: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_u8"}),
    "webm": frozenset({"opus", "vorbis"}),
    "matroska": None,
}


SUBTITLE_COPY: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"mov_text"}),
    "mov": frozenset({"mov_text"}),
    "webm": frozenset({"webvtt"}),
    "matroska": None,
}


@dataclass(frozen=True)
class Window:
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


def video_stream_like(out: av.container.OutputContainer, template: av.stream.Stream) -> av.stream.Stream:
    """A stream for the parts' packets. PyAV looks up an *encoder* named like the part's decoder, which
    fails where the names differ (AV1 parts decode with 'libdav1d'); then the decoder's context is used as
    it is, which is all a remux needs."""
    try:
        return out.add_stream_from_template(template)
    except av.codec.codec.UnknownCodecError:
        return out.add_stream_from_template(template, opaque=True)


def muxer_options(container: str, time_base: Fraction) -> dict[str, str]:
    if container in ("matroska", "webm"):
        # Matroska stores no decode times, so a negative one (B-frames) needs no shift of every timestamp.
        return {"avoid_negative_ts": "disabled"}
    if container in ("mp4", "mov"):
        # A late first frame (MPEG-TS sources start near 1.4 s) becomes an empty edit counted in the movie
        # time scale, 1/1000 by default, which moves every frame by up to half a millisecond.
        return {"movie_timescale": str(time_base.denominator)}
    return {}


def describe_stream(stream: av.stream.Stream) -> str:
    language = stream.metadata.get("language")
    codec = canonical_codec(stream)
    return f"{stream.type} stream {stream.index} ({codec}{', ' + language if language else ''})"


def canonical_codec(stream: av.stream.Stream) -> str:
    context = stream.codec_context
    if context is None:
        return "no codec"
    return context.codec.canonical_name or context.name


def fits_container(container: str, stream: av.stream.Stream) -> bool:
    """True when `container` takes `stream`'s packets as they are (policy, then a trial header)."""
    codec = canonical_codec(stream)
    policy = (AUDIO_COPY if stream.type == "audio" else SUBTITLE_COPY).get(container)
    if policy is not None and codec not in policy:
        return False
    try:
        with av.open(io.BytesIO(), "w", format=container) as trial:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
    except (ValueError, av.error.FFmpegError):
        return False
    return True


def plan_stream(
    out: av.container.OutputContainer,
    stream: av.stream.Stream,
    container: str,
    audio: bool,
    subtitles: bool,
    src: av.container.InputContainer,
    copies: dict[int, av.stream.Stream],
    transcoders: dict[int, Transcoder],
) -> str | None:
    """Add `stream`'s counterpart to `out` (a copy or a transcoder); return a warning line or None."""
    what = describe_stream(stream)
    if stream.type == "audio":
        if not audio:
            return None
        if fits_container(container, stream):
            copies[stream.index] = copy_stream(out, stream)
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
        if fits_container(container, stream):
            copies[stream.index] = copy_stream(out, stream)
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


def copy_stream(out: av.container.OutputContainer, stream: av.stream.Stream) -> av.stream.Stream:
    copy = out.add_stream_from_template(stream)
    copy.metadata.update(stream_tags(stream, out.format.name))
    with contextlib.suppress(ValueError, AttributeError):
        copy.disposition = stream.disposition
    return copy


def source_chapters(src: av.container.InputContainer, window: Window) -> list[dict]:
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
