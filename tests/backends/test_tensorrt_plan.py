"""The TensorRT backend's pure-Python parts: profile planning, cache keys, sidecars. No GPU needed."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.tensorrt_plan import (
    EngineKey,
    Profile,
    check_batch_shape,
    default_profile,
    engine_path,
    explicit_profile,
    find_engine,
    plan_profile,
    read_sidecar,
    sidecar_path,
    tile_window,
    write_sidecar,
)
from upscaler.errors import BackendError, UpscaleError
from upscaler.tiling.runner import Tiler
from upscaler.values import SizeRequirement


def shapes_sent(height: int, width: int, requirement: SizeRequirement, tile: int, overlap: int, batch: int):
    """Every batch shape the tiler sends for one frame."""
    seen: set[tuple[int, ...]] = set()

    def infer(x: np.ndarray) -> np.ndarray:
        seen.add(tuple(x.shape))
        return np.zeros_like(x)

    Tiler(infer, scale=1, requirement=requirement, tile=tile, overlap=overlap, batch_size=batch).upscale(
        np.zeros((3, height, width), np.float32)
    )
    return seen


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    multiple_of=st.sampled_from([1, 2, 4]),
    tile_steps=st.integers(4, 24),
    overlap=st.integers(0, 12),
    batch=st.integers(1, 4),
)
def test_the_profile_covers_every_tile_the_tiler_sends(
    height, width, multiple_of, tile_steps, overlap, batch
):
    requirement = SizeRequirement(multiple_of=multiple_of)
    tile = tile_steps * multiple_of
    profile = plan_profile(3, requirement, tile, overlap, batch)
    for shape in shapes_sent(height, width, requirement, tile, overlap, batch):
        assert profile.covers(shape), (shape, profile)


@pytest.mark.parametrize(("height", "width"), [(200, 120), (120, 200), (500, 90), (40, 30)])
def test_portrait_landscape_and_small_frames_are_covered(height: int, width: int) -> None:
    requirement = SizeRequirement(multiple_of=4)
    profile = plan_profile(3, requirement, 64, 10, 4)
    sent = shapes_sent(height, width, requirement, 64, 10, 4)
    assert all(profile.covers(shape) for shape in sent)
    assert profile.max == (4, 3, 84, 84) and profile.opt == profile.max
    assert profile.min == (1, 3, 4, 4)


def test_the_window_grows_the_overlap_until_the_model_accepts_it() -> None:
    assert tile_window(64, 10, SizeRequirement()) == 84
    assert tile_window(64, 9, SizeRequirement(multiple_of=4)) == 84
    assert tile_window(60, 3, SizeRequirement(multiple_of=4)) == 68
    with pytest.raises(UpscaleError, match="--tile-size: must be positive"):
        tile_window(0, 4, SizeRequirement())


def test_default_profile_fits_the_memory_budget() -> None:
    profile = default_profile(
        3, SizeRequirement(multiple_of=4), bytes_per_pixel=16_000, memory_budget=2 * 1024**3
    )
    side = profile.max[2]
    assert side % 4 == 0 and side * side * 16_000 <= 2 * 1024**3 < (side + 4) ** 2 * 16_000
    assert profile.max[0] == 1 and profile.min == (1, 3, 4, 4)
    cheap = default_profile(3, SizeRequirement(), bytes_per_pixel=100, memory_budget=2 * 1024**3)
    assert cheap.max == (1, 3, 1024, 1024)


def test_explicit_shapes_are_checked() -> None:
    profile = explicit_profile(3, (1, 3, 16, 16), (2, 3, 64, 64), (4, 3, 128, 96))
    assert profile.covers((3, 3, 100, 20)) and not profile.covers((5, 3, 64, 64))
    with pytest.raises(UpscaleError, match="--max-shape: the model takes 3 channels"):
        explicit_profile(3, (1, 3, 16, 16), (1, 3, 16, 16), (1, 1, 16, 16))
    with pytest.raises(UpscaleError, match="height must satisfy min <= opt <= max"):
        explicit_profile(3, (1, 3, 64, 16), (1, 3, 32, 16), (1, 3, 128, 16))


def test_batch_shapes_outside_the_profile_get_a_clear_error() -> None:
    profile = plan_profile(3, SizeRequirement(), 64, 8, 2)
    check_batch_shape(profile, (2, 3, 80, 80))
    check_batch_shape(profile, (7, 3, 80, 10))  # more tiles than the engine's batch: the session splits them
    with pytest.raises(BackendError, match="tiles of 96x80 are outside the engine's profile") as info:
        check_batch_shape(profile, (1, 3, 96, 80))
    assert "build-engine" in info.value.hint
    with pytest.raises(BackendError, match=r"expected a batch of shape \(N, 3, H, W\)"):
        check_batch_shape(profile, (1, 4, 32, 32))


def key(**changes) -> EngineKey:
    base = EngineKey(
        weights_digest="0123456789abcdef",
        tensorrt_version="10.9.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        precision="fp16",
        profile=Profile((1, 3, 1, 1), (4, 3, 256, 256), (4, 3, 256, 256)),
        opset=17,
        export_format=1,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    "change",
    [
        {"weights_digest": "fedcba9876543210"},
        {"tensorrt_version": "10.10.0"},
        {"gpu_name": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": "8.9"},
        {"precision": "fp32"},
        {"profile": Profile((1, 3, 1, 1), (4, 3, 320, 320), (4, 3, 320, 320))},
        {"opset": 18},
        {"export_format": 2},
    ],
)
def test_every_part_of_the_key_changes_its_digest(change: dict) -> None:
    assert key().digest() == key().digest()
    assert key(**change).digest() != key().digest()


def test_engine_file_names_say_what_they_are(tmp_path: Path) -> None:
    path = engine_path(tmp_path, key(), "Real ESRGAN x4+.pth")
    assert path.parent == tmp_path / "tensorrt"
    assert path.name == f"Real_ESRGAN_x4_-fp16-{key().digest()}.engine"
    assert sidecar_path(path).suffix == ".json"


def test_sidecar_round_trip_and_damage(tmp_path: Path) -> None:
    engine = engine_path(tmp_path, key(), "esrgan")
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"plan")
    write_sidecar(engine, key(), {"model": "esrgan", "fp32_layers": []})
    data = read_sidecar(engine)
    assert data is not None and data["model"] == "esrgan"
    assert EngineKey.from_fields(data["key"]) == key()
    assert json.loads(sidecar_path(engine).read_text())["key"]["profile"]["max"] == [4, 3, 256, 256]
    sidecar_path(engine).write_text("{ not json")
    assert read_sidecar(engine) is None
    write_sidecar(engine, key(), {})
    tampered = json.loads(sidecar_path(engine).read_text())
    tampered["key"]["gpu_name"] = "something else"
    sidecar_path(engine).write_text(json.dumps(tampered))
    assert read_sidecar(engine) is None


def build_fake(cache: Path, engine_key: EngineKey, age: int = 0) -> Path:
    engine = engine_path(cache, engine_key, "model")
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_bytes(b"plan")
    write_sidecar(engine, engine_key, {})
    stamp = 1_700_000_000 - age
    os.utime(engine, (stamp, stamp))
    return engine


def test_find_engine_never_takes_a_stale_one(tmp_path: Path) -> None:
    assert find_engine(tmp_path, key()) is None
    build_fake(tmp_path, key(tensorrt_version="10.0.1"))
    build_fake(tmp_path, key(gpu_name="NVIDIA A100"))
    build_fake(tmp_path, key(precision="fp32"))
    assert find_engine(tmp_path, key()) is None
    assert find_engine(tmp_path, key(), any_profile=True) is None
    other_profile = key(profile=Profile((1, 3, 1, 1), (1, 3, 512, 512), (1, 3, 512, 512)))
    older = build_fake(tmp_path, other_profile, age=100)
    newest = build_fake(tmp_path, key(profile=Profile((1, 3, 1, 1), (2, 3, 64, 64), (2, 3, 64, 64))), age=10)
    assert find_engine(tmp_path, key()) is None
    assert find_engine(tmp_path, key(), any_profile=True) == newest
    assert find_engine(tmp_path, other_profile) == older
    exact = build_fake(tmp_path, key(), age=1000)
    assert find_engine(tmp_path, key(), any_profile=True) == exact
