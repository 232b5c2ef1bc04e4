"""MATLAB-compatible bicubic: the kernel's values, its widening when shrinking, no 8-bit rounding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from upscaler.quality.resampling import bicubic_resize


def cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel, written out as MATLAB's `imresize` documents it."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def test_kernel_values_written_out() -> None:
    # The four weights of a 2x upscale, by hand: 1.5|x|^3 - 2.5|x|^2 + 1 and -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2.
    assert cubic(0.25) == pytest.approx(0.8671875)
    assert cubic(0.75) == pytest.approx(0.2265625)
    assert cubic(1.25) == pytest.approx(-0.0703125)
    assert cubic(1.75) == pytest.approx(-0.0234375)


def test_upscaling_an_impulse_traces_the_a_minus_half_kernel() -> None:
    # A bump of 0.25 on 0.5 keeps the negative lobes inside [0, 1], so clipping does not hide them.
    row = np.full((1, 16), 0.5, dtype=np.float32)
    row[0, 8] = 0.75
    out = bicubic_resize(row, 32, 1)[0]
    # Output pixel j has its centre at input coordinate (j + 0.5) / 2 - 0.5.
    for j in range(8, 26):
        centre = (j + 0.5) / 2 - 0.5
        assert out[j] == pytest.approx(0.5 + 0.25 * cubic(centre - 8), abs=1e-6), j


def test_shrinking_widens_the_kernel_as_matlab_antialiasing_does() -> None:
    row = np.full((1, 32), 0.5, dtype=np.float32)
    row[0, 16] = 0.75
    out = bicubic_resize(row, 16, 1)[0]
    # Halving: output pixel j sits at input 2j + 0.5 and weighs input i by cubic((i - centre) / 2) / 2.
    for j in range(4, 12):
        centre = 2 * j + 0.5
        assert out[j] == pytest.approx(0.5 + 0.25 * cubic((16 - centre) / 2) / 2, abs=1e-6), j
    # Without antialiasing (OpenCV) the bump would fall between taps differently; with it, the bump's
    # energy is kept: it spreads over the outputs and sums to half of it.
    assert float((out - 0.5).sum()) == pytest.approx(0.125, abs=1e-5)


def test_interior_matches_a_direct_separable_implementation() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((20, 24), dtype=np.float32) * 0.5 + 0.25
    out = bicubic_resize(image, 12, 10)
    # Direct sum over the widened kernel, away from the edges where MATLAB and Pillow differ.
    for y in range(3, 7):
        for x in range(3, 9):
            cy, cx = 2 * y + 0.5, 2 * x + 0.5
            total = 0.0
            for i in range(20):
                for j in range(24):
                    total += image[i, j] * cubic((i - cy) / 2) / 2 * cubic((j - cx) / 2) / 2
            assert out[y, x] == pytest.approx(total, abs=1e-5)


def test_it_is_not_opencv_inter_cubic() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((16, 16), dtype=np.float32) * 0.5 + 0.25
    ours = bicubic_resize(image, 64, 64)
    theirs = cv2.resize(image, (64, 64), interpolation=cv2.INTER_CUBIC)
    assert np.abs(ours - theirs)[8:-8, 8:-8].max() > 1e-3


def test_float_input_is_not_rounded_to_8_bits() -> None:
    image = np.full((8, 8, 3), 0.123456, dtype=np.float32)
    out = bicubic_resize(image, 4, 4)
    assert out.dtype == np.float32
    assert np.allclose(out, 0.123456, atol=1e-6)
    assert not np.allclose(out * 255, np.round(out * 255), atol=1e-3)


def test_float_output_is_clipped_to_the_unit_range() -> None:
    image = np.zeros((8, 8), dtype=np.float32)
    image[:, 4:] = 1.0
    out = bicubic_resize(image, 32, 32)
    assert out.min() == 0.0 and out.max() == 1.0


def test_uint8_in_uint8_out_rounded_from_float() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    out = bicubic_resize(image, 5, 6)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    from_float = bicubic_resize(image.astype(np.float32) / 255, 5, 6)
    assert np.abs(out.astype(int) - np.round(from_float * 255).astype(int)).max() <= 1


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 1), (9, 7, 3), (9, 7, 4)])
def test_shapes(shape: tuple[int, ...]) -> None:
    out = bicubic_resize(np.full(shape, 0.5, dtype=np.float32), 14, 18)
    assert out.shape == (18, 14, *shape[2:])
    assert np.allclose(out, 0.5, atol=1e-6)


def test_channels_are_resized_independently() -> None:
    rng = np.random.default_rng(3)
    image = rng.random((10, 10, 3), dtype=np.float32)
    out = bicubic_resize(image, 20, 20)
    for c in range(3):
        assert np.array_equal(out[:, :, c], bicubic_resize(image[:, :, c], 20, 20))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        bicubic_resize(np.zeros((4, 4), np.float32), 0, 4)
    with pytest.raises(ValueError, match="H x W"):
        bicubic_resize(np.zeros((4,), np.float32), 2, 2)
    with pytest.raises(ValueError, match="uint8 or float"):
        bicubic_resize(np.zeros((4, 4), np.int32), 2, 2)
