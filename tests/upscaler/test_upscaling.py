"""The model, a backend session and tiling joined: what every job upscales frames with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_CONFIGS, tiny_weights
from upscaler.backend import DEFAULT_BATCH, largest_input, preferred_batch
from upscaler.errors import UpscaleError
from upscaler.models import load_model
from upscaler.options import BackendOptions, TileOptions
from upscaler.upscaling import open_upscaler


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_tiles_with_the_models_overlap_hint_equal_the_whole_frame(tmp_path: Path, arch: str) -> None:
    model = load_model(tiny_weights(tmp_path, arch))
    rgb = np.random.default_rng(0).random((37, 45, 3), dtype=np.float32)
    with torch.inference_mode():
        whole = model.module(torch.from_numpy(rgb.transpose(2, 0, 1)[None].copy()))[0].numpy()
    expected = np.clip(whole.transpose(1, 2, 0), 0, 1)
    with open_upscaler(model, "torch", BackendOptions(device="cpu"), TileOptions(tile_size=16)) as upscaler:
        out = upscaler.upscale(rgb)
        assert upscaler.tiler.tile_shape == (16, 16)
    assert out.shape == (37 * 4, 45 * 4, 3)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_auto_tile_size_fits_the_memory_budget(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    budget = 64 * model.info.bytes_per_pixel * 64  # room for a batch of about one 64x64 window
    options = TileOptions(tile_size=None, batch_size=1, memory_budget=budget)
    with open_upscaler(model, "torch", BackendOptions(device="cpu"), options) as upscaler:
        out = upscaler.upscale(np.zeros((200, 150, 3), np.float32))
        tile_h, tile_w = upscaler.tiler.tile_shape
    assert out.shape == (800, 600, 3)
    overlap = model.info.overlap
    assert (tile_h + 2 * overlap) * (tile_w + 2 * overlap) * model.info.bytes_per_pixel <= budget
    assert min(tile_h, tile_w) >= 32


def test_frames_of_the_wrong_channel_count_are_refused(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    options = BackendOptions(device="cpu")
    with (
        open_upscaler(model, "torch", options, TileOptions()) as upscaler,
        pytest.raises(UpscaleError, match="expected an H x W x 3 image"),
    ):
        upscaler.upscale(np.zeros((8, 8, 4), np.float32))


# A frame that is one tile, and one of several 16-pixel tiles.
@pytest.mark.parametrize(("size", "tile"), [((18, 30), None), ((37, 45), 16)])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_a_stream_of_frames_gives_what_each_frame_alone_gives(
    tmp_path: Path, size: tuple[int, int], tile: int | None, batch_size: int
) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    frames = [np.random.default_rng(seed).random((*size, 3), dtype=np.float32) for seed in range(7)]
    options = TileOptions(tile_size=tile, batch_size=batch_size)
    with open_upscaler(model, "torch", BackendOptions(device="cpu"), options) as upscaler:
        alone = [upscaler.upscale(frame) for frame in frames]
        infer, batches = upscaler.tiler._infer, []
        upscaler.tiler._infer = lambda batch: batches.append(batch.shape[0]) or infer(batch)
        streamed = list(upscaler.upscale_stream((f"frame {n}", frame) for n, frame in enumerate(frames)))
    assert [key for key, _ in streamed] == [f"frame {n}" for n in range(7)]
    # PyTorch's CPU convolutions may round a batch of 4 differently from a batch of 1 (by ~1e-7).
    for (_, output), expected in zip(streamed, alone, strict=True):
        # An H x W x C view of the C x H x W output, which the caller may change in place.
        assert output.shape == (size[0] * 4, size[1] * 4, 3) and output.flags.writeable
        assert output.transpose(2, 0, 1).flags.c_contiguous
        np.testing.assert_allclose(output, expected, rtol=0, atol=1e-6)
    assert max(batches) == batch_size and batches.count(batch_size) >= len(batches) - 1


def test_a_stream_fails_on_a_frame_of_the_wrong_channel_count(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    frames = [(0, np.zeros((8, 8, 3), np.float32)), (1, np.zeros((8, 8, 4), np.float32))]
    with (
        open_upscaler(model, "torch", BackendOptions(device="cpu"), TileOptions()) as upscaler,
        pytest.raises(UpscaleError, match="expected an H x W x 3 image"),
    ):
        list(upscaler.upscale_stream(frames))


def test_batch_size_defaults_to_what_the_session_prefers(tmp_path: Path) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    cpu = BackendOptions(device="cpu")
    with open_upscaler(model, "torch", cpu, TileOptions()) as upscaler:
        assert upscaler.session.preferred_batch == 1 and upscaler.tiler.batch_size == 1
    with open_upscaler(model, "torch", cpu, TileOptions(batch_size=3)) as upscaler:
        assert upscaler.tiler.batch_size == 3  # a given --batch-size wins

    class Plain:  # a third party's session that says nothing
        def infer(self, batch):
            return batch

        def close(self):
            pass

    assert preferred_batch(Plain()) == DEFAULT_BATCH == 4


def test_auto_tiles_stay_within_the_sessions_largest_input(tmp_path: Path, monkeypatch) -> None:
    # A frame that would run as one tile, on a session that takes at most 48 x 64 (as an engine's
    # profile does): every batch fits it, and the frame comes out as one tile would make it.
    from backends.pytorch import TorchSession

    model = load_model(tiny_weights(tmp_path, "compact"))
    rgb = np.random.default_rng(1).random((90, 150, 3), dtype=np.float32)
    with open_upscaler(model, "torch", BackendOptions(device="cpu"), TileOptions()) as upscaler:
        whole = upscaler.upscale(rgb)
        assert upscaler.tiler.tile_shape == (90, 150)
    monkeypatch.setattr(TorchSession, "largest_input", (48, 64), raising=False)
    with open_upscaler(model, "torch", BackendOptions(device="cpu"), TileOptions()) as upscaler:
        shapes = []
        infer = upscaler.tiler._infer

        def recording(batch: np.ndarray) -> np.ndarray:
            shapes.append(batch.shape)
            return infer(batch)

        upscaler.tiler._infer = recording
        tiled = upscaler.upscale(rgb)
    assert len(shapes) > 1 and all(h <= 48 and w <= 64 for _, _, h, w in shapes), shapes
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def test_largest_input_is_none_unless_a_session_states_two_positive_sides() -> None:
    class Stated:
        largest_input = (1024, 768)

    class Odd:
        largest_input = (1024, 0)

    assert largest_input(Stated()) == (1024, 768)
    assert largest_input(Odd()) is None and largest_input(object()) is None
