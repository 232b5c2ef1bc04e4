"""Training data: files checked at start, samples a pure function of (seed, sample number)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_data
from tests.train.fixtures import make_images
from train.data.images import cache_bytes, downscale, scan_training_images
from train.data.patches import IterationSampler, PatchDataset
from train.data.validation import load_validation
from upscaler.errors import InputError


def test_scan_lists_unreadable_files_in_one_error(tmp_path: Path) -> None:
    make_images(tmp_path / "hr", count=2)
    (tmp_path / "hr" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "hr" / "sub").mkdir()
    (tmp_path / "hr" / "sub" / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="2 training files cannot be read") as caught:
        scan_training_images([tmp_path / "hr"], None, None, scale=4, patch_size=32)
    assert "broken.png" in caught.value.message and "empty.jpg" in caught.value.message


def test_scan_skips_images_smaller_than_a_crop(tmp_path: Path) -> None:
    make_images(tmp_path / "hr", count=2, size=48)
    make_images(tmp_path / "hr" / "small", count=1, size=24)
    images = scan_training_images([tmp_path / "hr"], None, None, scale=4, patch_size=32)
    assert images.files == 2
    assert len(images.skipped) == 1 and "24 x 24" in images.skipped[0]
    with pytest.raises(InputError, match="smaller than the 64 x 64 HR crop"):
        scan_training_images([tmp_path / "hr"], None, None, scale=4, patch_size=64)


def test_scan_needs_some_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no training images"):
        scan_training_images([tmp_path / "empty"], None, None, scale=4, patch_size=32)
    with pytest.raises(InputError, match="no such folder"):
        scan_training_images([tmp_path / "nowhere"], None, None, scale=4, patch_size=32)


def test_digest_follows_the_content(tmp_path: Path) -> None:
    make_images(tmp_path / "a", count=2, seed=1)
    make_images(tmp_path / "b", count=2, seed=1)
    make_images(tmp_path / "c", count=2, seed=2)
    digests = [scan_training_images([tmp_path / n], None, None, 4, 32).digest for n in "abc"]
    assert digests[0] == digests[1] != digests[2]


def _dataset(tmp_path: Path, cache: bool, seed: int = 0) -> PatchDataset:
    make_images(tmp_path / "hr", count=3, size=50)
    images = scan_training_images([tmp_path / "hr"], None, None, scale=4, patch_size=32)
    return PatchDataset(images, scale=4, patch_size=32, seed=seed, flip=True, rotate=True, cache=cache)


def test_samples_depend_only_on_seed_and_number(tmp_path: Path) -> None:
    cached, uncached = _dataset(tmp_path, cache=True), _dataset(tmp_path, cache=False)
    lq, gt = cached[5]
    assert lq.shape == (3, 8, 8) and gt.shape == (3, 32, 32) and lq.dtype == torch.float32
    assert float(gt.min()) >= 0 and float(gt.max()) <= 1
    for k in (0, 5, 11, 7, 0):  # any order, cached or decoded at each use
        for a, b in zip(cached[k], uncached[k], strict=True):
            assert torch.equal(a, b)
    other_seed = _dataset(tmp_path, cache=True, seed=1)
    assert not all(torch.equal(cached[k][1], other_seed[k][1]) for k in range(6))


def test_each_epoch_visits_every_image_once(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, cache=True)
    for epoch in range(3):
        order = [dataset._image_of(epoch * 3 + position) for position in range(3)]
        assert sorted(order) == [0, 1, 2]


def test_lr_patch_is_the_bicubic_of_its_hr_image(tmp_path: Path) -> None:
    dataset = PatchDataset(
        scan_training_images([make_images(tmp_path / "hr", 1, 48)], None, None, 4, 48),
        scale=4,
        patch_size=48,
        seed=0,
        flip=False,
        rotate=False,
        cache=True,
    )
    lq, gt = dataset[0]
    hr = np.round(gt.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    expected = downscale(hr, 4)
    assert np.array_equal(np.round(lq.numpy().transpose(1, 2, 0) * 255).astype(np.uint8), expected)


def test_sampler_splits_each_global_batch_between_processes() -> None:
    single = list(itertools.islice(iter(IterationSampler(start=3, batch_size=4)), 8))
    assert single == list(range(12, 20))
    ranks = [list(itertools.islice(iter(IterationSampler(3, 2, rank, 2)), 4)) for rank in (0, 1)]
    # iteration 3 of a 2-process run with 2 per process is samples 12..15, iteration 4 is 16..19
    assert ranks == [[12, 13, 16, 17], [14, 15, 18, 19]]


def test_cache_estimate_counts_hr_and_lr(tmp_path: Path) -> None:
    make_images(tmp_path / "hr", count=2, size=48)
    images = scan_training_images([tmp_path / "hr"], None, None, scale=4, patch_size=32)
    assert cache_bytes(images, 4) == 2 * 48 * 48 * 3 * 17 // 16


def test_paired_folders_match_by_name(tmp_path: Path) -> None:
    make_images(tmp_path / "gt", count=2, size=48)
    (tmp_path / "lq").mkdir()
    for path in sorted((tmp_path / "gt").iterdir()):
        hr = cv2.imread(str(path))
        cv2.imwrite(str(tmp_path / "lq" / f"{path.stem}_x4.png"), cv2.resize(hr, (12, 12)))
    images = scan_training_images([], tmp_path / "lq", tmp_path / "gt", scale=4, patch_size=32)
    assert [entry.lq.name for entry in images.entries] == ["img0_x4.png", "img1_x4.png"]
    (tmp_path / "lq" / "img1_x4.png").unlink()
    with pytest.raises(InputError, match="no partner: .*img1.png"):
        scan_training_images([], tmp_path / "lq", tmp_path / "gt", scale=4, patch_size=32)


def test_validation_from_an_hr_folder(tmp_path: Path) -> None:
    make_images(tmp_path / "val", count=2, size=50)
    images = load_validation(tmp_path / "val", scale=4)
    assert [image.hr.shape for image in images] == [(48, 48, 3)] * 2  # cropped to a multiple of 4
    assert images[0].lq.shape == (12, 12, 3) and images[0].bicubic.shape == (48, 48, 3)


def test_validation_from_a_set_folder_with_official_lr() -> None:
    images = load_validation(shared_data("eval", "Set5"), scale=4)
    assert len(images) == 5
    for image in images:
        assert image.lq.shape[0] * 4 == image.hr.shape[0] and image.lq.shape[1] * 4 == image.hr.shape[1]


def test_validation_images_too_small_to_measure_are_refused_at_start(tmp_path: Path) -> None:
    make_images(tmp_path / "val", count=1, size=16)
    with pytest.raises(InputError, match="too small to measure"):
        load_validation(tmp_path / "val", scale=4)


def test_files_that_fail_to_decode_are_listed_together(tmp_path: Path) -> None:
    make_images(tmp_path / "hr", count=3, size=48)
    for name in ("img0.png", "img2.png"):  # the header reads, the pixels do not
        path = tmp_path / "hr" / name
        path.write_bytes(path.read_bytes()[:60])
    images = scan_training_images([tmp_path / "hr"], None, None, scale=4, patch_size=32)
    with pytest.raises(InputError, match="2 training files cannot be decoded: .*img0.png.*img2.png"):
        PatchDataset(images, scale=4, patch_size=32, seed=0, flip=True, rotate=True, cache=True)


def test_validation_reads_a_set_folder_as_upscale_eval_does(tmp_path: Path) -> None:
    # An x2 run with --val Set5 (HR/ and LR_x4/ only) used to validate on all ten files, HR and x4 LR
    # alike, as HR images: a card figure `upscale eval` refuses to measure.
    make_images(tmp_path / "set" / "HR", count=2, size=48)
    make_images(tmp_path / "set" / "LR_x4", count=2, size=12)
    with pytest.raises(InputError, match="has LR_x4 but no LR_x2/ for x2"):
        load_validation(tmp_path / "set", scale=2)
    assert len(load_validation(tmp_path / "set", scale=4)) == 2
