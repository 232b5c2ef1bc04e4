"""Blur kernels of the Real-ESRGAN degradation model: Gaussian, generalized Gaussian and plateau
(each isotropic or anisotropic, rotated), and the circular low-pass (sinc) filter that makes ringing.

Every kernel is an odd-sized square float32 array that sums to 1.
"""

from __future__ import annotations

import math

import numpy as np

# The six shapes (Wang et al. 2021, section 3.1), as the recipes name them.
KERNEL_SHAPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive (got {size})")
    half = size // 2
    axis = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(axis, axis)  # x varies along columns, y along rows


def _mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T Sigma^-1 x on the kernel grid, for Sigma = R diag(sigma_x^2, sigma_y^2) R^T."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive (got {sigma_x}, {sigma_y})")
    x, y = _grid(size)
    cos, sin = math.cos(theta), math.sin(theta)
    along = cos * x + sin * y  # coordinates in the rotated frame
    across = -sin * x + cos * y
    return (along / sigma_x) ** 2 + (across / sigma_y) ** 2


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> np.ndarray:
    """exp(-d/2) for d the squared Mahalanobis distance: the plain (an)isotropic Gaussian."""
    return _normalised(np.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, beta: float
) -> np.ndarray:
    """exp(-d^beta / 2): beta < 1 gives a sharper peak and heavier tails, beta > 1 a flatter top."""
    if beta <= 0:
        raise ValueError(f"beta must be positive (got {beta})")
    return _normalised(np.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """1 / (1 + d^beta): a flat top with a slow fall-off, like defocus blur."""
    if beta <= 0:
        raise ValueError(f"beta must be positive (got {beta})")
    return _normalised(1.0 / (1.0 + _mahalanobis(size, sigma_x, sigma_y, theta) ** beta))


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """The Bessel function of the first kind, order 1, from its integral form
    J1(x) = (1/pi) * integral over [0, pi] of cos(t - x sin t) dt (Simpson's rule; error < 1e-9 here)."""
    steps = 256  # even, for Simpson
    t = np.linspace(0.0, math.pi, steps + 1)
    weights = np.ones(steps + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    values = np.cos(t[None, :] - np.asarray(x, dtype=np.float64).reshape(-1, 1) * np.sin(t)[None, :])
    integral = values @ weights * (math.pi / steps) / 3.0
    return (integral / math.pi).reshape(np.shape(x))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """The ideal circular low-pass filter with angular cutoff `cutoff` (radians per pixel, up to pi),
    cut to `size` x `size`: omega J1(omega r) / (2 pi r), omega^2 / (4 pi) at the centre."""
    if not 0 < cutoff <= math.pi:
        raise ValueError(f"cutoff must be in (0, pi] (got {cutoff})")
    x, y = _grid(size)
    radius = np.hypot(x, y)
    safe = np.where(radius == 0, 1.0, radius)
    kernel = cutoff * bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = np.where(radius == 0, cutoff**2 / (4 * math.pi), kernel)
    return _normalised(kernel)


def random_kernel(
    rng: np.random.Generator,
    size: int,
    shape: str,
    sigma_range: tuple[float, float],
    betag_range: tuple[float, float],
    betap_range: tuple[float, float],
) -> np.ndarray:
    """One kernel of `shape` with its sigmas, angle and beta drawn uniformly from the ranges."""
    if shape not in KERNEL_SHAPES:
        raise ValueError(f"unknown kernel shape {shape!r}; known: {', '.join(KERNEL_SHAPES)}")
    sigma_x = float(rng.uniform(*sigma_range))
    if shape.endswith("iso") and not shape.endswith("aniso"):
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y, theta = float(rng.uniform(*sigma_range)), float(rng.uniform(-math.pi, math.pi))
    if shape.startswith("generalized"):
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, float(rng.uniform(*betag_range)))
    if shape.startswith("plateau"):
        return plateau_kernel(size, sigma_x, sigma_y, theta, float(rng.uniform(*betap_range)))
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


def random_sinc(rng: np.random.Generator, size: int) -> np.ndarray:
    """A sinc kernel with the paper's cutoff range: [pi/3, pi] for small kernels, [pi/5, pi] from 13 up
    (a wide kernel can hold a lower cutoff's longer ripples)."""
    low = math.pi / 3 if size < 13 else math.pi / 5
    return sinc_kernel(size, float(rng.uniform(low, math.pi)))
