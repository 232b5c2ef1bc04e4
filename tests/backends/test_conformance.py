"""Every backend that can run here must agree with the PyTorch fp32 reference.

Tolerance: 1e-4 absolute in fp32 (different kernels sum in different orders); bf16 within 0.05 and
fp16 within 0.01 on these tiny random models, whose outputs are of order 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_CONFIGS, tiny_weights
from upscaler.backend import discover_backends
from upscaler.models import load_model
from upscaler.options import BackendOptions
from upscaler.values import Precision

AVAILABLE = sorted(name for name, status in discover_backends().items() if status.available)
TOLERANCE = {Precision.FP32: 1e-4, Precision.FP16: 1e-2, Precision.BF16: 5e-2}


def reference(model, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(batch)).numpy()


def test_the_builtin_backend_is_discovered() -> None:
    assert "torch" in AVAILABLE


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("backend_name", AVAILABLE)
def test_backend_matches_reference(tmp_path: Path, backend_name: str, arch: str) -> None:
    model = load_model(tiny_weights(tmp_path, arch))
    backend = discover_backends()[backend_name].backend
    batch = np.random.default_rng(0).random((2, 3, 12, 20), dtype=np.float32)
    expected = reference(model, batch)
    with backend.open(model, BackendOptions(device="cpu")) as session:
        out = session.infer(batch)
        again = session.infer(batch[:1])
    scale = model.info.scale
    assert out.shape == (2, 3, 12 * scale, 20 * scale)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, atol=TOLERANCE[Precision.FP32])
    np.testing.assert_allclose(again, out[:1], atol=TOLERANCE[Precision.FP32])


@pytest.mark.parametrize("backend_name", AVAILABLE)
def test_backend_bf16_on_cpu_is_close(tmp_path: Path, backend_name: str) -> None:
    model = load_model(tiny_weights(tmp_path, "compact"))
    backend = discover_backends()[backend_name].backend
    batch = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    try:
        session = backend.open(model, BackendOptions(device="cpu", precision=Precision.BF16))
    except Exception as exc:  # a backend may refuse bf16, but only with a clear error
        pytest.skip(f"{backend_name} refuses bf16 on the CPU: {exc}")
    with session:
        out = session.infer(batch)
    np.testing.assert_allclose(out, reference(model, batch), atol=TOLERANCE[Precision.BF16])
