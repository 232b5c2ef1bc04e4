"""Training and validation data: HR folders (LR made by bicubic) or paired LR/HR folders.

Every file is opened once at start: files that cannot be read stop the run with one error that lists
them; images smaller than a training crop are skipped and listed in a warning. Images are decoded once
and kept in memory as 8-bit pixels when they all fit in `cache_gib`; otherwise each access decodes.

Reproducibility does not depend on any iterator's state: training sample number k (counted over the
whole run, all processes together) is a pure function of (seed, k) -- which image (a fresh permutation
per epoch), where the crop is, and the flips and rotation. Iteration i of a run with global batch B
uses samples i*B ... i*B + B - 1, so resuming at iteration i only needs i.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from train.degradations.bank import CodecBank
from train.degradations.chain import second_order
from train.degradations.settings import DegradationConfig
from upscaler.errors import InputError
from upscaler.evaluation import pair_key
from upscaler.image.formats import SUPPORTED_SUFFIXES, read_image
from upscaler.metrics import to_uint8
from upscaler.resampling import bicubic_resize, mod_crop

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


def _decode_all(entries: Sequence[ImageEntry], scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
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


def augment(images: Sequence[np.ndarray], hflip: bool, vflip: bool, rotate: bool) -> list[np.ndarray]:
    """The same flips and 90-degree rotation (a transpose, composed with the flips) for each image."""
    out = []
    for image in images:
        if hflip:
            image = image[:, ::-1]
        if vflip:
            image = image[::-1]
        if rotate:
            image = image.transpose(1, 0, 2)
        out.append(image)
    return out


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """8-bit H x W x 3 -> float32 3 x H x W in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class PatchDataset(Dataset):
    """Training sample k -> (LR patch, HR patch) tensors, a pure function of (seed, k).

    Indexed by the global sample number, without end: the sampler decides which numbers to draw.
    """

    def __init__(
        self,
        images: ImageSet,
        scale: int,
        patch_size: int,
        seed: int,
        flip: bool,
        rotate: bool,
        cache: bool,
        degradation: DegradationConfig | None = None,
        bank: CodecBank | None = None,
    ) -> None:
        self.entries = images.entries
        # HR-only images get their LR from the degradation model (and a share from the codec bank)
        # instead of the clean bicubic; paired images keep their LR files
        self.degradation = degradation
        self.bank = bank
        self.scale = scale
        self.patch_size = patch_size
        self.seed = seed
        self.flip = flip
        self.rotate = rotate
        # Decoded before the DataLoader forks its workers, so they share the pixels.
        self.cached = _decode_all(self.entries, scale) if cache else None
        self._epoch = -1
        self._order = np.arange(0)

    def __len__(self) -> int:
        return len(self.entries)

    def _image_of(self, sample: int) -> int:
        epoch, position = divmod(sample, len(self.entries))
        if epoch != self._epoch:
            self._order = np.random.default_rng((self.seed, 1, epoch)).permutation(len(self.entries))
            self._epoch = epoch
        return int(self._order[position])

    def __getitem__(self, sample: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._image_of(sample)
        if self.degradation is not None and self.entries[index].lq is None:
            return self._degraded(sample, index)
        lq, hr = self.cached[index] if self.cached is not None else load_pair(self.entries[index], self.scale)
        rng = np.random.default_rng((self.seed, 2, sample))
        lq_patch = self.patch_size // self.scale
        top = int(rng.integers(0, lq.shape[0] - lq_patch + 1))
        left = int(rng.integers(0, lq.shape[1] - lq_patch + 1))
        hflip, vflip, rotate = (rng.random(3) < 0.5).tolist()
        lq = lq[top : top + lq_patch, left : left + lq_patch]
        s = self.scale
        hr = hr[top * s : (top + lq_patch) * s, left * s : (left + lq_patch) * s]
        lq, hr = augment([lq, hr], hflip and self.flip, vflip and self.flip, rotate and self.rotate)
        return to_tensor(lq), to_tensor(hr)

    def hr_pixels(self, index: int) -> np.ndarray:
        """Image `index`'s 8-bit HR pixels (cropped to a multiple of the scale)."""
        if self.cached is not None:
            return self.cached[index][1]
        return load_pair(self.entries[index], self.scale)[1]

    def _degraded(self, sample: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, 3, sample))
        hflip, vflip, rotate = (rng.random(3) < 0.5).tolist()
        flips = (hflip and self.flip, vflip and self.flip, rotate and self.rotate)
        lq_side, s = self.patch_size // self.scale, self.scale
        if self.bank is not None and rng.random() < self.degradation.codec_prob:
            entry = int(rng.integers(len(self.bank)))
            top, left = (int(v) for v in rng.integers(0, self.bank.lq.shape[1] - lq_side + 1, size=2))
            lq = self.bank.lq[entry, top : top + lq_side, left : left + lq_side]
            hr = self.bank.gt[entry, top * s : (top + lq_side) * s, left * s : (left + lq_side) * s]
            lq, hr = augment([lq, hr], *flips)
            return to_tensor(lq), to_tensor(hr)
        hr = self.hr_pixels(index)
        top = int(rng.integers(0, hr.shape[0] - self.patch_size + 1))
        left = int(rng.integers(0, hr.shape[1] - self.patch_size + 1))
        (hr,) = augment([hr[top : top + self.patch_size, left : left + self.patch_size]], *flips)
        lq = second_order(np.ascontiguousarray(hr).astype(np.float32) / 255.0, s, rng, self.degradation)
        return to_tensor(np.clip(np.rint(lq * 255.0), 0, 255).astype(np.uint8)), to_tensor(hr)


class IterationSampler(Sampler[int]):
    """The sample numbers this process uses from iteration `start` on, without end.

    Iteration i's global batch is samples i*B*W ... (i+1)*B*W - 1 for batch B per process and W
    processes; process r takes its r-th slice. This is the distributed sampler too.
    """

    def __init__(self, start: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start = start
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        iteration = self.start
        while True:
            first = (iteration * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            iteration += 1


# ------------------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class ValidationImage:
    """One validation image: float32 H x W x 3 LR and HR in [0, 1], and the bicubic upscale of LR."""

    name: str
    lq: np.ndarray
    hr: np.ndarray
    bicubic: np.ndarray


def load_validation(folder: Path, scale: int) -> list[ValidationImage]:
    """A set folder with `HR/` and `LR_x<scale>/` side by side, or a folder of HR images.

    Read by `upscale eval`'s own loader (`upscaler.evaluation.load_eval_set`): the same pairing, the same
    LR where there are no LR files, the same crop to a multiple of `scale` and the same refusals (a set
    with only other scales' LR, an image too small to measure), so that the figures in the model card
    are the figures `upscale eval` gives on the same folder. A model that needs a larger multiple gets
    its input padded (see `train.loop`).
    """
    from upscaler.evaluation import load_eval_set

    try:
        evaluation = load_eval_set(Path(folder), scale)
    except InputError as exc:
        hint = exc.hint
        if hint and "--scale" in hint:  # eval's hint; training has no --scale
            hint = f"validate on a set with LR_x{scale}/ beside HR/, or on a folder of HR images"
        raise InputError(f"data.val (--val): {exc.message}", hint=hint) from None
    images = []
    for pair in evaluation.pairs:
        lq, hr = pair.lr.astype(np.float32), pair.hr.astype(np.float32)
        bicubic = bicubic_resize(lq, hr.shape[1], hr.shape[0])
        images.append(ValidationImage(Path(pair.name).stem, lq, hr, bicubic))
    return images


def codec_bank(dataset: PatchDataset, images: ImageSet, recipe, report: Callable[[str], None]) -> CodecBank:
    """The recipe's codec bank for these images: from the cache when an earlier run made the same one."""
    from train.degradations.bank import bank_key, bank_side, build_bank, cached_bank
    from upscaler.places import cache_dir

    config, scale = recipe.degradation, recipe.scale
    side = bank_side(recipe.data.patch_size, scale)
    key = bank_key(config, images.digest, scale, side, recipe.train.seed)
    sizes = [(entry.width, entry.height) for entry in images.entries]
    started = time.monotonic()
    bank, made = cached_bank(
        cache_dir() / "codec-banks",
        key,
        lambda: build_bank(sizes, dataset.hr_pixels, scale, side, config, recipe.train.seed),
    )
    what = f"made in {time.monotonic() - started:.0f} s" if made else "read from the cache"
    report(
        f"Codec bank: {len(bank)} degraded {side} x {side} frames ({config.bank_runs} runs of "
        f"{config.bank_frames}, {', '.join(config.codecs)}), {what}; "
        f"{config.codec_prob:.0%} of the samples are drawn from it."
    )
    return bank
