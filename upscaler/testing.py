"""Conformance checks for backend plugins, to run from a plugin's own test suite:

    from upscaler.testing import check_backend

    def test_my_backend_conforms(tmp_path):
        check_backend(MyBackend(), tmp_path)

Each check builds tiny random models of every architecture (and RRDBNet at x1, x2 and x4, and the
original ESRGAN release's x1 and x8, and ESRGAN+), runs a batch
through the backend and compares it with PyTorch's fp32 output of the same network; needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from upscaler.options import BackendOptions
from upscaler.values import Precision

# Agreement with PyTorch's fp32 output: 1e-4 in fp32 (kernels sum in other orders); bf16 within 0.05
# and fp16 within 0.01 on these tiny random models, whose outputs are of order 1.
TOLERANCE = {Precision.FP32: 1e-4, Precision.FP16: 1e-2, Precision.BF16: 5e-2}

# Tiny networks of every architecture: a few thousand parameters, milliseconds a batch.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "compact": {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 8,
        "num_conv": 2,
        "upscale": 4,
        "act_type": "prelu",
    },
    "rrdbnet": {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4},
    "msrresnet": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 2, "upscale": 4},
    "srresnet": {"num_feat": 8, "num_block": 2, "scale": 4},
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    **{arch: (arch, config) for arch, config in TINY_CONFIGS.items()},
    "rrdbnet-x2": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 2}),
    "rrdbnet-x1": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 1}),
    # the original ESRGAN release's x8 and x1: an upsampling stage per factor 2, no unshuffle
    "rrdbnet-plain-x8": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 8, "unshuffle": False}),
    "rrdbnet-plain-x1": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "scale": 1, "unshuffle": False}),
    # ESRGAN+: a 1x1 conv and two more residual paths in every dense block
    "rrdbnet-plus": ("rrdbnet", {**TINY_CONFIGS["rrdbnet"], "plus": True}),
}


def tiny_model(folder: Path, variant: str, seed: int = 0):
    """A randomly initialised tiny model of `variant` (a key of VARIANTS), saved in `folder` and loaded
    as every command loads a weights file."""
    import torch

    from upscaler.models import build_model, load_model, save_weights

    arch, config = VARIANTS[variant]
    torch.manual_seed(seed)
    path = save_weights(build_model(arch, config), Path(folder) / f"tiny-{variant}.safetensors", arch, config)
    return load_model(path)


def reference(model, batch: np.ndarray) -> np.ndarray:
    """PyTorch's fp32 output of `model` (a LoadedModel) on an NCHW float32 batch."""
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(batch)).numpy()


def check_backend(
    backend: Any,
    folder: Path,
    *,
    device: str = "cpu",
    precision: Precision = Precision.FP32,
    variants: tuple[str, ...] = tuple(VARIANTS),
) -> None:
    """Assert that `backend` behaves as the protocol says (upscaler.backend), on every variant:
    - `name` and `description` are strings; `check()` is None here (else the backend cannot run);
    - `open(model, options)` gives a session whose `infer` takes NCHW float32 RGB in [0, 1] and returns
      a float32, finite array of the same batch with H and W times the model's scale, within TOLERANCE
      of PyTorch fp32, batch by batch alike; `close()` ends it, and the session is a context manager."""
    assert isinstance(backend.name, str) and backend.name, "a backend needs a name"
    assert isinstance(backend.description, str), "a backend needs a description"
    problem = backend.check()
    assert problem is None, f"{backend.name} cannot run here: {problem}"
    options = BackendOptions(device=device, precision=precision)
    batch = np.random.default_rng(0).random((2, 3, 12, 20), dtype=np.float32)
    for variant in variants:
        model = tiny_model(folder, variant)
        expected = reference(model, batch)
        with backend.open(model, options) as session:
            out = session.infer(batch)
            again = session.infer(batch[:1])
        scale = model.info.scale
        where = f"{backend.name} on {variant} ({precision.value})"
        assert isinstance(out, np.ndarray), f"{where}: infer must return a numpy array, got {type(out)}"
        assert out.shape == (2, 3, 12 * scale, 20 * scale), f"{where}: output shape {out.shape}"
        assert out.dtype == np.float32, f"{where}: output dtype {out.dtype}, not float32"
        assert np.isfinite(out).all(), f"{where}: output has NaN or inf"
        np.testing.assert_allclose(out, expected, atol=TOLERANCE[precision], err_msg=where)
        np.testing.assert_allclose(again, out[:1], atol=TOLERANCE[precision], err_msg=f"{where}, batch of 1")
