"""Mixed precision: bf16 autocast anywhere, fp16 with a gradient scaler on CUDA only."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from tests.train.fixtures import make_images, random_vgg, tiny_recipe
from train.loop import train
from train.recipes.config import ConfigError
from upscaler.models import load_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _losses_are_finite(run: Path) -> bool:
    with (run / "train.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return all(
        math.isfinite(float(value)) for row in rows for key, value in row.items() if key != "iteration"
    )


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    data = make_images(tmp_path / "hr", count=2, size=32)
    recipe = tiny_recipe("compact-psnr", data, train={"precision": "bf16", "device": "cpu"})
    result = train(recipe, tmp_path / "run")
    assert result.weights is not None and _losses_are_finite(tmp_path / "run")
    # the weights stay float32; only the arithmetic was bf16
    assert next(load_model(result.weights).module.parameters()).dtype == torch.float32


def test_fp16_needs_cuda(tmp_path: Path) -> None:
    recipe = tiny_recipe("compact-psnr", tmp_path, train={"precision": "fp16", "device": "cpu"})
    with pytest.raises(ConfigError, match="train.precision: fp16 needs a CUDA device"):
        train(recipe, tmp_path / "run")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gan_recipe_on_cuda(precision: str, tmp_path: Path) -> None:
    data = make_images(tmp_path / "hr", count=2, size=136)
    recipe = tiny_recipe(
        "esrgan", data, val=data, train={"precision": precision, "device": "cuda", "iterations": 4}
    )
    result = train(recipe, tmp_path / "run", vgg=random_vgg(recipe))
    assert result.weights is not None and result.psnr is not None
    assert _losses_are_finite(tmp_path / "run")
    checkpoint = torch.load(result.checkpoint, weights_only=True)
    if precision == "fp16":
        assert checkpoint["scaler"]["scale"] > 0  # the gradient scaler ran and was saved
