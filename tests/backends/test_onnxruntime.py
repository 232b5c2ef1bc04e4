from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from backends.onnxruntime import CUDA, OnnxRuntimeBackend, resolve_providers
from tests.conftest import tiny_weights
from upscaler.errors import BackendError, OutOfMemory
from upscaler.models import load_model
from upscaler.options import BackendOptions
from upscaler.values import Precision

HAS_CUDA = CUDA in ort.get_available_providers()


@pytest.fixture
def model(tmp_path: Path):
    return load_model(tiny_weights(tmp_path, "compact"))


def batch(n: int = 1, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32)


def test_check_passes_where_onnxruntime_is_installed() -> None:
    assert OnnxRuntimeBackend().check() is None


def test_check_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert "pip install 'upscaler[onnx]'" in OnnxRuntimeBackend().check()


def test_cpu_session_uses_the_threads_and_full_optimisation(model, tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(cache_dir=tmp_path)
    with backend.open(model, BackendOptions(device="cpu", threads=1)) as session:
        settings = session.session.get_session_options()
        assert settings.intra_op_num_threads == 1
        assert settings.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert session.providers == ["CPUExecutionProvider"]
        assert session.infer(batch(2)).shape == (2, 3, 64, 64)


def test_the_export_is_cached_per_digest(model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = OnnxRuntimeBackend(cache_dir=tmp_path)
    with backend.open(model, BackendOptions(device="cpu")) as session:
        first = session.export.path
        expected = session.infer(batch())
    assert first.parent == tmp_path / "onnx" and model.digest in first.name

    def must_not_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("upscaler.export.export_onnx", must_not_export)
    with backend.open(model, BackendOptions(device="cpu")) as again:
        assert again.export.path == first
        np.testing.assert_array_equal(again.infer(batch()), expected)


def test_a_broken_cached_graph_is_made_again(model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    backend = OnnxRuntimeBackend(cache_dir=tmp_path)
    with backend.open(model, BackendOptions(device="cpu")) as session:
        path = session.export.path
        expected = session.infer(batch())
    graph = onnx.load(str(path))
    graph.graph.node[0].op_type = "NoSuchOperator"  # its metadata still says it is ours and current
    onnx.save(graph, str(path))
    with backend.open(model, BackendOptions(device="cpu")) as again:
        np.testing.assert_array_equal(again.infer(batch()), expected)
    assert onnx.load(str(path)).graph.node[0].op_type != "NoSuchOperator"

    # a graph that cannot be loaded even when made again: one line naming the file to delete
    import upscaler.export

    def broken_export(*args, **kwargs):
        real = export_original(*args, **kwargs)
        damaged = onnx.load(str(real.path))
        damaged.graph.node[0].op_type = "NoSuchOperator"
        onnx.save(damaged, str(real.path))
        return real

    export_original = upscaler.export.export_onnx
    monkeypatch.setattr(upscaler.export, "export_onnx", broken_export)
    path.unlink()
    with pytest.raises(BackendError) as error:
        backend.open(model, BackendOptions(device="cpu"))
    assert error.value.message.startswith(f"onnxruntime backend cannot load the exported graph {path.name}: ")
    assert "\n" not in error.value.message and f"delete {path}" in error.value.hint


def test_fp16_on_the_cpu_is_refused_like_torch(model) -> None:
    with pytest.raises(BackendError, match="fp16 is not supported on the CPU"):
        OnnxRuntimeBackend().open(model, BackendOptions(device="cpu", precision=Precision.FP16))


def test_bf16_is_refused_with_a_way_out(model) -> None:
    with pytest.raises(BackendError, match="no bf16") as info:
        OnnxRuntimeBackend().open(model, BackendOptions(device="cpu", precision=Precision.BF16))
    assert "--backend torch" in info.value.hint


def test_devices() -> None:
    assert resolve_providers("auto", ["CPUExecutionProvider"]) == ("cpu", 0)
    assert resolve_providers("auto", [CUDA, "CPUExecutionProvider"]) == ("cuda", 0)
    assert resolve_providers("cuda:1", [CUDA, "CPUExecutionProvider"]) == ("cuda", 1)
    with pytest.raises(BackendError, match="no CUDA execution provider") as info:
        resolve_providers("cuda", ["CPUExecutionProvider"])
    assert "onnxruntime-gpu" in info.value.hint
    with pytest.raises(BackendError, match="runs on cpu or cuda, not 'mps'"):
        resolve_providers("mps", ["CPUExecutionProvider"])
    with pytest.raises(BackendError, match="unknown device 'cuda:x'"):
        resolve_providers("cuda:x", [CUDA])


def test_a_batch_of_the_wrong_shape_is_refused(model) -> None:
    with (
        OnnxRuntimeBackend().open(model, BackendOptions(device="cpu")) as session,
        pytest.raises(BackendError, match=r"expected a batch of shape \(N, 3, H, W\)"),
    ):
        session.infer(np.zeros((3, 16, 16), np.float32))


def test_a_closed_session_refuses_work(model) -> None:
    session = OnnxRuntimeBackend().open(model, BackendOptions(device="cpu"))
    session.close()
    with pytest.raises(BackendError, match="closed"):
        session.infer(batch())


def test_allocation_failure_becomes_out_of_memory(model, monkeypatch: pytest.MonkeyPatch) -> None:
    with OnnxRuntimeBackend().open(model, BackendOptions(device="cpu")) as session:

        class Exhausted:
            def run(self, *args, **kwargs):
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")

        monkeypatch.setattr(session, "session", Exhausted())
        with pytest.raises(OutOfMemory, match="out of memory on cpu"):
            session.infer(batch())


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with the CUDA execution provider and a GPU")
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_cuda_with_io_binding_matches_the_cpu(model, precision: Precision) -> None:
    x = batch(2, 24)
    with OnnxRuntimeBackend().open(model, BackendOptions(device="cpu")) as cpu:
        expected = cpu.infer(x)
    with OnnxRuntimeBackend().open(model, BackendOptions(device="cuda", precision=precision)) as gpu:
        assert gpu.device == "cuda" and CUDA in gpu.providers
        out = gpu.infer(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-3 if precision is Precision.FP32 else 1e-2)


def test_rrdbnet_runs_in_the_blocked_layout_from_end_to_end(tmp_path: Path) -> None:
    # With 16-channel features (a multiple of MLAS's NCHWc block), ONNX Runtime keeps every dense block
    # and every RRDB's residual in its blocked layout: one reorder out of it at the end of the trunk,
    # not two per convolution as when each RRDB's 0.2 scaling was a scalar Mul.
    from upscaler.export import cached_onnx
    from upscaler.models import build_model, save_weights

    config = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 16, "num_block": 3, "num_grow_ch": 16}
    weights = save_weights(build_model("rrdbnet", config), tmp_path / "rrdb.safetensors", "rrdbnet", config)
    export = cached_onnx(load_model(weights), Precision.FP32, tmp_path / "cache")
    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    settings.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(export.path), settings, providers=["CPUExecutionProvider"])
    import onnx

    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("Concat") == 3 * 3 * 4  # the dense blocks' concatenations are all still there
    assert ops.count("ReorderInput") + ops.count("ReorderOutput") <= 4, ops
