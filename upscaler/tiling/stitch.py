"""One frame through its tiles: the padded input each tile reads, and the outputs blended across each
boundary with linear ramps that add up to 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from upscaler.values import TileRegion

# Takes C x rows x W float32 rows of a finished frame, in [0, 1] (and may change them); returns them as
# rows x W x C in the caller's form (8-bit levels, say).
Finish = Callable[[np.ndarray], np.ndarray]


K = TypeVar("K")


class FrameWork(Generic[K]):
    """One frame on its way through the tiles: what it reads, and what is stitched of it so far."""

    def __init__(
        self,
        key: K,
        padded: np.ndarray,
        height: int,
        width: int,
        tile: tuple[int, int],
        context: int,
        tiles: list[TileRegion],
        scale: int,
        finish: Finish | None = None,
    ) -> None:
        self.key, self.padded, self.height, self.width = key, padded, height, width
        self.finish = finish
        self.tile, self.context, self.tiles, self.scale = tile, context, tiles, scale
        self.window = (tiles[0].height, tiles[0].width)  # plan_tiles gives every tile one shape
        self.done = 0  # tiles stitched, in plan order
        self._output: np.ndarray | None = None  # allocated at the first stitch: C' is known only then
        self._total: np.ndarray | None = None
        _, padded_h, padded_w = padded.shape
        # Where the ramps of each axis add up to 1 at every output pixel (they do unless a tile owns
        # less than the overlap), every pixel's weights add up to 1 and no plane of their sums is kept:
        # 59 MB at 720p x4.
        rows = {(t.top, t.bottom, t.own_top, t.own_bottom) for t in tiles}
        columns = {(t.left, t.right, t.own_left, t.own_right) for t in tiles}
        self._weighed = not (
            sums_to_one(rows, padded_h, context, scale) and sums_to_one(columns, padded_w, context, scale)
        )
        # Stitched a row of tiles at a time (see Tiler.upscale_stream): the float32 band from the top of
        # the row of tiles being stitched to its bottom, and what `finish` made of the rows above it.
        self._banded = finish is not None and not self._weighed and len(tiles) > 1
        self._band_top = 0  # the output row the band starts at
        self._finished: np.ndarray | None = None  # what `finish` made, rows above the band filled
        # What holding it costs: its padded input, and C' (+ 1) output planes (assumed C' = C) once begun.
        planes = padded.shape[0] + int(self._weighed)
        self.nbytes = padded.nbytes + planes * padded_h * padded_w * scale * scale * 4

    @property
    def waiting(self) -> int:
        return len(self.tiles) - self.done

    @property
    def finished(self) -> bool:
        return self.done == len(self.tiles)

    def accepts(self, channels: int) -> bool:
        return self._output is None or self._output.shape[0] == channels

    def stitch(self, regions: list[TileRegion], outputs: np.ndarray) -> None:
        """Blend the outputs of the next `regions` (in plan order) into the frame."""
        _, height, width = self.padded.shape
        scale = self.scale
        if len(self.tiles) == 1:
            # The whole frame in one tile: its weights are all 1, so its output is the frame as it is.
            (self._output,) = outputs
            self.done = 1
            return
        if self._banded:
            self._stitch_band(regions, outputs)
            return
        if self._output is None:
            self._output = np.zeros((outputs.shape[1], height * scale, width * scale), dtype=np.float32)
            if self._weighed:
                self._total = np.zeros((height * scale, width * scale), dtype=np.float32)
        for region, tile_output in zip(regions, outputs, strict=True):
            weight = self._weight(region)
            rows = slice(region.top * scale, region.bottom * scale)
            columns = slice(region.left * scale, region.right * scale)
            tile_output *= weight  # the backend's new array, which nobody else reads
            self._output[:, rows, columns] += tile_output
            if self._total is not None:
                self._total[rows, columns] += weight
        self.done += len(regions)

    def _weight(self, region: TileRegion) -> np.ndarray:
        """The blending weight of `region`'s output pixels."""
        _, height, width = self.padded.shape
        scale, context = self.scale, self.context
        return np.outer(
            ramp(region.top, region.bottom, region.own_top, region.own_bottom, height, context, scale),
            ramp(region.left, region.right, region.own_left, region.own_right, width, context, scale),
        )

    def _stitch_band(self, regions: list[TileRegion], outputs: np.ndarray) -> None:
        """`stitch` for a frame stitched a row of tiles at a time: tiles come row by row (plan_tiles), so
        when a tile starts lower than the band, the rows above its top are done."""
        width, scale = self.padded.shape[2], self.scale
        for region, tile_output in zip(regions, outputs, strict=True):
            top, bottom = region.top * scale, region.bottom * scale
            if self._output is None:
                self._output = np.zeros((outputs.shape[1], bottom - top, width * scale), dtype=np.float32)
                self._band_top = top
            elif top != self._band_top:
                self._hand_over(top)
                # The rows below `top` move up to the band's start and the rest is cleared: the band is
                # reused, not allocated again beside the old one (64 MB more at the peak at 720p x4).
                # Every window has one height (plan_tiles), so the band's height does not change.
                band = self._output
                assert band.shape[1] == bottom - top
                carried = band[:, top - self._band_top :].copy()  # the rows two rows of tiles share
                band[:, : carried.shape[1]] = carried
                band[:, carried.shape[1] :] = 0
                self._band_top = top
            weight = self._weight(region)
            tile_output *= weight  # the backend's new array, which nobody else reads
            columns = slice(region.left * scale, region.right * scale)
            self._output[:, : bottom - top, columns] += tile_output
        self.done += len(regions)
        if self.finished:
            assert self._output is not None
            self._hand_over(self._band_top + self._output.shape[1])

    def _hand_over(self, end: int) -> None:
        """Clip the band's rows above output row `end` (cropped to the frame) and keep what `finish`
        makes of them."""
        assert self._output is not None and self.finish is not None
        rows = min(end, self.height * self.scale) - self._band_top
        if rows <= 0:
            return  # only the padding below the frame
        done = self._output[:, :rows, : self.width * self.scale]
        made = self.finish(np.clip(done, 0.0, 1.0, out=done))
        if self._finished is None:
            self._finished = np.empty((self.height * self.scale, *made.shape[1:]), dtype=made.dtype)
        self._finished[self._band_top : self._band_top + rows] = made

    def output(self) -> np.ndarray:
        """The finished frame, cropped to its size times the scale and clipped to [0, 1]; with `finish`,
        what it made of that."""
        assert self.finished
        if self._banded:
            finished, self._output, self._finished = self._finished, None, None
            assert finished is not None
            return finished
        assert self._output is not None
        output, total = self._output, self._total
        # Normalised and clipped in place, and let go of here: at 720p x4 a frame is 177 MB, and a copy
        # would hold two of them (the crop keeps the canvas alive only by its few padded rows).
        self._output = self._total = None
        if total is not None:
            output /= total
        crop = output[:, : self.height * self.scale, : self.width * self.scale]
        clipped = np.clip(crop, 0.0, 1.0, out=crop)
        return clipped if self.finish is None else self.finish(clipped)


def ramp(
    start: int, end: int, own_start: int, own_end: int, size: int, overlap: int, scale: int
) -> np.ndarray:
    """A tile's blending weight along one axis, per output pixel of what it reads.

    Within overlap / 2 of a boundary with a neighbour, the weight ramps linearly across the boundary
    (the two tiles' ramps add up to 1); it is 1 elsewhere in what the tile owns and 0 further out. At
    the image's border there is no neighbour and the weight stays 1. Pixel centres never fall on a
    boundary, so the owner's weight is always above 1/2 and no pixel is left with no weight at all.
    """
    centres = (np.arange(start * scale, end * scale) + 0.5) / scale
    weight = np.ones(centres.shape)
    half = overlap / 2
    sides = [(centres - own_start, own_start > 0), (own_end - centres, own_end < size)]
    for inside, has_neighbour in sides:
        if has_neighbour:
            ramp = np.clip(0.5 + inside / (2 * half), 0.0, 1.0) if half else (inside > 0).astype(float)
            weight = np.minimum(weight, ramp)
    return weight.astype(np.float32)


def sums_to_one(spans: set[tuple[int, int, int, int]], size: int, overlap: int, scale: int) -> bool:
    """Whether the ramps of (start, end, own_start, own_end) `spans` along an axis of `size` input pixels
    add up to 1 at every output pixel (within float32's rounding)."""
    total = np.zeros(size * scale)
    for start, end, own_start, own_end in spans:
        total[start * scale : end * scale] += ramp(start, end, own_start, own_end, size, overlap, scale)
    return bool(np.all(np.abs(total - 1.0) <= 1e-6))
