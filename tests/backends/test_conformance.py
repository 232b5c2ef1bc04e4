"""Every backend that can run here must agree with the PyTorch fp32 reference: the conformance checks
a plugin's own suite runs (`upscaler.testing`), on each built-in backend that is available here (torch,
onnxruntime, openvino; tensorrt on a GPU machine with TensorRT), on every architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_weights
from upscaler.backend import discover_backends
from upscaler.models import load_model
from upscaler.options import BackendOptions
from upscaler.testing import TOLERANCE, VARIANTS, check_backend, reference
from upscaler.values import Precision

AVAILABLE = sorted(name for name, status in discover_backends().items() if status.available)
# Where each backend runs in these tests: the CPU, except for those that run only on CUDA.
DEVICE = {"tensorrt": "cuda"}


def test_the_builtin_backends_are_discovered() -> None:
    assert "torch" in AVAILABLE
    assert {"torch", "onnxruntime", "tensorrt"} <= set(discover_backends())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("backend_name", AVAILABLE)
def test_backend_matches_reference(tmp_path: Path, backend_name: str, variant: str) -> None:
    backend = discover_backends()[backend_name].backend
    check_backend(backend, tmp_path, device=DEVICE.get(backend_name, "cpu"), variants=(variant,))


def test_the_checks_catch_a_backend_that_is_off() -> None:
    class Off:
        name, description = "off", "adds 0.01 to the reference"

        def check(self):
            return None

        def open(self, model, options):
            class Session:
                def infer(self, batch):
                    return reference(model, batch) + 0.01

                def close(self):
                    pass

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    self.close()

            return Session()

    with pytest.raises(AssertionError, match="off on compact"):
        check_backend(Off(), Path(pytest.importorskip("tempfile").mkdtemp()), variants=("compact",))


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
