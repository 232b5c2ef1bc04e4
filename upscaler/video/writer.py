"""Writing upscaled frames into a part file: RGB levels quantized for the encoder, encoded and muxed
into one small video-only file (`PartWriter`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from upscaler.errors import OutputError
from upscaler.video import encode
from upscaler.video.encode import (
    FIRST_PTS_KEY,
    PART_FORMAT,
    Encoding,
    _subsampled,
    colour_numbers,
    frame_size,
)
from upscaler.video.probe import (
    SWSCALE_MATRIX,
    VideoInfo,
)


def level_dtype(bits: int) -> type[np.integer]:
    """The integer type `quantize` gives for an encoding of `bits` bits per sample."""
    return np.uint16 if bits > 8 else np.uint8


def quantize(rgb: np.ndarray, bits: int, *, in_place: bool = False) -> np.ndarray:
    """Float RGB in [0, 1] (clipped) -> rounded levels for an encoding of `bits` bits: 0-255 in uint8 up to
    8 bits, else 0-65535 in uint16 (swscale takes 16-bit RGB to any deeper YUV).

    Frames wait for the encoder as levels: at 5120x2880 a frame is 44 MB in uint8 against 177 MB in
    float32. One float temporary, scaled in place (`clip * k + 0.5` would make three); none with
    `in_place`, which scales `rgb` itself (a float32 array the caller owns and no longer needs).
    """
    levels = np.clip(rgb, 0.0, 1.0, out=rgb if in_place and rgb.dtype == np.float32 else None)
    levels *= 65535.0 if bits > 8 else 255.0
    levels += 0.5
    # Row-major whatever the layout of `rgb` (a transposed view of a C x H x W frame, say): the encoder
    # reads the levels as rows of pixels.
    return levels.astype(level_dtype(bits), order="C")


def row_quantizer(bits: int) -> Callable[[np.ndarray], np.ndarray]:
    """A tiler `finish` (upscaler.tiling.runner.Finish): C x rows x W float32 rows, which it may overwrite,
    -> rows x W x C levels for an encoding of `bits` bits (see `quantize`)."""

    def finish(rows: np.ndarray) -> np.ndarray:
        return quantize(rows.transpose(1, 2, 0), bits, in_place=True)

    return finish


class PartWriter:
    """One video-only part file. Use as a context manager; the file appears at `path` only once complete.

    `write` takes H x W x 3 RGB with the frame's source pts: float32 in [0, 1], or the levels `quantize`
    makes of it for this encoding (uint8, or uint16 above 8 bits). Frames must come in display order.
    Sides that the pixel format cannot hold (odd sides with 4:2:0) are padded by repeating the last
    row/column (see `frame_size`).
    """

    def __init__(self, path: Path, source: VideoInfo, encoding: Encoding, width: int, height: int) -> None:
        self.path = Path(path)
        self.width, self.height = width, height
        self.size = frame_size(encoding, width, height)
        self.encoding = encoding
        self.frames = 0
        self._temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        self._deep = encoding.bit_depth > 8
        self._time_base = source.time_base
        self._colour = colour_numbers(encoding.colour)
        if encoding.pix_fmt.startswith("gbr"):
            # Planar RGB output (--pix-fmt gbrp): no YUV matrix, full range by definition.
            self._colour = {**self._colour, "colorspace": 0, "color_range": 2}
        self._reformatter = VideoReformatter()
        self._matrix = SWSCALE_MATRIX.get(encoding.colour.matrix or "bt709", 1)
        self._range = 2 if encoding.colour.range == "pc" else 1
        self._container = av.open(str(self._temporary), "w", format=PART_FORMAT)
        try:
            stream = self._container.add_stream(encoding.codec, rate=source.average_rate or None)
            stream.width, stream.height = self.size
            stream.pix_fmt = encoding.pix_fmt
            stream.time_base = source.time_base
            context = stream.codec_context
            context.time_base = source.time_base
            if source.average_rate:
                context.framerate = source.average_rate
            for attribute, number in self._colour.items():
                setattr(context, attribute, number)
            options = dict(encoding.options)
            if _subsampled(encoding.pix_fmt):
                # swscale halves chroma between luma samples ('center'); tag it, or decoders assume
                # H.264's 'left' and move the colours a quarter pixel (1-2 levels on a steep gradient).
                options.setdefault("chroma_sample_location", "center")
            context.options = options
            # The encoder's own threads, so encoding keeps up with upscaling: one per core
            # (ENCODER_THREADS), frame threads where the encoder has them. PyAV's default is slice
            # threads, which x264 turns into sliced encoding: slower per thread and larger files.
            context.thread_count = encode.ENCODER_THREADS  # read at use: tests and benchmarks set it
            context.thread_type = "AUTO"
            self._stream = stream
        except BaseException:
            self._discard()
            raise

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self._discard()

    def write(self, pts: int, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"PartWriter.write: expected {(self.height, self.width, 3)}, got {rgb.shape}")
        if self.frames == 0:
            # NUT shifts a part's timestamps when the encoder's first decode time is negative (B-frames);
            # the first pts, in seconds, lets the mux undo that shift exactly.
            self._container.metadata[FIRST_PTS_KEY] = str(pts * self._time_base)
        frame = self._frame(rgb)
        frame.pts = pts
        # The stream's time base is the muxer's choice once the header is written (NUT turns 1/1000 into
        # 1/64000, an exact multiple); the encoder's stays the source's, and frames are stamped in it.
        frame.time_base = self._time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except av.error.FFmpegError as error:
            raise OutputError(f"{self.path.name}: encoding frame at pts {pts} failed: {error}") from None
        self.frames += 1

    def _frame(self, rgb: np.ndarray) -> av.VideoFrame:
        depth = 16 if self._deep else 8
        levels = rgb if rgb.dtype == level_dtype(depth) else quantize(rgb, depth)
        padded_w, padded_h = self.size
        if (padded_w, padded_h) != (self.width, self.height):
            levels = np.pad(
                levels, ((0, padded_h - self.height), (0, padded_w - self.width), (0, 0)), mode="edge"
            )
        frame = av.VideoFrame.from_ndarray(levels, format="rgb48le" if self._deep else "rgb24")
        converted = self._reformatter.reformat(
            frame,
            format=self.encoding.pix_fmt,
            dst_colorspace=self._matrix,
            dst_color_range=self._range,
            # Same size: the filter only halves chroma. Bicubic with accurate rounding round-trips with
            # decoding (video._Converter) within a fraction of a level; bilinear is ~0.3 levels worse.
            interpolation=Interpolation.BICUBIC | Interpolation.ACCURATE_RND,
        )
        for attribute, number in self._colour.items():
            setattr(converted, attribute, number)
        return converted

    def close(self) -> None:
        """Flush the encoder, finish the file and move it to `path`."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
            os.replace(self._temporary, self.path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        with contextlib.suppress(FileNotFoundError):
            self._temporary.unlink()
