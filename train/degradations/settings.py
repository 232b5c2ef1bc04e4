"""The `[degradation]` section of a recipe: the ranges of Real-ESRGAN's second-order degradation model
(Wang et al., ICCVW 2021, and its published x4plus training options), and our video codec step.

Keys ending in 2 are the second pass. Probabilities are per sample; ranges are drawn uniformly. A recipe
may give `[degradation]` with no keys at all: every default below is the paper's value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from train.degradations.kernels import KERNEL_SHAPES
from upscaler.errors import UpscaleError

_SIZES = tuple(range(7, 22, 2))
_SHAPE_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
RESIZE_MODES = ("area", "bilinear", "bicubic")
CODECS = ("libx264", "libx265")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")


class DegradationError(UpscaleError):
    """A `[degradation]` value that cannot be used (reported as the recipe's ConfigError)."""


@dataclass(frozen=True)
class DegradationConfig:
    # --- the first pass: blur, resize, noise, JPEG
    kernel_sizes: tuple[int, ...] = _SIZES
    kernel_list: tuple[str, ...] = KERNEL_SHAPES
    kernel_prob: tuple[float, ...] = _SHAPE_PROB
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5  # else Poisson
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian sigma, in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    # --- the second pass
    second_blur_prob: float = 0.8
    kernel_prob2: tuple[float, ...] = _SHAPE_PROB
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)
    # --- the end: resize to the LR size, then a sinc and JPEG in random order
    final_sinc_prob: float = 0.8
    # --- ours: video codecs. A share of the samples comes from a bank of crops that were blurred,
    # downscaled and noised as in the first pass, then encoded as short moving runs and decoded back.
    codec_prob: float = 0.3
    codecs: tuple[str, ...] = CODECS
    crf_range: tuple[int, int] = (18, 38)
    presets: tuple[str, ...] = ("ultrafast", "veryfast", "medium")
    bank_runs: int = 128  # runs of moving crops in the bank
    bank_frames: int = 8  # frames a run: the codec's inter prediction needs several


def check_degradation(config: DegradationConfig) -> None:
    """Raise DegradationError naming the first key whose value cannot be used."""

    def fail(key: str, wanted: str) -> None:
        raise DegradationError(f"degradation.{key}: must be {wanted} (got {list_or(getattr(config, key))})")

    for item in fields(config):
        value = getattr(config, item.name)
        if item.name.endswith("_prob") or item.name[:-1].endswith("_prob"):
            values = value if isinstance(value, tuple) else (value,)
            if any(not 0 <= v <= 1 for v in values):
                fail(item.name, "probabilities in [0, 1]")
            if isinstance(value, tuple) and abs(sum(value) - 1) > 1e-6:
                fail(item.name, "probabilities that sum to 1")
        elif item.name.endswith(("_range", "_range2", "blur_sigma", "blur_sigma2")):
            low, high = value
            if not 0 < low <= high:
                fail(item.name, "[low, high] with 0 < low <= high")
    if any(size < 3 or size % 2 == 0 for size in config.kernel_sizes) or not config.kernel_sizes:
        fail("kernel_sizes", "odd sizes of 3 or more")
    unknown = [shape for shape in config.kernel_list if shape not in KERNEL_SHAPES]
    if unknown or not config.kernel_list:
        fail("kernel_list", f"kernel shapes among {', '.join(KERNEL_SHAPES)}")
    for key in ("kernel_prob", "kernel_prob2"):
        if len(getattr(config, key)) != len(config.kernel_list):
            fail(key, f"one probability per kernel_list entry ({len(config.kernel_list)})")
    for key in ("jpeg_range", "jpeg_range2"):
        if getattr(config, key)[1] > 100:
            fail(key, "JPEG qualities in [1, 100]")
    if not config.codecs or any(codec not in CODECS for codec in config.codecs):
        fail("codecs", f"among {', '.join(CODECS)}")
    if not config.presets or any(preset not in PRESETS for preset in config.presets):
        fail("presets", f"among {', '.join(PRESETS)}")
    if not 0 <= config.crf_range[0] <= config.crf_range[1] <= 51:
        fail("crf_range", "[low, high] within 0 ... 51")
    if config.bank_runs < 1 or config.bank_frames < 1:
        key = "bank_runs" if config.bank_runs < 1 else "bank_frames"
        fail(key, "1 or more")


def list_or(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value
