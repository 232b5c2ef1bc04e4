"""PSNR and SSIM exactly as BasicSR computes them, so figures compare with the papers' tables.

The definitions (BasicSR `basicsr/metrics/psnr_ssim.py`): both images are 8-bit (a model's float output
is rounded first, see `to_uint8`); `border` pixels are cropped from every side (the scale, by
convention); on the Y channel of BT.601 "studio swing" YCbCr computed from RGB in [0, 1]
(Y = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235]); PSNR with a peak of 255; SSIM with an 11 x 11
Gaussian window of sigma 1.5 over the valid region only, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2,
averaged over the map. Everything is computed in float64.

A grayscale (H x W) image counts as RGB with three equal channels, as when BasicSR's test reads it
with OpenCV (IMREAD_COLOR): its Y is the gray value mapped to [16, 235]. (BasicSR's own `to_y_channel`
leaves a 2-D array untouched; the published Set14 numbers come from the 3-channel reading.)
"""

from __future__ import annotations

import math

import numpy as np

# Y of BT.601 studio swing from RGB in [0, 1], on the 0-255 scale.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
_Y_OFFSET = 16.0

# SSIM's window side: an image must keep at least this many pixels a side after the border is cropped.
SSIM_WINDOW = 11
_SSIM_SIZE = SSIM_WINDOW
_SSIM_SIGMA = 1.5
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as 8-bit pixels: clipped, times 255, rounded (BasicSR's `tensor2img`)."""
    return np.round(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing Y of an 8-bit RGB (H x W x 3) or gray (H x W) image, float64 in [16, 235]."""
    return _y_of(_as_pixels(image, "rgb_to_y"))


def psnr(sr: np.ndarray, hr: np.ndarray, border: int, y_channel: bool = True) -> float:
    """PSNR in dB of 8-bit `sr` against `hr`; inf when they are identical."""
    a, b = _prepare(sr, hr, border, y_channel, "psnr")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def ssim(sr: np.ndarray, hr: np.ndarray, border: int, y_channel: bool = True) -> float:
    """SSIM of 8-bit `sr` against `hr`, averaged over channels (one, on Y)."""
    a, b = _prepare(sr, hr, border, y_channel, "ssim")
    if a.shape[0] < _SSIM_SIZE or a.shape[1] < _SSIM_SIZE:
        raise ValueError(
            f"ssim: needs at least {_SSIM_SIZE} x {_SSIM_SIZE} pixels after cropping {border} from each "
            f"side, got {a.shape[1]} x {a.shape[0]}"
        )
    if a.ndim == 2:
        return _ssim_plane(a, b)
    return float(np.mean([_ssim_plane(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


def _as_pixels(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    # Float images in [0, 1] would give meaningless figures against a peak of 255; make the caller say
    # how they were rounded.
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected 8-bit pixels (uint8), got {image.dtype}; round with to_uint8")
    if image.ndim not in (2, 3):
        raise ValueError(f"{what}: expected an H x W or H x W x C image, got shape {image.shape}")
    return image.astype(np.float64)


def _prepare(
    sr: np.ndarray, hr: np.ndarray, border: int, y_channel: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    if np.shape(sr) != np.shape(hr):
        raise ValueError(f"{what}: the images differ in shape: {np.shape(sr)} and {np.shape(hr)}")
    if border < 0:
        raise ValueError(f"{what}: border must not be negative (got {border})")
    a, b = _as_pixels(sr, what), _as_pixels(hr, what)
    if 2 * border >= min(a.shape[0], a.shape[1]):
        raise ValueError(
            f"{what}: a border of {border} leaves nothing of a {a.shape[1]} x {a.shape[0]} image"
        )
    if border:
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    if y_channel:
        a, b = _y_of(a), _y_of(b)
    return a, b


def _y_of(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return _Y_OFFSET + _Y_WEIGHTS.sum() * (pixels / 255.0)
    if pixels.shape[2] != 3:
        raise ValueError(f"the Y channel needs 3-channel RGB, got {pixels.shape[2]} channels")
    return _Y_OFFSET + (pixels / 255.0) @ _Y_WEIGHTS


def gaussian_window() -> np.ndarray:
    """The 11-tap Gaussian of sigma 1.5, normalised to sum 1 (OpenCV's `getGaussianKernel(11, 1.5)`)."""
    offsets = np.arange(_SSIM_SIZE, dtype=np.float64) - (_SSIM_SIZE - 1) / 2
    taps = np.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    return taps / taps.sum()


def _filter_valid(plane: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation with `taps` along both axes, only where the window fits (no padding)."""
    size = len(taps)
    rows = plane.shape[0] - size + 1
    cols = plane.shape[1] - size + 1
    vertical = sum(taps[i] * plane[i : i + rows, :] for i in range(size))
    return sum(taps[j] * vertical[:, j : j + cols] for j in range(size))


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    taps = gaussian_window()
    mu_a = _filter_valid(a, taps)
    mu_b = _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a * mu_a
    var_b = _filter_valid(b * b, taps) - mu_b * mu_b
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / (
        (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    )
    return float(ssim_map.mean())
