"""Evaluation sets and scores: pairing, sizes, the model beside bicubic, and the published bicubic figures."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_data
from upscaler.errors import InputError, UpscaleError
from upscaler.quality.evaluation import EvalProgress, evaluate_pairs, load_eval_set
from upscaler.quality.metrics import psnr, to_uint8
from upscaler.quality.resampling import bicubic_resize


def write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def smooth_image(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3.0)


@pytest.mark.parametrize(("name", "expected", "tolerance"), [("Set5", 28.43, 0.02), ("Set14", 26.09, 0.03)])
def test_bicubic_reproduces_the_published_figures(name: str, expected: float, tolerance: float) -> None:
    evaluation = load_eval_set(shared_data("eval", name), 4)
    assert evaluation.lr_source == "LR_x4/ files"
    report = evaluate_pairs(
        None, [(p.lr, p.hr) for p in evaluation.pairs], 4, [p.name for p in evaluation.pairs]
    )
    assert len(report.images) == {"Set5": 5, "Set14": 14}[name]
    assert report.mean_bicubic_psnr == pytest.approx(expected, abs=tolerance)
    assert report.mean_psnr is None


def test_set14_gray_image_is_scored_as_rgb_with_studio_range_y() -> None:
    evaluation = load_eval_set(shared_data("eval", "Set14"), 4)
    gray = next(p for p in evaluation.pairs if p.name.startswith("img_003"))
    hr = cv2.imread(str(shared_data("eval", "Set14", "HR", gray.name)), cv2.IMREAD_UNCHANGED)
    assert hr.ndim == 2  # the file really is 8-bit grayscale
    report = evaluate_pairs(None, [(gray.lr, gray.hr)], 4)
    # The same figure by hand on the gray plane: Y = 16 + 219 * g / 255.
    lr = cv2.imread(
        str(shared_data("eval", "Set14", "LR_x4", gray.name.replace("HR", "LR"))), cv2.IMREAD_UNCHANGED
    )
    up = bicubic_resize(lr, hr.shape[1], hr.shape[0])
    difference = (219 / 255) * (up.astype(float) - hr.astype(float))[4:-4, 4:-4]
    assert report.images[0].bicubic_psnr == pytest.approx(
        10 * math.log10(255**2 / np.mean(difference**2)), abs=1e-6
    )


def test_hr_only_folder_makes_lr_with_the_same_bicubic() -> None:
    with_files = load_eval_set(shared_data("eval", "Set5"), 4)
    from_hr = load_eval_set(shared_data("eval", "Set5", "HR"), 4)
    assert from_hr.lr_source == "bicubic x4 from HR"
    a = evaluate_pairs(None, [(p.lr, p.hr) for p in with_files.pairs], 4)
    b = evaluate_pairs(None, [(p.lr, p.hr) for p in from_hr.pairs], 4)
    # The set's LR files were made by MATLAB; ours differ only at the very edges (Pillow renormalises
    # the kernel there, MATLAB mirrors), which the border crop mostly hides.
    assert b.mean_bicubic_psnr == pytest.approx(a.mean_bicubic_psnr, abs=0.01)


def test_a_perfect_model_and_a_bad_one() -> None:
    hr = smooth_image(0, 48, 40).astype(np.float32) / 255
    lr = bicubic_resize(hr, 10, 12)

    def perfect(image: np.ndarray) -> np.ndarray:
        return hr

    def nearest(image: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)

    report = evaluate_pairs(perfect, [(lr, hr)], 4, ["a"])
    assert report.images[0].psnr == math.inf and report.images[0].ssim == pytest.approx(1.0)
    assert report.to_dict()["images"][0]["psnr"] is None  # JSON has no infinity
    worse = evaluate_pairs(nearest, [(lr, hr)], 4)
    assert worse.images[0].psnr < worse.images[0].bicubic_psnr
    expected = psnr(to_uint8(nearest(lr)), to_uint8(hr), 4)
    assert worse.images[0].psnr == pytest.approx(expected)


def test_means_are_over_images_in_db() -> None:
    pairs = []
    for seed in range(3):
        hr = smooth_image(seed, 32, 32).astype(np.float32) / 255
        pairs.append((bicubic_resize(hr, 8, 8), hr))
    report = evaluate_pairs(lambda lr: bicubic_resize(lr, 32, 32) * 0.98, pairs, 4)
    assert report.mean_psnr == pytest.approx(np.mean([image.psnr for image in report.images]))
    data = report.to_dict()
    assert data["mean"]["bicubic_ssim"] == pytest.approx(report.mean_bicubic_ssim)
    assert [image["name"] for image in data["images"]] == ["0000", "0001", "0002"]


def test_progress_is_reported_through_the_callback_before_each_image_and_at_the_end() -> None:
    pairs = []
    for seed in range(2):
        hr = smooth_image(seed, 32, 32).astype(np.float32) / 255
        pairs.append((bicubic_resize(hr, 8, 8), hr))
    events: list[EvalProgress] = []
    measured: list[int] = []

    def upscale(lr: np.ndarray) -> np.ndarray:
        measured.append(len(events))
        return bicubic_resize(lr, 32, 32)

    evaluate_pairs(upscale, pairs, 4, ["a.png", "b.png"], progress=events.append)
    assert events == [
        EvalProgress(done=0, total=2, name="a.png"),
        EvalProgress(done=1, total=2, name="b.png"),
        EvalProgress(done=2, total=2, name=None),
    ]
    assert measured == [1, 2]  # each image is announced before the model runs on it


def test_a_model_of_the_wrong_scale_is_named() -> None:
    hr = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(UpscaleError, match="the model made 16 x 16 of a 8 x 8 input; x4 needs 32 x 32"):
        evaluate_pairs(lambda lr: np.zeros((16, 16, 3), np.float32), [(hr[:8, :8], hr)], 4, ["a"])


def make_set(root: Path, names: list[tuple[str, str]], scale: int = 4, size: int = 32) -> Path:
    for index, (hr_name, lr_name) in enumerate(names):
        hr = smooth_image(index, size, size)
        write(root / "HR" / hr_name, hr)
        write(root / f"LR_x{scale}" / lr_name, bicubic_resize(hr, size // scale, size // scale))
    return root


def test_pairs_are_matched_by_name(tmp_path: Path) -> None:
    root = make_set(
        tmp_path, [("a_HR.png", "a_LR.png"), ("0801.png", "0801x4.png"), ("baby.png", "baby.png")]
    )
    evaluation = load_eval_set(root, 4)
    assert sorted(p.name for p in evaluation.pairs) == ["0801.png", "a_HR.png", "baby.png"]
    assert all(p.hr.shape == (32, 32, 3) and p.lr.shape == (8, 8, 3) for p in evaluation.pairs)


def test_hr_a_little_larger_is_mod_cropped(tmp_path: Path) -> None:
    write(tmp_path / "HR" / "a.png", smooth_image(0, 35, 34))
    write(tmp_path / "LR_x4" / "a.png", smooth_image(1, 8, 8))
    pair = load_eval_set(tmp_path, 4).pairs[0]
    assert pair.hr.shape == (32, 32, 3)
    write(tmp_path / "HR" / "a.png", smooth_image(0, 40, 40))
    with pytest.raises(InputError, match="a.png: HR is 40 x 40 but LR 8 x 8 x4 is 32 x 32"):
        load_eval_set(tmp_path, 4)


def test_hr_only_folder_is_mod_cropped_and_accepts_gray_and_alpha(tmp_path: Path) -> None:
    write(tmp_path / "rgb.png", smooth_image(0, 30, 27))
    write(tmp_path / "gray.png", smooth_image(1, 20, 20)[:, :, 0])
    write(tmp_path / "alpha.png", np.dstack([smooth_image(2, 20, 20), np.full((20, 20), 128, np.uint8)]))
    evaluation = load_eval_set(tmp_path, 4)
    shapes = {p.name: (p.lr.shape, p.hr.shape) for p in evaluation.pairs}
    assert shapes["rgb.png"] == ((7, 6, 3), (28, 24, 3))
    assert shapes["gray.png"] == ((5, 5, 3), (20, 20, 3))
    assert shapes["alpha.png"] == ((5, 5, 3), (20, 20, 3))
    # LR made here is rounded to 8 bits, as a benchmark's saved LR file is.
    lr = evaluation.pairs[0].lr
    assert np.array_equal(lr * 255, np.round(lr * 255))


def test_an_image_too_small_to_measure_is_named_before_any_model_runs(tmp_path: Path) -> None:
    # 16 x 16 at x4 leaves 8 x 8 after the border, less than SSIM's window: it was an internal error
    write(tmp_path / "big.png", smooth_image(0, 32, 32))
    write(tmp_path / "small.png", smooth_image(1, 16, 16))
    with pytest.raises(InputError, match="small.png: HR 16 x 16 is too small to measure") as caught:
        load_eval_set(tmp_path, 4)
    assert "19 pixels" in caught.value.hint
    small = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(InputError, match="too small to measure"):
        evaluate_pairs(None, [(small[:2, :2], small)], 4, ["tiny"])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        load_eval_set(tmp_path / "absent", 4)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        load_eval_set(tmp_path / "file.png", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        load_eval_set(tmp_path / "empty", 4)
    root = make_set(tmp_path / "set", [("a.png", "a.png")], scale=2)
    with pytest.raises(InputError, match=r"has LR_x2 but no LR_x4/ for x4"):
        load_eval_set(root, 4)
    assert len(load_eval_set(root, 2).pairs) == 1
    (root / "HR" / "b.png").write_bytes((root / "HR" / "a.png").read_bytes())
    with pytest.raises(InputError, match="has no LR image for b.png"):
        load_eval_set(root, 2)


def test_one_pairing_rule_for_eval_and_training() -> None:
    from train.data.images import pair_key as training_key
    from upscaler.quality.evaluation import pair_key

    assert training_key is pair_key
    pairs = [
        ("img_001_SRF_4_HR.png", "img_001_SRF_4_LR.png"),
        ("baby.png", "baby_x4.png"),
        ("photo_gt.png", "photo_lq.png"),
        ("Photo-HR.PNG", "photo_x4_LR.png"),
    ]
    for hr, lr in pairs:
        assert pair_key(Path(hr), 4) == pair_key(Path(lr), 4), (hr, lr)
    assert pair_key(Path("a_x2.png"), 4) == "a_x2"  # another scale's marker is part of the name
