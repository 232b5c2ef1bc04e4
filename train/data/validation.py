"""The validation set a run scores itself on, read as `upscale eval` reads a benchmark set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from upscaler.errors import InputError
from upscaler.quality.resampling import bicubic_resize


@dataclass(frozen=True)
class ValidationImage:
    """One validation image: float32 H x W x 3 LR and HR in [0, 1], and the bicubic upscale of LR."""

    name: str
    lq: np.ndarray
    hr: np.ndarray
    bicubic: np.ndarray


def load_validation(folder: Path, scale: int) -> list[ValidationImage]:
    """A set folder with `HR/` and `LR_x<scale>/` side by side, or a folder of HR images.

    Read by `upscale eval`'s loader (`upscaler.quality.evaluation.load_eval_set`): the same pairing, the same
    LR where there are no LR files, the same crop to a multiple of `scale` and the same refusals (a set
    with only other scales' LR, an image too small to measure), so that the figures in the model card
    are the figures `upscale eval` gives on the same folder. A model that needs a larger multiple gets
    its input padded (see `train.loop`).
    """
    from upscaler.quality.evaluation import load_eval_set

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
