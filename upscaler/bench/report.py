"""The figures `upscale bench` measures, as plain dataclasses, and their JSON form."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from upscaler.options import TileOptions
from upscaler.values import Precision

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
    """Mean PSNR (dB) / SSIM on Y of fp32 and bf16 on one backend, and bf16 minus fp32; int8 on its
    backend (openvino) where it runs; LPIPS of each where its weights are installed."""

    backend: str
    data: str
    images: int
    fp32_psnr: float | None = None
    fp32_ssim: float | None = None
    bf16_psnr: float | None = None
    bf16_ssim: float | None = None
    problem: str | None = None
    fp32_lpips: float | None = None
    bf16_lpips: float | None = None
    int8_backend: str | None = None
    int8_psnr: float | None = None
    int8_ssim: float | None = None
    int8_lpips: float | None = None
    int8_problem: str | None = None

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
    int8_delta = None if run.int8_psnr is None or run.fp32_psnr is None else run.int8_psnr - run.fp32_psnr
    return {
        **asdict(run),
        "psnr_delta": run.psnr_delta,
        "ssim_delta": run.ssim_delta,
        "int8_psnr_delta": int8_delta,
    }
