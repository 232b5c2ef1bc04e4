"""Reading and writing still images as float RGB in [0, 1], with alpha, depth and grayscale kept.

Pixels are decoded by OpenCV (`IMREAD_UNCHANGED`, so 16-bit and alpha survive); Pillow only reads the
EXIF Orientation tag, because `IMREAD_UNCHANGED` ignores it and Pillow opens 16-bit RGBA as 8-bit.

What each output format keeps:

| format        | 16-bit | alpha | grayscale               |
| ------------- | ------ | ----- | ----------------------- |
| PNG           | yes    | yes   | 1 channel, 2 with alpha |
| TIFF          | yes    | yes   | 1 channel; RGBA with alpha (OpenCV cannot write 2 channels) |
| WebP          | no     | yes   | written as RGB(A): WebP has no grayscale |
| JPEG, BMP     | no     | dropped | 1 channel             |

A 16-bit picture written to an 8-bit format is rounded once, from its float values. Float TIFF input is
clipped to [0, 1] and counts as 16-bit, so it is written as 16-bit integers, never as float.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from upscaler.errors import InputError, OutputError
from upscaler.picture import Picture
from upscaler.system.files import write_atomically

# Suffix (lowercase, with the dot) -> the format's name, which is also the suffix OpenCV encodes by.
_FORMATS: dict[str, str] = {
    ".png": ".png",
    ".jpg": ".jpg",
    ".jpeg": ".jpg",
    ".webp": ".webp",
    ".tif": ".tiff",
    ".tiff": ".tiff",
    ".bmp": ".bmp",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_FORMATS)

_SIXTEEN_BIT_FORMATS = frozenset({".png", ".tiff"})
_ALPHA_FORMATS = frozenset({".png", ".tiff", ".webp"})

_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class EncodeOptions:
    """How outputs are compressed. png_compression is zlib's level, 0 (none, fast) to 9 (smallest)."""

    jpeg_quality: int = 95
    webp_quality: int = 95
    png_compression: int = 3

    def __post_init__(self) -> None:
        for name, value, high in (
            ("jpeg_quality", self.jpeg_quality, 100),
            ("webp_quality", self.webp_quality, 100),
            ("png_compression", self.png_compression, 9),
        ):
            if not 0 <= value <= high:
                raise OutputError(f"{name}: must be between 0 and {high} (got {value})")


def output_format(suffix: str) -> str:
    """The canonical format for a suffix such as ".JPEG" or "png" (returns ".jpg", ".png")."""
    key = suffix.lower()
    if not key.startswith("."):
        key = "." + key
    try:
        return _FORMATS[key]
    except KeyError:
        known = ", ".join(s.lstrip(".") for s in SUPPORTED_SUFFIXES)
        raise OutputError(f"unknown image format {suffix!r}; known: {known}") from None


# --------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str]) -> Picture:
    """Decode an image file, upright (EXIF orientation applied), as a Picture.

    Raises InputError for a file that is missing, unreadable, corrupt or of an unsupported pixel type.
    """
    path = Path(path)
    try:
        # np.fromfile + imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if data.size == 0:
        raise InputError(f"cannot read {path}: the file is empty")
    try:
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise InputError(f"cannot read {path}: {_cv2_reason(error)}") from None
    if pixels is None:
        raise InputError(f"cannot read {path}: not an image OpenCV can decode, or the file is corrupt")
    if pixels.ndim == 3 and pixels.shape[2] == 4 and _is_gray_alpha_png(data):
        # OpenCV expands a gray + alpha PNG to BGRA; keep it gray so it is written back as such.
        pixels = pixels[:, :, [0, 3]]
    pixels = _orient(pixels, _orientation(path, data))
    return _to_picture(pixels, path)


def _is_gray_alpha_png(data: np.ndarray) -> bool:
    # The colour type is the 10th byte of IHDR, which the PNG standard puts first: file offset 25.
    return data.size > 25 and bytes(data[:8]) == _PNG_SIGNATURE and int(data[25]) == 4


def _to_picture(pixels: np.ndarray, path: Path) -> Picture:
    return pixels_to_picture(pixels, bgr=True, what=f"cannot read {path}")


def pixels_to_picture(pixels: np.ndarray, *, bgr: bool, what: str = "the image") -> Picture:
    """A Picture of decoded pixels: H x W gray, or H x W x 1-4 channels (gray, gray + alpha, colour,
    colour + alpha; `bgr`: colour in OpenCV's order, else RGB) of uint8, uint16 or float in [0, 1].
    Raises InputError beginning with `what` for another pixel type or channel count."""
    if pixels.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif pixels.dtype == np.uint16:
        depth, scale = 16, 65535.0
    elif pixels.dtype in (np.float32, np.float64):
        depth, scale = 16, 1.0
    else:
        raise InputError(f"{what}: unsupported pixel type {pixels.dtype} (expected uint8, uint16 or float)")

    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    if channels in (1, 2):
        gray = _unit_float(pixels[:, :, 0], scale)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif channels in (3, 4):
        rgb = _unit_float(pixels[:, :, 2::-1] if bgr else pixels[:, :, :3], scale)
    else:
        raise InputError(f"{what}: unsupported channel count {channels} (got shape {pixels.shape})")
    alpha = _unit_float(pixels[:, :, -1], scale) if channels in (2, 4) else None
    return Picture(rgb=rgb, alpha=alpha, depth=depth, grayscale=channels <= 2)


def _unit_float(values: np.ndarray, scale: float) -> np.ndarray:
    out = values.astype(np.float32, order="C")
    if scale != 1.0:
        out /= np.float32(scale)
    else:
        # Float TIFFs may hold HDR, negative or NaN values; the models and the writer work in [0, 1].
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _orientation(path: Path, data: np.ndarray) -> int:
    """The EXIF Orientation (1..8), 1 when absent or unreadable."""
    try:
        if bytes(data[:8]) == _PNG_SIGNATURE:
            # Pillow's PNG getexif() decodes every pixel when the eXIf chunk is absent or after IDAT.
            raw = _png_exif_chunk(memoryview(data))
            if raw is None:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            # Image.open reads headers only; getexif() does not decode pixels for JPEG, WebP or TIFF.
            with Image.open(path) as image:
                exif = image.getexif()
        value = exif.get(_ORIENTATION_TAG, 1)
    except Exception:
        # Orientation is optional metadata: a file OpenCV decoded but whose EXIF Pillow cannot parse
        # (or an image beyond Pillow's decompression-bomb limit) is shown as stored, not refused.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_exif_chunk(data: memoryview) -> bytes | None:
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = bytes(data[position + 4 : position + 8])
        if kind == b"eXIf":
            return bytes(data[position + 8 : position + 8 + length])
        if kind == b"IEND":
            break
        position += 12 + length  # length, type, data, CRC
    return None


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H x W or H x W x C) upright for an EXIF Orientation value."""
    if orientation == 1:
        return pixels
    if orientation in (5, 6, 7, 8):
        pixels = pixels.swapaxes(0, 1)
    if orientation in (2, 3, 6, 7):
        pixels = pixels[:, ::-1]
    if orientation in (3, 4, 7, 8):
        pixels = pixels[::-1]
    return np.ascontiguousarray(pixels)


def _cv2_reason(error: cv2.error) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "OpenCV error"


# --------------------------------------------------------------------------------------------- writing


# Outputs of `upscale` carry this, then the job's key, in their metadata (PNG tEXt, JPEG comment), so
# that a rerun knows its own finished outputs and never takes them for inputs.
MARK_PREFIX = "upscale:"
_MARK_KEYWORD = b"Software"
_MARKED_FORMATS = (".png", ".jpg")


def write_image(
    path: str | os.PathLike[str], picture: Picture, options: EncodeOptions | None = None, mark: str = ""
) -> None:
    """Encode `picture` in the format its suffix names and put it at `path` atomically.

    mark: a key recorded in PNG and JPEG files as `upscale:<mark>` (see `read_mark`); other formats
    have no place the tool uses for it.

    The file is encoded in memory, written to a hidden temporary file in the same folder and renamed
    over `path`, so `path` is either the old file or the complete new one; on any failure the
    temporary file is removed. Raises OutputError for an unknown format or a failed write. The parent
    folder must exist.
    """
    path = Path(path)
    encoded = image_bytes(path.suffix, picture, options, mark)
    # No folder is made here: the job plans its output folders, and a missing one is a mistake to report.
    with write_atomically(path) as temporary:
        temporary.write_bytes(encoded)


def image_bytes(suffix: str, picture: Picture, options: EncodeOptions | None = None, mark: str = "") -> bytes:
    """The file `write_image` writes for a path ending in `suffix`, as bytes."""
    fmt = output_format(suffix)
    encoded = encode_image(picture, fmt, options or EncodeOptions())
    if mark:
        encoded = add_mark(encoded, fmt, MARK_PREFIX + mark)
    return encoded


def add_mark(encoded: bytes, fmt: str, text: str) -> bytes:
    """`encoded` with `text` in its metadata: a PNG tEXt chunk after IHDR, a JPEG comment after SOI."""
    body = text.encode("latin-1", "replace")
    if fmt == ".png" and encoded.startswith(_PNG_SIGNATURE):
        end = len(_PNG_SIGNATURE) + 12 + int.from_bytes(encoded[8:12], "big")  # past IHDR
        data = _MARK_KEYWORD + b"\0" + body
        chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
        return encoded[:end] + chunk + encoded[end:]
    if fmt == ".jpg" and encoded.startswith(b"\xff\xd8"):
        return encoded[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + encoded[2:]
    return encoded


def read_mark(path: Path) -> str | None:
    """The key an output of `upscale` carries (see `add_mark`), or None for any other file. Reads only
    the file's first bytes, where the mark is put."""
    if Path(path).suffix.lower() not in (*_MARKED_FORMATS, ".jpeg"):
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    prefix = MARK_PREFIX.encode()
    if head.startswith(_PNG_SIGNATURE):
        end = len(_PNG_SIGNATURE) + 12 + int.from_bytes(head[8:12], "big")
        length = int.from_bytes(head[end : end + 4], "big")
        if head[end + 4 : end + 8] == b"tEXt":
            keyword, _, text = head[end + 8 : end + 8 + length].partition(b"\0")
            if keyword == _MARK_KEYWORD and text.startswith(prefix):
                return text[len(prefix) :].decode("latin-1")
    elif head.startswith(b"\xff\xd8\xff\xfe"):
        length = int.from_bytes(head[4:6], "big")
        text = head[6 : 4 + length]
        if text.startswith(prefix):
            return text[len(prefix) :].decode("latin-1")
    return None


def encode_image(picture: Picture, fmt: str, options: EncodeOptions | None = None) -> bytes:
    """The file bytes of `picture` in format `fmt` (a suffix such as ".png")."""
    fmt = output_format(fmt)
    options = options or EncodeOptions()
    sixteen = picture.depth == 16 and fmt in _SIXTEEN_BIT_FORMATS
    dtype, top = (np.uint16, 65535.0) if sixteen else (np.uint8, 255.0)
    alpha = picture.alpha if fmt in _ALPHA_FORMATS else None

    if picture.grayscale:
        gray = picture.rgb.mean(axis=2, dtype=np.float32)
        if alpha is not None and fmt == ".png":
            return _encode_png_gray_alpha(
                quantize_levels(np.dstack([gray, alpha]), top, dtype), options.png_compression
            )
        planes = np.dstack([gray, gray, gray, alpha]) if alpha is not None else gray
    else:
        bgr = picture.rgb[:, :, ::-1]
        planes = np.dstack([bgr, alpha]) if alpha is not None else bgr
    pixels = quantize_levels(planes, top, dtype)

    params: list[int] = []
    if fmt == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, options.png_compression]
    elif fmt == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality]
    elif fmt == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, options.webp_quality]
    try:
        ok, buffer = cv2.imencode(fmt, pixels, params)
    except cv2.error as error:
        raise OutputError(f"cannot encode {fmt.lstrip('.')}: {_cv2_reason(error)}") from None
    if not ok:
        raise OutputError(f"cannot encode {fmt.lstrip('.')}: OpenCV refused the image {pixels.shape}")
    return buffer.tobytes()


def quantize_levels(values: np.ndarray, top: float, dtype: type[np.integer]) -> np.ndarray:
    """Values in [0, 1] as integer levels up to `top`, rounded half up, as image files are written."""
    # Round half up (values are non-negative after the clip); truncation would darken by half a step.
    scaled = np.clip(values, 0.0, 1.0) * np.float32(top) + np.float32(0.5)
    return np.ascontiguousarray(scaled.astype(dtype))


def _encode_png_gray_alpha(pixels: np.ndarray, level: int) -> bytes:
    """A PNG of colour type 4 (gray + alpha), which OpenCV's encoder cannot write."""
    height, width, _ = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    # The "Up" filter (type 2): each byte minus the byte above, modulo 256; it compresses photos well.
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]
    scanlines = np.hstack([np.full((height, 1), 2, dtype=np.uint8), filtered])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), level))
        + chunk(b"IEND", b"")
    )
