"""LPIPS (v0.1, AlexNet): its definition, its loading, and the checks of a weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from upscaler.errors import ModelError
from upscaler.models.lpips import LPIPS, LPIPS_FILE, SCALE, SHIFT, expected_shapes, load_lpips


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random LPIPS weights; the heads non-negative, as LPIPS keeps them while training."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in expected_shapes().items():
        tensor = torch.randn(*shape, generator=generator) * (0.05 if key.endswith("weight") else 0.01)
        state[key] = tensor.abs() if key.startswith("heads") else tensor
    return state


def network(seed: int = 0) -> LPIPS:
    lpips = LPIPS()
    lpips.load_state_dict(random_state(seed))
    return lpips


def picture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth picture with edges: gradients and a square."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([x, y, (x + y) / 2], axis=2)
    image[size // 4 : size // 2, size // 4 : size // 2] = [0.9, 0.2, 0.1]
    return image.astype(np.float32)


def reference(state: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS written again from its definition with torch's functional ops."""
    shift = torch.tensor(SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE).view(1, 3, 1, 1)
    strides, pads = (4, 1, 1, 1, 1), (2, 2, 1, 1, 1)
    total = torch.zeros(a.shape[0])
    xa, xb = ((t * 2 - 1 - shift) / scale for t in (a, b))
    for index in range(5):
        weight, bias = state[f"backbone.{index}.weight"], state[f"backbone.{index}.bias"]
        xa = F.relu(F.conv2d(xa, weight, bias, strides[index], pads[index]))
        xb = F.relu(F.conv2d(xb, weight, bias, strides[index], pads[index]))
        diff = (F.normalize(xa, dim=1, eps=0) - F.normalize(xb, dim=1, eps=0)) ** 2
        total += (diff * state[f"heads.{index}.weight"].view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
        if index < 2:
            xa, xb = F.max_pool2d(xa, 3, 2), F.max_pool2d(xb, 3, 2)
    return total


def test_matches_the_definition() -> None:
    state = random_state(1)
    lpips = LPIPS()
    lpips.load_state_dict(state)
    a = torch.rand(2, 3, 70, 90, generator=torch.Generator().manual_seed(2))
    b = (a + 0.1 * torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    with torch.no_grad():
        got = lpips(a, b)
    assert got.shape == (2,)
    assert torch.allclose(got, reference(state, a, b), rtol=1e-4, atol=1e-7)


def test_identical_images_give_zero_and_more_distortion_gives_more() -> None:
    lpips = network()
    clean = picture()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    distances = [lpips.distance(np.clip(clean + level * noise, 0, 1), clean) for level in (0.02, 0.06, 0.2)]
    assert lpips.distance(clean, clean) == 0.0
    assert 0 < distances[0] < distances[1] < distances[2]
    blurred = (clean + np.roll(clean, 1, 0) + np.roll(clean, -1, 0) + np.roll(clean, 1, 1)) / 4
    assert lpips.distance(blurred, clean) > 0
    with pytest.raises(ValueError, match="two H x W x 3 images of one size"):
        lpips.distance(clean, clean[:32])


def test_loads_its_file_and_refuses_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="LPIPS needs its weights") as missing:
        load_lpips()
    assert missing.value.hint == "run `upscale weights install lpips`"

    state = random_state()
    save_file(state, str(tmp_path / LPIPS_FILE))
    loaded = load_lpips()
    assert torch.equal(loaded.heads[2].weight, state["heads.2.weight"])

    wrong = dict(state)
    wrong["backbone.0.weight"] = torch.zeros(64, 3, 7, 7)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ModelError, match=r"not LPIPS \(AlexNet, v0.1\) weights: backbone.0.weight"):
        load_lpips(tmp_path / "wrong.safetensors")

    data = (tmp_path / LPIPS_FILE).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a valid LPIPS weights file") as cut:
        load_lpips(tmp_path / "cut.safetensors")
    assert "upscale weights install lpips" in cut.value.hint


@pytest.mark.slow
def test_the_installed_weights_give_the_literatures_bicubic_figure_on_set5() -> None:
    """Bicubic x4 on Set5 reads 0.3406 with LPIPS v0.1 AlexNet, as the SR literature prints it."""
    from tests.conftest import REAL_WEIGHTS_DIR, shared_data
    from upscaler.quality.evaluation import evaluate_pairs, load_eval_set

    path = REAL_WEIGHTS_DIR / LPIPS_FILE
    if not path.is_file():
        pytest.skip(f"needs the LPIPS weights at {path} (upscale weights install lpips)")
    lpips = load_lpips(path)
    evaluation = load_eval_set(shared_data("eval", "Set5"), 4)
    pairs = [(pair.lr, pair.hr) for pair in evaluation.pairs]
    report = evaluate_pairs(None, pairs, 4, perceptual=lpips.distance)
    assert report.mean_bicubic_lpips == pytest.approx(0.3406, abs=5e-4)
    assert lpips.distance(pairs[0][1], pairs[0][1]) == 0.0
