"""What a video job tells its caller: progress, notes (and warnings), and the report at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Progress:
    """How far the job is: frames done (finished parts included) out of `total` (None: unknown).

    fps counts only the frames upscaled by this run; eta is in seconds (None while unknown); part is the
    number of the part being written (from 1); parts_done counts the finished ones; resumed counts the
    frames finished by earlier runs.
    """

    frames: int
    total: int | None
    fps: float | None
    eta: float | None
    part: int
    parts_done: int
    resumed: int
    elapsed: float


@dataclass(frozen=True)
class Note:
    """A line for the person running the job; `warning` marks something they may want to act on."""

    message: str
    warning: bool = False


Event = Progress | Note


@dataclass
class VideoReport:
    """What a finished job did."""

    destination: Path
    frames: int
    parts: int
    resumed_parts: int
    resumed_frames: int
    width: int
    height: int
    encoding: str
    warnings: list[str]
    seconds: float
