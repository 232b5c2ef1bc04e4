"""The TensorRT backend: engines built from the exported ONNX graph, run on CUDA through torch.

Written against the TensorRT 10 Python API: networks are always explicit-batch (the EXPLICIT_BATCH
flag is gone), I/O tensors are addressed by name (`num_io_tensors`, `get_tensor_name`,
`get_tensor_mode`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`).

Precision. fp16 and fp32 use strongly typed networks: the precision is in the ONNX graph (the fp16
export runs the network in fp16 with fp32 input and output, and keeps layers that come near fp16's
range in fp32, see upscaler/export.py), and TensorRT keeps exactly those types. That is how TensorRT
expects fp16 since 10.12, which deprecated the weakly typed `BuilderFlag.FP16` (TensorRT 11 removed
it). fp32 engines clear `BuilderFlag.TF32`, so fp32 means fp32. bf16 has no ONNX form at our opset,
so it uses the weakly typed network from the fp32 graph with `BuilderFlag.BF16` where the installed
TensorRT still has that flag.

Memory and streams come from torch (already a dependency): pinned host buffers, device tensors from
torch's allocator, and a CUDA stream of the session's own. `tensorrt` is imported only inside the
functions that need it, so this module loads (and `check()` explains) without it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backends.tensorrt_engine import build_serialized_engine, cuda_device_index, trt_logger
from backends.tensorrt_plan import (
    EngineKey,
    Profile,
    check_batch_shape,
    default_profile,
    engine_path,
    explicit_profile,
    find_engine,
    plan_profile,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from upscaler.backend import ClosingSession, nvidia_driver_present
from upscaler.errors import BackendError, OutOfMemory, UpscaleError
from upscaler.export import (
    EXPORT_FORMAT,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    cached_onnx,
    default_cache_dir,
)
from upscaler.options import TileOptions
from upscaler.precision import PrecisionChoice, choose_auto_precision, model_costs, resolve_precision
from upscaler.system.files import write_bytes_atomically
from upscaler.system.runtimes import installed
from upscaler.values import Precision

if TYPE_CHECKING:
    import torch

    from upscaler.models import LoadedModel
    from upscaler.options import BackendOptions

TENSORRT_MISSING = "tensorrt is not installed: pip install 'upscaler[tensorrt]'"
GPU_MISSING = "TensorRT needs an NVIDIA GPU with CUDA; none found"
# An fp16 output this dark on an input this bright is a broken engine, not a dark image.
BLACK_OUTPUT = 1.0 / 255.0
BRIGHT_INPUT = 0.05


@dataclass(frozen=True)
class EngineBuild:
    """What `build_engine` did: the cached engine (and its copy at `output`), built now or reused."""

    path: Path
    sidecar: Path
    output: Path | None
    key: EngineKey
    reused: bool
    seconds: float
    fp32_layers: tuple[str, ...]


class TensorRTBackend:
    name = "tensorrt"
    description = "NVIDIA TensorRT engines built from the ONNX graph (CUDA): fp16, fp32, bf16"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()

    def check(self) -> str | None:
        # Found, not imported, while anything is missing: `upscale backends` answers in a fraction of a
        # second. torch is imported (to ask CUDA) only where TensorRT is installed.
        if not installed("tensorrt"):
            return TENSORRT_MISSING if nvidia_driver_present() else GPU_MISSING
        if not installed("torch"):
            return "torch is not installed: pip install torch (a CUDA build, see the README)"
        if not installed("onnx"):
            return "onnx is not installed: pip install 'upscaler[tensorrt]'"
        import torch

        if not torch.cuda.is_available():
            return GPU_MISSING
        return None

    def plan_profile(
        self,
        model: LoadedModel,
        tile_size: int | None = None,
        overlap: int | None = None,
        batch: int = 1,
        min_shape: tuple[int, ...] | None = None,
        opt_shape: tuple[int, ...] | None = None,
        max_shape: tuple[int, ...] | None = None,
    ) -> Profile:
        """The profile for `build-engine`'s options: explicit shapes, a tile size, or the default."""
        info = model.info
        shapes = (min_shape, opt_shape, max_shape)
        if any(shape is not None for shape in shapes):
            if None in shapes:
                raise UpscaleError("--min-shape, --opt-shape and --max-shape go together: give all three")
            if tile_size is not None:
                raise UpscaleError("--tile-size and --min-shape/--opt-shape/--max-shape exclude each other")
            return explicit_profile(info.in_channels, *shapes)  # type: ignore[arg-type]
        if tile_size is not None:
            if not info.requirement.accepts(tile_size):
                raise UpscaleError(
                    f"--tile-size: must be a multiple of {info.requirement.multiple_of} for model "
                    f"'{model.name}' (got {tile_size})"
                )
            return plan_profile(
                info.in_channels,
                info.requirement,
                tile_size,
                info.overlap if overlap is None else overlap,
                batch,
            )
        return default_profile(
            info.in_channels, info.requirement, info.bytes_per_pixel, TileOptions().memory_budget
        )

    def engine_key(
        self, model: LoadedModel, precision: Precision, profile: Profile, device: int
    ) -> EngineKey:
        import tensorrt as trt
        import torch

        major, minor = torch.cuda.get_device_capability(device)
        return EngineKey(
            weights_digest=model.digest,
            tensorrt_version=trt.__version__,
            gpu_name=torch.cuda.get_device_name(device),
            compute_capability=f"{major}.{minor}",
            precision=precision.value,
            profile=profile,
            opset=OPSET,
            export_format=EXPORT_FORMAT,
        )

    def build_engine(
        self,
        model: LoadedModel,
        precision: Precision = Precision.FP16,
        profile: Profile | None = None,
        device: str = "auto",
        output: Path | None = None,
        workspace: int | None = None,
        rebuild: bool = False,
    ) -> EngineBuild:
        """Build (or reuse from the cache) the engine of `model` for `precision` and `profile`.

        The engine goes into `<cache>/tensorrt/` with a JSON sidecar, and is copied to `output` (with
        its sidecar) when given. Raises BackendError with `check()`'s reason where TensorRT cannot run.
        """
        problem = self.check()
        if problem is not None:
            raise BackendError(problem)
        import torch

        index = cuda_device_index(device)
        profile = profile or self.plan_profile(model)
        start = time.perf_counter()
        with torch.cuda.device(index):
            key = self.engine_key(model, precision, profile, index)
            path = engine_path(self.cache, key, model.name)
            sidecar = read_sidecar(path) if path.is_file() else None
            reused = not rebuild and sidecar is not None and sidecar["key_digest"] == key.digest()
            if reused:
                layers = tuple(sidecar.get("fp32_layers", ()))  # type: ignore[union-attr]
            else:
                export = cached_onnx(
                    model, Precision.FP16 if precision is Precision.FP16 else Precision.FP32, self.cache
                )
                layers = export.fp32_layers
                plan = build_serialized_engine(
                    export.path, precision, profile, self.timing_cache_path(key), workspace
                )
                write_bytes_atomically(path, plan)
                write_sidecar(
                    path,
                    key,
                    {
                        "model": model.name,
                        "arch": model.info.arch,
                        "scale": model.info.scale,
                        "onnx": export.path.name,
                        "fp32_layers": list(layers),
                        "input": INPUT_NAME,
                        "output": OUTPUT_NAME,
                        "build_seconds": round(time.perf_counter() - start, 1),
                    },
                )
        copied = None
        if output is not None:
            output = Path(output)
            write_bytes_atomically(output, path.read_bytes())
            write_bytes_atomically(sidecar_path(output), sidecar_path(path).read_bytes())
            copied = output
        return EngineBuild(
            path=path,
            sidecar=sidecar_path(path),
            output=copied,
            key=key,
            reused=reused,
            seconds=time.perf_counter() - start,
            fp32_layers=tuple(layers),
        )

    def timing_cache_path(self, key: EngineKey) -> Path:
        # A timing cache is only valid for one TensorRT version on one kind of GPU.
        gpu = "".join(c if c.isalnum() else "_" for c in key.gpu_name)
        return (
            self.cache / "tensorrt" / f"timing-{key.tensorrt_version}-{gpu}-sm{key.compute_capability}.cache"
        )

    def auto_precision(self, options: BackendOptions) -> PrecisionChoice:
        """fp16 on a GPU with tensor cores (what makes TensorRT fast), else fp32."""
        return choose_auto_precision("cuda", {"cuda": Precision.FP16}, cuda_device_index(options.device))

    def open(self, model: LoadedModel, options: BackendOptions) -> TensorRTSession:
        problem = self.check()
        if problem is not None:
            raise BackendError(problem)
        # A library caller may hand --precision auto straight to the backend; the CLI resolves it first.
        options, _ = resolve_precision(self, options, model_costs(model))
        return TensorRTSession(self, model, options)


def _torch_dtype(trt_dtype):
    import tensorrt as trt
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if trt_dtype not in table:
        raise BackendError(f"tensorrt backend: unsupported I/O tensor type {trt_dtype}")
    return table[trt_dtype]


class TensorRTSession(ClosingSession):
    """One engine and its execution context on one CUDA device, with its own stream."""

    def __init__(self, backend: TensorRTBackend, model: LoadedModel, options: BackendOptions) -> None:
        import torch

        self.backend = backend
        self.model = model
        self.index = cuda_device_index(options.device)
        self.device = torch.device("cuda", self.index)
        self.precision = options.precision
        self.in_channels = model.info.in_channels
        self.stream = torch.cuda.Stream(self.device)
        self.context = None
        self.engine = None
        self._host: dict[str, torch.Tensor] = {}
        self.checked = False
        self.fallback: str | None = None
        with torch.cuda.device(self.index):
            profile = backend.plan_profile(model)
            key = backend.engine_key(model, self.precision, profile, self.index)
            engine = find_engine(backend.cache, key, any_profile=True)
            if engine is None:
                warnings.warn(
                    f"tensorrt: building a {self.precision.value} engine for {model.name} on "
                    f"{key.gpu_name} (first use; this takes a while) into {backend.cache / 'tensorrt'}; "
                    f"`upscale build-engine` builds one for your tile size ahead of time",
                    stacklevel=2,
                )
                engine = backend.build_engine(
                    model, self.precision, profile, device=f"cuda:{self.index}"
                ).path
            self._load(engine)

    def _load(self, path: Path) -> None:
        import tensorrt as trt

        runtime = trt.Runtime(trt_logger())
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(
                f"tensorrt backend: cannot load engine {path.name}: {trt_logger().recent()}",
                hint="rebuild it: upscale build-engine --rebuild",
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"tensorrt backend: {path.name} has inputs {inputs} and outputs {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _torch_dtype(engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(engine.get_tensor_dtype(self.output_name))
        shapes = engine.get_tensor_profile_shape(self.input_name, 0)
        self.profile = Profile(*(tuple(int(s) for s in shape) for shape in shapes))
        context = engine.create_execution_context()
        if context is None:
            # the context holds the activation memory of the profile's largest shape
            raise OutOfMemory(
                f"tensorrt backend: no GPU memory for the engine {path.name} "
                f"(inputs up to {'x'.join(map(str, self.profile.max))})",
                hint="free GPU memory, or build one for smaller tiles: upscale build-engine --tile-size N",
            )
        self.engine = engine
        self.context = context
        self.engine_path = path

    def _pinned(self, role: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A page-locked float32 host buffer of `shape`, reused and grown as batches need."""
        import torch

        count = int(np.prod(shape))
        buffer = self._host.get(role)
        if buffer is None or buffer.numel() < count:
            buffer = torch.empty(count, dtype=torch.float32, pin_memory=True)
            self._host[role] = buffer
        return buffer[:count].view(shape)

    @property
    def preferred_batch(self) -> int:
        """The batch the engine's profile was tuned for (its `opt` shape); the core batches that many."""
        return int(self.profile.opt[0])

    @property
    def largest_input(self) -> tuple[int, int]:
        """The engine's largest (rows, columns): the core plans tiles within it."""
        return int(self.profile.max[2]), int(self.profile.max[3])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.context is None:
            raise BackendError("tensorrt backend: the session is closed")
        check_batch_shape(self.profile, batch.shape)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        largest = self.profile.max[0]
        parts = [self._run(batch[i : i + largest]) for i in range(0, batch.shape[0], largest)]
        output = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if not self.checked:
            self.checked = True
            problem = fp16_problem(batch, output) if self.precision is Precision.FP16 else None
            if problem is not None:
                self._fall_back_to_fp32(problem)
                return self.infer(batch)
        return output

    def _fall_back_to_fp32(self, problem: str) -> None:
        import torch

        self.fallback = problem
        warnings.warn(
            f"tensorrt: the fp16 engine gave {problem} on the first batch; switching to an fp32 engine "
            "(slower; built once and cached)",
            RuntimeWarning,
            stacklevel=3,
        )
        with torch.cuda.device(self.index):
            build = self.backend.build_engine(
                self.model, Precision.FP32, self.profile, device=f"cuda:{self.index}"
            )
        self.precision = Precision.FP32
        self.context = None
        self._load(build.path)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        shape = tuple(batch.shape)
        host_in = self._pinned("input", shape)
        host_in.copy_(torch.from_numpy(batch))
        try:
            with torch.cuda.device(self.index), torch.cuda.stream(self.stream):
                device_in = host_in.to(self.device, non_blocking=True).to(self.input_dtype)
                if not self.context.set_input_shape(self.input_name, shape):
                    raise BackendError(f"tensorrt backend: the engine refused input shape {shape}")
                out_shape = tuple(int(s) for s in self.context.get_tensor_shape(self.output_name))
                device_out = torch.empty(out_shape, dtype=self.output_dtype, device=self.device)
                self.context.set_tensor_address(self.input_name, device_in.data_ptr())
                self.context.set_tensor_address(self.output_name, device_out.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise BackendError(f"tensorrt backend: inference failed: {trt_logger().recent()}")
                host_out = self._pinned("output", out_shape)
                host_out.copy_(device_out.to(torch.float32), non_blocking=True)
            self.stream.synchronize()
        except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as exc:
            raise OutOfMemory(
                f"tensorrt backend: out of memory on {self.device} for a batch of {shape}"
            ) from exc
        # the pinned buffer is reused by the next batch, so the caller gets its own copy
        return host_out.numpy().copy()

    def close(self) -> None:
        was_open, self.context, self.engine = self.context is not None, None, None
        self._host.clear()
        if was_open:
            import torch

            torch.cuda.empty_cache()


def fp16_problem(batch: np.ndarray, output: np.ndarray) -> str | None:
    """Why an fp16 engine's output cannot be right (NaN/Inf, or black for a bright input), or None."""
    if not np.isfinite(output).all():
        return "NaN or Inf values"
    if float(output.max()) <= BLACK_OUTPUT and float(batch.max()) > BRIGHT_INPUT:
        return "an all-black image"
    return None
