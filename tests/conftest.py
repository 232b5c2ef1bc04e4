"""Shared fixtures: tiny models built in code, saved as weights files the tools load."""

from __future__ import annotations

from pathlib import Path

import pytest

from upscaler.system.places import weights_dir
from upscaler.testing import TINY_CONFIGS  # one set of tiny models for every test and plugin

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The user's installed VGG19/LPIPS weights, for the slow tests on the real files; read before the
# session points every folder of the tool at a temporary one (_private_caches).
REAL_WEIGHTS_DIR = weights_dir()


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when this checkout has none (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared test data at {path} (present in the project's CI, not in a clone)")
    return path


def tiny_weights(tmp_path: Path, arch: str, seed: int = 0) -> Path:
    """A randomly initialised tiny model of `arch`, saved as .safetensors; returns the file."""
    import torch

    from upscaler.models import build_model, save_weights

    torch.manual_seed(seed)
    config = TINY_CONFIGS[arch]
    module = build_model(arch, config)
    path = tmp_path / f"tiny-{arch}.safetensors"
    save_weights(module, path, arch, config)
    return path


@pytest.fixture
def compact_weights(tmp_path: Path) -> Path:
    return tiny_weights(tmp_path, "compact")


MEASURE_VARIABLE = "UPSCALER_MEASURE_FROM"


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory: pytest.TempPathFactory):
    """Every cache and weights folder of the tool points into the test run's own temporary folder, so
    the suite never writes into the user's home (ONNX exports, engines, installed weights)."""
    import os

    base = tmp_path_factory.mktemp("home")
    saved = {name: os.environ.get(name) for name in _PRIVATE_FOLDERS}
    for name, folder in _PRIVATE_FOLDERS.items():
        os.environ[name] = str(base / folder)
    # Every test makes models of its own: measuring backends for each would cost seconds a test.
    # tests/upscaler/test_selection.py measures on purpose.
    saved[MEASURE_VARIABLE] = os.environ.get(MEASURE_VARIABLE)
    os.environ[MEASURE_VARIABLE] = "1000000000"
    yield base
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# Environment variable -> folder under the session's temporary home.
_PRIVATE_FOLDERS = {
    "UPSCALER_CACHE_DIR": "cache",
    "UPSCALER_WEIGHTS_DIR": "weights",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_DATA_HOME": "xdg-data",
}
