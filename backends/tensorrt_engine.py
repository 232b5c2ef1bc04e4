"""Building a TensorRT engine from an ONNX graph: the FP16 builder with its optimisation profiles, the
logger every TensorRT object shares, and the GPU index a device name means."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from backends.tensorrt_plan import (
    Profile,
)
from upscaler.errors import BackendError
from upscaler.export import (
    INPUT_NAME,
)
from upscaler.system.files import write_bytes_atomically
from upscaler.values import Precision

if TYPE_CHECKING:
    pass


def cuda_device_index(device: str) -> int:
    """The CUDA device index for `--device` (auto, cuda, cuda:N); TensorRT runs nowhere else."""
    import torch

    if device in ("auto", "cuda"):
        return torch.cuda.current_device()
    head, _, index = device.partition(":")
    if head != "cuda" or not index.isdigit():
        raise BackendError(
            f"--device: the tensorrt backend runs on CUDA devices only (got {device!r})",
            hint="use --device cuda or cuda:N, or another --backend",
        )
    if int(index) >= torch.cuda.device_count():
        raise BackendError(f"--device: there is no {device} (this machine has {torch.cuda.device_count()})")
    return int(index)


@functools.lru_cache(maxsize=1)
def trt_logger():
    """One logger for every builder and runtime: TensorRT wants the same one throughout a process.

    It keeps warnings and errors for error messages instead of printing them (library code is quiet).
    """
    import tensorrt as trt

    levels = trt.ILogger.Severity
    kept = (levels.INTERNAL_ERROR, levels.ERROR, levels.WARNING)

    class Collecting(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in kept:
                self.messages.append(str(msg))
                del self.messages[:-20]

        def recent(self) -> str:
            errors = self.messages[-3:]
            return "; ".join(errors) if errors else "no message from TensorRT"

    return Collecting()


def build_serialized_engine(
    onnx_path: Path, precision: Precision, profile: Profile, timing_cache: Path, workspace: int | None = None
) -> bytes:
    """Parse `onnx_path` with TensorRT's ONNX parser and build a serialized engine for `profile`.

    The timing cache at `timing_cache` is read first and written back after the build, so later builds
    for the same GPU skip the kernel timings they share.
    """
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    if precision is not Precision.BF16:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors or logger.recent()}")

    config = builder.create_builder_config()
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if precision is Precision.FP32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision is Precision.BF16:
        if not hasattr(trt.BuilderFlag, "BF16"):
            raise BackendError(
                f"TensorRT {trt.__version__} has no bf16 builder flag (removed with weakly typed networks)",
                hint="use --precision fp16",
            )
        config.set_flag(trt.BuilderFlag.BF16)

    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(optimization)

    previous = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(previous)
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path.name}: {logger.recent()}")
    write_bytes_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
