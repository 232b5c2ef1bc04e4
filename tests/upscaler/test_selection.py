"""`--backend auto` by measured speed: candidates timed, the fastest kept per machine and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_weights
from upscaler import selection
from upscaler.models import load_model
from upscaler.options import BackendOptions, TileOptions
from upscaler.selection import MEASURE_FROM, choose_backend_by_speed, measure_backends, probe_size
from upscaler.values import Precision

TILES = TileOptions(memory_budget=1024**3)


@pytest.fixture
def loaded(tmp_path: Path):
    return load_model(tiny_weights(tmp_path, "compact"))


def test_a_long_job_measures_the_backends_and_keeps_the_fastest(tmp_path: Path, loaded, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(selection, "_candidates", lambda options: ["onnxruntime", "torch"])
    cache = tmp_path / "timings.json"
    options = BackendOptions(device="cpu", precision=Precision.FP32)
    choice = choose_backend_by_speed(loaded, options, TILES, (24, 32), items=None, cache_file=cache)
    kept = next(iter(json.loads(cache.read_text()).values()))
    assert set(kept["timings"]) == {"onnxruntime", "torch"}
    assert choice.name == kept["chosen"] == min(kept["timings"], key=kept["timings"].get)
    assert choice.reason.startswith("auto: the fastest measured now, a 32x24 frame in ")
    # The next job of that kind, however short, takes what was kept without measuring again.
    monkeypatch.setattr(selection, "measure_backends", lambda *args: pytest.fail("measured again"))
    again = choose_backend_by_speed(loaded, options, TILES, (24, 32), items=1, cache_file=cache)
    assert again.name == choice.name and "measured here before" in again.reason


def test_a_short_job_with_nothing_kept_takes_the_usual_order(tmp_path: Path, loaded, monkeypatch) -> None:
    monkeypatch.delenv("UPSCALER_MEASURE_FROM")
    monkeypatch.setattr(selection, "_candidates", lambda options: ["onnxruntime", "torch"])
    monkeypatch.setattr(selection, "measure_backends", lambda *args: pytest.fail("measured"))
    options = BackendOptions(device="cpu", precision=Precision.FP32)
    choice = choose_backend_by_speed(
        loaded, options, TILES, (24, 32), items=MEASURE_FROM - 1, cache_file=tmp_path / "t.json"
    )
    assert choice.name == "torch"
    assert (
        choice.reason
        == f"auto: the usual order; a job of {MEASURE_FROM} frames or more measures the backends"
    )


def test_a_backend_that_cannot_run_the_precision_is_left_out(loaded) -> None:
    pytest.importorskip("onnxruntime")
    timings = measure_backends(
        loaded,
        ["onnxruntime", "torch"],
        BackendOptions(device="cpu", precision=Precision.BF16),
        TILES,
        (16, 16),
    )
    assert set(timings) == {"torch"} and timings["torch"] > 0


def test_the_probe_is_the_input_size_up_to_1080_lines() -> None:
    assert probe_size(180, 320) == (180, 320)
    assert probe_size(2160, 3840) == (607, 1080)
    assert probe_size(4000, 100) == (1080, 27)
