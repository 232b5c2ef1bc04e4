"""The Python API: `upscaler.open_model` and what an opened model upscales."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tests.upscaler.video_checks as check
import tests.upscaler.video_clips as clips
import upscaler
from tests.conftest import tiny_weights
from upscaler.errors import InputError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    weights = tiny_weights(tmp_path_factory.mktemp("api"), "compact")
    with upscaler.open_model(weights, backend="torch", device="cpu") as opened:
        yield opened


def test_import_upscaler_is_light() -> None:
    code = "import sys, upscaler; print(sorted(m for m in ('torch', 'av', 'cv2') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_opened_model_says_what_it_is(model) -> None:
    assert model.scale == 4 and model.backend == "torch"
    # Auto (the default precision) says why it chose: a file of the tests' own has no measured costs.
    assert model.description.startswith(
        "model tiny-compact.safetensors (compact, x4) on backend torch in fp32 (auto: "
    )


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((6, 5, 3), np.uint8),
        ((6, 5, 3), np.uint16),
        ((6, 5, 3), np.float32),
        ((6, 5), np.uint8),
        ((6, 5, 4), np.uint8),
    ],
)
def test_numpy_images_come_back_in_their_own_kind(model, shape, dtype) -> None:
    rng = np.random.default_rng(0)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    image = (rng.random(shape) * top).astype(dtype)
    out = model.upscale(image)
    assert out.dtype == dtype and out.shape == (24, 20, *shape[2:])


def test_rgb_matches_the_tiled_model_and_alpha_is_kept(model) -> None:
    rgb = np.random.default_rng(1).random((8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(model.upscale(rgb), np.clip(model.upscaler.upscale(rgb), 0, 1), atol=1e-6)
    rgba = np.concatenate([np.full((8, 8, 3), 128, np.uint8), np.full((8, 8, 1), 255, np.uint8)], axis=2)
    assert (model.upscale(rgba)[:, :, 3] == 255).all()


def test_pil_images_and_outscale(model) -> None:
    picture = Image.new("RGB", (10, 6), (200, 30, 40))
    out = model.upscale(picture, outscale=2)
    assert isinstance(out, Image.Image) and out.size == (20, 12) and out.mode == "RGB"


def test_bad_arrays_are_one_error(model) -> None:
    with pytest.raises(InputError, match="got shape"):
        model.upscale(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="uint8, uint16 or float"):
        model.upscale(np.zeros((4, 4, 3), np.int32))


def test_files_and_videos(model, tmp_path: Path) -> None:
    Image.new("RGB", (9, 7), (10, 20, 30)).save(tmp_path / "small.png")
    written = model.upscale_file(tmp_path / "small.png", tmp_path / "big.png")
    assert Image.open(written).size == (36, 28)
    source = clips.cfr_clip(tmp_path, frames=6)
    report = model.upscale_video(source, tmp_path / "big.mp4", crf=30)
    assert report.frames == 6
    decoded = check.decode(tmp_path / "big.mp4")
    assert (decoded.width, decoded.height) == (256, 192) and len(decoded.hashes) == 6


def test_an_unknown_model_is_the_clis_error() -> None:
    with pytest.raises(upscaler.errors.UpscaleError, match="neither a known model id nor an existing file"):
        upscaler.open_model("no-such-model")
