"""Every backend that can run here must agree with the PyTorch fp32 reference.

Runs for each discovered backend that is available (torch, onnxruntime; tensorrt on a GPU machine
with TensorRT), on every architecture.

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
from upscaler.models import build_model, load_model, save_weights
from upscaler.options import BackendOptions
from upscaler.values import Precision

AVAILABLE = sorted(name for name, status in discover_backends().items() if status.available)
TOLERANCE = {Precision.FP32: 1e-4, Precision.FP16: 1e-2, Precision.BF16: 5e-2}
# Where each backend runs in these tests: the CPU, except for those that run only on CUDA.
DEVICE = {"tensorrt": "cuda"}


def reference(model, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(batch)).numpy()


# Every architecture, and RRDBNet at each scale: x2 and x1 pixel-unshuffle their input first.
VARIANTS = {
    **{arch: (arch, config) for arch, config in TINY_CONFIGS.items()},
    "rrdbnet-x2": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 2}),
    "rrdbnet-x1": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 1}),
}


def variant_weights(tmp_path: Path, variant: str) -> Path:
    arch, config = VARIANTS[variant]
    torch.manual_seed(0)
    return save_weights(build_model(arch, config), tmp_path / f"tiny-{variant}.safetensors", arch, config)


def test_the_builtin_backends_are_discovered() -> None:
    assert "torch" in AVAILABLE
    assert {"torch", "onnxruntime", "tensorrt"} <= set(discover_backends())


@pytest.mark.parametrize("arch", sorted(VARIANTS))
@pytest.mark.parametrize("backend_name", AVAILABLE)
def test_backend_matches_reference(tmp_path: Path, backend_name: str, arch: str) -> None:
    model = load_model(variant_weights(tmp_path, arch))
    backend = discover_backends()[backend_name].backend
    batch = np.random.default_rng(0).random((2, 3, 12, 20), dtype=np.float32)
    expected = reference(model, batch)
    with backend.open(model, BackendOptions(device=DEVICE.get(backend_name, "cpu"))) as session:
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
        session = backend.open(
            model, BackendOptions(device=DEVICE.get(backend_name, "cpu"), precision=Precision.BF16)
        )
    except Exception as exc:  # a backend may refuse bf16, but only with a clear error
        pytest.skip(f"{backend_name} refuses bf16 on the CPU: {exc}")
    with session:
        out = session.infer(batch)
    np.testing.assert_allclose(out, reference(model, batch), atol=TOLERANCE[Precision.BF16])
