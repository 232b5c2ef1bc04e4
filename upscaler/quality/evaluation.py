"""Measuring a model on a benchmark set, beside bicubic upscaling, as the SR literature does.

A set is either a folder of HR images (LR made here with MATLAB-compatible bicubic, rounded to
8 bits as a saved benchmark LR file is), or a folder with `HR/` and `LR_x<scale>/` side by side (as
the classic Set5 / Set14 releases). Each SR output is rounded to 8 bits and scored against the HR with
`upscaler.quality.metrics` (Y of BT.601, `scale` pixels of border cropped); means are over images, in dB for
PSNR, as BasicSR reports them. A grayscale image is scored as RGB with three equal channels.
With a perceptual distance (LPIPS, `upscaler.models.lpips`), it is measured on the whole 8-bit RGB
image (no border cropped), for the model and bicubic alike; lower is better.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.errors import InputError, UpscaleError
from upscaler.image.folder import find_images
from upscaler.image.formats import read_image
from upscaler.quality.metrics import SSIM_WINDOW, psnr, ssim, to_uint8
from upscaler.quality.resampling import bicubic_resize, mod_crop

Upscale = Callable[[np.ndarray], np.ndarray]
# A perceptual distance of two H x W x 3 float RGB images in [0, 1] (LPIPS).
Distance = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class EvalPair:
    """One benchmark image: LR and HR as float32 H x W x 3 RGB in [0, 1], HR exactly `scale` times LR."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


@dataclass(frozen=True)
class EvalSet:
    pairs: list[EvalPair]
    scale: int
    lr_source: str  # how the LR images were obtained, for people reading the report


@dataclass(frozen=True)
class ImageScore:
    """PSNR (dB) and SSIM of one image; model figures are None when only bicubic was measured."""

    name: str
    psnr: float | None
    ssim: float | None
    bicubic_psnr: float | None
    bicubic_ssim: float | None
    lpips: float | None = None
    bicubic_lpips: float | None = None


@dataclass(frozen=True)
class EvalProgress:
    """How far a measurement is: `done` of `total` images finished; `name` is the image being measured
    next (None once all are done)."""

    done: int
    total: int
    name: str | None


@dataclass(frozen=True)
class EvalReport:
    images: list[ImageScore]
    scale: int
    border: int

    def _mean(self, field: str) -> float | None:
        values = [getattr(image, field) for image in self.images]
        if not values or any(value is None for value in values):
            return None
        return float(np.mean(values))

    @property
    def mean_psnr(self) -> float | None:
        return self._mean("psnr")

    @property
    def mean_ssim(self) -> float | None:
        return self._mean("ssim")

    @property
    def mean_bicubic_psnr(self) -> float | None:
        return self._mean("bicubic_psnr")

    @property
    def mean_bicubic_ssim(self) -> float | None:
        return self._mean("bicubic_ssim")

    @property
    def mean_lpips(self) -> float | None:
        return self._mean("lpips")

    @property
    def mean_bicubic_lpips(self) -> float | None:
        return self._mean("bicubic_lpips")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; an infinite PSNR (identical images) becomes None, as JSON has no inf."""
        fields = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "lpips", "bicubic_lpips")
        return {
            "scale": self.scale,
            "border": self.border,
            "metric": "PSNR (dB) and SSIM on Y (BT.601), 8-bit, border cropped; LPIPS v0.1 AlexNet on "
            "8-bit RGB, whole image (null when not measured)",
            "images": [
                {"name": image.name, **{field: _finite(getattr(image, field)) for field in fields}}
                for image in self.images
            ],
            "mean": {field: _finite(self._mean(field)) for field in fields},
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def evaluate_pairs(
    upscale: Upscale | None,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    scale: int,
    names: Sequence[str] | None = None,
    bicubic: bool = True,
    progress: Callable[[EvalProgress], None] | None = None,
    perceptual: Distance | None = None,
) -> EvalReport:
    """Score `upscale` (LR float32 H x W x 3 in [0, 1] -> SR, `scale` times larger) on (LR, HR) pairs.

    With `bicubic`, bicubic upscaling of the same LR is scored beside it; `upscale` None scores
    bicubic only. The border cropped is `scale` pixels. `progress` receives an EvalProgress before
    each image and one when all are done (the library never prints; the CLI draws a bar from these).
    `perceptual` (LPIPS) is measured beside PSNR and SSIM where given.
    """
    if upscale is None and not bicubic:
        raise ValueError("evaluate_pairs: nothing to measure (no upscale function and bicubic=False)")
    if names is None:
        names = [f"{index:04d}" for index in range(len(pairs))]
    if len(names) != len(pairs):
        raise ValueError(f"evaluate_pairs: {len(names)} names for {len(pairs)} pairs")
    notify = progress or (lambda event: None)
    scores = []
    for index, (name, (lr, hr)) in enumerate(zip(names, pairs, strict=True)):
        notify(EvalProgress(done=index, total=len(pairs), name=name))
        _check_pair(name, lr, hr, scale)
        hr8 = to_uint8(hr)
        model_psnr = model_ssim = bicubic_psnr = bicubic_ssim = model_lpips = bicubic_lpips = None
        hr_levels = hr8.astype(np.float32) / 255 if perceptual is not None else None
        if upscale is not None:
            sr = upscale(lr)
            if sr.shape != hr.shape:
                raise UpscaleError(
                    f"{name}: the model made {_size(sr)} of a {_size(lr)} input; x{scale} needs {_size(hr)}"
                )
            sr8 = to_uint8(sr)
            model_psnr, model_ssim = psnr(sr8, hr8, scale), ssim(sr8, hr8, scale)
            if perceptual is not None:
                model_lpips = perceptual(sr8.astype(np.float32) / 255, hr_levels)
        if bicubic:
            height, width = hr.shape[:2]
            up8 = to_uint8(bicubic_resize(lr, width, height))
            bicubic_psnr, bicubic_ssim = psnr(up8, hr8, scale), ssim(up8, hr8, scale)
            if perceptual is not None:
                bicubic_lpips = perceptual(up8.astype(np.float32) / 255, hr_levels)
        scores.append(
            ImageScore(name, model_psnr, model_ssim, bicubic_psnr, bicubic_ssim, model_lpips, bicubic_lpips)
        )
    notify(EvalProgress(done=len(pairs), total=len(pairs), name=None))
    return EvalReport(images=scores, scale=scale, border=scale)


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]} x {image.shape[0]}"


def _check_pair(name: str, lr: np.ndarray, hr: np.ndarray, scale: int) -> None:
    for what, image in (("LR", lr), ("HR", hr)):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"{name}: expected an H x W x 3 {what} image, got shape {image.shape}")
    if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise InputError(
            f"{name}: HR is {_size(hr)} but LR {_size(lr)} x{scale} is "
            f"{lr.shape[1] * scale} x {lr.shape[0] * scale}",
            hint="check --scale, or that the LR and HR files belong together",
        )
    if min(hr.shape[:2]) - 2 * scale < SSIM_WINDOW:
        raise InputError(
            f"{name}: HR {_size(hr)} is too small to measure: SSIM needs {SSIM_WINDOW} x {SSIM_WINDOW} "
            f"pixels after cropping the {scale}-pixel border from each side",
            hint=f"leave out images smaller than {SSIM_WINDOW + 2 * scale} pixels a side",
        )


# ----------------------------------------------------------------------------------- reading a set


def check_eval_folder(folder: Path) -> Path:
    """`folder` as a Path; InputError when it is missing or a file (checked before a model is loaded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    return folder


def load_eval_set(folder: Path, scale: int) -> EvalSet:
    """The pairs of an evaluation folder: `HR/` with `LR_x<scale>/`, `HR/` alone, or a folder of HR images.

    Where LR files exist, an HR image a few pixels larger than LR x scale is cropped to it at the right
    and bottom (BasicSR's `mod_crop`); any other size difference is an error.
    """
    folder = check_eval_folder(folder)
    if scale < 1:
        raise InputError(f"--scale: must be at least 1 (got {scale})")
    hr_folder = folder / "HR"
    if hr_folder.is_dir():
        lr_folder = folder / f"LR_x{scale}"
        if lr_folder.is_dir():
            return EvalSet(_read_pairs(hr_folder, lr_folder, scale), scale, f"{lr_folder.name}/ files")
        others = sorted(path.name for path in folder.glob("LR_x*") if path.is_dir())
        if others:
            raise InputError(
                f"{folder} has {', '.join(others)} but no LR_x{scale}/ for x{scale}",
                hint="pass the --scale of the LR files, or a model of that scale",
            )
    else:
        hr_folder = folder
    pairs = [_pair_from_hr(path, hr_folder, scale) for path, _root in _images_in(hr_folder)]
    return EvalSet(pairs, scale, f"bicubic x{scale} from HR")


def _images_in(folder: Path) -> list[tuple[Path, Path]]:
    return find_images([folder], recursive=False)


def _rgb(path: Path) -> np.ndarray:
    # Alpha is not part of what is measured; gray comes as three equal channels.
    return read_image(path).rgb


def _pair_from_hr(path: Path, root: Path, scale: int) -> EvalPair:
    hr = mod_crop(_rgb(path), scale)
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise InputError(f"{path}: {_size(hr)} is too small for x{scale}")
    # Rounded to 8 bits like a saved benchmark LR file, so both kinds of set are measured alike.
    lr = to_uint8(bicubic_resize(hr, hr.shape[1] // scale, hr.shape[0] // scale)).astype(np.float32) / 255
    name = str(path.relative_to(root))
    _check_pair(name, lr, hr, scale)  # before any model runs: a set with a tiny image stops at once
    return EvalPair(name, lr, hr)


def pair_key(path: Path, scale: int) -> str:
    """A file's stem without the markers that tell HR from LR (`_HR`, `_LR`, `_LQ`, `_GT`, `x4`, `_x4`,
    in any order): `img_001_SRF_4_HR` and `img_001_SRF_4_LR` -> `img_001_srf_4`; `baby_x4` -> `baby`.
    The one rule that pairs LR and HR files, for `upscale eval` and `upscale train --lq/--gt`."""
    stem = path.stem.lower()
    marker = re.compile(rf"[_\-.]?(hr|lr|lq|gt|x{scale})$")
    while (shorter := marker.sub("", stem)) != stem and shorter:
        stem = shorter
    return stem


def _read_pairs(hr_folder: Path, lr_folder: Path, scale: int) -> list[EvalPair]:
    lr_files: dict[str, Path] = {}
    for path, _root in _images_in(lr_folder):
        key = pair_key(path, scale)
        if key in lr_files:
            raise InputError(f"{lr_folder}: {lr_files[key].name} and {path.name} look like the same image")
        lr_files[key] = path
    pairs = []
    unmatched = []
    for path, _root in _images_in(hr_folder):
        lr_path = lr_files.get(pair_key(path, scale))
        if lr_path is None:
            unmatched.append(path.name)
            continue
        lr, hr = _rgb(lr_path), _rgb(path)
        target = (lr.shape[0] * scale, lr.shape[1] * scale)
        if target[0] <= hr.shape[0] < target[0] + scale and target[1] <= hr.shape[1] < target[1] + scale:
            hr = hr[: target[0], : target[1]]
        _check_pair(path.name, lr, hr, scale)
        pairs.append(EvalPair(path.name, lr, hr))
    if unmatched:
        raise InputError(
            f"{lr_folder} has no LR image for {', '.join(unmatched[:3])}"
            + (f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""),
            hint="LR files are matched to HR files by name, ignoring _HR / _LR / x<scale> endings",
        )
    return pairs
