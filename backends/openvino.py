"""The OpenVINO backend: the exported ONNX graph on OpenVINO's CPU plugin.

A plugin written the way a third party would write one: this module and its entry point
(`openvino = "backends.openvino:OpenVINOBackend"`), nothing else in the core. It reuses the core's
ONNX export and its cache (`upscaler.export.cached_onnx`, one fp32 graph per weights digest), which
OpenVINO reads with its own ONNX frontend. It does not use `openvino.convert_model` on the torch
module: that would trace the network again on every run, and the converter ships with a telemetry
client (openvino-telemetry), while nothing here may touch the network at run time.

Precision is always set explicitly, because OpenVINO's CPU plugin otherwise picks bf16 by itself on
CPUs with AVX512_BF16 or AMX: fp32 runs in f32, bf16 in bf16 (refused on CPUs without bf16 support),
fp16 in f16 only where the CPU plugin lists FP16 among its capabilities (AVX512_FP16 / AMX-FP16 or
ARM); elsewhere fp16 is refused like the torch backend does, because OpenVINO would quietly run it as
bf16 or f32. After compiling, the precision OpenVINO actually chose is checked against the request.

Shapes: the graph is compiled once with dynamic batch, height and width and serves every batch. A
model reshaped and compiled per static shape was no faster for repeated tiles of one shape that
mattered (RRDB-6, 4 x 96 x 96, 2 threads: median 1-4% over paired runs, inside the noise of a busy
machine), cost a compile per new shape (0.3-0.7 s) and held its own activations per shape (+340 MB
there), which the tiler's memory budget does not count on.

`--threads` sets `INFERENCE_NUM_THREADS`; the latency hint gives one stream, which suits the core's
one-batch-at-a-time inference. Known problem: with a preloaded tcmalloc or jemalloc (LD_PRELOAD) in a
process that also holds torch, OpenVINO crashed; run without the preload.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backends.openvino_int8 import quantized_ir
from upscaler.backend import ClosingSession
from upscaler.errors import BackendError, OutOfMemory
from upscaler.export import INPUT_NAME, cached_onnx, default_cache_dir, load_cached
from upscaler.precision import PrecisionChoice, choose_auto_precision, model_costs, resolve_precision
from upscaler.system.runtimes import import_openvino, installed
from upscaler.values import Precision

if TYPE_CHECKING:
    from upscaler.models import LoadedModel
    from upscaler.options import BackendOptions

SPLIT_DENSE = "split-dense"
INSTALL_HINT = "openvino is not installed: pip install 'upscaler[openvino]'"
ONNX_HINT = "onnx is not installed (the graph is exported through it): pip install 'upscaler[openvino]'"
DEVICE = "CPU"
# OpenVINO's element type (an `openvino.Type` attribute) for each precision, and the capability its
# CPU plugin lists when it can run that precision.
# int8 runs its quantized convolutions in int8 and what is left in f32.
ELEMENT_TYPE = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16", Precision.INT8: "f32"}
CAPABILITY = {Precision.BF16: "BF16", Precision.FP16: "FP16", Precision.INT8: "INT8"}


class OpenVINOBackend:
    name = "openvino"
    description = "OpenVINO: CPU plugin (fp32, bf16 where the CPU has it)"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def check(self) -> str | None:
        # Found, not imported: importing OpenVINO costs time, and its converter phones home (runtimes.py).
        if not installed("openvino"):
            return INSTALL_HINT
        if not installed("onnx"):
            return ONNX_HINT
        return None

    def auto_precision(self, options: BackendOptions) -> PrecisionChoice:
        """bf16 on a CPU with AVX512_BF16 or AMX (the CPU plugin's own choice there), else fp32."""
        return choose_auto_precision("cpu", {"cpu": Precision.BF16})

    def open(self, model: LoadedModel, options: BackendOptions) -> OpenVINOSession:
        options, _ = resolve_precision(self, options, model_costs(model))
        return OpenVINOSession(model, options, self.cache_dir or default_cache_dir())


def check_device(device: str) -> None:
    """Refuse a `--device` OpenVINO's CPU plugin cannot serve ("auto" and "cpu" can)."""
    if device in ("auto", "cpu"):
        return
    raise BackendError(
        f"--device: the openvino backend runs on the CPU, not {device!r}",
        hint="use --device cpu (or auto), or another backend (torch, tensorrt) for a GPU",
    )


def check_precision(precision: Precision, capabilities: list[str]) -> None:
    """Refuse a precision the CPU plugin would not honour on this CPU (it would pick another quietly)."""
    needed = CAPABILITY.get(precision)
    if needed is None or needed in capabilities:
        return
    if precision is Precision.FP16:
        raise BackendError(
            "--precision: fp16 is not supported on the CPU", hint="use --precision fp32 (or bf16) on the CPU"
        )
    if precision is Precision.INT8:
        raise BackendError(
            "--precision: OpenVINO lists no int8 on this CPU", hint="use --precision fp32 (or bf16)"
        )
    raise BackendError(
        f"--precision: OpenVINO has no {precision.value} on this CPU (it needs AVX512_BF16 or AMX)",
        hint="use --precision fp32, or --backend torch for bf16",
    )


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "bad_alloc" in text or "failed to allocate" in text or "out of memory" in text


class OpenVINOSession(ClosingSession):
    """The exported graph compiled once for OpenVINO's CPU plugin, with one infer request."""

    def __init__(self, model: LoadedModel, options: BackendOptions, cache_dir: Path) -> None:
        ov = import_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        check_device(options.device)
        if options.threads is not None and options.threads < 1:
            raise BackendError(f"--threads: must be at least 1 (got {options.threads})")
        core = ov.Core()
        # OpenVINO keeps each compiled model there and loads it on the next run: compiling the RRDBNet
        # took 1.1 s, loading it 0.09 s.
        core.set_property({props.cache_dir: str(cache_dir / "openvino-compiled")})
        precision = options.precision
        check_precision(precision, list(core.get_property(DEVICE, props.device.capabilities)))
        self.in_channels = model.info.in_channels
        self.precision = precision
        # Its CPU plugin ran 8 tiles of 320x180 frames at 0.41-0.43 s a frame one at a time and
        # 0.45-0.49 in fours (upscaler.backend.preferred_batch).
        self.preferred_batch = 1
        # fp32 graph for every precision: OpenVINO lowers it to bf16 or f16 itself, from the hint below.
        # RRDBNet with its dense blocks split (upscaler.models.rrdbnet.SPLIT_DENSE) ran faster here: bf16
        # 0.463 s against 0.491 a 320x180 frame, fp32 0.922 against 0.940 (6 alternating runs each).
        # Architectures without that form get the plain graph.
        self.export = cached_onnx(model, Precision.FP32, cache_dir, form=SPLIT_DENSE)

        wanted = getattr(ov.Type, ELEMENT_TYPE[precision])
        config = {
            hints.inference_precision: wanted,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
        }
        if options.threads is not None:
            config[props.inference_num_threads] = options.threads
        if precision is Precision.INT8:
            xml = quantized_ir(core, self.export, model, cache_dir)
            self.compiled = core.compile_model(str(xml), DEVICE, config)
        else:
            self.compiled, self.export = load_cached(
                self.export,
                # From the path, so that the compiled-model cache knows the file.
                lambda path: core.compile_model(str(path), DEVICE, config),
                lambda: cached_onnx(model, Precision.FP32, cache_dir, form=SPLIT_DENSE),
                "openvino backend",
            )
        chosen = self.compiled.get_property(hints.inference_precision)
        if chosen != wanted:
            raise BackendError(
                f"--precision: OpenVINO would run {precision.value} as {chosen} on this CPU",
                hint="use --precision fp32",
            )
        self.threads = int(self.compiled.get_property(props.inference_num_threads))
        self.request = self.compiled.create_infer_request()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != self.in_channels:
            raise BackendError(
                f"openvino backend: expected a batch of shape (N, {self.in_channels}, H, W), "
                f"got {batch.shape}"
            )
        if self.request is None:
            raise BackendError("openvino backend: the session is closed")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            # the input is read in place; the output is copied out, because the next batch reuses it
            results = self.request.infer({INPUT_NAME: batch}, share_inputs=True, share_outputs=False)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(
                    f"openvino backend: out of memory on the CPU for a batch of {batch.shape}"
                ) from exc
            raise
        return np.asarray(results[0], dtype=np.float32)

    def close(self) -> None:
        self.request = None
        self.compiled = None
