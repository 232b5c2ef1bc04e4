"""A decoded picture and the one way every job upscales it: colour, alpha, and the final size.

Both the image job and the video job use `upscale_picture`; neither borrows from the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Upscale = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class Picture:
    """A decoded image, ready for a model.

    rgb: float32 H x W x 3 in [0, 1] (a grayscale image has its one channel repeated three times, because
    models take RGB); alpha: float32 H x W in [0, 1], or None; depth: 8 or 16, the integer depth to write
    back where the format allows; grayscale: write one channel (the mean of the three) instead of RGB.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    depth: int = 8
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.float32 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"Picture.rgb must be float32 H x W x 3, got {self.rgb.dtype} {self.rgb.shape}")
        if self.alpha is not None and (
            self.alpha.dtype != np.float32 or self.alpha.shape != self.rgb.shape[:2]
        ):
            raise ValueError(
                f"Picture.alpha must be float32 {self.rgb.shape[:2]}, "
                f"got {self.alpha.dtype} {self.alpha.shape}"
            )
        if self.depth not in (8, 16):
            raise ValueError(f"Picture.depth must be 8 or 16, got {self.depth}")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def upscale_picture(
    picture: Picture, upscale: Upscale, *, scale: float, outscale: float | None = None
) -> Picture:
    """Run `upscale` on a picture's colour (and alpha), and resize to `outscale` when it differs.

    A non-opaque alpha goes through the same `upscale` as a gray image (its three outputs averaged);
    a fully opaque one is recreated at the output size without running the model. The final size is
    round(W * outscale) x round(H * outscale), resized from the model's output with INTER_AREA when
    shrinking and INTER_LANCZOS4 when growing. Depth and grayscale are carried over unchanged.
    """
    outscale = scale if outscale is None else outscale
    final = (round_half_up(picture.height * outscale), round_half_up(picture.width * outscale))

    rgb = _run_model(upscale, picture.rgb, scale)
    alpha = None
    if picture.alpha is not None and not np.all(picture.alpha == 1.0):
        alpha = _run_model(upscale, np.repeat(picture.alpha[:, :, None], 3, axis=2), scale)
        alpha = alpha.mean(axis=2, dtype=np.float32)

    rgb = _resize(rgb, final)
    if alpha is not None:
        alpha = _resize(alpha, final)
    elif picture.alpha is not None:
        alpha = np.ones(final, dtype=np.float32)
    return Picture(rgb=rgb, alpha=alpha, depth=picture.depth, grayscale=picture.grayscale)


def _run_model(upscale: Upscale, pixels: np.ndarray, scale: float) -> np.ndarray:
    out = upscale(pixels)
    height, width = pixels.shape[:2]
    expected = (round_half_up(height * scale), round_half_up(width * scale), 3)
    if out.shape != expected:
        # The caller's callable broke its contract: a bug, so not a per-file UpscaleError.
        raise ValueError(f"upscale returned {out.shape} for a {height}x{width} input; expected {expected}")
    return np.ascontiguousarray(out, dtype=np.float32)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if pixels.shape[:2] == size:
        return pixels
    shrinking = height * width < pixels.shape[0] * pixels.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(pixels, (width, height), interpolation=interpolation)
    # Lanczos overshoots at edges; keep values in [0, 1] for the next stage.
    return np.clip(resized, 0.0, 1.0, out=resized)


def round_half_up(value: float) -> int:
    return max(1, math.floor(value + 0.5))
