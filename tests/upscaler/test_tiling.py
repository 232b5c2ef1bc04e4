from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from upscaler.errors import BackendError, OutOfMemory, UpscaleError
from upscaler.tiling.layout import choose_tile_shape, context_pixels, plan_tiles
from upscaler.tiling.runner import Tiler, upscale_tiled
from upscaler.tiling.stitch import FrameWork
from upscaler.values import SizeRequirement

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nearest(scale: int, requirement: SizeRequirement | None = None):
    """A model with no receptive field: any tiling must reproduce it exactly."""
    requirement = requirement or SizeRequirement()

    def infer(batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.ndim == 4
        assert requirement.accepts(batch.shape[2]) and requirement.accepts(batch.shape[3]), batch.shape
        return batch.repeat(scale, axis=2).repeat(scale, axis=3)

    return infer


def upscale_nearest(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=1).repeat(scale, axis=2)


def tiny_model():
    """Three 3x3 convolutions and a x2 pixel shuffle: receptive-field radius 3 input pixels."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 3 * 4, 3, padding=1),
        torch.nn.PixelShuffle(2),
        torch.nn.Sigmoid(),  # pointwise, so the radius stays 3; keeps outputs inside the clip range
    ).eval()

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    return infer


def untiled(image: np.ndarray, infer, scale: int, requirement: SizeRequirement) -> np.ndarray:
    _, height, width = image.shape
    pad = ((0, 0), (0, requirement.padded(height) - height), (0, requirement.padded(width) - width))
    output = infer(np.pad(image, pad, mode="reflect")[None])[0]
    return np.clip(output[:, : height * scale, : width * scale], 0, 1)


def random_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((channels, height, width), dtype=np.float32)


@st.composite
def plans(draw):
    tile = draw(st.integers(1, 300))
    # Bounded by the tile so a plan never has more than a few thousand tiles.
    height = draw(st.integers(1, min(1200, tile * 40)))
    width = draw(st.integers(1, min(1200, tile * 40)))
    return height, width, tile, draw(st.integers(0, 50))


@FAST
@given(plans())
@example((1, 1, 1, 0))
@example((1, 1, 256, 16))
@example((3, 517, 256, 16))
@example((3, 517, 64, 5))
@example((1000, 7, 32, 8))
@example((1000, 7, 1, 0))
def test_plan_owns_every_pixel_once_with_equal_tiles_inside_the_image(plan):
    height, width, tile, overlap = plan
    tiles = plan_tiles(height, width, tile, overlap)
    owners = np.zeros((height, width), dtype=np.int32)
    window = min(tile + 2 * overlap, height), min(tile + 2 * overlap, width)
    for t in tiles:
        assert (t.height, t.width) == window
        assert t.top >= 0 and t.left >= 0 and t.bottom <= height and t.right <= width
        assert t.top <= t.own_top < t.own_bottom <= t.bottom
        assert t.left <= t.own_left < t.own_right <= t.right
        # Context on every side that has a neighbour, so the model sees past what the tile owns.
        assert t.own_top == 0 or t.own_top - t.top >= overlap
        assert t.own_left == 0 or t.own_left - t.left >= overlap
        assert t.own_bottom == height or t.bottom - t.own_bottom >= overlap
        assert t.own_right == width or t.right - t.own_right >= overlap
        owners[t.own_top : t.own_bottom, t.own_left : t.own_right] += 1
    assert (owners == 1).all()


def test_a_tile_that_covers_the_image_is_the_whole_image():
    (only,) = plan_tiles(288, 270, 256, 16)  # 256 + 2 * 16 = 288
    assert (only.top, only.left, only.bottom, only.right) == (0, 0, 288, 270)
    assert (only.own_top, only.own_left, only.own_bottom, only.own_right) == (0, 0, 288, 270)


@st.composite
def runs(draw):
    multiple_of = draw(st.sampled_from([1, 2, 3, 4, 8]))
    minimum = draw(st.sampled_from([1, 8, 16]))
    tile = multiple_of * draw(st.integers(-(-8 // multiple_of), 80 // multiple_of))
    return (
        draw(st.integers(1, 160)),
        draw(st.integers(1, 160)),
        tile,
        draw(st.integers(0, 12)),
        draw(st.integers(1, 4)),
        SizeRequirement(multiple_of, minimum),
        draw(st.integers(1, 5)),
    )


@FAST
@given(runs())
@example((1, 1, 8, 2, 2, SizeRequirement(4, 8), 4))
@example((3, 517, 64, 8, 2, SizeRequirement(4, 1), 4))
@example((1000, 7, 64, 8, 3, SizeRequirement(1, 1), 2))
def test_output_is_the_input_times_scale_without_seams(run):
    height, width, tile, overlap, scale, requirement, batch_size = run
    image = random_image(height, width, channels=2)
    infer = nearest(scale, requirement)
    output = upscale_tiled(image, infer, scale, requirement, tile, overlap, batch_size)
    assert output.shape == (2, height * scale, width * scale)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, upscale_nearest(image, scale), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "multiple_of", "batch_size"),
    [
        (37, 53, 16, 6, 1, 1),
        (64, 64, 32, 6, 4, 4),
        (5, 70, 16, 8, 4, 3),
        (100, 33, 24, 7, 4, 2),
        (45, 45, 8, 6, 1, 5),
        (30, 20, 64, 6, 4, 4),  # one tile: just pad, infer and crop
    ],
)
def test_tiled_output_equals_untiled_when_overlap_covers_the_receptive_field(
    height, width, tile, overlap, multiple_of, batch_size
):
    # The blend uses the inner half of the overlap, so the overlap is twice the radius.
    infer, scale = tiny_model(), 2
    requirement = SizeRequirement(multiple_of)
    image = random_image(height, width)
    tiled = upscale_tiled(image, infer, scale, requirement, tile, overlap, batch_size)
    np.testing.assert_allclose(tiled, untiled(image, infer, scale, requirement), rtol=0, atol=1e-4)


def test_constant_tiles_stitch_to_the_constant():
    def constant(batch: np.ndarray) -> np.ndarray:
        return np.full((batch.shape[0], 3, batch.shape[2] * 3, batch.shape[3] * 3), 0.3, np.float32)

    output = upscale_tiled(random_image(77, 91), constant, 3, SizeRequirement(), 16, 6, 4)
    np.testing.assert_allclose(output, 0.3, rtol=1e-6)


def test_blending_spreads_the_step_between_tiles_across_the_overlap():
    rng = np.random.default_rng(1)

    def one_value_per_tile(batch: np.ndarray) -> np.ndarray:
        values = rng.random(batch.shape[0], dtype=np.float32)[:, None, None, None]
        return np.broadcast_to(values, (batch.shape[0], 3, batch.shape[2] * 2, batch.shape[3] * 2)).copy()

    overlap, scale = 8, 2
    image = random_image(100, 90)
    output = upscale_tiled(image, one_value_per_tile, scale, SizeRequirement(), 32, overlap, 1)
    spread = output.max() - output.min()
    steepest = max(np.abs(np.diff(output, axis=1)).max(), np.abs(np.diff(output, axis=2)).max())
    # A hard seam would jump by up to the spread in one pixel; a linear blend across the overlap's inner
    # half (overlap * scale output pixels) climbs at most spread / (overlap * scale) per pixel.
    assert steepest <= spread / (overlap * scale) + 1e-6


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 2), (9, 1), (1, 13)])
@pytest.mark.parametrize("tile", [None, 8, 32])
def test_tiny_images_are_padded_to_the_requirement_and_cropped_back(shape, tile):
    requirement = SizeRequirement(multiple_of=4, minimum=8)
    image = random_image(*shape)
    output = upscale_tiled(image, nearest(2, requirement), 2, requirement, tile, 2, 4)
    np.testing.assert_allclose(output, upscale_nearest(image, 2), rtol=0, atol=1e-6)


def test_out_of_memory_retries_with_batch_1_then_smaller_tiles_and_keeps_them():
    model, calls, refused = tiny_model(), [], []

    def small_tiles_only(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        if batch.shape[2] * batch.shape[3] > 48 * 48:
            refused.append(batch.shape)
            raise OutOfMemory("CUDA out of memory")
        return model(batch)

    requirement = SizeRequirement(4)
    image = random_image(150, 130)
    tiler = Tiler(small_tiles_only, 2, requirement, tile=128, overlap=6, batch_size=2)
    output = tiler.upscale(image)
    assert (tiler.tile_shape, tiler.batch_size) == ((32, 32), 1)
    assert [shape[0] for shape in refused] == [2, 1, 1]  # batch 1 first, then tiles 64, then 32 fits
    expected = upscale_tiled(image, model, 2, requirement, 32, 6, 1)
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-6)

    refused.clear()
    tiler.upscale(random_image(150, 130, seed=1))
    assert not refused and tiler.tile_shape == (32, 32)


def test_out_of_memory_on_batches_only_keeps_the_tile_size():
    def one_tile_at_a_time(batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > 1:
            raise OutOfMemory("CUDA out of memory")
        return nearest(2)(batch)

    image = random_image(100, 100)
    tiler = Tiler(one_tile_at_a_time, 2, SizeRequirement(), tile=32, overlap=4, batch_size=4)
    np.testing.assert_allclose(tiler.upscale(image), upscale_nearest(image, 2), rtol=0, atol=1e-6)
    assert (tiler.tile_shape, tiler.batch_size) == ((32, 32), 1)


def test_after_out_of_memory_auto_tiles_grow_no_larger_on_later_frames():
    def windows_up_to_120(batch: np.ndarray) -> np.ndarray:
        if batch.shape[2] * batch.shape[3] > 120 * 120:
            raise OutOfMemory("CUDA out of memory")
        return nearest(1)(batch)

    # The budget holds a 200x200 window; the plan that reads least in it is 2 x 2 tiles of 144 (160x160
    # windows), which the device then refuses: halved to 72, and kept.
    budget = 200 * 200 * 4
    tiler = Tiler(windows_up_to_120, 1, SizeRequirement(4), None, 8, 4, 4, budget)
    tiler.upscale(random_image(300, 300))
    assert tiler.tile_shape == (72, 72)
    tiler.upscale(random_image(300, 300, seed=1))
    assert tiler.tile_shape == (72, 72)


def test_auto_tiles_read_least_then_batch_what_the_budget_holds():
    # A 300x300 window fits, but three of them per axis (tile 284) read 810k pixels; three of 196 + 2 * 8
    # read 404k. Two of those windows fit the budget at once, so they run in twos.
    shapes = batch_shapes(random_image(600, 600), None, bytes_per_pixel=1, memory_budget=300 * 300)
    assert {shape[2:] for shape in shapes} == {(212, 212)}
    assert [shape[0] for shape in shapes] == [2, 2, 2, 2, 1]


@pytest.mark.parametrize(("shape", "smallest"), [((200, 150), 32), ((20, 18), 20)])
def test_out_of_memory_at_the_smallest_tile_is_raised_with_the_size_tried(shape, smallest):
    def never_fits(batch: np.ndarray) -> np.ndarray:
        raise OutOfMemory("CUDA out of memory")

    tiler = Tiler(never_fits, 2, SizeRequirement(4), tile=128, overlap=4, batch_size=4)
    with pytest.raises(OutOfMemory, match=f"even with {smallest}x{smallest} tiles") as raised:
        tiler.upscale(random_image(*shape))
    assert raised.value.hint
    assert isinstance(raised.value.__cause__, OutOfMemory)


def batch_shapes(image: np.ndarray, tile: int | None, **options) -> list[tuple[int, ...]]:
    shapes = []

    def record(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return nearest(1)(batch)

    upscale_tiled(image, record, 1, SizeRequirement(4), tile, 8, 4, **options)
    return shapes


def _reads(height: int, width: int, tile: tuple[int, int], overlap: int, requirement: SizeRequirement):
    """(pixels read by all tiles, tiles, window pixels) of a plan, as the tiler makes it."""
    context = context_pixels(min(tile), overlap, requirement)
    tiles = plan_tiles(requirement.padded(height), requirement.padded(width), tile[0], context, tile[1])
    return sum(t.height * t.width for t in tiles), len(tiles), tiles[0].height * tiles[0].width


@pytest.mark.parametrize("budget", [40_000, 500_000, 3_000_000, 20_000_000])
def test_auto_tile_fits_the_budget_and_reads_least(budget):
    image, bytes_per_pixel, requirement = random_image(300, 460), 12, SizeRequirement(4)
    tile = choose_tile_shape(300, 460, requirement, 8, 1, bytes_per_pixel, budget)
    assert all(side % 4 == 0 for side in tile) and min(tile) >= 32 and tile <= (300, 460)
    reads, _, _ = _reads(300, 460, tile, 8, requirement)
    shapes = batch_shapes(image, None, bytes_per_pixel=bytes_per_pixel, memory_budget=budget)
    assert max(n * h * w * bytes_per_pixel for n, _, h, w in shapes) <= budget
    # No tile shape that fits (one tile per batch, sides within the budget's square unless it is one
    # tile for the whole image) reads fewer pixels.
    square = int((budget // bytes_per_pixel) ** 0.5)
    for rows in range(32, 301, 4):
        for columns in range(32, 461, 4):
            other, count, window = _reads(300, 460, (rows, columns), 8, requirement)
            context = context_pixels(min(rows, columns), 8, requirement)
            longest = max(min(rows + 2 * context, 300), min(columns + 2 * context, 460))
            if window * bytes_per_pixel <= budget and (count == 1 or longest <= square):
                assert other >= reads, ((rows, columns), other, tile, reads)


def test_auto_tile_prefers_one_large_tile_to_a_full_batch_of_smaller_ones():
    # Four 166x166 windows fit, and so does one 300x300 window, which needs no blending at all.
    assert choose_tile_shape(300, 300, SizeRequirement(), 8, 4, 1, 4 * 166 * 166) == (300, 300)


def test_auto_tile_counts_windows_past_reuse_pixels_as_slower():
    # 1280x720 with compact's figures: one tile fits the budget, but its activations would be
    # faulted in on every call; tiles that keep them reused read 15% more and win.
    requirement = SizeRequirement()
    assert choose_tile_shape(720, 1280, requirement, 16, 1, 1100, 1024**3) == (720, 1280)
    tile = choose_tile_shape(720, 1280, requirement, 16, 1, 1100, 1024**3, reuse_pixels=122_000)
    reads, count, window = _reads(720, 1280, tile, 16, requirement)
    assert count > 1 and window <= 122_000 and reads < 1.4 * 720 * 1280
    # Where every tile would have to be tiny, one penalised whole frame still reads least.
    assert choose_tile_shape(180, 320, requirement, 32, 1, 9344, 1024**3, reuse_pixels=14_300) == (180, 320)


def test_auto_tile_keeps_windows_within_the_largest_input():
    # 1280x720 fits the budget as one tile, but not an engine whose profile ends at 1024 x 1024.
    requirement = SizeRequirement()
    assert choose_tile_shape(720, 1280, requirement, 16, 1, 1100, 1024**3) == (720, 1280)
    tile = choose_tile_shape(720, 1280, requirement, 16, 1, 1100, 1024**3, largest_input=(1024, 1024))
    tiles = plan_tiles(720, 1280, tile[0], context_pixels(min(tile), 16, requirement), tile_width=tile[1])
    assert len(tiles) > 1 and all(t.height <= 1024 and t.width <= 1024 for t in tiles)


def test_auto_tile_without_a_budget_runs_the_image_in_one_tile():
    assert batch_shapes(random_image(301, 199), None) == [(1, 3, 304, 200)]
    assert choose_tile_shape(301, 199, SizeRequirement(4), 8, 4, 0, 0) == (304, 200)


def test_auto_tile_is_no_smaller_than_32_or_the_image():
    assert choose_tile_shape(500, 500, SizeRequirement(4), 8, 4, 12, 1) == (32, 32)
    assert choose_tile_shape(10, 9, SizeRequirement(4), 8, 4, 12, 1) == (12, 12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile": 250}, "tile size must be a multiple of 4 for this model (got 250)"),
        ({"tile": 0}, "tile size must be positive (got 0)"),
        ({"tile": 64, "overlap": -1}, "overlap must be >= 0 (got -1)"),
        ({"tile": None, "overlap": -1}, "overlap must be >= 0 (got -1)"),
        ({"batch_size": 0}, "batch size must be positive (got 0)"),
        ({"scale": 0}, "scale must be a positive integer (got 0)"),
    ],
)
def test_bad_options_say_what_to_change(options, message):
    arguments = {"scale": 2, "tile": 64, "overlap": 8, "batch_size": 4} | options
    with pytest.raises(UpscaleError) as raised:
        Tiler(nearest(2), requirement=SizeRequirement(4), **arguments)
    assert str(raised.value) == message


def test_bad_images_and_plans_say_what_is_wrong():
    with pytest.raises(UpscaleError, match=r"C x H x W .*\(4, 4\)"):
        upscale_tiled(np.zeros((4, 4), np.float32), nearest(2), 2, SizeRequirement(), 64, 8, 4)
    with pytest.raises(UpscaleError, match="image size must be positive"):
        plan_tiles(0, 5, 64, 8)
    with pytest.raises(UpscaleError, match="overlap must be >= 0"):
        plan_tiles(5, 5, 64, -2)


def test_a_model_returning_the_wrong_size_is_a_backend_error():
    with pytest.raises(BackendError, match="returned shape"):
        upscale_tiled(random_image(20, 20), nearest(3), 2, SizeRequirement(), 64, 8, 4)


# ------------------------------------------------------------------------- batches across frames


def recording(infer):
    """`infer` that also keeps the shape of every batch it ran."""
    shapes: list[tuple[int, ...]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return infer(batch)

    run.shapes = shapes
    return run


def frames_of(shapes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    return [random_image(height, width, seed=seed + index) for index, (height, width) in enumerate(shapes)]


# One tile per frame, and several (a 50x61 frame is 4 x 4 tiles of 16 plus context).
@pytest.mark.parametrize(("size", "tile"), [((20, 28), 64), ((50, 61), 16)])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("count", [1, 5, 7])
def test_a_stream_gives_each_frame_what_upscaling_it_alone_gives(size, tile, batch_size, count):
    model = tiny_model()
    frames = frames_of([size] * count)
    alone = Tiler(model, 2, SizeRequirement(4), tile=tile, overlap=6, batch_size=batch_size)
    expected = [alone.upscale(frame) for frame in frames]
    infer = recording(model)
    tiler = Tiler(infer, 2, SizeRequirement(4), tile=tile, overlap=6, batch_size=batch_size)
    keys, outputs = zip(*tiler.upscale_stream(enumerate(frames)), strict=True)
    assert keys == tuple(range(count))
    # Stitching is the same arithmetic in the same order; only the convolutions differ, by a rounding
    # step (about 6e-8 here): PyTorch's CPU kernels may block a batch of 1 and one of 4 differently.
    for output, wanted in zip(outputs, expected, strict=True):
        assert output.shape == wanted.shape
        np.testing.assert_allclose(output, wanted, rtol=0, atol=1e-6)
    # Every batch is full but the last: tiles of consecutive frames share batches.
    tiles = len(plan_tiles(*size, tile, 6)) if tile < max(size) else 1
    total = tiles * count
    full, rest = divmod(total, batch_size)
    assert [shape[0] for shape in infer.shapes] == [batch_size] * full + ([rest] if rest else [])


def test_a_stream_of_a_model_without_receptive_field_is_exact():
    frames = frames_of([(9, 13)] * 7)
    tiler = Tiler(nearest(3), 3, SizeRequirement(), tile=64, overlap=4, batch_size=4)
    for (_, output), frame in zip(tiler.upscale_stream(enumerate(frames)), frames, strict=True):
        np.testing.assert_array_equal(output, upscale_nearest(frame, 3))


def test_tiles_of_different_shapes_never_share_a_batch():
    shapes = [(20, 20), (20, 20), (24, 16), (20, 20), (20, 20), (20, 20), (40, 40)]
    frames = frames_of(shapes)
    infer = recording(nearest(2))
    tiler = Tiler(infer, 2, SizeRequirement(4), tile=16, overlap=4, batch_size=4)
    outputs = [output for _, output in tiler.upscale_stream(enumerate(frames))]
    for output, frame in zip(outputs, frames, strict=True):
        np.testing.assert_allclose(output, upscale_nearest(frame, 2), rtol=0, atol=1e-6)
    # A 40x40 frame is four 24x24 windows (tile 16 + context 4 on each side); the others one each.
    assert [shape[0] for shape in infer.shapes] == [2, 1, 3, 4]
    assert [shape[2:] for shape in infer.shapes] == [(20, 20), (24, 16), (20, 20), (24, 24)]


class Pulled:
    """Frames handed to a stream one by one, counting how many it took."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.taken = 0

    def __iter__(self):
        for index, frame in enumerate(self.frames):
            self.taken += 1
            yield index, frame


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_a_stream_holds_at_most_a_batch_of_frames_and_lets_each_go_when_done(batch_size):
    pulled = Pulled(frames_of([(8, 8)] * 10))
    tiler = Tiler(nearest(2), 2, SizeRequirement(), tile=64, overlap=4, batch_size=batch_size)
    held = []
    for key, _ in tiler.upscale_stream(pulled):
        held.append(pulled.taken - key)
    assert max(held) <= batch_size
    # A full batch is run as soon as its last frame arrives, before the next frame is taken.
    assert held[: 10 // batch_size * batch_size][batch_size - 1 :: batch_size] == [1] * (10 // batch_size)


def test_frames_beyond_the_hold_budget_are_not_held_to_fill_batches():
    frames = frames_of([(8, 8)] * 5)
    infer = recording(nearest(2))
    tiler = Tiler(infer, 2, SizeRequirement(), tile=64, overlap=4, batch_size=4, hold_bytes=1)
    outputs = [output for _, output in tiler.upscale_stream(enumerate(frames))]
    assert [shape[0] for shape in infer.shapes] == [1] * 5
    for output, frame in zip(outputs, frames, strict=True):
        np.testing.assert_array_equal(output, upscale_nearest(frame, 2))


def test_the_memory_budget_bounds_a_batch_across_frames():
    # The budget holds two 12x12 windows: batches of two frames, though batch_size allows four.
    infer = recording(nearest(1))
    tiler = Tiler(infer, 1, SizeRequirement(4), None, 8, 4, bytes_per_pixel=1, memory_budget=2 * 12 * 12)
    list(tiler.upscale_stream(enumerate(frames_of([(12, 12)] * 5))))
    assert [shape[0] for shape in infer.shapes] == [2, 2, 1]


def test_out_of_memory_in_a_batch_across_frames_retries_every_held_frame_with_batch_1():
    refused = []

    def one_at_a_time(batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > 1:
            refused.append(batch.shape)
            raise OutOfMemory("CUDA out of memory")
        return nearest(2)(batch)

    frames = frames_of([(10, 10)] * 6)
    tiler = Tiler(one_at_a_time, 2, SizeRequirement(), tile=64, overlap=4, batch_size=3)
    outputs = list(tiler.upscale_stream(enumerate(frames)))
    assert [key for key, _ in outputs] == list(range(6))
    for (_, output), frame in zip(outputs, frames, strict=True):
        np.testing.assert_array_equal(output, upscale_nearest(frame, 2))
    assert (tiler.batch_size, len(refused)) == (1, 1)


def test_out_of_memory_in_a_stream_halves_the_tiles_then_gives_up_with_the_size_tried():
    def windows_up_to_40(batch: np.ndarray) -> np.ndarray:
        if batch.shape[2] * batch.shape[3] > 40 * 40:
            raise OutOfMemory("CUDA out of memory")
        return nearest(2)(batch)

    frames = frames_of([(70, 70)] * 3)
    tiler = Tiler(windows_up_to_40, 2, SizeRequirement(4), tile=64, overlap=4, batch_size=1)
    for (_, output), frame in zip(tiler.upscale_stream(enumerate(frames)), frames, strict=True):
        np.testing.assert_allclose(output, upscale_nearest(frame, 2), rtol=0, atol=1e-6)
    assert tiler.tile_shape == (32, 32)

    def never(batch: np.ndarray) -> np.ndarray:
        raise OutOfMemory("CUDA out of memory")

    tiler = Tiler(never, 2, SizeRequirement(4), tile=64, overlap=4, batch_size=4)
    with pytest.raises(OutOfMemory, match="even with 32x32 tiles"):
        list(tiler.upscale_stream(enumerate(frames)))


def test_a_model_changing_its_channels_between_batches_of_one_frame_is_a_backend_error():
    calls = [0]

    def fickle(batch: np.ndarray) -> np.ndarray:
        calls[0] += 1
        out = nearest(2)(batch)
        return out if calls[0] == 1 else out[:, :2]

    tiler = Tiler(fickle, 2, SizeRequirement(), tile=16, overlap=4, batch_size=1)
    with pytest.raises(BackendError, match="same C for every batch"):
        tiler.upscale(random_image(40, 40))


@pytest.mark.parametrize(("tile", "overlap", "weighed"), [(32, 8, False), (16, 32, True)])
def test_weights_are_summed_only_where_the_ramps_do_not_add_up_to_one(tile, overlap, weighed):
    # Ramps add up to 1 across each boundary unless a tile owns less than the overlap; only then is a
    # plane of weight sums kept and divided by. Both give the model's untiled output.
    image = random_image(100, 90)
    work = FrameWork(0, image, 100, 90, (tile, tile), overlap, plan_tiles(100, 90, tile, overlap), 2)
    assert work._weighed is weighed
    tiler = Tiler(nearest(2), 2, SizeRequirement(), tile=tile, overlap=overlap, batch_size=3)
    np.testing.assert_allclose(tiler.upscale(image), upscale_nearest(image, 2), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "tile", "requirement"), [((100, 90), 32, SizeRequirement()), ((75, 61), 16, SizeRequirement(4))]
)
def test_rows_go_to_finish_a_row_of_tiles_at_a_time_and_equal_the_whole_frame(size, tile, requirement):
    def per_tile(batch: np.ndarray) -> np.ndarray:
        # Each tile's output differs from its neighbours' where they overlap, so a blend that lost the
        # rows carried from one band to the next would show.
        offset = batch.mean(axis=(1, 2, 3), keepdims=True) / 4
        return nearest(2, requirement)(batch) + offset

    image = random_image(*size)
    handed: list[int] = []

    def finish(rows: np.ndarray) -> np.ndarray:
        assert rows.dtype == np.float32 and rows.min() >= 0 and rows.max() <= 1
        handed.append(rows.shape[1])
        return np.round(rows.transpose(1, 2, 0) * 255).astype(np.uint8)

    whole = Tiler(per_tile, 2, requirement, tile=tile, overlap=8, batch_size=3).upscale(image)
    tiler = Tiler(per_tile, 2, requirement, tile=tile, overlap=8, batch_size=3)
    [(key, banded)] = list(tiler.upscale_stream([("frame", image)], finish))
    assert key == "frame" and len(handed) > 2 and sum(handed) == size[0] * 2
    assert banded.shape == (size[0] * 2, size[1] * 2, 3) and banded.dtype == np.uint8
    np.testing.assert_array_equal(banded, np.round(whole.transpose(1, 2, 0) * 255).astype(np.uint8))


def test_finish_takes_a_one_tile_frame_whole():
    image, handed = random_image(40, 30), []
    tiler = Tiler(nearest(2), 2, SizeRequirement(), tile=None, overlap=8)
    [(_, done)] = list(tiler.upscale_stream([(0, image)], lambda rows: handed.append(rows.shape) or rows))
    assert handed == [(3, 80, 60)]
    np.testing.assert_array_equal(done, upscale_nearest(image, 2))
