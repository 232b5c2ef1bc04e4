"""A video codec as a degradation: frames encoded with libx264 or libx265 at a CRF and preset, in
memory through PyAV, and decoded back, so a model learns from the blocking, ringing and smeared detail
that real footage carries (chroma subsampling to 4:2:0 included)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

# The decoder for each encoder's bitstream.
_DECODERS = {"libx264": "h264", "libx265": "hevc"}
_X265_MIN_SIDE = 64


def _options(codec: str, crf: int, preset: str) -> dict[str, str]:
    options = {"crf": str(crf), "preset": preset}
    # One thread: the same frames, settings and seed give the same bytes, so a bank is reproducible.
    if codec == "libx265":
        options["x265-params"] = "log-level=none:pools=none:frame-threads=1"
    else:
        options["threads"] = "1"
    return options


def encode_decode(frames: Sequence[np.ndarray], codec: str, crf: int, preset: str) -> list[np.ndarray]:
    """Each 8-bit RGB frame (all the same even size) after a `codec` encode at `crf`/`preset` and a
    decode: what a viewer of the encoded video sees. The first frame is the key frame, the rest predicted."""
    if codec not in _DECODERS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(_DECODERS)}")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 video needs even sides (got {width} x {height})")
    if codec == "libx265" and min(height, width) < _X265_MIN_SIDE:
        # libx265 corrupts the heap on frames smaller than its 64-pixel coding tree unit (seen with
        # 48 x 48 at every preset): encode the frames edge-padded and crop what comes back
        pad = ((0, max(0, _X265_MIN_SIDE - height)), (0, max(0, _X265_MIN_SIDE - width)), (0, 0))
        padded = [np.pad(frame, pad, mode="edge") for frame in frames]
        return [frame[:height, :width] for frame in encode_decode(padded, codec, crf, preset)]
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.framerate = Fraction(25, 1)
    encoder.thread_count = 1
    encoder.options = _options(codec, crf, preset)
    packets = []
    for index, pixels in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24").reformat(
            format="yuv420p"
        )
        frame.pts = index
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create(_DECODERS[codec], "r")
    decoder.thread_count = 1
    decoded = []
    for packet in packets:
        decoded += decoder.decode(packet)
    decoded += decoder.decode(None)
    if len(decoded) != len(frames):
        raise RuntimeError(f"{codec} gave back {len(decoded)} of {len(frames)} frames")
    return [frame.to_ndarray(format="rgb24") for frame in decoded]


def encode_image(image: np.ndarray, codec: str, crf: int, preset: str) -> np.ndarray:
    """One 8-bit RGB image of any size as a single key frame through `codec` (odd sides padded by
    repeating the edge, then cropped back)."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return encode_decode([padded], codec, crf, preset)[0][:height, :width]
