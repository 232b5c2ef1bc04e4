"""The steps of the degradation model on float32 RGB images in [0, 1] (H x W x 3), and Real-ESRGAN's
second-order chain that joins them: blur, resize, noise, JPEG, all twice, then the resize to the LR
size with a final sinc and JPEG in random order. Cheap enough per crop for the data loader's workers.
"""

from __future__ import annotations

import cv2
import numpy as np

from train.degradations.kernels import random_kernel, random_sinc
from train.degradations.settings import RESIZE_MODES, DegradationConfig

_INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
# BT.601 luma weights: grey noise is drawn on one plane and added to all three.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`image` filtered by `kernel`, the edges mirrored (no dark border)."""
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def resize(image: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """`image` at width x height with OpenCV's area, bilinear or bicubic interpolation."""
    return cv2.resize(image, (max(1, width), max(1, height)), interpolation=_INTERPOLATION[mode])


def gaussian_noise(image: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """`image` plus zero-mean Gaussian noise of standard deviation `sigma` (in [0, 1] units), one draw
    per pixel and channel, or one per pixel for all channels when `gray`."""
    shape = image.shape[:2] + ((1,) if gray else (image.shape[2],))
    return image + rng.normal(0.0, sigma, shape).astype(np.float32)


def poisson_noise(image: np.ndarray, scale: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """`image` plus shot noise times `scale`: each value read as a count of 255 photons at white, so at
    level x the noise's standard deviation is scale * sqrt(x / 255). `gray`: drawn on luma alone."""
    base = np.clip(image @ _LUMA, 0, 1)[..., None] if gray else np.clip(image, 0, 1)
    counts = base.astype(np.float64) * 255.0
    noise = (rng.poisson(counts) - counts) / 255.0
    return image + (scale * noise).astype(np.float32)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """`image` through a JPEG encode and decode at `quality` (1-100), as 8-bit pixels do it."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(
        ".jpg", np.ascontiguousarray(pixels[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"JPEG encoding failed at quality {quality}")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def random_blur_kernel(rng: np.random.Generator, config: DegradationConfig, second: bool) -> np.ndarray:
    """A kernel of the first (or `second`) pass: a sinc with its probability, else a shape by kernel_prob."""
    size = int(rng.choice(config.kernel_sizes))
    if rng.random() < (config.sinc_prob2 if second else config.sinc_prob):
        return random_sinc(rng, size)
    probabilities = np.asarray(config.kernel_prob2 if second else config.kernel_prob, dtype=np.float64)
    shape = config.kernel_list[
        int(rng.choice(len(config.kernel_list), p=probabilities / probabilities.sum()))
    ]
    return random_kernel(
        rng,
        size,
        shape,
        config.blur_sigma2 if second else config.blur_sigma,
        config.betag_range2 if second else config.betag_range,
        config.betap_range2 if second else config.betap_range,
    )


def _random_factor(rng: np.random.Generator, probabilities, bounds) -> float:
    kind = int(rng.choice(3, p=np.asarray(probabilities, dtype=np.float64) / sum(probabilities)))
    if kind == 0:
        return float(rng.uniform(1.0, bounds[1]))
    if kind == 1:
        return float(rng.uniform(bounds[0], 1.0))
    return 1.0


def random_noise(
    image: np.ndarray, rng: np.random.Generator, config: DegradationConfig, second: bool
) -> np.ndarray:
    """Gaussian (with its probability) or Poisson noise at a level from the pass's range, grey or colour."""
    gray = rng.random() < (config.gray_noise_prob2 if second else config.gray_noise_prob)
    if rng.random() < (config.gaussian_noise_prob2 if second else config.gaussian_noise_prob):
        sigma = rng.uniform(*(config.noise_range2 if second else config.noise_range)) / 255.0
        return gaussian_noise(image, float(sigma), gray, rng)
    scale = rng.uniform(*(config.poisson_scale_range2 if second else config.poisson_scale_range))
    return poisson_noise(image, float(scale), gray, rng)


def first_pass(image: np.ndarray, rng: np.random.Generator, config: DegradationConfig) -> np.ndarray:
    """Blur, a random resize, noise and JPEG (the model's first order)."""
    image = blur(image, random_blur_kernel(rng, config, second=False))
    factor = _random_factor(rng, config.resize_prob, config.resize_range)
    height, width = image.shape[:2]
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    image = resize(image, round(width * factor), round(height * factor), mode)
    image = np.clip(random_noise(image, rng, config, second=False), 0, 1)
    return jpeg(image, int(rng.integers(config.jpeg_range[0], config.jpeg_range[1] + 1)))


def second_order(
    hr: np.ndarray, scale: int, rng: np.random.Generator, config: DegradationConfig
) -> np.ndarray:
    """The LR image (H/scale x W/scale, float32 in [0, 1]) of HR crop `hr` under the whole model."""
    height, width = hr.shape[:2]
    out_h, out_w = height // scale, width // scale
    image = first_pass(hr.astype(np.float32), rng, config)
    # second order: blur (not always), resize about the LR size, noise, then the final steps
    if rng.random() < config.second_blur_prob:
        image = blur(image, random_blur_kernel(rng, config, second=True))
    factor = _random_factor(rng, config.resize_prob2, config.resize_range2)
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    image = resize(image, round(out_w * factor), round(out_h * factor), mode)
    image = np.clip(random_noise(image, rng, config, second=True), 0, 1)
    final_sinc = (
        random_sinc(rng, int(rng.choice(config.kernel_sizes)))
        if rng.random() < config.final_sinc_prob
        else None
    )
    quality = int(rng.integers(config.jpeg_range2[0], config.jpeg_range2[1] + 1))
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    if rng.random() < 0.5:  # resize + sinc, then JPEG
        image = resize(image, out_w, out_h, mode)
        if final_sinc is not None:
            image = blur(image, final_sinc)
        image = jpeg(np.clip(image, 0, 1), quality)
    else:  # JPEG, then resize + sinc
        image = jpeg(np.clip(image, 0, 1), quality)
        image = resize(image, out_w, out_h, mode)
        if final_sinc is not None:
            image = blur(image, final_sinc)
    return np.clip(image, 0, 1)
