"""PSNR / SSIM as BasicSR defines them: hand-computed values, known properties, an OpenCV reference."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from upscaler.quality.metrics import gaussian_window, psnr, rgb_to_y, ssim, to_uint8


def flat(value: int, shape=(32, 32, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def test_to_uint8_clips_scales_and_rounds() -> None:
    values = np.array([-0.5, 0.0, 0.5 / 255, 1.4 / 255, 1.6 / 255, 0.5, 1.0, 2.0])
    assert to_uint8(values).tolist() == [0, 0, 0, 1, 2, 128, 255, 255]


def test_y_of_primaries_and_extremes() -> None:
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert rgb_to_y(pixels)[0].tolist() == pytest.approx([16.0, 235.0, 81.481, 144.553, 40.966])
    assert rgb_to_y(pixels).dtype == np.float64


def test_gray_counts_as_three_equal_channels() -> None:
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert np.allclose(rgb_to_y(gray), rgb_to_y(rgb))
    assert np.allclose(rgb_to_y(gray), 16 + 219 * gray.astype(np.float64) / 255)


def test_identical_images() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert psnr(image, image, border=4) == math.inf
    assert ssim(image, image, border=4) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_constant_offset_by_hand() -> None:
    # RGB: every value off by 10 -> MSE 100 -> 10 log10(255^2 / 100).
    assert psnr(flat(110), flat(100), border=0, y_channel=False) == pytest.approx(28.1308036, abs=1e-6)
    # Y: gray values off by 10 differ by 10 * 219 / 255 in Y.
    expected = 10 * math.log10(255**2 / (10 * 219 / 255) ** 2)
    assert psnr(flat(110), flat(100), border=0) == pytest.approx(expected, abs=1e-9)


def test_psnr_of_a_known_noise_level() -> None:
    # +-5 on every pixel (a checkerboard of signs) is noise of exactly MSE 25 in RGB.
    rng = np.random.default_rng(1)
    hr = rng.integers(20, 236, (64, 64, 3), dtype=np.uint8)
    signs = np.where((np.indices((64, 64)).sum(axis=0) % 2)[:, :, None] == 0, 5, -5)
    sr = (hr.astype(int) + signs).astype(np.uint8)
    assert psnr(sr, hr, border=4, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    # The same offset on all three channels moves Y by 5 * 219 / 255.
    assert psnr(sr, hr, border=4) == pytest.approx(10 * math.log10(255**2 / (5 * 219 / 255) ** 2), abs=1e-9)


def test_border_is_cropped_before_measuring() -> None:
    hr = flat(100, (20, 20, 3))
    sr = hr.copy()
    sr[:4, :, :] = 0
    sr[:, -4:, :] = 255
    assert psnr(sr, hr, border=4) == math.inf
    assert psnr(sr, hr, border=3) < 20


def test_ssim_of_two_constant_images_by_hand() -> None:
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) on every valid pixel.
    c1 = (0.01 * 255) ** 2
    a = 16 + 219 * 100 / 255
    b = 16 + 219 * 140 / 255
    assert ssim(flat(100), flat(140), border=4) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_gaussian_window_is_opencvs() -> None:
    assert np.allclose(gaussian_window(), cv2.getGaussianKernel(11, 1.5)[:, 0], atol=1e-15)


def basicsr_ssim_reference(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """BasicSR's `_ssim` as it is written (cv2.filter2D, then the valid region), on our Y."""
    img, img2 = rgb_to_y(sr)[border:-border, border:-border], rgb_to_y(hr)[border:-border, border:-border]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    sigma1_sq = cv2.filter2D(img**2, -1, window)[5:-5, 5:-5] - mu1**2
    sigma2_sq = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2**2
    sigma12 = cv2.filter2D(img * img2, -1, window)[5:-5, 5:-5] - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1**2 + mu2**2 + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return float(ssim_map.mean())


def test_ssim_matches_basicsr_written_with_opencv() -> None:
    rng = np.random.default_rng(2)
    hr = cv2.GaussianBlur(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8), (5, 5), 1.0)
    noise = rng.normal(0, 8, hr.shape)
    sr = np.clip(hr + noise, 0, 255).astype(np.uint8)
    ours = ssim(sr, hr, border=4)
    assert 0.3 < ours < 0.99
    assert ours == pytest.approx(basicsr_ssim_reference(sr, hr, 4), abs=1e-10)


def test_ssim_per_channel_without_y() -> None:
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    per_channel = [ssim(sr[:, :, c], hr[:, :, c], border=2, y_channel=False) for c in range(3)]
    assert ssim(sr, hr, border=2, y_channel=False) == pytest.approx(np.mean(per_channel))


def test_worse_images_score_lower() -> None:
    rng = np.random.default_rng(4)
    hr = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (7, 7), 2.0)
    slightly = np.clip(hr + rng.normal(0, 2, hr.shape), 0, 255).astype(np.uint8)
    badly = np.clip(hr + rng.normal(0, 20, hr.shape), 0, 255).astype(np.uint8)
    assert psnr(slightly, hr, 4) > psnr(badly, hr, 4)
    assert ssim(slightly, hr, 4) > ssim(badly, hr, 4)


def test_mistakes_are_refused() -> None:
    image = flat(0)
    with pytest.raises(ValueError, match="uint8"):
        psnr(image.astype(np.float32) / 255, image.astype(np.float32) / 255, border=0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(image, image[:-1], border=0)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(image, image, border=16)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(flat(0, (16, 16, 3)), flat(0, (16, 16, 3)), border=4)
    with pytest.raises(ValueError, match="3-channel"):
        psnr(flat(0, (16, 16, 4)), flat(0, (16, 16, 4)), border=0)
