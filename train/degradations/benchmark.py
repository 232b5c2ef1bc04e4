"""The degraded benchmark: a set's HR images through one fixed, seeded degradation, written as a set
folder (`HR/` beside `LR_x4/`) that `upscale eval` reads like Set5 or Set14.

The degradation, in the order a camera and an encoder apply it: a Gaussian blur (sigma 1.2 HR pixels,
a soft lens), MATLAB bicubic downscale x4, Gaussian colour noise (sigma 3 levels, sensor noise), and
H.264 (libx264, CRF 28, preset medium, 4:2:0) as one key frame. The noise is seeded by the image's name,
so the set is the same whoever makes it, on whatever machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.degradations.chain import blur, gaussian_noise
from train.degradations.codec import encode_image
from train.degradations.kernels import gaussian_kernel
from upscaler.errors import InputError
from upscaler.quality.resampling import bicubic_resize, mod_crop
from upscaler.system.files import write_bytes_atomically


@dataclass(frozen=True)
class BenchmarkDegradation:
    scale: int = 4
    blur_sigma: float = 1.2
    noise_sigma: float = 3.0  # 8-bit levels
    codec: str = "libx264"
    crf: int = 28
    preset: str = "medium"
    seed: int = 0

    def describe(self) -> str:
        return (
            f"blur sigma {self.blur_sigma}, bicubic x{self.scale}, noise sigma {self.noise_sigma}, "
            f"{self.codec} CRF {self.crf} {self.preset}, seed {self.seed}"
        )


def degrade_image(hr: np.ndarray, name: str, settings: BenchmarkDegradation) -> np.ndarray:
    """The 8-bit LR of one 8-bit RGB HR image (sides multiples of the scale) under `settings`."""
    kernel = gaussian_kernel(2 * round(3 * settings.blur_sigma) + 1, settings.blur_sigma, settings.blur_sigma)
    blurred = blur(hr.astype(np.float32) / 255.0, kernel)
    height, width = hr.shape[:2]
    small = bicubic_resize(blurred, width // settings.scale, height // settings.scale)
    name_seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng((settings.seed, name_seed))
    noisy = gaussian_noise(small, settings.noise_sigma / 255.0, gray=False, rng=rng)
    pixels = np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)
    return encode_image(pixels, settings.codec, settings.crf, settings.preset)


def make_degraded_set(
    source: Path, destination: Path, settings: BenchmarkDegradation = BenchmarkDegradation()
) -> list[str]:
    """Write `destination`/HR and `destination`/LR_x<scale> from the HR images of set folder `source`
    (its HR/ when it has one); returns the names written. Each file is written whole or not at all."""
    from train.data.images import decode, find_images
    from upscaler.image.formats import encode_image
    from upscaler.picture import Picture

    source, destination = Path(source), Path(destination)
    hr_folder = source / "HR" if (source / "HR").is_dir() else source
    paths = find_images(hr_folder)
    if not paths:
        raise InputError(f"no images in {hr_folder}")
    names = []
    for path in paths:
        hr = mod_crop(decode(path), settings.scale)
        name = path.relative_to(hr_folder).with_suffix(".png")
        lr = degrade_image(hr, name.as_posix(), settings)
        for folder, pixels in (("HR", hr), (f"LR_x{settings.scale}", lr)):
            png = encode_image(Picture(rgb=pixels.astype(np.float32) / 255.0), ".png")
            write_bytes_atomically(destination / folder / name, png)
        names.append(name.as_posix())
    return names
