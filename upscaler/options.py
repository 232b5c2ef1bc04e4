"""Frozen option objects built by the CLI and read by the library."""

from __future__ import annotations

from dataclasses import dataclass

from upscaler.values import Precision


@dataclass(frozen=True)
class BackendOptions:
    """How a backend runs a model.

    device: "auto", "cpu", "cuda", "cuda:N" or "mps"; threads: intra-op threads, None leaves the
    backend's default.
    """

    device: str = "auto"
    precision: Precision = Precision.FP32
    threads: int | None = None
    channels_last: bool = True


@dataclass(frozen=True)
class TileOptions:
    """How frames are cut into tiles.

    tile_size: the side of a tile in input pixels, or None to plan the tiles that read the fewest pixels
    within `memory_budget` bytes (`upscaler.tiling.layout.choose_tile_shape`); overlap: input pixels each tile
    reads beyond the part it owns, on every side, or None for the model's own hint (about its receptive
    field); batch_size: tiles per batch, or None for what the backend's session runs fastest with
    (`upscaler.backend.preferred_batch`).
    """

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    memory_budget: int = 1024**3
