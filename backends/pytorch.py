"""The PyTorch backend: eager inference on CPU, CUDA or Apple MPS."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from upscaler.backend import DEFAULT_BATCH, ClosingSession, runs_on_cpu
from upscaler.errors import BackendError, OutOfMemory
from upscaler.precision import PrecisionChoice, choose_auto_precision, model_costs, resolve_precision
from upscaler.system.allocator import MMAP_THRESHOLD
from upscaler.system.runtimes import installed
from upscaler.values import Precision

if TYPE_CHECKING:
    import torch

    from upscaler.models import LoadedModel
    from upscaler.options import BackendOptions


class TorchBackend:
    name = "torch"
    description = "PyTorch eager: CPU, CUDA or MPS; fp32, fp16 (GPU), bf16"

    def check(self) -> str | None:
        # Found, not imported: `upscale backends` lists every backend without loading torch.
        if not installed("torch"):
            return "torch is not installed: pip install torch (see the README for CPU and CUDA builds)"
        return None

    def auto_precision(self, options: BackendOptions) -> PrecisionChoice:
        """bf16 on a CPU with AVX512_BF16 or AMX, fp16 on a CUDA GPU with tensor cores, else fp32."""
        fast = {"cpu": Precision.BF16, "cuda": Precision.FP16}
        if runs_on_cpu(options.device):
            # Known without torch where there is no GPU: a run on another backend never imports it.
            return choose_auto_precision("cpu", fast)
        import torch

        device = resolve_device(options.device)
        index = device.index if device.index is not None else 0
        if device.type == "cuda" and device.index is None:
            index = torch.cuda.current_device()
        return choose_auto_precision(device.type, fast, index)

    def open(self, model: LoadedModel, options: BackendOptions) -> TorchSession:
        # A library caller may hand --precision auto straight to the backend; the CLI resolves it first.
        options, _ = resolve_precision(self, options, model_costs(model))
        return TorchSession(model, options)


def resolve_device(requested: str) -> torch.device:
    """The torch device for `requested` ("auto", "cpu", "cuda", "cuda:N", "mps"), checked to exist."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise BackendError(
            f"--device: unknown device {requested!r}", hint="use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(
                "--device: CUDA is not available here",
                hint="install a CUDA build of torch (see the README) or use --device cpu",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BackendError(
                f"--device: there is no {requested} "
                f"(this machine has {torch.cuda.device_count()} CUDA devices)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BackendError("--device: MPS is not available here", hint="use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise BackendError(f"--device: unsupported device {requested!r}", hint="use auto, cpu, cuda or mps")
    return device


def torch_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    import torch

    if precision is Precision.INT8:
        raise BackendError(
            "--precision: the torch backend has no int8", hint="use --backend openvino for int8 on the CPU"
        )
    if precision is Precision.FP16 and device.type == "cpu":
        raise BackendError(
            "--precision: fp16 is not supported on the CPU", hint="use --precision bf16 or fp32 on the CPU"
        )
    return {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[
        precision
    ]


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    # torch.OutOfMemoryError is new in 2.5; older releases only have the CUDA one.
    if isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    # The CPU allocator reports exhaustion as a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


class TorchSession(ClosingSession):
    """One model on one device, ready for batches."""

    def __init__(self, model: LoadedModel, options: BackendOptions) -> None:
        import torch

        self.device = resolve_device(options.device)
        self.dtype = torch_dtype(options.precision, self.device)
        if options.threads is not None:
            if options.threads < 1:
                raise BackendError(f"--threads: must be at least 1 (got {options.threads})")
            torch.set_num_threads(options.threads)
        self.in_channels = model.info.in_channels
        # One tile at a time on the CPU (upscaler.backend.preferred_batch says why); a GPU wants batches.
        self.preferred_batch = 1 if self.device.type == "cpu" else DEFAULT_BATCH
        # Activations above malloc's mmap threshold are faulted in afresh on every call (see
        # upscaler.backend.reused_bytes); the caching allocator of a GPU keeps them all.
        self.reused_bytes = MMAP_THRESHOLD if self.device.type == "cpu" else 0
        # channels_last helps oneDNN and cuDNN convolutions; MPS gains nothing from it.
        self.memory_format = (
            torch.channels_last
            if options.channels_last and self.device.type in ("cpu", "cuda")
            else torch.contiguous_format
        )
        # A copy, so that converting dtype or device never changes the caller's model.
        module = copy.deepcopy(model.module).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        self.module = module.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if batch.ndim != 4 or batch.shape[1] != self.in_channels:
            raise BackendError(
                f"torch backend: expected a batch of shape (N, {self.in_channels}, H, W), got {batch.shape}"
            )
        if self.module is None:
            raise BackendError("torch backend: the session is closed")
        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
                x = x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)
                y = self.module(x)
                return y.to(dtype=torch.float32).contiguous().cpu().numpy()
        except Exception as exc:
            if is_out_of_memory(exc):
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                raise OutOfMemory(
                    f"torch backend: out of memory on {self.device} for a batch of {tuple(batch.shape)}"
                ) from exc
            raise

    def close(self) -> None:
        was_open, self.module = self.module is not None, None
        if was_open and self.device.type == "cuda":
            import torch

            # Hand the cached blocks back, so that a next session (or another process) can use them.
            torch.cuda.empty_cache()
