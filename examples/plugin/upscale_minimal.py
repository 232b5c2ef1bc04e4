"""The smallest complete `upscale` backend plugin: eager PyTorch on the CPU, fp32, one tile a call.

A template for your own (a runtime, an accelerator's SDK): copy this folder, change `open` and the
session. Install it beside upscale (`pip install ./examples/plugin`) and `upscale backends` lists it;
`upscale video in.mp4 out.mp4 --backend minimal` runs it.
"""

from __future__ import annotations

import numpy as np

from upscaler.backend import ClosingSession
from upscaler.errors import BackendError
from upscaler.values import Precision


class MinimalBackend:
    name = "minimal"
    description = "eager PyTorch, CPU, fp32 (the example plugin of docs/plugins.md)"

    def check(self) -> str | None:
        """Why this backend cannot run here (with what to install), or None. Must be cheap."""
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed: pip install torch"
        return None

    def open(self, model, options) -> MinimalSession:
        """A session for `model` (an upscaler.models.LoadedModel). What it cannot do it refuses with a
        BackendError: one line and a hint, which the CLI prints as `Error: ...` / `Hint: ...`."""
        if options.device not in ("auto", "cpu"):
            raise BackendError(
                f"--device: the minimal backend runs on the CPU only (got {options.device})",
                hint="pass --device cpu, or --backend torch for a GPU",
            )
        if options.precision not in (Precision.FP32, Precision.AUTO):
            raise BackendError(
                f"--precision: the minimal backend runs fp32 only (got {options.precision.value})",
                hint="pass --precision fp32",
            )
        return MinimalSession(model, options.threads)


class MinimalSession(ClosingSession):
    preferred_batch = 1  # tiles a call: one is fastest on a CPU (see upscaler.backend.preferred_batch)

    def __init__(self, model, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.module = model.module  # in eval mode, float32, on the CPU (LoadedModel's promise)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 RGB in [0, 1] -> NCHW float32, H and W times the model's scale, in a new array
        the core may keep (never a buffer the next call reuses). Padding and tiling are the core's."""
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()

    def close(self) -> None:
        self.module = None
