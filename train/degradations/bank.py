"""The codec bank: degraded crops made once, with a seed, and kept in the cache for every run that asks
for the same ones. Encoding video is too slow to do per sample in the data loader on a CPU, so training
draws a share of its samples (degradation.codec_prob) from here.

A bank entry is one frame of a short run: HR crops that move across a training image at a constant
speed (as a camera pans), each blurred, downscaled and noised as in the first pass of the degradation
model, and the run encoded with libx264/libx265 at a random CRF and preset and decoded back. The LR
frames keep the codec's artefacts, prediction from earlier frames included; the HR crops are the truth.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from train.degradations.chain import blur, random_blur_kernel, random_noise, resize
from train.degradations.codec import encode_decode
from train.degradations.settings import RESIZE_MODES, DegradationConfig
from upscaler.errors import InputError
from upscaler.system.files import write_bytes_atomically

# Bumped when the way a bank is made changes, so no run reads a bank made the old way.
BANK_VERSION = 1
# The fastest a run's crop moves, in LR pixels per frame.
_MAX_SPEED = 2


@dataclass(frozen=True)
class CodecBank:
    """Degraded LR frames and their HR crops: lq is N x h x w x 3, gt N x h*scale x w*scale x 3, uint8."""

    lq: np.ndarray
    gt: np.ndarray

    def __len__(self) -> int:
        return len(self.lq)


def bank_side(patch_size: int, scale: int) -> int:
    """The LR side of a bank frame: half again the LR training crop (room to crop it at random), even
    for 4:2:0 video, and at least 16 (one macroblock)."""
    side = (patch_size // scale) * 3 // 2
    return max(16, side + side % 2)


def bank_key(config: DegradationConfig, digest: str, scale: int, side: int, seed: int) -> str:
    """The name of the bank these inputs make: a digest of every one of them."""
    document = {
        "version": BANK_VERSION,
        "data": digest,
        "scale": scale,
        "side": side,
        "seed": seed,
        "degradation": asdict(config),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def build_bank(
    sizes: Sequence[tuple[int, int]],
    hr_of: Callable[[int], np.ndarray],
    scale: int,
    side: int,
    config: DegradationConfig,
    seed: int,
) -> CodecBank:
    """A bank of config.bank_runs x config.bank_frames entries from the images whose (width, height) are
    `sizes`, read by `hr_of(index)` as 8-bit RGB. Run r depends only on (seed, r)."""
    hr_side, frames = side * scale, config.bank_frames
    lq_runs, gt_runs = [], []
    for run in range(config.bank_runs):
        rng = np.random.default_rng((seed, 7, run))
        speed = _MAX_SPEED * scale
        reach = hr_side + speed * (frames - 1)
        fitting = [index for index, (width, height) in enumerate(sizes) if min(width, height) >= reach]
        if not fitting:  # small images: a still run (the codec still predicts from the earlier frames)
            speed, reach = 0, hr_side
            fitting = [index for index, (width, height) in enumerate(sizes) if min(width, height) >= reach]
        if not fitting:
            raise InputError(
                f"the codec bank needs training images of at least {hr_side} x {hr_side} pixels "
                f"(data.patch_size x 1.5) and none is that large",
                hint="add larger images, or set degradation.codec_prob = 0",
            )
        image = hr_of(fitting[int(rng.integers(len(fitting)))])
        velocity = rng.integers(-speed, speed + 1, size=2) if speed else np.zeros(2, dtype=int)
        height, width = image.shape[:2]
        # where the first crop starts so that every crop of the run lies inside the image
        span = np.abs(velocity) * (frames - 1)
        top = int(rng.integers(0, height - hr_side - span[1] + 1)) + (span[1] if velocity[1] < 0 else 0)
        left = int(rng.integers(0, width - hr_side - span[0] + 1)) + (span[0] if velocity[0] < 0 else 0)
        kernel = random_blur_kernel(rng, config, second=False)
        mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
        noise_seed = int(rng.integers(2**32))
        gts, lqs = [], []
        for frame in range(frames):
            y, x = top + velocity[1] * frame, left + velocity[0] * frame
            gt = image[y : y + hr_side, x : x + hr_side]
            lq = resize(blur(gt.astype(np.float32) / 255.0, kernel), side, side, mode)
            # the same kind and level of noise through the run, drawn afresh for every frame
            lq = random_noise(lq, np.random.default_rng((noise_seed, frame)), config, second=False)
            gts.append(gt)
            lqs.append(np.clip(np.rint(lq * 255.0), 0, 255).astype(np.uint8))
        codec = config.codecs[int(rng.integers(len(config.codecs)))]
        crf = int(rng.integers(config.crf_range[0], config.crf_range[1] + 1))
        preset = config.presets[int(rng.integers(len(config.presets)))]
        lq_runs += encode_decode(lqs, codec, crf, preset)
        gt_runs += gts
    return CodecBank(lq=np.stack(lq_runs), gt=np.stack(gt_runs))


def cached_bank(
    folder: Path,
    key: str,
    make: Callable[[], CodecBank],
) -> tuple[CodecBank, bool]:
    """(the bank named `key` in `folder`, whether it was made now): read when there, else made by `make`
    and written for the next run. A file that cannot be read is made again."""
    path = Path(folder) / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return CodecBank(lq=stored["lq"], gt=stored["gt"]), False
        except (OSError, ValueError, KeyError):
            pass
    bank = make()
    buffer = io.BytesIO()
    np.savez(buffer, lq=bank.lq, gt=bank.gt)
    write_bytes_atomically(path, buffer.getvalue())
    return bank, True
