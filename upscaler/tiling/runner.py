"""Run a model on a frame's tiles in batches and stitch the outputs without seams.

Pure numpy: the model is any `infer(batch) -> batch` callable. Each tile reads `overlap` input pixels
beyond the part it owns, on every side that has a neighbour (`upscaler.tiling.layout` plans where). The outer
half of that margin is context only; across the inner half, neighbouring tiles are blended with linear
weights. So a model whose receptive-field radius is at most overlap / 2 gives its untiled output
exactly, and a larger one gives no visible seams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from upscaler.errors import BackendError, OutOfMemory, UpscaleError
from upscaler.tiling.layout import (
    SMALLEST_TILE,
    check_batch,
    check_tile,
    choose_tile_shape,
    context_pixels,
    plan_tiles,
    round_up,
)
from upscaler.tiling.stitch import Finish, FrameWork, K
from upscaler.values import SizeRequirement, TileRegion

Infer = Callable[[np.ndarray], np.ndarray]


# The most bytes of frames a stream holds to fill batches across frames: their padded inputs and the
# outputs stitched so far. Small frames (where one frame is one tile) batch across frames; frames large
# enough to fill batches alone never need to be held together, and this keeps two of them from piling up.
HOLD_BYTES = 512 * 1024**2


class Tiler:
    """Upscales frames tile by tile, keeping across frames the tile and batch sizes that last fit.

    `infer` takes an N x C x H x W float32 batch whose H and W the model accepts and returns
    N x C' x H*scale x W*scale, raising `OutOfMemory` when the batch does not fit. `tile=None` picks the
    tile that reads least among those that fit `memory_budget`, counting windows of more than
    `reuse_pixels` (where > 0) as slower and keeping windows within `largest_input` (rows, columns; where
    given) (see `choose_tile_shape`). After running out of memory the
    frames in hand are retried with batch 1, then with halved tiles down to 32, and the smaller sizes
    are kept for later frames.

    `upscale` takes one frame; `upscale_stream` takes a sequence of them and fills each batch with tiles
    of consecutive frames of one tile shape, which is what keeps batches full when a frame is only one
    or two tiles.
    """

    def __init__(
        self,
        infer: Infer,
        scale: int,
        requirement: SizeRequirement,
        tile: int | None = None,
        overlap: int = 16,
        batch_size: int = 4,
        bytes_per_pixel: int = 0,
        memory_budget: int = 0,
        hold_bytes: int = HOLD_BYTES,
        reuse_pixels: int = 0,
        largest_input: tuple[int, int] | None = None,
    ) -> None:
        if scale < 1:
            raise UpscaleError(f"scale must be a positive integer (got {scale})")
        check_batch(batch_size)
        if tile is not None:
            check_tile(tile, overlap)
            if tile % requirement.multiple_of:
                raise UpscaleError(
                    f"tile size must be a multiple of {requirement.multiple_of} for this model (got {tile})"
                )
        elif overlap < 0:
            raise UpscaleError(f"overlap must be >= 0 (got {overlap})")
        self._infer = infer
        self._scale = scale
        self._requirement = requirement
        self._tile = tile
        self._overlap = overlap
        self._bytes_per_pixel = bytes_per_pixel
        self._memory_budget = memory_budget
        self._hold_bytes = hold_bytes
        self._reuse_pixels = reuse_pixels
        self._largest_input = largest_input
        self._ceiling: int | None = None  # the largest tile to try again, once one ran out of memory
        self.batch_size = batch_size
        # The tile the last frame was upscaled with, (rows, columns) owned (at most its padded sides);
        # None before the first frame.
        self.tile_shape: tuple[int, int] | None = None

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """Upscale one C x H x W float image in [0, 1] to C' x H*scale x W*scale, clipped to [0, 1]."""
        [(_, output)] = self.upscale_stream([(None, image)])
        return output

    def upscale_stream(
        self, frames: Iterable[tuple[K, np.ndarray]], finish: Finish | None = None
    ) -> Iterator[tuple[K, np.ndarray]]:
        """(key, C x H x W image) pairs in -> (key, upscaled image) pairs out, one per frame, in order.

        With `finish`, each frame out is what `finish` made of its rows, H' x W' x C, and a frame of
        several rows of tiles is stitched a row of tiles at a time: the rows no later tile reaches go
        to `finish` as soon as they are done, so only a band of the frame is ever held as float32
        (at 720p x4, 64 MB instead of 177).

        Batches take tiles of consecutive frames while they have one shape, so a stream of small frames
        runs full batches; the outputs equal `upscale`'s frame by frame (up to a backend whose results
        depend on the batch size). A frame is held back only while its tiles wait for a batch to fill:
        at most `batch_size` frames at once, and no more than `hold_bytes` of them beyond the first.
        When the frames end, the last, partial batch runs. An output leaves as soon as its frame's last
        tile is stitched, so a consumer waits for no more than one batch.
        """
        held: deque[FrameWork[K]] = deque()
        for key, image in frames:
            work = self._plan(key, *self._pad(image), finish)
            if held and sum(w.nbytes for w in held) + work.nbytes > self._hold_bytes:
                while held:
                    yield from self._run_batch(held)
            held.append(work)
            while held and self._batch_ready(held):
                yield from self._run_batch(held)
        while held:
            yield from self._run_batch(held)

    def _pad(self, image: np.ndarray) -> tuple[np.ndarray, int, int]:
        if image.ndim != 3 or 0 in image.shape:
            raise UpscaleError(f"image must be C x H x W with no empty side (got shape {image.shape})")
        _, height, width = image.shape
        return _pad(np.asarray(image, dtype=np.float32), self._requirement), height, width

    def _plan(
        self, key: K, padded: np.ndarray, height: int, width: int, finish: Finish | None = None
    ) -> FrameWork[K]:
        """The tiles of one padded frame, with the sizes that currently fit."""
        _, padded_h, padded_w = padded.shape
        if self._tile is None:
            # The tile that reads least for one tile per batch, then as many of them per batch as the
            # budget holds: smaller tiles waste more of their reads on overlap, and batching does not
            # win that back.
            tile_h, tile_w = choose_tile_shape(
                height,
                width,
                self._requirement,
                self._overlap,
                1,
                self._bytes_per_pixel,
                self._memory_budget,
                self._reuse_pixels,
                self._largest_input,
            )
        else:
            tile_h = tile_w = self._tile
        # A tile longer than the padded frame reads the same as one exactly as long; clamping it keeps
        # the halving after running out of memory from retrying identical tiles.
        tile_h = min(tile_h, padded_h, self._ceiling or padded_h)
        tile_w = min(tile_w, padded_w, self._ceiling or padded_w)
        context = context_pixels(min(tile_h, tile_w), self._overlap, self._requirement)
        tiles = plan_tiles(padded_h, padded_w, tile_h, context, tile_width=tile_w)
        return FrameWork(key, padded, height, width, (tile_h, tile_w), context, tiles, self._scale, finish)

    def _batch_limit(self, work: FrameWork) -> int:
        """The most tiles per batch, up to `batch_size`, whose estimated memory fits the budget."""
        if self._tile is not None or self._bytes_per_pixel <= 0 or self._memory_budget <= 0:
            return self.batch_size
        window = work.tiles[0].height * work.tiles[0].width * self._bytes_per_pixel
        return max(1, min(self.batch_size, self._memory_budget // window))

    def _batch_ready(self, held: deque[FrameWork]) -> bool:
        """Whether the first batch is as full as it can get: enough tiles of the first frame's shape, or
        a frame of another shape after them (tiles of different shapes never share a batch)."""
        shape = held[0].window
        waiting = 0
        for work in held:
            if work.window != shape:
                return True
            waiting += work.waiting
        return waiting >= self._batch_limit(held[0])

    def _run_batch(self, held: deque[FrameWork[K]]) -> Iterator[tuple[K, np.ndarray]]:
        """Infer the next batch (the waiting tiles of the first frames, of one shape) and yield every frame
        it finishes. After running out of memory, the sizes shrink and every held frame starts again."""
        shape, limit = held[0].window, self._batch_limit(held[0])
        taken: list[tuple[FrameWork[K], list[TileRegion]]] = []
        count = 0
        for work in held:
            if work.window != shape or count == limit:
                break
            regions = work.tiles[work.done : work.done + limit - count]
            taken.append((work, regions))
            count += len(regions)
        batch = np.stack([w.padded[:, t.top : t.bottom, t.left : t.right] for w, rs in taken for t in rs])
        try:
            result = np.asarray(self._infer(batch), dtype=np.float32)
        except OutOfMemory as error:
            self._shrink(count, max(held[0].tile), error)
            for index, work in enumerate(held):
                held[index] = self._plan(work.key, work.padded, work.height, work.width, work.finish)
            return
        channels = result.shape[1] if result.ndim == 4 else -1
        scale = self._scale
        expected = (count, channels, batch.shape[2] * scale, batch.shape[3] * scale)
        if result.shape != expected or any(not w.accepts(channels) for w, _ in taken):
            raise BackendError(
                f"the model returned shape {result.shape} for a batch of shape {batch.shape}; "
                f"expected N x C x H*{scale} x W*{scale} with the same C for every batch"
            )
        first = 0
        for work, regions in taken:
            work.stitch(regions, result[first : first + len(regions)])
            first += len(regions)
        while held and held[0].finished:
            work = held.popleft()
            self.tile_shape = work.tile
            yield work.key, work.output()

    def _shrink(self, count: int, tile: int, error: OutOfMemory) -> None:
        """After a batch of `count` tiles of side `tile` ran out of memory: batch 1 first, then halved
        tiles, down to 32 (or the frame's own size); raises OutOfMemory when nothing smaller is left."""
        if count > 1:
            self.batch_size = 1
        else:
            step = self._requirement.multiple_of
            floor = min(round_up(SMALLEST_TILE, step), tile)
            smaller = max(floor, tile // 2 // step * step)
            if smaller >= tile:
                raise OutOfMemory(
                    f"out of memory even with {tile}x{tile} tiles, one at a time",
                    hint="free memory on the device, use a lower precision, a smaller model "
                    "or another device",
                ) from error
            tile = smaller
        # Later frames start no larger, even where the budget would pick a larger tile for batch 1: it
        # is an estimate, and it was just wrong.
        self._ceiling = tile


def upscale_tiled(
    image: np.ndarray,
    infer: Infer,
    scale: int,
    requirement: SizeRequirement,
    tile: int | None,
    overlap: int,
    batch_size: int,
    bytes_per_pixel: int = 0,
    memory_budget: int = 0,
) -> np.ndarray:
    """Upscale one frame; a `Tiler` does the same and also remembers the sizes that fit."""
    tiler = Tiler(infer, scale, requirement, tile, overlap, batch_size, bytes_per_pixel, memory_budget)
    return tiler.upscale(image)


def _pad(image: np.ndarray, requirement: SizeRequirement) -> np.ndarray:
    """Pad the bottom and right of a C x H x W image to a size the model accepts."""
    for axis in (1, 2):
        size = image.shape[axis]
        pad = requirement.padded(size) - size
        if pad:
            widths = [(0, 0)] * 3
            widths[axis] = (0, pad)
            # Reflection needs a pixel beyond the one it mirrors about; tiny images repeat their edge.
            image = np.pad(image, widths, mode="reflect" if pad < size else "symmetric")
    return image
