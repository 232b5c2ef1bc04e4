"""Training samples and the sampler that numbers them.

Reproducibility does not depend on any iterator's state: training sample number k (counted over the
whole run, all processes together) is a pure function of (seed, k) -- which image (a fresh permutation
per epoch), where the crop is, the flips and rotation, and the LR: the clean bicubic, or the
degradation model's (a share drawn from the codec bank). Iteration i of a run with global batch B uses
samples i*B ... i*B + B - 1, so resuming at iteration i only needs i.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from train.data.images import ImageSet, decode_all, load_pair
from train.degradations.bank import CodecBank
from train.degradations.chain import second_order
from train.degradations.settings import DegradationConfig


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
        self.cached = decode_all(self.entries, scale) if cache else None
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
