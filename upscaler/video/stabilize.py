"""Keeping still things still: a per-frame GAN invents texture afresh in every frame, and where the scene
does not move that texture shimmers. Where the input has not changed since the output there was made,
the earlier output is kept; where it has, the new output is taken, with a soft edge between the two.

The test is made on the model's input, per pixel, against the input that the kept output was made from
(not just the previous frame), so a slow change adds up until it is taken: nothing is kept forever that
has since moved, and nothing moving is smeared. The state starts afresh at every keyframe, so each part
of a video job (parts start at keyframes) gives the same frames whether it is run alone or after
another: a resumed job's output is identical to an uninterrupted one.
"""

from __future__ import annotations

import cv2
import numpy as np

# The change in input level (0-1, the largest of the three channels, after a 3 x 3 maximum) from which a
# pixel counts as changed: about the noise of a clean 8-bit source. A slow change is taken once it adds up
# to this much, so the output never lags its input by more.
THRESHOLD = 4.0 / 255.0


class Stabilizer:
    """Feed it each frame's input and output in order; it returns the output to show."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"Stabilizer: the threshold must be in (0, 1) (got {threshold})")
        self.threshold = threshold
        self._reference: np.ndarray | None = None  # the input each pixel of the kept output was made from
        self._shown: np.ndarray | None = None  # the last output shown, float32

    def reset(self) -> None:
        self._reference = self._shown = None

    def apply(self, source: np.ndarray, output: np.ndarray, restart: bool = False) -> np.ndarray:
        """The output to show for input `source` (H x W x 3, float in [0, 1]) whose model output is `output`
        (h x w x 3, any dtype: floats or integer levels); `restart` drops what was kept (a keyframe)."""
        levels = output.astype(np.float32)
        fresh = (
            restart
            or self._reference is None
            or self._reference.shape != source.shape
            or self._shown.shape != levels.shape
        )
        if fresh:
            self._reference, self._shown = source.astype(np.float32), levels
            return output
        change = np.abs(source.astype(np.float32) - self._reference).max(axis=2)
        # a pixel next to one that changed changes too: the model's output there depends on both
        change = cv2.dilate(change, np.ones((3, 3), np.uint8))
        # kept where still, with a soft edge one pixel wide so no seam shows between kept and taken
        keep = cv2.blur((change < self.threshold).astype(np.float32), (3, 3))
        self._reference += (1.0 - keep)[..., None] * (source - self._reference)
        height, width = levels.shape[:2]
        keep_out = cv2.resize(keep, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
        self._shown = levels + keep_out * (self._shown - levels)
        if np.issubdtype(output.dtype, np.integer):
            return np.rint(self._shown).astype(output.dtype)
        return self._shown.astype(output.dtype)
