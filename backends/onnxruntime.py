"""The ONNX Runtime backend: the exported graph on the CPU, or on CUDA / TensorRT execution providers.

The graph is exported once per weights digest and precision into the cache folder
(`upscaler.export.cached_onnx`), so a repeat run only loads it. CPU: the CPU execution provider with
`--threads` intra-op threads and every graph optimisation. GPU (onnxruntime-gpu): the TensorRT and CUDA
execution providers when present, with IO binding so that the output stays on the device until it is
copied back once.

Precision: fp32 anywhere; fp16 only on CUDA (the fp16 graph; refused on the CPU like the torch backend
does); bf16 is refused (ONNX has no bf16 convolutions at the exported opset).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from upscaler.backend import DEFAULT_BATCH, ClosingSession
from upscaler.errors import BackendError, OutOfMemory
from upscaler.export import (
    INPUT_NAME,
    ONNX_MISSING,
    OUTPUT_NAME,
    cached_onnx,
    default_cache_dir,
    load_cached,
)
from upscaler.precision import model_costs, resolve_precision
from upscaler.system.runtimes import import_onnxruntime, installed
from upscaler.values import Precision

if TYPE_CHECKING:
    from upscaler.models import LoadedModel
    from upscaler.options import BackendOptions

INSTALL_HINT = "onnxruntime is not installed: pip install 'upscaler[onnx]' (onnxruntime-gpu for CUDA)"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


class OnnxRuntimeBackend:
    name = "onnxruntime"
    description = "ONNX Runtime: CPU (fp32), or CUDA/TensorRT providers with onnxruntime-gpu (fp32, fp16)"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def check(self) -> str | None:
        # Found, not imported: ONNX Runtime's import starts its telemetry unless told not to (runtimes.py).
        if not installed("onnxruntime"):
            return INSTALL_HINT
        if not installed("onnx"):
            return ONNX_MISSING
        return None

    def open(self, model: LoadedModel, options: BackendOptions) -> OnnxRuntimeSession:
        # No auto_precision: auto runs fp32 here (bf16 has no ONNX form; fp16 on CUDA is left to torch
        # and tensorrt). A library caller may hand auto straight to the backend; the CLI resolves it first.
        options, _ = resolve_precision(self, options, model_costs(model))
        return OnnxRuntimeSession(model, options, self.cache_dir or default_cache_dir())


def resolve_providers(device: str, available: list[str]) -> tuple[str, int]:
    """("cpu" or "cuda", device index) for a `--device` value, given ONNX Runtime's providers."""
    has_cuda = CUDA in available
    if device == "auto":
        return ("cuda", 0) if has_cuda else ("cpu", 0)
    if device == "cpu":
        return "cpu", 0
    if device == "cuda" or device.startswith("cuda:"):
        index_text = device.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise BackendError(f"--device: unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")
        if not has_cuda:
            raise BackendError(
                "--device: this ONNX Runtime has no CUDA execution provider",
                hint="pip install onnxruntime-gpu (instead of onnxruntime), or use --device cpu",
            )
        return "cuda", int(index_text)
    raise BackendError(
        f"--device: the onnxruntime backend runs on cpu or cuda, not {device!r}",
        hint="use --device cpu, or --backend torch for mps",
    )


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "failed to allocate memory" in text or "bad_alloc" in text or "out of memory" in text


class OnnxRuntimeSession(ClosingSession):
    """One exported graph in one ONNX Runtime inference session."""

    def __init__(self, model: LoadedModel, options: BackendOptions, cache_dir: Path) -> None:
        ort = import_onnxruntime()

        available = ort.get_available_providers()
        self.device, self.device_id = resolve_providers(options.device, available)
        # One tile at a time on the CPU (upscaler.backend.preferred_batch says why); a GPU wants batches.
        self.preferred_batch = 1 if self.device == "cpu" else DEFAULT_BATCH
        precision = options.precision
        if precision is Precision.BF16:
            raise BackendError(
                "--precision: the onnxruntime backend has no bf16 (ONNX has no bf16 convolutions at "
                "the exported opset)",
                hint="use --backend torch for bf16, or fp32",
            )
        if precision is Precision.INT8:
            raise BackendError(
                "--precision: the onnxruntime backend has no int8", hint="use --backend openvino for int8"
            )
        if precision is Precision.FP16 and self.device == "cpu":
            raise BackendError(
                "--precision: fp16 is not supported on the CPU", hint="use fp32 (or --backend torch for bf16)"
            )
        if options.threads is not None and options.threads < 1:
            raise BackendError(f"--threads: must be at least 1 (got {options.threads})")
        self.in_channels = model.info.in_channels
        self.scale = model.info.scale
        self.export = cached_onnx(model, precision, cache_dir)

        settings = ort.SessionOptions()
        settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One graph, run one batch at a time: parallelism belongs inside each operator.
        settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        settings.inter_op_num_threads = 1
        if options.threads is not None:
            settings.intra_op_num_threads = options.threads
        providers: list = [CPU]
        if self.device == "cuda":
            providers = []
            if TENSORRT in available:
                providers.append(
                    (
                        TENSORRT,
                        {
                            "device_id": self.device_id,
                            "trt_fp16_enable": precision is Precision.FP16,
                            "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache_dir / "onnxruntime-trt"),
                            "trt_timing_cache_enable": True,
                        },
                    )
                )
            providers += [(CUDA, {"device_id": self.device_id}), CPU]
        self.session, self.export = load_cached(
            self.export,
            lambda path: ort.InferenceSession(str(path), settings, providers=providers),
            lambda: cached_onnx(model, precision, cache_dir),
            "onnxruntime backend",
        )
        self.providers = self.session.get_providers()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != self.in_channels:
            raise BackendError(
                f"onnxruntime backend: expected a batch of shape (N, {self.in_channels}, H, W), "
                f"got {batch.shape}"
            )
        if self.session is None:
            raise BackendError("onnxruntime backend: the session is closed")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            if self.device == "cuda":
                return self._infer_bound(batch)
            (output,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
            return output
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(
                    f"onnxruntime backend: out of memory on {self.device} for a batch of {batch.shape}"
                ) from exc
            raise

    def _infer_bound(self, batch: np.ndarray) -> np.ndarray:
        """Input copied to the device once, output left there by ONNX Runtime and copied back once."""
        ort = import_onnxruntime()

        binding = self.session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id)
        binding.bind_ortvalue_input(INPUT_NAME, device_input)
        binding.bind_output(OUTPUT_NAME, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        (output,) = binding.copy_outputs_to_cpu()
        return np.asarray(output, dtype=np.float32)

    def close(self) -> None:
        self.session = None
