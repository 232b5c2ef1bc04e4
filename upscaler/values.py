"""Small value types shared by every layer. Standard library only."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from upscaler.errors import UpscaleError


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    # Convolutions in int8, quantized after training on calibration crops (the OpenVINO backend).
    INT8 = "int8"
    # Chosen from the hardware before a backend opens (upscaler.precision); never reaches a session.
    AUTO = "auto"

    @classmethod
    def parse(cls, text: str) -> Precision:
        try:
            return cls(text.lower())
        except ValueError:
            known = ", ".join(p.value for p in cls)
            raise UpscaleError(f"unknown precision {text!r}; known: {known}") from None


@dataclass(frozen=True)
class SizeRequirement:
    """What a model needs of its input's height and width."""

    multiple_of: int = 1
    minimum: int = 1

    def padded(self, size: int) -> int:
        """The smallest size >= `size` that the model accepts."""
        size = max(size, self.minimum)
        return -(-size // self.multiple_of) * self.multiple_of

    def accepts(self, size: int) -> bool:
        return size >= self.minimum and size % self.multiple_of == 0


@dataclass(frozen=True)
class TileRegion:
    """One tile of a frame, in input pixels; ranges are half-open, like slices.

    The tile reads rows `top:bottom` and columns `left:right`, and owns rows `own_top:own_bottom` and
    columns `own_left:own_right`, which lie inside what it reads. Every pixel of the frame is owned by
    exactly one tile; the rest of what a tile reads is context and blending margin.
    """

    top: int
    left: int
    bottom: int
    right: int
    own_top: int
    own_left: int
    own_bottom: int
    own_right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left
