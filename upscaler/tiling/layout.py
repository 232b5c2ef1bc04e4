"""Where a frame's tiles go: their spans along each axis, and the tile shape that reads the fewest
pixels within a memory budget. Pure arithmetic on sizes.
"""

from __future__ import annotations

import math
from functools import lru_cache

from upscaler.errors import UpscaleError
from upscaler.values import SizeRequirement, TileRegion

# Below this side, tiles cost more in overlap than they save in memory.
SMALLEST_TILE = 32


def plan_tiles(
    height: int, width: int, tile: int, overlap: int, tile_width: int | None = None
) -> list[TileRegion]:
    """Tiles, row by row, that together own every pixel of a `height` x `width` image exactly once.

    Each tile reads `tile + 2 * overlap` rows (`tile_width + 2 * overlap` columns; square tiles when
    `tile_width` is None), or the whole axis when that is shorter, so all tiles have one shape and can
    be batched; tiles at the image's edges are shifted inward rather than cut short. What a tile owns
    has at least `overlap` pixels of what it reads on every side that is not the image's border.
    """
    if height < 1 or width < 1:
        raise UpscaleError(f"image size must be positive (got {height}x{width})")
    tile_width = tile if tile_width is None else tile_width
    check_tile(tile, overlap)
    check_tile(tile_width, overlap)
    rows = _axis_spans(height, tile, overlap)
    columns = _axis_spans(width, tile_width, overlap)
    return [
        TileRegion(top, left, bottom, right, own_top, own_left, own_bottom, own_right)
        for top, bottom, own_top, own_bottom in rows
        for left, right, own_left, own_right in columns
    ]


def _axis_spans(size: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, end, own_start, own_end) of each tile along one axis."""
    window = min(tile + 2 * overlap, size)
    if window == size:
        return [(0, size, 0, size)]
    # Edge tiles need context on one side only, so they own `overlap` more than the `tile` the others
    # own; spreading the rest evenly keeps every owned part at most that long.
    inner = size - 2 * overlap
    count = -(-inner // tile)
    bounds = [0, *(overlap + i * inner // count for i in range(1, count)), size]
    spans = []
    for own_start, own_end in zip(bounds, bounds[1:], strict=False):
        start = min(max(own_start - overlap, 0), size - window)
        spans.append((start, start + window, own_start, own_end))
    return spans


# Eager PyTorch on the CPU page-faults afresh every activation bigger than glibc's largest mmap threshold
# (upscaler/system/allocator.py), on every call. Measured at 1280x720 (compact, fp32, 2 cores): one whole
# frame tile took 9.0 s, 15 of its 51 CPU seconds in the kernel; 330-pixel tiles (236 MB activations down to
# 34 MB) read 1.71 times the pixels in 11.0 s, almost none of it in the kernel: 1.4 times as fast a
# pixel. So where activations are not reused, a window is counted as this many times its pixels.
FAULT_COST = 1.4


# Cached because a video asks again for every frame, and the search walks every candidate.
@lru_cache(maxsize=64)
def choose_tile_shape(
    height: int,
    width: int,
    requirement: SizeRequirement,
    overlap: int,
    batch_size: int,
    bytes_per_pixel: int,
    memory_budget: int,
    reuse_pixels: int = 0,
    largest_input: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The tile (rows, columns owned) for a `height` x `width` image that reads the fewest pixels in all
    among those whose batches fit `memory_budget` bytes.

    A batch is estimated at `bytes_per_pixel` per input pixel of the padded tiles in it. Windows (what a
    tile reads) stay within the largest square that fits the budget, so tiles are no longer on a side
    than a square plan's would be (an engine built for those fits them), unless one covers the
    image. Where `largest_input` (rows, columns) is given, every window fits it, one tile or not: the
    most a session takes (a TensorRT engine's profile). Where `reuse_pixels` > 0, a window of more
    pixels than that is counted FAULT_COST times: its activations are faulted in afresh on every
    call. Ties go to fewer tiles. Tile sides are multiples of the model's `multiple_of`, at least 32
    (or the whole image, when smaller) even if that does not fit. A budget or a per-pixel cost of 0
    means one tile for the whole image.
    """
    check_batch(batch_size)
    if overlap < 0:
        raise UpscaleError(f"overlap must be >= 0 (got {overlap})")
    padded_h, padded_w = requirement.padded(height), requirement.padded(width)
    if bytes_per_pixel <= 0 or memory_budget <= 0:
        return padded_h, padded_w
    step = requirement.multiple_of
    smallest_h = min(round_up(SMALLEST_TILE, step), padded_h)
    smallest_w = min(round_up(SMALLEST_TILE, step), padded_w)
    largest_window = math.isqrt(memory_budget // bytes_per_pixel)

    # (tiles, window) along an axis, by (size, tile, context): the pairs below ask for each many times.
    spans: dict[tuple[int, int, int], tuple[int, int]] = {}

    def along(size: int, tile: int, context: int) -> tuple[int, int]:
        key = (size, tile, context)
        if key not in spans:
            found = _axis_spans(size, tile, context)
            spans[key] = (len(found), found[0][1] - found[0][0])
        return spans[key]

    best: tuple[float, int, int, int] | None = None
    for tile_h in _tile_candidates(padded_h, overlap, step, smallest_h):
        for tile_w in _tile_candidates(padded_w, overlap, step, smallest_w):
            context = context_pixels(min(tile_h, tile_w), overlap, requirement)
            (rows, window_h), (columns, window_w) = (
                along(padded_h, tile_h, context),
                along(padded_w, tile_w, context),
            )
            count = rows * columns
            fits = (
                window_h * window_w * min(batch_size, count) * bytes_per_pixel <= memory_budget
                and (count == 1 or max(window_h, window_w) <= largest_window)
                and (largest_input is None or (window_h <= largest_input[0] and window_w <= largest_input[1]))
            )
            if not fits:
                continue
            cost = float(count * window_h * window_w)
            if 0 < reuse_pixels < window_h * window_w:
                cost *= FAULT_COST
            candidate = (cost, count, tile_h, tile_w)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    return (smallest_h, smallest_w) if best is None else (best[2], best[3])


def _tile_candidates(size: int, overlap: int, step: int, smallest: int) -> list[int]:
    """Owned tile sides along an axis of `size` padded pixels worth trying: the whole axis, then for each
    count of tiles the shortest multiple of `step` that needs no more tiles than that, down to `smallest`."""
    candidates = [size]
    inner = size - 2 * overlap
    count = 2
    while inner > 0:
        tile = round_up(-(-inner // count), step)
        if tile < smallest:
            break
        if tile < candidates[-1]:
            candidates.append(tile)
        count += 1
    if candidates[-1] > smallest:
        candidates.append(smallest)
    return candidates


def context_pixels(tile: int, overlap: int, requirement: SizeRequirement) -> int:
    """The overlap to use: at least `overlap`, and making `tile + 2 * overlap` a size the model accepts.

    Tiles that read an accepted size need no padding of their own, so a tile at the frame's edge sees
    the same (padded) edge as the whole frame would, and the tiled output equals the untiled one.
    """
    context = overlap
    while not requirement.accepts(tile + 2 * context):
        context += 1
    return context


def check_tile(tile: int, overlap: int) -> None:
    if tile < 1:
        raise UpscaleError(f"tile size must be positive (got {tile})")
    if overlap < 0:
        raise UpscaleError(f"overlap must be >= 0 (got {overlap})")


def check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise UpscaleError(f"batch size must be positive (got {batch_size})")


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step
