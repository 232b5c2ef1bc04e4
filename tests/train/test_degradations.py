"""The degradation model: each step on images the tests make, the chain, the codec bank, the
degraded benchmark, and a training run that learns from degraded LR."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.train.fixtures import make_images, random_vgg, tiny_recipe
from train.data.images import scan_training_images
from train.data.patches import PatchDataset
from train.degradations import kernels
from train.degradations.bank import bank_side, build_bank, cached_bank
from train.degradations.benchmark import BenchmarkDegradation, degrade_image, make_degraded_set
from train.degradations.chain import gaussian_noise, jpeg, poisson_noise, resize, second_order
from train.degradations.codec import encode_decode, encode_image
from train.degradations.settings import DegradationConfig
from train.recipes.config import ConfigError, resolve
from train.recipes.files import load_table
from upscaler.errors import InputError


def scene(size: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colour waves with a little texture: what codecs and JPEG turn into blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + 3 * y), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.5 * x * y], -1)
    return np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1).astype(np.float32)


def blockiness(image: np.ndarray, block: int = 8) -> float:
    """Mean step across block boundaries over the mean step elsewhere: 1 for an image without blocks."""
    luma = image.astype(np.float64).mean(axis=-1)
    across = np.abs(np.diff(luma, axis=1))
    down = np.abs(np.diff(luma, axis=0))
    on_x = np.arange(across.shape[1]) % block == block - 1
    on_y = np.arange(down.shape[0]) % block == block - 1
    return float(
        (across[:, on_x].mean() + down[on_y].mean()) / (across[:, ~on_x].mean() + down[~on_y].mean())
    )


# ------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("shape", kernels.KERNEL_SHAPES)
@pytest.mark.parametrize("size", [7, 21])
def test_every_kernel_sums_to_one_and_is_centred(shape: str, size: int) -> None:
    rng = np.random.default_rng(3)
    kernel = kernels.random_kernel(rng, size, shape, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0))
    assert kernel.shape == (size, size) and kernel.dtype == np.float32
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(np.argmax(kernel), kernel.shape) == (size // 2, size // 2)
    # point symmetric: every shape is a function of x^T Sigma^-1 x
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)


def test_isotropic_gaussian_matches_its_formula() -> None:
    kernel = kernels.gaussian_kernel(9, 1.5, 1.5)
    axis = np.arange(-4, 5)
    expected = np.exp(-(axis[None, :] ** 2 + axis[:, None] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-5)


def test_anisotropic_kernel_is_longer_along_its_angle() -> None:
    kernel = kernels.gaussian_kernel(21, 4.0, 1.0, theta=0.0)  # long along x (columns)
    assert kernel[10, 14] > 10 * kernel[14, 10]
    turned = kernels.gaussian_kernel(21, 4.0, 1.0, theta=math.pi / 2)
    np.testing.assert_allclose(turned, kernel.T, atol=1e-7)


def test_generalized_and_plateau_shapes_differ_from_the_gaussian() -> None:
    gaussian = kernels.gaussian_kernel(21, 2.0, 2.0)
    heavy = kernels.generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, beta=0.5)
    flat_top = kernels.generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, beta=4.0)
    plateau = kernels.plateau_kernel(21, 2.0, 2.0, 0.0, beta=2.0)
    assert heavy[10, 0] > gaussian[10, 0]  # beta < 1: heavier tails
    assert flat_top[10, 11] / flat_top[10, 10] > gaussian[10, 11] / gaussian[10, 10]  # beta > 1: flatter top
    assert plateau[10, 0] > gaussian[10, 0]  # the plateau's slow fall-off


def test_bessel_j1_matches_known_values() -> None:
    # J1 at 1, 2, 5, 10 (Abramowitz and Stegun, table 9.1)
    values = kernels.bessel_j1(np.array([1.0, 2.0, 5.0, 10.0]))
    np.testing.assert_allclose(values, [0.4400505857, 0.5767248078, -0.3275791376, 0.0434727462], atol=1e-9)


def test_sinc_kernel_passes_low_and_stops_high_frequencies() -> None:
    kernel = kernels.sinc_kernel(21, math.pi / 3)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    assert (kernel < 0).any()  # the ripples that make ringing
    response = np.abs(np.fft.fft2(kernel, (64, 64)))
    # frequencies in cycles per pixel: cutoff pi/3 is 1/6
    assert response[0, 2] > 0.9  # 1/32 passes
    assert response[0, 24] < 0.1  # 3/8 is stopped


def test_bad_kernel_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="odd"):
        kernels.gaussian_kernel(8, 1.0, 1.0)
    with pytest.raises(ValueError, match="cutoff"):
        kernels.sinc_kernel(7, 4.0)


# ------------------------------------------------------------------------------------- noise, JPEG


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_has_the_asked_standard_deviation(gray: bool) -> None:
    image = np.full((256, 256, 3), 0.5, dtype=np.float32)
    noisy = gaussian_noise(image, 10 / 255, gray, np.random.default_rng(0))
    noise = noisy - image
    assert noise.std() == pytest.approx(10 / 255, rel=0.02)
    assert abs(noise.mean()) < 1e-3
    same_in_every_channel = np.allclose(noise[..., 0], noise[..., 2])
    assert same_in_every_channel == gray


def test_poisson_noise_grows_with_brightness_and_scale() -> None:
    rng = np.random.default_rng(0)
    for level in (0.2, 0.8):
        image = np.full((256, 256, 3), level, dtype=np.float32)
        noise = poisson_noise(image, 2.0, False, rng) - image
        assert noise.std() == pytest.approx(2.0 * math.sqrt(level / 255), rel=0.03)


def test_lower_jpeg_quality_gives_more_blockiness() -> None:
    image = scene()
    scores = [blockiness(jpeg(image, quality)) for quality in (95, 60, 30)]
    assert scores[0] < scores[1] < scores[2]
    assert scores[0] < 1.2 < scores[2]


def test_resize_reaches_the_asked_size_in_every_mode() -> None:
    image = scene(64)
    for mode in ("area", "bilinear", "bicubic"):
        assert resize(image, 24, 40, mode).shape == (40, 24, 3)


# ------------------------------------------------------------------------------------------- codecs


def test_higher_crf_gives_more_blockiness_in_h264() -> None:
    pixels = np.rint(scene() * 255).astype(np.uint8)
    fine, coarse = (encode_image(pixels, "libx264", crf, "medium") for crf in (18, 45))
    assert blockiness(coarse / 255.0) > blockiness(fine / 255.0) + 0.3


def test_h265_runs_come_back_whole_and_lose_more_at_higher_crf() -> None:
    pixels = np.rint(scene(48) * 255).astype(np.uint8)  # below x265's 64-pixel CTU: padded inside
    errors = []
    for crf in (18, 45):
        frames = encode_decode([pixels] * 3, "libx265", crf, "ultrafast")
        assert len(frames) == 3 and frames[0].shape == pixels.shape
        errors.append(np.abs(frames[-1].astype(int) - pixels).mean())
    assert errors[1] > errors[0]


def test_odd_sized_images_pass_through_h264() -> None:
    pixels = np.rint(scene(37) * 255).astype(np.uint8)[:, :35]
    assert encode_image(pixels, "libx264", 23, "ultrafast").shape == (37, 35, 3)


# -------------------------------------------------------------------------------------------- chain


def test_second_order_gives_the_lr_size_and_depends_only_on_the_seed() -> None:
    hr = scene(64)
    config = DegradationConfig()
    first = second_order(hr, 4, np.random.default_rng((0, 5)), config)
    again = second_order(hr, 4, np.random.default_rng((0, 5)), config)
    other = second_order(hr, 4, np.random.default_rng((0, 6)), config)
    assert first.shape == (16, 16, 3) and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_degraded_lr_is_further_from_the_truth_than_the_clean_one() -> None:
    from upscaler.quality.resampling import bicubic_resize

    hr = scene(128)
    clean = bicubic_resize(hr, 32, 32)
    errors = [
        np.abs(second_order(hr, 4, np.random.default_rng(seed), DegradationConfig()) - clean).mean()
        for seed in range(8)
    ]
    assert np.mean(errors) > 0.02


# --------------------------------------------------------------------------------------------- bank


def _images(count: int = 3, size: int = 96) -> list[np.ndarray]:
    return [np.rint(scene(size, seed) * 255).astype(np.uint8) for seed in range(count)]


def test_the_same_seed_gives_the_same_bank() -> None:
    images = _images()
    config = DegradationConfig(bank_runs=3, bank_frames=3)
    sizes = [(96, 96)] * 3
    first = build_bank(sizes, images.__getitem__, 4, 16, config, seed=1)
    again = build_bank(sizes, images.__getitem__, 4, 16, config, seed=1)
    other = build_bank(sizes, images.__getitem__, 4, 16, config, seed=2)
    assert first.lq.shape == (9, 16, 16, 3) and first.gt.shape == (9, 64, 64, 3)
    np.testing.assert_array_equal(first.lq, again.lq)
    np.testing.assert_array_equal(first.gt, again.gt)
    assert not np.array_equal(first.lq, other.lq)


def test_bank_frames_are_crops_of_the_images_that_move_together() -> None:
    images = _images(1, 128)
    bank = build_bank(
        [(128, 128)], images.__getitem__, 4, 16, DegradationConfig(bank_runs=1, bank_frames=4), 5
    )
    found = []
    for crop in bank.gt:
        match = np.argwhere(
            np.all(
                np.lib.stride_tricks.sliding_window_view(images[0], (64, 64, 3))[..., 0, :, :, :] == crop,
                axis=(2, 3, 4),
            )
        )
        assert len(match) == 1
        found.append(match[0])
    steps = np.diff(np.array(found), axis=0)
    assert (steps == steps[0]).all()  # one constant speed through the run


def test_bank_refuses_images_too_small_for_its_crops() -> None:
    images = _images(1, 32)
    with pytest.raises(InputError, match="at least 64 x 64"):
        build_bank([(32, 32)], images.__getitem__, 4, 16, DegradationConfig(bank_runs=1), 0)


def test_bank_is_made_once_and_then_read(tmp_path: Path) -> None:
    images = _images()
    config = DegradationConfig(bank_runs=2, bank_frames=2)
    calls = []

    def make():
        calls.append(1)
        return build_bank([(96, 96)] * 3, images.__getitem__, 4, 16, config, 0)

    made, fresh = cached_bank(tmp_path, "key", make)
    read, again = cached_bank(tmp_path, "key", make)
    assert (fresh, again, len(calls)) == (True, False, 1)
    np.testing.assert_array_equal(made.lq, read.lq)
    (tmp_path / "key.npz").write_bytes(b"not a bank")
    cached_bank(tmp_path, "key", make)
    assert len(calls) == 2


def test_bank_side_leaves_room_and_suits_4_2_0() -> None:
    assert bank_side(128, 4) == 48
    assert bank_side(32, 4) == 16
    assert bank_side(96, 2) % 2 == 0


# ------------------------------------------------------------------------------------------- config


def test_the_realvideo_recipe_holds_the_papers_ranges() -> None:
    recipe = resolve(load_table("realvideo"))
    assert recipe.degradation == DegradationConfig()
    assert "real-world degradations" in recipe.summary


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("kernel_prob", [0.5, 0.5], "one probability per kernel_list entry"),
        ("resize_prob", [0.5, 0.6, 0.1], "sum to 1"),
        ("noise_range", [5.0, 1.0], "0 < low <= high"),
        ("kernel_sizes", [8], "odd sizes"),
        ("codecs", ["vp9"], "libx264, libx265"),
        ("crf_range", [10, 60], "0 ... 51"),
        ("jpeg_range", [30, 120], "[1, 100]"),
    ],
)
def test_bad_degradation_values_name_their_key(key: str, value, message: str) -> None:
    table = load_table("realvideo")
    table["degradation"][key] = value
    with pytest.raises(
        ConfigError, match=rf"degradation\.{key}: .*{message.replace('[', '.').replace(']', '.')}"
    ):
        resolve(table)


# ---------------------------------------------------------------------------------- data, training


def _in_bank(lq, bank) -> bool:
    """Whether LR sample `lq` (a tensor) is a crop of a bank frame, flipped or turned."""
    crop = (lq.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    side = crop.shape[0]
    variants = [np.rot90(flipped, turn) for flipped in (crop, crop[:, ::-1]) for turn in range(4)]
    windows = np.lib.stride_tricks.sliding_window_view(bank.lq, (side, side, 3), axis=(1, 2, 3))[:, :, :, 0]
    return any((windows == variant).all(axis=(3, 4, 5)).any() for variant in variants)


@pytest.mark.parametrize("codec_prob", [0.0, 1.0])
def test_degraded_samples_are_reproducible_and_draw_from_the_bank(tmp_path: Path, codec_prob: float) -> None:
    folder = make_images(tmp_path / "hr", count=3, size=96)
    images = scan_training_images([folder], None, None, 4, 32)
    config = DegradationConfig(codec_prob=codec_prob, bank_runs=2, bank_frames=2)
    dataset = PatchDataset(images, 4, 32, seed=0, flip=True, rotate=True, cache=True, degradation=config)
    dataset.bank = build_bank([(96, 96)] * 3, dataset.hr_pixels, 4, 16, config, 0)
    lq, hr = dataset[7]
    assert lq.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
    again = dataset[7]
    assert all((a == b).all() for a, b in zip((lq, hr), again, strict=True))
    drawn = [_in_bank(dataset[sample][0], dataset.bank) for sample in range(6)]
    assert drawn == [codec_prob == 1.0] * 6


def test_a_tiny_realvideo_run_trains_and_writes_its_model(tmp_path: Path) -> None:
    from train.loop import train

    folder = make_images(tmp_path / "hr", count=3, size=80)
    recipe = tiny_recipe(
        "realvideo",
        folder,
        degradation={"bank_runs": 2, "bank_frames": 2},
        losses={"perceptual_layer_weights": []},
    )
    lines: list[str] = []
    result = train(recipe, tmp_path / "run", vgg=random_vgg(recipe), report=lines.append)
    assert result.weights is not None and result.weights.is_file()
    assert any(line.startswith("Codec bank: 4 degraded 16 x 16 frames") for line in lines)


# ---------------------------------------------------------------------------------------- benchmark


def test_the_degraded_benchmark_is_fixed_and_seeded(tmp_path: Path) -> None:
    source = make_images(tmp_path / "set", count=2, size=70)
    make_degraded_set(source, tmp_path / "a")
    make_degraded_set(source, tmp_path / "b")
    for name in ("img0.png", "img1.png"):
        first, second = ((tmp_path / run / "LR_x4" / name).read_bytes() for run in ("a", "b"))
        assert first == second
    import cv2

    hr = cv2.imread(str(tmp_path / "a" / "HR" / "img0.png"))
    lr = cv2.imread(str(tmp_path / "a" / "LR_x4" / "img0.png"))
    assert hr.shape == (68, 68, 3) and lr.shape == (17, 17, 3)


def test_benchmark_noise_differs_between_images_but_not_between_runs() -> None:
    hr = np.rint(scene(64) * 255).astype(np.uint8)
    settings = BenchmarkDegradation()
    a, b = degrade_image(hr, "a.png", settings), degrade_image(hr, "b.png", settings)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, degrade_image(hr, "a.png", settings))
    assert not np.array_equal(a, degrade_image(hr, "a.png", replace(settings, seed=1)))


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        make_degraded_set(tmp_path / "empty", tmp_path / "out")
