"""The backend protocol and the discovery of backends through entry points.

A backend is a cheap object: `name`, `description`, `check()` (why it cannot run here, or None) and
`open(model, options)` returning a session with `infer(batch)` and `close()`. Batches are NCHW float32
RGB in [0, 1]; outputs are NCHW float32 with H and W times the model's scale, in an array the core may
keep and change (not a buffer the next batch reuses). Padding, clamping and tiling happen in the core,
never in a backend. A session may also have a `preferred_batch`, the tiles per batch it runs fastest
with; the core batches that many unless told otherwise (see the function `preferred_batch`); a
`reused_bytes`, the largest activation its memory is reused for from call to call (see `reused_bytes`);
and a `largest_input`, the largest (rows, columns) it takes (see `largest_input`).

Built-in backends register through the same entry-point group as third-party ones, so there is one way in.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from upscaler.errors import BackendError
from upscaler.values import Precision

if TYPE_CHECKING:
    import numpy as np

    from upscaler.models import LoadedModel
    from upscaler.options import BackendOptions

ENTRY_POINT_GROUP = "upscaler.backends"

# `--backend auto` takes the first of these that can run here, then any other available plugin:
# TensorRT (it can run only with a CUDA GPU and tensorrt installed), then torch (on CUDA where there is
# a GPU, else the CPU), then onnxruntime. On the CPU torch is the fastest or as fast for compact (the
# default model) in fp32 and bf16, and level with onnxruntime for SRResNet (BENCHMARKS.md).
AUTO_PREFERENCE = ("tensorrt", "torch", "onnxruntime")
# Built-in backends that auto tries before torch for an architecture run in fp32 on the CPU, where they
# are installed: RRDBNet 6 x 32 took 0.90 s a 320x180 frame on onnxruntime against 1.24 on torch, and
# the 23 x 64 ESRGAN generator 2.47 against 2.63 (`upscale bench`, 2 cores; BENCHMARKS.md). Not for
# bf16 or `--precision auto`: onnxruntime has no bf16, and torch's bf16 (0.54 s) beats its fp32.
CPU_FP32_FIRST: dict[str, tuple[str, ...]] = {"rrdbnet": ("onnxruntime",)}
# The backend that runs `--precision int8` (quantized by NNCF: backends/openvino_int8.py).
INT8_BACKEND = "openvino"
# Backends that run only on CUDA, which auto passes over when --device asks for the CPU or MPS.
CUDA_ONLY = frozenset({"tensorrt"})


@runtime_checkable
class Session(Protocol):
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


# Tiles per batch for a session that does not say (`preferred_batch`): what a GPU wants.
DEFAULT_BATCH = 4


def preferred_batch(session: Session) -> int:
    """The tiles per batch `session` runs fastest with: its optional `preferred_batch`, else DEFAULT_BATCH.

    On the CPU that is 1: batches of 4 tiles of consecutive 320x180 frames took 0.58-0.61 s a frame
    against 0.40 one at a time (torch, compact; OpenVINO 0.45-0.49 against 0.41-0.43), and at 1280x720
    (several tiles a frame) the two were within noise (BENCHMARKS.md). The batch's activations (59 MB a
    layer there) pass the allocator's 32 MiB mmap threshold and are faulted in afresh at every layer;
    with a 256 MiB threshold the two tied (0.39 s), so batching gains nothing on the CPU. A GPU fills up
    with batches.
    """
    value = getattr(session, "preferred_batch", None)
    return value if isinstance(value, int) and value >= 1 else DEFAULT_BATCH


def reused_bytes(session: Session) -> int:
    """The largest activation, in bytes, whose memory `session` reuses from one call to the next, or 0
    where that is not a limit (the default: a runtime that plans its memory, or a GPU's caching
    allocator). Eager PyTorch on the CPU allocates every activation afresh from malloc, which hands
    blocks above its mmap threshold back to the kernel on free: the next call faults them in again,
    zeroed page by page. The tiler keeps activations below this size where that costs less than the
    faults would (upscaler.tiling.layout.choose_tile_shape)."""
    value = getattr(session, "reused_bytes", None)
    return value if isinstance(value, int) and value > 0 else 0


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver loaded, asked without importing CUDA libraries."""
    places = ("/dev/nvidiactl", "/proc/driver/nvidia")
    return any(Path(place).exists() for place in places) or shutil.which("nvidia-smi") is not None


def runs_on_cpu(device: str) -> bool:
    """Whether `--device` `device` means the CPU: "cpu", or "auto" on a machine with neither CUDA nor
    MPS (as torch sees them; without torch, nothing here can use a GPU either). Without an NVIDIA
    driver, off macOS, that is known without importing torch (1.7 s here)."""
    if device != "auto":
        return device == "cpu"
    if not nvidia_driver_present() and sys.platform != "darwin":
        return True
    try:
        import torch
    except ImportError:
        return True
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())


def largest_input(session: Session) -> tuple[int, int] | None:
    """The largest input (rows, columns) `session` takes, or None where any size runs (the default). A
    TensorRT engine runs only the shapes of its optimisation profile; `--tile-size auto` keeps every
    tile within this, a frame that would otherwise be one tile included."""
    value = getattr(session, "largest_input", None)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(side, int) and side >= 1 for side in value)
    ):
        return value
    return None


@runtime_checkable
class Backend(Protocol):
    name: str
    description: str

    def check(self) -> str | None: ...

    def open(self, model: LoadedModel, options: BackendOptions) -> Session: ...


class ClosingSession:
    """Mixin that makes a session a context manager which closes it."""

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class BackendStatus:
    """One discovered backend: `problem` says why it cannot run here (None when it can)."""

    name: str
    description: str
    problem: str | None
    backend: Backend | None

    @property
    def available(self) -> bool:
        return self.problem is None


def discover_backends() -> dict[str, BackendStatus]:
    """Every backend registered under the entry-point group, loaded and checked.

    A plugin that fails to import is listed with the reason instead of breaking the others.
    """
    found: dict[str, BackendStatus] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found:
            continue
        try:
            backend = entry.load()()
        except Exception as exc:  # a broken third-party plugin must not take the tool down
            found[entry.name] = BackendStatus(entry.name, entry.value, f"failed to load: {exc}", None)
            continue
        try:
            problem = backend.check()
        except Exception as exc:
            problem = f"check failed: {exc}"
        found[entry.name] = BackendStatus(entry.name, backend.description, problem, backend)
    return found


def get_backend(name: str, options: BackendOptions | None = None, arch: str | None = None) -> Backend:
    """The backend called `name`, or the best available one for "auto".

    With `options`, auto also passes over backends that cannot serve them (a CUDA-only backend when
    the device is the CPU or MPS); with the model's `arch` too, it takes a backend measured faster
    for that architecture on the CPU (CPU_FP32_FIRST). The backend returned is the real one, so its
    `name` tells the user what auto picked.
    """
    statuses = discover_backends()
    if name == "auto":
        return choose_backend(statuses, options, arch)
    status = statuses.get(name)
    if status is None:
        known = ", ".join(sorted(statuses)) or "none"
        raise BackendError(f"unknown backend {name!r}; known: auto, {known}")
    if status.problem is not None or status.backend is None:
        raise BackendError(f"backend {name!r} cannot run here: {status.problem}")
    return status.backend


def choose_backend(
    statuses: dict[str, BackendStatus], options: BackendOptions | None = None, arch: str | None = None
) -> Backend:
    """What `--backend auto` runs: the first of AUTO_PREFERENCE that can run here, then other plugins;
    for an `arch` in CPU_FP32_FIRST run in fp32 on the CPU, its faster backends first."""
    order = [n for n in AUTO_PREFERENCE if n in statuses] + sorted(set(statuses) - set(AUTO_PREFERENCE))
    device = options.device if options is not None else "auto"
    if (
        arch in CPU_FP32_FIRST
        and options is not None
        and options.precision is Precision.FP32
        and runs_on_cpu(device)
    ):
        first = [n for n in CPU_FP32_FIRST[arch] if n in statuses]
        order = first + [n for n in order if n not in first]
    for candidate in order:
        status = statuses[candidate]
        if not status.available or status.backend is None:
            continue
        if candidate in CUDA_ONLY and not (device == "auto" or device.startswith("cuda")):
            continue
        return status.backend
    raise BackendError("no backend can run here", hint="run `upscale backends` to see why")
