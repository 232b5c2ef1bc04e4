"""Measuring what this machine can do, and how much of it `upscale` gets (`upscale bench`).

    report = run_bench(BenchSettings(model="compact", width=320, height=180))

Four measurements, each a plain dataclass in the BenchReport:

1. `ConvRun`: a plain 64 -> 64 3x3 convolution, channels_last, at the frame size: the practical limit of
   this machine for SR networks (which are mostly such convolutions), per precision.
2. `BackendRun`: the model on each backend x precision, one whole frame per call: input megapixels/s,
   GFLOP/s from the model's counted FLOPs (`count_flops`) and the fraction of (1) at the same precision,
   with (1) sampled again before each of the model's timed runs: on a shared host the load moves both.
3. `VideoRun`: `upscale video`'s own job (plan_video_job / run_video_job) on a generated clip, beside the
   same upscaler on the same decoded frames alone: end-to-end fps, model-only fps, and their ratio.
4. `QualityRun`: PSNR / SSIM (upscaler.evaluation) of fp32 and bf16 on a benchmark set, and the difference.

Times come from time.perf_counter around each run (CUDA synchronised), after warm-up runs; every
figure is a median with its min-max over the runs. The library never prints: `progress` receives a line
before each measurement.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.backend import AUTO_PREFERENCE, CUDA_ONLY, discover_backends
from upscaler.errors import BackendError, InputError, UpscaleError
from upscaler.options import BackendOptions, TileOptions
from upscaler.values import Precision

# Relevant to how fast convolutions can run on a CPU, as /proc/cpuinfo names them.
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# Either gives oneDNN bf16 convolutions in hardware; without them torch emulates bf16, slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The convolution that SR bodies are made of.
CONV_CHANNELS = 64
# A convolution call at small sizes lasts a few ms; one timed sample repeats it for at least this long.
CONV_SAMPLE_SECONDS = 0.2
# The FLOP counter's input side: a multiple of every architecture's size requirement, and small.
FLOP_SIDE = 16
CLIP_FPS = 24
# The most the video measurement holds of the model's outputs, to time the job without the model.
REPLAY_BYTES = 1024**3
# ../shared/data beside this checkout (the project's own machines); a user's install has none.
SHARED_SET5 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "Set5"

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Timing:
    """Seconds per run of `runs` timed runs (after the warm-up)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def rate(self, work: float) -> Rate:
        """`work` per second: at the median time, and over the fastest and slowest run."""
        return Rate(work / self.median, work / self.high, work / self.low)


@dataclass(frozen=True)
class Rate:
    """Something per second: the median run's, and the slowest (low) and fastest (high) run's."""

    median: float
    low: float
    high: float


@dataclass(frozen=True)
class Machine:
    cpu: str
    logical_cpus: int
    threads: int  # torch's intra-op threads during the bench
    torch_version: str
    device: str  # "cpu", or "cuda:0 (<GPU name>)"
    isa: tuple[str, ...]  # the ISA_FLAGS this CPU has
    bf16: bool  # whether `device` runs bf16 in hardware


@dataclass(frozen=True)
class FlopCount:
    """Multiply-adds of the convolutions and linear layers of a forward pass, times two."""

    flops: int
    height: int
    width: int
    layers: int

    @property
    def per_pixel(self) -> float:
        """FLOPs per input pixel."""
        return self.flops / (self.height * self.width)


@dataclass(frozen=True)
class ConvRun:
    precision: str
    batch: int
    height: int
    width: int
    channels: int
    flops: int  # of one call
    timing: Timing | None
    problem: str | None = None  # why it was not measured

    @property
    def gflops(self) -> Rate | None:
        return None if self.timing is None else _scaled(self.timing.rate(self.flops), 1e-9)


@dataclass(frozen=True)
class BackendRun:
    backend: str
    precision: str
    pixels: int  # input pixels of one call
    flops: float  # counted FLOPs of one call
    timing: Timing | None
    conv_gflops: float | None  # the reference's median over the samples between this run's calls
    problem: str | None = None

    @property
    def megapixels(self) -> Rate | None:
        return None if self.timing is None else _scaled(self.timing.rate(self.pixels), 1e-6)

    @property
    def gflops(self) -> Rate | None:
        return None if self.timing is None else _scaled(self.timing.rate(self.flops), 1e-9)

    @property
    def conv_fraction(self) -> float | None:
        gflops = self.gflops
        if gflops is None or not self.conv_gflops:
            return None
        return gflops.median / self.conv_gflops


@dataclass(frozen=True)
class VideoRun:
    """`frames` frames of width x height: the whole video job, and the upscaler alone on the same frames."""

    backend: str
    precision: str
    width: int
    height: int
    frames: int
    encoding: str
    job: Timing | None  # seconds per run_video_job
    model_only: Timing | None  # seconds per pass of the upscaler over the decoded frames
    problem: str | None = None
    # The job with the model's outputs replayed instead of computed: decoding, encoding and muxing alone.
    io_only: Timing | None = None
    model_cpu: float | None = None  # CPU seconds (all threads) of the median model-only pass
    io_cpu: float | None = None  # CPU seconds (all threads) of the median io-only pass
    cores: int = 0  # the CPUs this process may run on
    io_problem: str | None = None  # why io_only was not measured
    lookahead: int = 0  # the frames the encoder holds before it emits the first

    @property
    def job_fps(self) -> Rate | None:
        return None if self.job is None else self.job.rate(self.frames)

    @property
    def model_fps(self) -> Rate | None:
        return None if self.model_only is None else self.model_only.rate(self.frames)

    @property
    def efficiency(self) -> float | None:
        """End-to-end fps over model-only fps (medians): what decoding, encoding and muxing cost."""
        if self.job is None or self.model_only is None:
            return None
        return self.model_only.median / self.job.median

    @property
    def io_fps(self) -> Rate | None:
        return None if self.io_only is None else self.io_only.rate(self.frames)

    @property
    def ceiling(self) -> float | None:
        """The highest efficiency these cores allow: the model's and the IO's CPU time together must fit
        in `cores` x the job's wall time, so the job takes at least (model + IO CPU) / cores. 1 where
        that is less than the model alone takes (a GPU model leaves the CPU to the IO)."""
        if self.model_only is None or self.model_cpu is None or self.io_cpu is None or self.cores < 1:
            return None
        least = (self.model_cpu + self.io_cpu) / self.cores
        return min(1.0, self.model_only.median / least) if least > 0 else 1.0


@dataclass(frozen=True)
class QualityRun:
    """Mean PSNR (dB) / SSIM on Y of fp32 and bf16 on one backend, and bf16 minus fp32."""

    backend: str
    data: str
    images: int
    fp32_psnr: float | None = None
    fp32_ssim: float | None = None
    bf16_psnr: float | None = None
    bf16_ssim: float | None = None
    problem: str | None = None

    @property
    def psnr_delta(self) -> float | None:
        if self.fp32_psnr is None or self.bf16_psnr is None:
            return None
        return self.bf16_psnr - self.fp32_psnr

    @property
    def ssim_delta(self) -> float | None:
        if self.fp32_ssim is None or self.bf16_ssim is None:
            return None
        return self.bf16_ssim - self.fp32_ssim


@dataclass(frozen=True)
class BenchSettings:
    """What to measure. backends / precisions None: every available one (precisions: those this
    device runs in hardware). eval_data None: no quality measurement."""

    model: str = "esrgan"
    backends: tuple[str, ...] | None = None
    precisions: tuple[Precision, ...] | None = None
    device: str = "auto"
    threads: int | None = None
    tile_options: TileOptions = field(default_factory=TileOptions)
    width: int = 320
    height: int = 180
    repeat: int = 5
    warmup: int = 1
    video: bool = True
    frames: int = 24
    video_backend: str = "auto"
    video_precision: Precision = Precision.FP32
    # The video job's encoder settings, as `upscale video --preset / --encoder-option` take them.
    preset: str | None = None
    encoder_options: tuple[tuple[str, str], ...] = ()
    eval_data: Path | None = None


@dataclass(frozen=True)
class BenchReport:
    machine: Machine
    model: str
    arch: str
    scale: int
    random_weights: bool
    flops_per_pixel: float
    width: int
    height: int
    repeat: int
    warmup: int
    conv: list[ConvRun]
    backends: list[BackendRun]
    video: VideoRun | None
    quality: QualityRun | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: every measurement with its derived rates (medians and min-max)."""
        return {
            "machine": {**asdict(self.machine), "isa": list(self.machine.isa)},
            "model": {
                "name": self.model,
                "arch": self.arch,
                "scale": self.scale,
                "random_weights": self.random_weights,
                "flops_per_pixel": self.flops_per_pixel,
            },
            "size": {"width": self.width, "height": self.height},
            "repeat": self.repeat,
            "warmup": self.warmup,
            "conv": [
                {
                    "precision": run.precision,
                    "batch": run.batch,
                    "height": run.height,
                    "width": run.width,
                    "channels": run.channels,
                    "flops": run.flops,
                    "seconds": _timing_dict(run.timing),
                    "gflops": _rate_dict(run.gflops),
                    "problem": run.problem,
                }
                for run in self.conv
            ],
            "backends": [
                {
                    "backend": run.backend,
                    "precision": run.precision,
                    "pixels": run.pixels,
                    "flops": run.flops,
                    "seconds": _timing_dict(run.timing),
                    "megapixels_per_s": _rate_dict(run.megapixels),
                    "gflops": _rate_dict(run.gflops),
                    "conv_fraction": run.conv_fraction,
                    "problem": run.problem,
                }
                for run in self.backends
            ],
            "video": None if self.video is None else _video_dict(self.video),
            "quality": None if self.quality is None else _quality_dict(self.quality),
            "notes": list(self.notes),
        }


def _scaled(rate: Rate, factor: float) -> Rate:
    return Rate(rate.median * factor, rate.low * factor, rate.high * factor)


def _timing_dict(timing: Timing | None) -> dict[str, Any] | None:
    if timing is None:
        return None
    return {"median": timing.median, "min": timing.low, "max": timing.high, "runs": list(timing.samples)}


def _rate_dict(rate: Rate | None) -> dict[str, float] | None:
    return None if rate is None else {"median": rate.median, "min": rate.low, "max": rate.high}


def _video_dict(run: VideoRun) -> dict[str, Any]:
    return {
        "backend": run.backend,
        "precision": run.precision,
        "width": run.width,
        "height": run.height,
        "frames": run.frames,
        "encoding": run.encoding,
        "job_seconds": _timing_dict(run.job),
        "model_only_seconds": _timing_dict(run.model_only),
        "job_fps": _rate_dict(run.job_fps),
        "model_only_fps": _rate_dict(run.model_fps),
        "efficiency": run.efficiency,
        "io_only_seconds": _timing_dict(run.io_only),
        "io_only_fps": _rate_dict(run.io_fps),
        "model_cpu_seconds": run.model_cpu,
        "io_cpu_seconds": run.io_cpu,
        "cores": run.cores,
        "ceiling": run.ceiling,
        "io_problem": run.io_problem,
        "lookahead": run.lookahead,
        "problem": run.problem,
    }


def _quality_dict(run: QualityRun) -> dict[str, Any]:
    return {**asdict(run), "psnr_delta": run.psnr_delta, "ssim_delta": run.ssim_delta}


# ------------------------------------------------------------------------------------------ machine


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_has_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU runs bf16 convolutions in hardware (AVX512_BF16 or AMX)."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    if flags:
        return any(flag in flags for flag in BF16_FLAGS)
    # No /proc/cpuinfo: ask oneDNN, which knows the CPU (a private op, so guarded).
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_bench_device(requested: str) -> str:
    """ "cpu" or "cuda[:N]" for --device (auto: CUDA where there is a GPU). MPS is not benchmarked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BackendError("--device: CUDA is not available here", hint="use --device cpu")
        return requested
    raise BackendError(
        f"--device: bench runs on cpu or cuda, not {requested!r}", hint="use auto, cpu or cuda"
    )


def describe_machine(device: str) -> Machine:
    import torch

    flags = cpu_flags()
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        shown = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        bf16 = bool(torch.cuda.is_bf16_supported())
    else:
        shown, bf16 = "cpu", cpu_has_bf16(flags)
    return Machine(
        cpu=cpu_model(),
        logical_cpus=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        device=shown,
        isa=tuple(flag for flag in ISA_FLAGS if flag in flags),
        bf16=bf16,
    )


def hardware_precisions(device: str, bf16: bool) -> tuple[Precision, ...]:
    """The precisions worth measuring on `device`: fp32, fp16 on a GPU, bf16 where it is in hardware."""
    precisions = [Precision.FP32]
    if device.startswith("cuda"):
        precisions.append(Precision.FP16)
    if bf16:
        precisions.append(Precision.BF16)
    return tuple(precisions)


def _precision_problem(precision: Precision, device: str, bf16: bool) -> str | None:
    if precision is Precision.FP16 and not device.startswith("cuda"):
        return "fp16 needs a GPU"
    if precision is Precision.BF16 and not bf16:
        if device.startswith("cuda"):
            return "this GPU has no bf16"
        return "this CPU has no bf16 in hardware (avx512_bf16 or amx_bf16)"
    return None


# ------------------------------------------------------------------------------------------ timing


def time_runs(run: Callable[[], object], repeat: int, warmup: int, sync: Callable[[], None]) -> Timing:
    """Seconds of each of `repeat` calls of `run` after `warmup` untimed ones; `sync` waits for the device."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    for _ in range(warmup):
        run()
        sync()
    samples = []
    for _ in range(repeat):
        sync()
        started = time.perf_counter()
        run()
        sync()
        samples.append(time.perf_counter() - started)
    return Timing(tuple(samples))


def _synchronizer(device: str) -> Callable[[], None]:
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ FLOPs


def count_flops(module: Any, height: int, width: int, in_channels: int = 3) -> FlopCount:
    """FLOPs (2 per multiply-add) of `module`'s Conv2d, ConvTranspose2d and Linear layers on one
    `in_channels` x height x width input, on the module's own device (a meta module costs nothing).

    Biases, activations, additions and resampling are left out: they are a few per output element
    beside a conv's hundreds.
    """
    import torch
    from torch import nn

    total = 0
    layers = 0

    def conv(layer: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total, layers
        kernel = math.prod(layer.kernel_size)
        total += 2 * output.numel() * (layer.in_channels // layer.groups) * kernel
        layers += 1

    def transposed(layer: nn.ConvTranspose2d, inputs: tuple, output: torch.Tensor) -> None:
        # Every input element is multiplied into out_channels / groups x kernel output places.
        nonlocal total, layers
        kernel = math.prod(layer.kernel_size)
        total += 2 * inputs[0].numel() * (layer.out_channels // layer.groups) * kernel
        layers += 1

    def linear(layer: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total, layers
        total += 2 * output.numel() * layer.in_features
        layers += 1

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv))
        elif isinstance(layer, nn.ConvTranspose2d):
            handles.append(layer.register_forward_hook(transposed))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear))
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.inference_mode():
            module(torch.zeros(1, in_channels, height, width, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return FlopCount(flops=total, height=height, width=width, layers=layers)


def architecture_flops(arch: str, config: dict[str, Any], side: int = FLOP_SIDE) -> FlopCount:
    """count_flops of architecture `arch` with `config`, built on the meta device (no memory, no
    arithmetic).

    The network as published is counted, not its inference form: that may do more arithmetic to run
    faster (SRResNetInference's last convolution does 1.23x the FLOPs of the 9x9 one it replaces), and
    GFLOP/s from the published count is what compares one way of running a model with another."""
    import torch

    from upscaler.models import build_model, get_architecture

    architecture = get_architecture(arch)
    side = architecture.requirement(config).padded(side)
    with torch.device("meta"):
        module = build_model(arch, config).eval()
    return count_flops(module, side, side, int(config.get("num_in_ch", 3)))


# ------------------------------------------------------------------------------------------ model


def load_bench_model(spec: str, work_dir: Path) -> tuple[Any, bool]:
    """(LoadedModel, random_weights): `spec` as load_model reads it, or, for a model id whose weights
    are not bundled yet, its architecture with fixed random weights (the same every run, so a backend's
    export cache is reused). Speed and FLOPs do not depend on the weights; quality does."""
    import torch

    from upscaler.models import build_model, find_model, load_model, save_weights

    entry = find_model(spec)
    if entry is None or entry.weights_present:
        return load_model(spec), False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build_model(entry.arch, entry.config)
    path = save_weights(module, work_dir / f"{entry.id}-random.safetensors", entry.arch, entry.config)
    loaded = load_model(path)
    return replace(loaded, name=entry.id), True


def bench_picture(width: int, height: int, index: int = 0) -> np.ndarray:
    """An H x W x 3 uint8 RGB picture: gradients moving with `index`, with some noise (so that a video
    encoder has detail to spend bits on, as in real footage)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = index * 0.15
    rgb = np.stack(
        [
            127.5 + 127.5 * np.sin(x / max(width, 1) * 2 * math.pi + phase),
            127.5 + 127.5 * np.cos(y / max(height, 1) * 3 * math.pi - phase),
            (x + y + index * 4) % 256,
        ],
        axis=-1,
    )
    noise = np.random.default_rng(index).normal(0, 8, rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def write_test_clip(path: Path, width: int, height: int, frames: int, fps: int = CLIP_FPS) -> Path:
    """A short H.264 (else MPEG-4 part 2) clip of bench_picture frames; width and height must be even."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(bench_picture(width, height, index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# ------------------------------------------------------------------------------------------ measuring


class ConvProbe:
    """A channels_last channels -> channels 3x3 convolution (padding 1) on batch x height x width, ready
    to time: `sample()` is one timed sample, the call repeated for about CONV_SAMPLE_SECONDS."""

    def __init__(
        self,
        device: str,
        precision: Precision,
        *,
        width: int,
        height: int,
        batch: int = 1,
        channels: int = CONV_CHANNELS,
        warmup: int = 1,
    ) -> None:
        import torch
        import torch.nn.functional as F

        dtype = {
            Precision.FP32: torch.float32,
            Precision.FP16: torch.float16,
            Precision.BF16: torch.bfloat16,
        }[precision]
        self.precision, self.batch, self.height, self.width = precision, batch, height, width
        self.channels = channels
        self.flops = 2 * batch * height * width * channels * channels * 9
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(batch, channels, height, width, generator=generator)
        weight = torch.randn(channels, channels, 3, 3, generator=generator) * 0.05
        x = x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        weight = weight.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        bias = torch.zeros(channels, device=device, dtype=dtype)
        self._sync = _synchronizer(device)

        def once() -> None:
            with torch.inference_mode():
                F.conv2d(x, weight, bias, padding=1)

        self._once = once
        # A 5 ms call is repeated within one sample, so that it is not measured by the timer's and the
        # scheduler's noise.
        probe = time_runs(once, 1, max(warmup, 1), self._sync)
        self._calls = max(1, math.ceil(CONV_SAMPLE_SECONDS / max(probe.median, 1e-6)))
        self.samples: list[float] = []  # seconds per call of every sample taken

    def sample(self) -> float:
        """Time one sample; return (and keep) its seconds per call."""

        def repeated() -> None:
            for _ in range(self._calls):
                self._once()

        (seconds,) = time_runs(repeated, 1, 0, self._sync).samples
        self.samples.append(seconds / self._calls)
        return self.samples[-1]

    def run(self) -> ConvRun:
        """Every sample taken so far, as one ConvRun."""
        timing = Timing(tuple(self.samples)) if self.samples else None
        return ConvRun(
            self.precision.value, self.batch, self.height, self.width, self.channels, self.flops, timing
        )


def measure_backend(
    status: Any,
    loaded: Any,
    options: BackendOptions,
    picture: np.ndarray,
    flops_per_pixel: float,
    *,
    repeat: int,
    warmup: int,
    device: str,
    reference: ConvProbe | None = None,
) -> BackendRun:
    """One backend x precision: `picture` (1 x C x H x W float32, H and W what the model accepts) per call.

    With a `reference`, a sample of that convolution is taken before each timed call, and the run's
    `conv_gflops` is their median: a busy host slows both alike, so their ratio holds still.
    """
    precision = options.precision.value
    pixels = picture.shape[2] * picture.shape[3]
    flops = flops_per_pixel * pixels
    run = BackendRun(status.name, precision, pixels, flops, None, None)
    if not status.available or status.backend is None:
        return replace(run, problem=status.problem or "unavailable")
    if status.name in CUDA_ONLY and not device.startswith("cuda"):
        return replace(run, problem="runs only on CUDA")
    try:
        session = status.backend.open(loaded, options)
    except UpscaleError as error:
        return replace(run, problem=error.message)
    paired: list[float] = []
    samples: list[float] = []
    try:
        for _ in range(warmup):
            session.infer(picture)
        for _ in range(repeat):
            if reference is not None:
                paired.append(reference.sample())
            (seconds,) = time_runs(lambda: session.infer(picture), 1, 0, lambda: None).samples
            samples.append(seconds)
    except UpscaleError as error:
        return replace(run, problem=error.message)
    finally:
        session.close()
    conv_gflops = None if not paired else reference.flops / statistics.median(paired) / 1e9
    return replace(run, timing=Timing(tuple(samples)), conv_gflops=conv_gflops)


def measure_video(
    loaded: Any,
    backend: str,
    options: BackendOptions,
    tile_options: TileOptions,
    *,
    width: int,
    height: int,
    frames: int,
    repeat: int,
    warmup: int,
    work_dir: Path,
    preset: str | None = None,
    encoder_options: tuple[tuple[str, str], ...] = (),
) -> VideoRun:
    """`upscale video`'s job on a generated clip, and the same upscaler on the same frames alone."""
    from upscaler.backend import get_backend
    from upscaler.upscaling import open_upscaler
    from upscaler.video.encode import (
        EncodeSettings,
        level_dtype,
        lookahead_frames,
        row_quantizer,
        usable_cores,
    )
    from upscaler.video.job import run_video_job
    from upscaler.video.plan import plan_video_job
    from upscaler.video.probe import decode_frames, probe_video

    # yuv420p needs even sides.
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    clip = write_test_clip(work_dir / "clip.mp4", width, height, frames)
    chosen = get_backend(backend, options, loaded.info.arch).name
    destination = work_dir / "upscaled.mp4"
    model_key = {"digest": loaded.digest, "backend": chosen, "precision": options.precision.value}
    plan = plan_video_job(
        clip,
        destination,
        scale=loaded.info.scale,
        model_key=model_key,
        settings=EncodeSettings(preset=preset, options=encoder_options),
        audio=False,
        overwrite=True,
    )
    decoded = [frame.rgb for frame in decode_frames(probe_video(clip))]
    bits = plan.encoding.bit_depth
    out_bytes = len(decoded) * plan.width * plan.height * 3 * np.dtype(level_dtype(bits)).itemsize
    with open_upscaler(loaded, chosen, options, tile_options) as upscaler:
        # Both as `upscale video` runs the model: tiles of consecutive frames share batches.
        def job() -> None:
            run_video_job(plan, upscaler, resume=False)

        def model_only() -> None:
            for _ in upscaler.upscale_stream(enumerate(decoded)):
                pass

        # The model's outputs, as the job's encoder gets them, for the job without the model.
        replay: _Replay | None = None
        io_problem = None
        if out_bytes <= REPLAY_BYTES:
            made = upscaler.upscale_stream(enumerate(decoded), row_quantizer(bits))
            replay = _Replay([levels for _, levels in made])
            io_only = functools.partial(run_video_job, plan, replay, resume=False)
        else:
            io_problem = f"the {len(decoded)} upscaled frames would take {out_bytes / 2**30:.1f} GiB to hold"
        for _ in range(max(0, warmup - 1 if replay is not None else warmup)):
            model_only()

        # Interleaved, so that all see the same state of a shared, noisy machine.
        job_times: list[float] = []
        model_times: list[float] = []
        io_times: list[float] = []
        model_cpu: list[float] = []
        io_cpu: list[float] = []
        for _ in range(repeat):
            job_times += time_runs(job, 1, 0, lambda: None).samples
            model_times.append(_timed_with_cpu(model_only, model_cpu))
            if replay is not None:
                io_times.append(_timed_with_cpu(io_only, io_cpu))
    return VideoRun(
        backend=chosen,
        precision=options.precision.value,
        width=width,
        height=height,
        frames=len(decoded),
        encoding=plan.encoding.describe(),
        job=Timing(tuple(job_times)),
        model_only=Timing(tuple(model_times)),
        io_only=Timing(tuple(io_times)) if io_times else None,
        model_cpu=statistics.median(model_cpu),
        io_cpu=statistics.median(io_cpu) if io_cpu else None,
        cores=usable_cores(),
        io_problem=io_problem,
        lookahead=lookahead_frames(plan.encoding),
    )


def check_video_settings(settings: BenchSettings, scale: int, work_dir: Path) -> None:
    """Raise the error `upscale video` would give for the video job's encoder settings."""
    from upscaler.video.encode import EncodeSettings
    from upscaler.video.plan import plan_video_job

    clip = write_test_clip(work_dir / "check.mp4", 16, 16, 1)
    plan_video_job(
        clip,
        work_dir / "check-upscaled.mp4",
        scale=scale,
        model_key={},
        settings=EncodeSettings(preset=settings.preset, options=settings.encoder_options),
        audio=False,
        overwrite=True,
    )


def _timed_with_cpu(run: Callable[[], object], cpu: list[float]) -> float:
    """Wall seconds of one call of `run`; its CPU seconds (every thread of the process) go to `cpu`."""
    # process_time counts every thread of the process, in nanoseconds (os.times ticks in 10 ms).
    before, start = time.process_time(), time.perf_counter()
    run()
    seconds, after = time.perf_counter() - start, time.process_time()
    cpu.append(after - before)
    return seconds


class _Replay:
    """An UpscaleStream that gives back stored outputs, in order, instead of running a model: the video
    job with it is the job's decoding, encoding and muxing alone. Stored as `finish` made them (the
    encoder's levels), so it needs no `finish` of its own."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs = outputs

    def upscale_stream(
        self, frames: Iterable[tuple[Any, np.ndarray]], finish: Callable | None = None
    ) -> Iterable[tuple[Any, np.ndarray]]:
        # The job decodes the clip the outputs were made from: as many frames as outputs.
        for (key, _), output in zip(frames, self.outputs, strict=True):
            yield key, output.copy()  # the job may write into what it is given


def measure_quality(
    loaded: Any,
    backend: str,
    options: BackendOptions,
    tile_options: TileOptions,
    data: Path,
) -> QualityRun:
    """Mean PSNR / SSIM of the model in fp32 and in bf16 on the set in `data` (upscaler.evaluation)."""
    from upscaler.backend import get_backend
    from upscaler.evaluation import evaluate_pairs, load_eval_set
    from upscaler.upscaling import open_upscaler

    # Chosen as for bf16: both precisions run on the one backend, and for an fp32 RRDBNet on the CPU
    # auto would take onnxruntime (CPU_FP32_FIRST), which has no bf16.
    chosen = get_backend(backend, replace(options, precision=Precision.BF16), loaded.info.arch).name
    evaluation = load_eval_set(data, loaded.info.scale)
    arrays = [(pair.lr, pair.hr) for pair in evaluation.pairs]
    names = [pair.name for pair in evaluation.pairs]
    run = QualityRun(backend=chosen, data=str(data), images=len(arrays))
    scores: dict[Precision, tuple[float | None, float | None]] = {}
    for precision in (Precision.FP32, Precision.BF16):
        try:
            with open_upscaler(loaded, chosen, replace(options, precision=precision), tile_options) as up:
                report = evaluate_pairs(up.upscale, arrays, evaluation.scale, names, bicubic=False)
        except BackendError as error:
            return replace(run, problem=f"{precision.value}: {error.message}")
        scores[precision] = (report.mean_psnr, report.mean_ssim)
    return replace(
        run,
        fp32_psnr=scores[Precision.FP32][0],
        fp32_ssim=scores[Precision.FP32][1],
        bf16_psnr=scores[Precision.BF16][0],
        bf16_ssim=scores[Precision.BF16][1],
    )


# ------------------------------------------------------------------------------------------ the bench


def run_bench(settings: BenchSettings, progress: Progress | None = None) -> BenchReport:
    """Measure everything `settings` asks for on this machine; see the module's docstring."""
    import torch

    say = progress or (lambda line: None)
    if settings.width < 1 or settings.height < 1:
        raise InputError(f"--size: must be at least 1x1 (got {settings.width}x{settings.height})")
    if settings.repeat < 1:
        raise InputError(f"--repeat: must be at least 1 (got {settings.repeat})")
    if settings.eval_data is not None and not Path(settings.eval_data).is_dir():
        raise InputError(f"--eval-data: {settings.eval_data}: no such folder")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    device = resolve_bench_device(settings.device)
    machine = describe_machine(device)
    notes: list[str] = []

    statuses = discover_backends()
    if settings.backends is not None:
        unknown = [name for name in settings.backends if name not in statuses]
        if unknown:
            known = ", ".join(sorted(statuses)) or "none"
            raise BackendError(f"unknown backend {unknown[0]!r}; known: {known}")
        statuses = {name: statuses[name] for name in settings.backends}
    precisions = settings.precisions or hardware_precisions(device, machine.bf16)
    if settings.precisions is None and not machine.bf16 and device == "cpu":
        notes.append("bf16 not measured: this CPU has no avx512_bf16 or amx_bf16")

    with tempfile.TemporaryDirectory(prefix="upscale-bench-") as temporary:
        work_dir = Path(temporary)
        say(f"loading model {settings.model}")
        loaded, random_weights = load_bench_model(settings.model, work_dir)
        info = loaded.info
        if random_weights:
            notes.append(
                f"no bundled weights for {settings.model!r} yet: timed with random weights of its "
                "architecture (speed and FLOPs are the same; quality figures mean nothing)"
            )
        per_pixel = architecture_flops(info.arch, info.config).per_pixel
        width, height = info.requirement.padded(settings.width), info.requirement.padded(settings.height)
        if (width, height) != (settings.width, settings.height):
            notes.append(
                f"size padded to {width}x{height}: "
                f"the model needs multiples of {info.requirement.multiple_of}"
            )

        if settings.video:
            # A bad --preset or --encoder-option stops here, not after minutes of measuring.
            check_video_settings(settings, info.scale, work_dir)

        # The reference is sampled again before each timed run of a model (measure_backend), and its
        # table pools every sample: the host's load moves both together, so the fractions compare like
        # with like.
        probes: dict[str, ConvProbe] = {}
        skipped_conv: dict[str, ConvRun] = {}
        for precision in precisions:
            problem = _precision_problem(precision, device, machine.bf16)
            if problem is not None and precision is not Precision.BF16:
                skipped_conv[precision.value] = ConvRun(
                    precision.value, 1, height, width, CONV_CHANNELS, 0, None, problem
                )
                continue
            say(f"3x3 conv {CONV_CHANNELS}->{CONV_CHANNELS} {precision.value} at {width}x{height}")
            probe = ConvProbe(device, precision, width=width, height=height, warmup=settings.warmup)
            for _ in range(settings.repeat):
                probe.sample()
            probes[precision.value] = probe

        rgb = bench_picture(width, height).astype(np.float32) / 255
        picture = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
        backend_runs = []
        # In the order --backend auto prefers them, then the other plugins.
        order = [name for name in AUTO_PREFERENCE if name in statuses]
        order += sorted(set(statuses) - set(order))
        for status in (statuses[name] for name in order):
            if not status.available:
                # One line for all its precisions: it cannot run here at all.
                backend_runs.append(BackendRun(status.name, "all", 0, 0.0, None, None, status.problem))
                continue
            for precision in precisions:
                say(f"{status.name} {precision.value}: {settings.model} at {width}x{height}")
                options = BackendOptions(device=device, precision=precision, threads=settings.threads)
                backend_runs.append(
                    measure_backend(
                        status,
                        loaded,
                        options,
                        picture,
                        per_pixel,
                        repeat=settings.repeat,
                        warmup=settings.warmup,
                        device=device,
                        reference=probes.get(precision.value),
                    )
                )
        conv_runs = [
            probes[p.value].run() if p.value in probes else skipped_conv[p.value] for p in precisions
        ]

        video = None
        video_options = BackendOptions(
            device=device, precision=settings.video_precision, threads=settings.threads
        )
        if settings.video:
            say(f"video: {settings.frames} frames of {width}x{height}, the whole job and the model alone")
            try:
                video = measure_video(
                    loaded,
                    settings.video_backend,
                    video_options,
                    settings.tile_options,
                    width=width,
                    height=height,
                    frames=settings.frames,
                    repeat=settings.repeat,
                    warmup=settings.warmup,
                    work_dir=work_dir,
                    preset=settings.preset,
                    encoder_options=settings.encoder_options,
                )
            except BackendError as error:
                video = VideoRun(
                    settings.video_backend,
                    video_options.precision.value,
                    width,
                    height,
                    0,
                    "",
                    None,
                    None,
                    problem=error.message,
                )

        if video is not None and video.job is not None and 0 < video.frames <= video.lookahead:
            notes.append(
                f"the encoder looks ahead {video.lookahead} frames: with {video.frames}, all of its work "
                "comes after the model's last frame, not beside it; more --frames weigh that less"
            )

        quality = None
        if settings.eval_data is None:
            notes.append("bf16's PSNR cost not measured: no benchmark set given (--eval-data)")
        else:
            say(f"PSNR of fp32 and bf16 on {settings.eval_data}")
            quality = measure_quality(
                loaded, settings.video_backend, video_options, settings.tile_options, Path(settings.eval_data)
            )
            if random_weights:
                notes.append(
                    "the PSNR figures are of random weights: only the bf16 - fp32 difference means much"
                )

    return BenchReport(
        machine=machine,
        model=loaded.name,
        arch=info.arch,
        scale=info.scale,
        random_weights=random_weights,
        flops_per_pixel=per_pixel,
        width=width,
        height=height,
        repeat=settings.repeat,
        warmup=settings.warmup,
        conv=conv_runs,
        backends=backend_runs,
        video=video,
        quality=quality,
        notes=notes,
    )
