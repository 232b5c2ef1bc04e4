from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

openvino = pytest.importorskip("openvino")

from backends.openvino import OpenVINOBackend, check_device, check_precision  # noqa: E402
from tests.conftest import tiny_weights  # noqa: E402
from upscaler.backend import discover_backends  # noqa: E402
from upscaler.errors import BackendError, OutOfMemory  # noqa: E402
from upscaler.models import load_model  # noqa: E402
from upscaler.options import BackendOptions  # noqa: E402
from upscaler.values import Precision  # noqa: E402

CAPABILITIES = list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
HAS_BF16 = "BF16" in CAPABILITIES


@pytest.fixture
def model(tmp_path: Path):
    return load_model(tiny_weights(tmp_path, "compact"))


def batch(n: int = 1, height: int = 16, width: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, height, width), dtype=np.float32)


def reference(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def test_the_plugin_is_found_through_its_entry_point() -> None:
    status = discover_backends()["openvino"]
    assert status.available and isinstance(status.backend, OpenVINOBackend)


def test_check_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert "pip install 'upscaler[openvino]'" in OpenVINOBackend().check()


def test_check_names_onnx_when_only_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    problem = OpenVINOBackend().check()
    assert problem.startswith("onnx is not installed") and "upscaler[openvino]" in problem


def test_fp32_is_set_explicitly_and_matches_torch_closely(model) -> None:
    import openvino.properties.hint as hints

    x = batch(2)
    with OpenVINOBackend().open(model, BackendOptions(device="cpu")) as session:
        # the CPU plugin would pick bf16 by itself on a CPU with AVX512_BF16 or AMX
        assert session.compiled.get_property(hints.inference_precision) == openvino.Type.f32
        out = session.infer(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(model, x), atol=1e-5)


@pytest.mark.skipif(not HAS_BF16, reason="OpenVINO's CPU plugin has no bf16 on this CPU")
def test_bf16_runs_in_bf16_within_a_looser_tolerance(model) -> None:
    import openvino.properties.hint as hints

    x = batch(1)
    with OpenVINOBackend().open(model, BackendOptions(device="cpu", precision=Precision.BF16)) as session:
        assert session.compiled.get_property(hints.inference_precision) == openvino.Type.bf16
        out = session.infer(x)
    expected = reference(model, x)
    np.testing.assert_allclose(out, expected, atol=5e-2)
    assert np.abs(out - expected).max() > 0  # really bf16, not fp32 under another name


def test_threads_are_passed_to_openvino(model) -> None:
    with OpenVINOBackend().open(model, BackendOptions(device="cpu", threads=1)) as session:
        assert session.threads == 1
        assert session.infer(batch(2)).shape == (2, 3, 64, 64)
    with pytest.raises(BackendError, match="--threads: must be at least 1"):
        OpenVINOBackend().open(model, BackendOptions(device="cpu", threads=0))


def test_shapes_change_within_one_session(model) -> None:
    with OpenVINOBackend().open(model, BackendOptions(device="cpu")) as session:
        for x in (batch(2, 16, 16), batch(1, 12, 20), batch(3, 16, 16), batch(1, 16, 16)):
            out = session.infer(x)
            assert out.shape == (x.shape[0], 3, x.shape[2] * 4, x.shape[3] * 4)
            np.testing.assert_allclose(out, reference(model, x), atol=1e-5)


def test_the_export_is_shared_with_the_cache(model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenVINOBackend(cache_dir=tmp_path).open(model, BackendOptions(device="cpu")) as session:
        first = session.export.path
    assert first.parent == tmp_path / "onnx" and model.digest in first.name and "fp32" in first.name

    def must_not_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("upscaler.export.export_onnx", must_not_export)
    with OpenVINOBackend(cache_dir=tmp_path).open(
        model, BackendOptions(device="cpu", precision=Precision.BF16 if HAS_BF16 else Precision.FP32)
    ) as again:
        assert again.export.path == first  # bf16 runs the fp32 graph with OpenVINO's bf16 hint


def test_devices() -> None:
    check_device("auto")
    check_device("cpu")
    for device in ("cuda", "cuda:1", "mps"):
        with pytest.raises(BackendError, match=f"runs on the CPU, not '{device}'") as info:
            check_device(device)
        assert "--device cpu" in info.value.hint


def test_precisions_the_cpu_cannot_run_are_refused() -> None:
    check_precision(Precision.FP32, [])
    check_precision(Precision.FP16, ["FP32", "FP16"])
    check_precision(Precision.BF16, ["FP32", "BF16"])
    with pytest.raises(BackendError, match="fp16 is not supported on the CPU"):
        check_precision(Precision.FP16, ["FP32", "BF16"])
    with pytest.raises(BackendError, match="no bf16 on this CPU") as info:
        check_precision(Precision.BF16, ["FP32"])
    assert "fp32" in info.value.hint


@pytest.mark.skipif("FP16" in CAPABILITIES, reason="this CPU runs fp16 in OpenVINO")
def test_fp16_on_this_cpu_is_refused_like_torch(model) -> None:
    with pytest.raises(BackendError, match="fp16 is not supported on the CPU"):
        OpenVINOBackend().open(model, BackendOptions(device="cpu", precision=Precision.FP16))


def test_a_cuda_device_is_refused_before_any_work(model, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_export(*args, **kwargs):
        raise AssertionError("exported")

    monkeypatch.setattr("backends.openvino.cached_onnx", must_not_export)
    with pytest.raises(BackendError, match="runs on the CPU"):
        OpenVINOBackend().open(model, BackendOptions(device="cuda"))


def test_a_batch_of_the_wrong_shape_is_refused(model) -> None:
    with (
        OpenVINOBackend().open(model, BackendOptions(device="cpu")) as session,
        pytest.raises(BackendError, match=r"expected a batch of shape \(N, 3, H, W\)"),
    ):
        session.infer(np.zeros((3, 16, 16), np.float32))


def test_a_closed_session_refuses_work(model) -> None:
    session = OpenVINOBackend().open(model, BackendOptions(device="cpu"))
    session.close()
    with pytest.raises(BackendError, match="closed"):
        session.infer(batch())


def test_allocation_failure_becomes_out_of_memory(model, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenVINOBackend().open(model, BackendOptions(device="cpu")) as session:

        class Exhausted:
            def infer(self, *args, **kwargs):
                raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp: std::bad_alloc")

        monkeypatch.setattr(session, "request", Exhausted())
        with pytest.raises(OutOfMemory, match="out of memory on the CPU"):
            session.infer(batch())


@pytest.mark.skipif("FP16" in CAPABILITIES, reason="this CPU runs fp16 in OpenVINO")
def test_a_precision_openvino_swaps_for_another_is_refused(model, monkeypatch: pytest.MonkeyPatch) -> None:
    # were the capability check to let fp16 through, OpenVINO would quietly run bf16 or f32 instead
    monkeypatch.setattr("backends.openvino.check_precision", lambda precision, capabilities: None)
    with pytest.raises(BackendError, match="OpenVINO would run fp16 as"):
        OpenVINOBackend().open(model, BackendOptions(device="cpu", precision=Precision.FP16))


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_it(monkeypatch) -> None:
    from backends import openvino as plugin
    from upscaler import precision
    from upscaler.options import BackendOptions
    from upscaler.values import Precision

    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AVX512_BF16")
    choice = plugin.OpenVINOBackend().auto_precision(BackendOptions(precision=Precision.AUTO))
    assert (choice.precision, choice.reason) == (Precision.BF16, "auto: this CPU has AVX512_BF16")
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: None)
    choice = plugin.OpenVINOBackend().auto_precision(BackendOptions(precision=Precision.AUTO))
    assert choice.precision is Precision.FP32


def test_rrdbnet_runs_its_split_dense_form(tmp_path: Path) -> None:
    # measured faster on OpenVINO (backends/openvino.py); the same function within fp32 rounding
    rrdb = load_model(tiny_weights(tmp_path, "rrdbnet"))
    with OpenVINOBackend(cache_dir=tmp_path).open(rrdb, BackendOptions(device="cpu")) as session:
        assert "split-dense" in session.export.path.name
        x = batch(1, 16, 16)
        np.testing.assert_allclose(session.infer(x), reference(rrdb, x), atol=1e-4)


# ------------------------------------------------------------------------------------------ int8

HAS_INT8 = "INT8" in CAPABILITIES


@pytest.mark.skipif(not HAS_INT8, reason="OpenVINO lists no INT8 on this CPU")
def test_int8_is_quantized_once_and_stays_close_to_fp32(tmp_path: Path, model) -> None:
    pytest.importorskip("nncf")
    from backends import openvino_int8

    x = batch(1, 24, 32)
    expected = reference(model, x)
    backend = OpenVINOBackend(cache_dir=tmp_path / "cache")
    with backend.open(model, BackendOptions(precision=Precision.INT8)) as session:
        first = session.infer(x)
    assert first.shape == expected.shape
    # int8 activations of a [0, 1] image: within a few levels of 255 on a random tiny network.
    assert np.abs(first - expected).mean() < 4 / 255
    assert not np.array_equal(first, expected)  # it is not fp32 under another name
    (ir,) = (tmp_path / "cache" / "openvino-int8").glob("*.xml")
    made = ir.stat().st_mtime_ns
    # The second open compiles the kept model: no calibration, the same output.
    real_quantize = openvino_int8.import_nncf
    openvino_int8.import_nncf = lambda: pytest.fail("calibrated again")
    try:
        with backend.open(model, BackendOptions(precision=Precision.INT8)) as session:
            np.testing.assert_array_equal(session.infer(x), first)
    finally:
        openvino_int8.import_nncf = real_quantize
    assert ir.stat().st_mtime_ns == made


def test_int8_without_nncf_says_how_to_install_it(tmp_path: Path, model, monkeypatch) -> None:
    from backends import openvino_int8

    if not HAS_INT8:
        pytest.skip("OpenVINO lists no INT8 on this CPU")

    def missing():
        raise ImportError("No module named 'nncf'")

    monkeypatch.setattr(openvino_int8, "import_nncf", missing)
    with pytest.raises(BackendError) as raised:
        OpenVINOBackend(cache_dir=tmp_path / "cache").open(model, BackendOptions(precision=Precision.INT8))
    assert raised.value.message == "--precision int8: NNCF is not installed"
    assert 'pip install "upscaler[int8]"' in raised.value.hint


def test_the_calibration_crops_are_the_bundled_ones() -> None:
    from backends.openvino_int8 import calibration_batches

    batches = calibration_batches()
    assert len(batches) == 16 and all(b.shape == (1, 3, 96, 96) for b in batches)
    assert all(b.min() >= 0 and b.max() <= 1 for b in batches)
    gray = calibration_batches(in_channels=1)
    assert gray[0].shape == (1, 1, 96, 96)
