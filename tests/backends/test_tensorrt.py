"""The TensorRT backend: what it says where it cannot run, and (on a GPU with TensorRT) what it does."""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from backends.tensorrt import GPU_MISSING, TENSORRT_MISSING, TensorRTBackend, fp16_problem
from tests.conftest import tiny_weights
from upscaler.errors import BackendError, UpscaleError
from upscaler.models import load_model
from upscaler.options import BackendOptions
from upscaler.values import Precision

HAS_TENSORRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(not HAS_TENSORRT, reason="needs an NVIDIA GPU, CUDA torch and tensorrt")


@pytest.fixture
def model(tmp_path: Path):
    return load_model(tiny_weights(tmp_path, "compact"))


def test_without_a_gpu_check_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends.tensorrt as module

    monkeypatch.setattr(module, "nvidia_driver_present", lambda: False)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert TensorRTBackend().check() == GPU_MISSING == "TensorRT needs an NVIDIA GPU with CUDA; none found"
    # with TensorRT installed, CUDA itself is asked
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert TensorRTBackend().check() == GPU_MISSING


def test_without_tensorrt_check_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends.tensorrt as module

    monkeypatch.setattr(module, "nvidia_driver_present", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert TensorRTBackend().check() == TENSORRT_MISSING
    assert TENSORRT_MISSING == "tensorrt is not installed: pip install 'upscaler[tensorrt]'"


def test_build_and_open_raise_the_check_problem(model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    backend = TensorRTBackend()
    with pytest.raises(BackendError, match="none found"):
        backend.build_engine(model)
    with pytest.raises(BackendError, match="none found"):
        backend.open(model, BackendOptions(device="cuda"))


def test_the_module_loads_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    import backends.tensorrt as module
    import backends.tensorrt_engine as engine

    importlib.reload(engine)
    importlib.reload(module)
    assert module.TensorRTBackend.name == "tensorrt"


def test_profiles_for_build_engine_options(model) -> None:
    backend = TensorRTBackend()
    tiled = backend.plan_profile(model, tile_size=128, overlap=8, batch=2)
    assert tiled.max == (2, 3, 144, 144) and tiled.min == (1, 3, 1, 1)
    with_default_overlap = backend.plan_profile(model, tile_size=128)
    assert with_default_overlap.max[2] == 128 + 2 * model.info.overlap
    explicit = backend.plan_profile(
        model, min_shape=(1, 3, 8, 8), opt_shape=(2, 3, 64, 64), max_shape=(2, 3, 128, 128)
    )
    assert explicit.opt == (2, 3, 64, 64)
    with pytest.raises(UpscaleError, match="go together"):
        backend.plan_profile(model, min_shape=(1, 3, 8, 8))
    with pytest.raises(UpscaleError, match="exclude each other"):
        backend.plan_profile(
            model, tile_size=64, min_shape=(1, 3, 8, 8), opt_shape=(1, 3, 8, 8), max_shape=(1, 3, 8, 8)
        )
    default = backend.plan_profile(model)
    assert default.max[0] == 1 and default.max[2] == default.max[3]


def test_tile_size_must_suit_the_model(tmp_path: Path) -> None:
    from upscaler.models import build_model, save_weights

    config = {"num_in_ch": 3, "num_out_ch": 3, "scale": 1, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}
    x1 = load_model(
        save_weights(build_model("rrdbnet", config), tmp_path / "x1.safetensors", "rrdbnet", config)
    )
    with pytest.raises(UpscaleError, match="--tile-size: must be a multiple of 4"):
        TensorRTBackend().plan_profile(x1, tile_size=66)


def test_fp16_output_checks() -> None:
    bright = np.full((1, 3, 4, 4), 0.5, np.float32)
    assert fp16_problem(bright, np.full((1, 3, 16, 16), 0.4, np.float32)) is None
    assert fp16_problem(bright, np.full((1, 3, 16, 16), np.nan, np.float32)) == "NaN or Inf values"
    assert fp16_problem(bright, np.full((1, 3, 16, 16), np.inf, np.float32)) == "NaN or Inf values"
    assert fp16_problem(bright, np.zeros((1, 3, 16, 16), np.float32)) == "an all-black image"
    # a black input may give a black output
    assert fp16_problem(np.zeros((1, 3, 4, 4), np.float32), np.zeros((1, 3, 16, 16), np.float32)) is None


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize(("precision", "atol"), [(Precision.FP32, 1e-3), (Precision.FP16, 2e-2)])
def test_engine_matches_pytorch_and_is_cached(
    model, tmp_path: Path, precision: Precision, atol: float
) -> None:
    backend = TensorRTBackend(cache_dir=tmp_path / "cache")
    profile = backend.plan_profile(model, tile_size=32, overlap=4, batch=2)
    built = backend.build_engine(model, precision, profile, output=tmp_path / "copy.engine")
    assert not built.reused and built.path.is_file() and built.sidecar.is_file()
    assert (tmp_path / "copy.engine").is_file() and (tmp_path / "copy.json").is_file()
    assert backend.build_engine(model, precision, profile).reused
    assert any((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))
    x = np.random.default_rng(0).random((3, 3, 40, 24), dtype=np.float32)
    with torch.inference_mode():
        expected = model.module(torch.from_numpy(x)).numpy()
    with backend.open(model, BackendOptions(device="cuda", precision=precision)) as session:
        assert session.engine_path == built.path
        out = session.infer(x)  # three tiles, engine batch 2: run as 2 + 1
        with pytest.raises(BackendError, match="outside the engine's profile"):
            session.infer(np.zeros((1, 3, 48, 48), np.float32))
    np.testing.assert_allclose(out, expected, atol=atol)


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
def test_a_bad_fp16_first_batch_falls_back_to_fp32(model, tmp_path: Path, monkeypatch) -> None:
    import backends.tensorrt_engine as module

    backend = TensorRTBackend(cache_dir=tmp_path)
    profile = backend.plan_profile(model, tile_size=32, overlap=4, batch=1)
    backend.build_engine(model, Precision.FP16, profile)
    monkeypatch.setattr(module, "fp16_problem", lambda batch, output: "NaN or Inf values")
    x = np.random.default_rng(0).random((1, 3, 40, 40), dtype=np.float32)
    with backend.open(model, BackendOptions(device="cuda", precision=Precision.FP16)) as session:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = session.infer(x)
        assert session.precision is Precision.FP32 and session.fallback == "NaN or Inf values"
        assert any("switching to an fp32 engine" in str(w.message) for w in caught)
    with torch.inference_mode():
        expected = model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
def test_first_use_builds_an_engine_and_says_so(model, tmp_path: Path) -> None:
    backend = TensorRTBackend(cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="building a fp16 engine"):
        session = backend.open(model, BackendOptions(device="cuda", precision=Precision.FP16))
    with session:
        assert session.infer(np.full((1, 3, 32, 32), 0.5, np.float32)).shape == (1, 3, 128, 128)


class FakeTensorRT:
    """Just enough of the TensorRT 10 builder API to follow what `build_serialized_engine` asks of it."""

    __version__ = "10.9.0"

    def __init__(self, with_bf16: bool = True, parses: bool = True) -> None:
        self.calls: list[tuple] = []
        fake = self
        flags = {"TF32": "TF32"} | ({"BF16": "BF16"} if with_bf16 else {})
        self.BuilderFlag = type("BuilderFlag", (), flags)
        self.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {"STRONGLY_TYPED": 0})
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})
        severity = type("Severity", (), {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3})

        class ILogger:
            Severity = severity

            def __init__(self) -> None:
                pass

        class TimingCache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+timings"

        class Config:
            def __init__(self) -> None:
                self.cache = None

            def __getattr__(self, name):
                return lambda *args: fake.calls.append((name, *args))

            def create_timing_cache(self, data: bytes) -> TimingCache:
                fake.calls.append(("create_timing_cache", bytes(data)))
                return TimingCache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch: bool) -> None:
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class OptimizationProfile:
            def set_shape(self, name, smallest, best, largest) -> None:
                fake.calls.append(("set_shape", name, smallest, best, largest))

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags: int):
                fake.calls.append(("create_network", flags))
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> OptimizationProfile:
                return OptimizationProfile()

            def build_serialized_network(self, network, config) -> bytes:
                return b"serialized engine"

        class OnnxParser:
            num_errors = 0 if parses else 1

            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse_from_file", Path(path).name))
                return parses

            def get_error(self, index: int) -> str:
                return "Unsupported operator Foo"

        self.ILogger, self.Builder, self.OnnxParser = ILogger, Builder, OnnxParser


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch):
    import backends.tensorrt_engine as module

    def install(**options) -> FakeTensorRT:
        fake = FakeTensorRT(**options)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        module.trt_logger.cache_clear()
        return fake

    yield install
    module.trt_logger.cache_clear()


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.FP32])
def test_fp16_and_fp32_build_strongly_typed_with_the_profile(
    fake_tensorrt, tmp_path: Path, precision
) -> None:
    from backends.tensorrt_engine import build_serialized_engine
    from backends.tensorrt_plan import Profile

    fake = fake_tensorrt()
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"old")
    profile = Profile((1, 3, 1, 1), (2, 3, 96, 96), (2, 3, 96, 96))
    plan = build_serialized_engine(tmp_path / "m.onnx", precision, profile, timing, workspace=1 << 30)
    assert plan == b"serialized engine"
    assert ("create_network", 1) in fake.calls  # 1 << STRONGLY_TYPED
    assert ("parse_from_file", "m.onnx") in fake.calls
    assert ("set_shape", "input", profile.min, profile.opt, profile.max) in fake.calls
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 30) in fake.calls
    assert ("create_timing_cache", b"old") in fake.calls
    assert timing.read_bytes() == b"old+timings"
    assert (("clear_flag", "TF32") in fake.calls) is (precision is Precision.FP32)
    assert not any(call[0] == "set_flag" for call in fake.calls)


def test_bf16_builds_weakly_typed_with_the_flag_where_tensorrt_has_it(fake_tensorrt, tmp_path: Path) -> None:
    from backends.tensorrt_engine import build_serialized_engine
    from backends.tensorrt_plan import Profile

    profile = Profile((1, 3, 1, 1), (1, 3, 64, 64), (1, 3, 64, 64))
    fake = fake_tensorrt()
    build_serialized_engine(tmp_path / "m.onnx", Precision.BF16, profile, tmp_path / "t.cache")
    assert ("create_network", 0) in fake.calls and ("set_flag", "BF16") in fake.calls
    fake_tensorrt(with_bf16=False)
    with pytest.raises(BackendError, match="no bf16 builder flag") as info:
        build_serialized_engine(tmp_path / "m.onnx", Precision.BF16, profile, tmp_path / "t.cache")
    assert "fp16" in info.value.hint


def test_a_graph_tensorrt_cannot_parse_is_one_error(fake_tensorrt, tmp_path: Path) -> None:
    from backends.tensorrt_engine import build_serialized_engine
    from backends.tensorrt_plan import Profile

    fake_tensorrt(parses=False)
    profile = Profile((1, 3, 1, 1), (1, 3, 64, 64), (1, 3, 64, 64))
    with pytest.raises(BackendError, match="TensorRT cannot parse m.onnx: Unsupported operator Foo"):
        build_serialized_engine(tmp_path / "m.onnx", Precision.FP16, profile, tmp_path / "t.cache")
