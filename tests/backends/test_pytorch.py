from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backends.pytorch import TorchBackend
from tests.conftest import tiny_weights
from upscaler.errors import BackendError, OutOfMemory
from upscaler.models import load_model
from upscaler.options import BackendOptions
from upscaler.values import Precision


@pytest.fixture
def model(tmp_path: Path):
    return load_model(tiny_weights(tmp_path, "compact"))


def batch(n: int = 1, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32)


def test_check_passes_where_torch_is_installed() -> None:
    assert TorchBackend().check() is None


def test_fp16_on_cpu_is_refused_with_a_message(model) -> None:
    with pytest.raises(BackendError, match="fp16 is not supported on the CPU") as info:
        TorchBackend().open(model, BackendOptions(device="cpu", precision=Precision.FP16))
    assert "bf16" in info.value.hint


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(model) -> None:
    with pytest.raises(BackendError, match="CUDA is not available"):
        TorchBackend().open(model, BackendOptions(device="cuda"))


def test_unknown_device_is_refused(model) -> None:
    with pytest.raises(BackendError, match="unknown device 'tpu7'"):
        TorchBackend().open(model, BackendOptions(device="tpu7"))


def test_channels_last_gives_the_same_output(model) -> None:
    x = batch(2)
    backend = TorchBackend()
    with (
        backend.open(model, BackendOptions(device="cpu", channels_last=True)) as a,
        backend.open(model, BackendOptions(device="cpu", channels_last=False)) as b,
    ):
        np.testing.assert_allclose(a.infer(x), b.infer(x), atol=1e-5)


def test_a_bf16_session_leaves_the_callers_model_in_fp32(model) -> None:
    with TorchBackend().open(model, BackendOptions(device="cpu", precision=Precision.BF16)) as session:
        session.infer(batch())
    assert all(p.dtype == torch.float32 for p in model.module.parameters())


def test_threads_are_set(model) -> None:
    before = torch.get_num_threads()
    try:
        with TorchBackend().open(model, BackendOptions(device="cpu", threads=1)):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_batch_of_the_wrong_shape_is_refused(model) -> None:
    with (
        TorchBackend().open(model, BackendOptions(device="cpu")) as session,
        pytest.raises(BackendError, match=r"expected a batch of shape \(N, 3, H, W\)"),
    ):
        session.infer(np.zeros((3, 16, 16), np.float32))


def test_a_closed_session_refuses_work(model) -> None:
    session = TorchBackend().open(model, BackendOptions(device="cpu"))
    session.close()
    with pytest.raises(BackendError, match="closed"):
        session.infer(batch())


def test_cpu_allocation_failure_becomes_out_of_memory(model, monkeypatch) -> None:
    with TorchBackend().open(model, BackendOptions(device="cpu")) as session:

        def exhausted(x):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

        monkeypatch.setattr(session, "module", exhausted)
        with pytest.raises(OutOfMemory, match="out of memory on cpu"):
            session.infer(batch())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16, Precision.BF16])
def test_cuda_matches_the_cpu_reference(model, precision) -> None:
    x = batch(2)
    with TorchBackend().open(model, BackendOptions(device="cpu")) as cpu:
        expected = cpu.infer(x)
    with TorchBackend().open(model, BackendOptions(device="cuda", precision=precision)) as gpu:
        out = gpu.infer(x)
    atol = {Precision.FP32: 1e-3, Precision.FP16: 1e-2, Precision.BF16: 5e-2}[precision]
    np.testing.assert_allclose(out, expected, atol=atol)


@pytest.mark.parametrize(
    ("feature", "cost", "dtype"),
    [
        ("AVX512_BF16", 0.001, torch.bfloat16),
        ("AVX512_BF16", None, torch.float32),  # a model without a measured bf16 cost
        ("AVX512_BF16", 0.2, torch.float32),
        (None, 0.001, torch.float32),
    ],
)
def test_auto_precision_on_the_cpu_follows_the_cpus_bf16_and_the_models_cost(
    monkeypatch, model, feature, cost, dtype
) -> None:
    from upscaler import precision

    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: feature)
    import backends.pytorch

    monkeypatch.setattr(
        backends.pytorch, "model_costs", lambda model: None if cost is None else {"bf16": cost}
    )
    options = BackendOptions(device="cpu", precision=Precision.AUTO)
    choice = TorchBackend().auto_precision(options)
    assert choice.precision is (Precision.BF16 if feature else Precision.FP32)
    # A library caller may pass auto straight to open: the session runs the concrete choice.
    with TorchBackend().open(model, options) as session:
        assert session.dtype == dtype
        assert session.infer(batch()).dtype == np.float32
