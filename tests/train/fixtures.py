"""Small synthetic training images and tiny recipes for the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from train.recipes.config import Recipe, merge, resolve
from train.recipes.files import load_table

# Tiny generators per architecture: a few thousand parameters, milliseconds per step.
TINY_MODELS = {
    "compact": {"num_feat": 8, "num_conv": 2},
    "rrdbnet": {"num_feat": 8, "num_block": 1, "num_grow_ch": 4},
    "srresnet": {"num_feat": 8, "num_block": 2},
}


def make_images(folder: Path, count: int = 4, size: int = 48, seed: int = 0) -> Path:
    """`count` PNGs of overlapping coloured rectangles, slightly blurred: edges that bicubic smears."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = np.zeros((size, size, 3))
        for _ in range(max(6, size // 6)):
            x0, y0 = rng.integers(0, size - 8, 2)
            w, h = rng.integers(6, max(8, size // 2), 2)
            image[y0 : y0 + h, x0 : x0 + w] = rng.random(3)
        image = cv2.GaussianBlur(image, (0, 0), 1.0)
        cv2.imwrite(str(folder / f"img{index}.png"), np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    return folder


def tiny_recipe(name: str, hr: Path, val: Path | None = None, **sections: dict[str, Any]) -> Recipe:
    """Bundled recipe `name` with a tiny generator, small patches, no workers, and `sections` laid over."""
    table = load_table(name)
    gan = "discriminator" in table
    base = {
        "model": {"config": TINY_MODELS[table["model"]["arch"]]},
        "data": {
            "hr": [str(hr)],
            "val": str(val) if val else "",
            "patch_size": 32,  # both discriminators take 32-pixel crops
            "batch_size": 2,
            "workers": 0,
        },
        "train": {"iterations": 2, "log_every": 1, "val_every": 2, "checkpoint_every": 2, "pretrained": ""},
        "losses": {"perceptual_layer": "conv1_2"},
    }
    if gan:
        base["discriminator"] = {"num_feat": 8}
    return resolve(merge(table, base), [sections])


def random_vgg(recipe: Recipe):
    """A random VGG19 stack cut where the recipe reads it: the tests' explicit stand-in for ImageNet VGG."""
    from upscaler.models.vgg import VGG19Features

    if not recipe.losses.uses_vgg:
        return None
    return VGG19Features(recipe.losses.perceptual_layer, recipe.losses.perceptual_before_activation)
