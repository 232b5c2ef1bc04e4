"""The training image files: HR folders or paired LR/HR folders, checked once, decoded once.

Every file is opened once at start: files that cannot be read stop the run with one error that lists
them; images smaller than a training crop are skipped and listed in a warning. Images are decoded once
and kept in memory as 8-bit pixels when they all fit in `cache_gib`; otherwise each access decodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from upscaler.errors import InputError
from upscaler.image.formats import SUPPORTED_SUFFIXES, read_image
from upscaler.quality.evaluation import pair_key
from upscaler.quality.metrics import to_uint8
from upscaler.quality.resampling import bicubic_resize, mod_crop

# How many file names an error or warning shows before "and N more".
_SHOWN = 8


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted."""
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    return sorted(
        path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES
    )


def _listing(paths: Sequence[Path | str]) -> str:
    shown = ", ".join(str(path) for path in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None when it cannot be read as an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def decode(path: Path) -> np.ndarray:
    """An image file as 8-bit RGB, H x W x 3 (alpha dropped, gray repeated, 16-bit rounded)."""
    return to_uint8(read_image(path).rgb)


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image of the papers: MATLAB bicubic with antialiasing, rounded to 8 bits."""
    height, width = hr.shape[:2]
    return bicubic_resize(hr, width // scale, height // scale)


def digest_files(paths: Sequence[Path]) -> str:
    """sha256 over the files' names and contents, in order: which data a model was trained on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageEntry:
    """One training image: its HR file, its LR file when paired (else LR is made by bicubic)."""

    hr: Path
    lq: Path | None
    width: int  # HR size after cropping to a multiple of the scale
    height: int


@dataclass(frozen=True)
class ImageSet:
    """The checked training images, and what was skipped."""

    entries: tuple[ImageEntry, ...]
    skipped: tuple[str, ...]  # "path (why)" for each image left out
    digest: str

    @property
    def files(self) -> int:
        return len(self.entries)


def _paired_files(lq_dir: Path, gt_dir: Path, scale: int) -> list[tuple[Path, Path]]:
    lq_files = {pair_key(path, scale): path for path in find_images(lq_dir)}
    pairs, unmatched = [], []
    for gt in find_images(gt_dir):
        lq = lq_files.pop(pair_key(gt, scale), None)
        if lq is None:
            unmatched.append(gt)
        else:
            pairs.append((gt, lq))
    if unmatched or lq_files:
        names = [*unmatched, *lq_files.values()]
        raise InputError(
            f"{len(names)} files in the paired folders have no partner: {_listing(names)}",
            hint=f"LR and HR files pair by name, ignoring a trailing _LR/_HR/_x{scale}; "
            "give each HR file one LR",
        )
    return pairs


def scan_training_images(
    hr_dirs: Sequence[Path], lq_dir: Path | None, gt_dir: Path | None, scale: int, patch_size: int
) -> ImageSet:
    """Check every training file once; raise InputError listing the ones that cannot be read."""
    candidates: list[tuple[Path, Path | None]] = []
    for folder in hr_dirs:
        candidates += [(path, None) for path in find_images(Path(folder))]
    if lq_dir is not None and gt_dir is not None:
        candidates += _paired_files(Path(lq_dir), Path(gt_dir), scale)
    if not candidates:
        folders = [*map(str, hr_dirs), *([str(gt_dir)] if gt_dir else [])]
        raise InputError(
            f"no training images in {', '.join(folders) or 'no folder'}",
            hint="pass --data HR_FOLDER (PNG, JPEG, WebP, TIFF or BMP files) or --lq DIR --gt DIR",
        )

    entries, unreadable, skipped = [], [], []
    for hr, lq in candidates:
        size = image_size(hr)
        lq_size = image_size(lq) if lq is not None else None
        if size is None or (lq is not None and lq_size is None):
            unreadable.append(hr if size is None else lq)
            continue
        width, height = size[0] - size[0] % scale, size[1] - size[1] % scale
        if lq_size is not None and lq_size != (width // scale, height // scale):
            raise InputError(
                f"{lq} is {lq_size[0]} x {lq_size[1]}, but its HR partner {hr.name} needs "
                f"{width // scale} x {height // scale} at x{scale}"
            )
        if width < patch_size or height < patch_size:
            skipped.append(f"{hr} ({size[0]} x {size[1]})")
            continue
        entries.append(ImageEntry(hr=hr, lq=lq, width=width, height=height))
    if unreadable:
        raise InputError(
            f"{len(unreadable)} training files cannot be read as images: {_listing(unreadable)}",
            hint="remove or replace them; training stops here rather than halfway through",
        )
    if not entries:
        raise InputError(
            f"every training image is smaller than the {patch_size} x {patch_size} HR crop "
            f"(data.patch_size): {_listing(skipped)}"
        )
    files = [path for entry in entries for path in (entry.hr, entry.lq) if path is not None]
    return ImageSet(entries=tuple(entries), skipped=tuple(skipped), digest=digest_files(files))


def cache_bytes(images: ImageSet, scale: int) -> int:
    """Memory the decoded 8-bit HR and LR pixels of every image need."""
    return (
        sum(entry.width * entry.height * 3 for entry in images.entries)
        * (scale * scale + 1)
        // (scale * scale)
    )


def load_pair(entry: ImageEntry, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) 8-bit pixels of one training image."""
    hr = mod_crop(decode(entry.hr), scale)
    if entry.lq is None:
        return downscale(hr, scale), hr
    return decode(entry.lq), hr


def decode_all(entries: Sequence[ImageEntry], scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every image's (LR, HR) pixels; one InputError listing the files whose header read but data did not."""
    pairs, broken = [], []
    for entry in entries:
        try:
            pairs.append(load_pair(entry, scale))
        except InputError as exc:
            broken.append(exc.message)
    if broken:
        raise InputError(f"{len(broken)} training files cannot be decoded: {_listing(broken)}")
    return pairs


# ------------------------------------------------------------------------------------------ validation
