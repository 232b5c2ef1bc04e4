"""The source's audio and subtitles converted where the output container cannot hold them as they are
(`AudioTranscoder`, `SubtitleTranscoder`), timed as the copied streams are.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction

import av
import av.error

from upscaler.video.mux.tags import stream_tags

AUDIO_TARGET = {
    "mp4": "aac",
    "mov": "aac",
    "webm": "libopus",
    "matroska": "aac",
}
TEXT_TARGET = {"mp4": "mov_text", "mov": "mov_text", "webm": "webvtt", "matroska": "subrip"}
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
# Sample counts per frame the audio encoders above want.
_FRAME_SIZES = {"aac": 1024, "libopus": 960}
# Used when a text subtitle decoder gives no ASS header; text subtitle encoders need one.
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n"
    b"[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    b"BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    b"Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


class AudioTranscoder:
    """Decode, resample to what the encoder takes, encode; timestamps follow the source's samples."""

    def __init__(self, out: av.container.OutputContainer, source: av.stream.Stream, codec: str) -> None:
        self.source = source
        context = source.codec_context
        encoder = av.codec.Codec(codec, "w")
        rates = encoder.audio_rates
        rate = context.sample_rate or 48000
        if rates and rate not in rates:
            rate = min(rates, key=lambda r: (abs(r - rate), -r))
        # By channel count: a file may name its layout only '1 channels', which encoders refuse.
        channels = context.layout.nb_channels if context.layout else 2
        layout = _LAYOUTS.get(channels, "stereo")
        self.stream = out.add_stream(codec, rate=rate)
        self.stream.layout = layout
        self.stream.metadata.update(stream_tags(source, out.format.name))
        sample_format = encoder.audio_formats[0].name if encoder.audio_formats else "fltp"
        self.stream.format = sample_format
        self.resampler = av.AudioResampler(
            format=sample_format, layout=layout, rate=rate, frame_size=_FRAME_SIZES.get(codec)
        )

    def packets(self, packet: av.Packet) -> list[av.Packet]:
        produced = []
        try:
            frames = self.source.decode(packet)
        except av.error.FFmpegError:
            return produced  # a damaged audio packet: skip it, as players do
        for frame in frames:
            for resampled in self.resampler.resample(frame):
                produced += self.stream.encode(resampled)
        return produced

    def flush(self) -> list[av.Packet]:
        produced = []
        with contextlib.suppress(av.error.FFmpegError):
            for frame in self.source.decode(None):
                for resampled in self.resampler.resample(frame):
                    produced += self.stream.encode(resampled)
        for resampled in self.resampler.resample(None):
            produced += self.stream.encode(resampled)
        produced += self.stream.encode(None)
        return produced


class SubtitleTranscoder:
    """Text subtitles re-encoded cue by cue; each cue keeps its packet's time and duration."""

    def __init__(self, out: av.container.OutputContainer, source: av.stream.Stream, codec: str) -> None:
        self.source = source
        context = source.codec_context
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            context.open()  # decode2 needs an open decoder, and its ASS header is wanted below
        self.stream = out.add_stream(codec)
        self.stream.time_base = source.time_base
        self.stream.codec_context.time_base = source.time_base
        self.stream.codec_context.subtitle_header = getattr(context, "subtitle_header", None) or ASS_HEADER
        self.stream.metadata.update(stream_tags(source, out.format.name))

    def packets(self, packet: av.Packet) -> list[av.Packet]:
        produced = []
        try:
            cue = self.source.codec_context.decode2(packet)
        except av.error.FFmpegError:
            return produced
        if cue is not None and len(cue):
            encoded = self.stream.codec_context.encode_subtitle(cue)
            encoded.time_base = packet.time_base
            encoded.pts = encoded.dts = packet.pts if packet.pts is not None else packet.dts
            encoded.duration = packet.duration or round(
                Fraction(cue.end_display_time - cue.start_display_time, 1000) / packet.time_base
            )
            produced.append(encoded)
        return produced

    def flush(self) -> list[av.Packet]:
        return []  # each cue is encoded as it arrives; nothing is held back


# Either transcoder: what the mux holds per converted stream.
Transcoder = AudioTranscoder | SubtitleTranscoder
