"""What this machine can do: its CPU, the precisions it runs natively, a plain 64 -> 64 3x3
convolution's rate (the practical limit for SR networks), FLOP counts, and how runs are timed.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from typing import Any

from upscaler.bench.report import ConvRun, FlopCount, Machine, Timing
from upscaler.errors import BackendError
from upscaler.precision import bf16_feature_of, cpu_bf16_feature, cpu_flags, cpuinfo_field
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
# The convolution that SR bodies are made of.
CONV_CHANNELS = 64
# A convolution call at small sizes lasts a few ms; one timed sample repeats it for at least this long.
CONV_SAMPLE_SECONDS = 0.2
# The FLOP counter's input side: a multiple of every architecture's size requirement, and small.
FLOP_SIDE = 16


# ------------------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_has_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU runs bf16 convolutions in hardware (AVX512_BF16 or AMX): from `flags` where
    given, else as `--precision auto` decides it (upscaler.precision.cpu_bf16_feature)."""
    return (bf16_feature_of(flags) if flags is not None else cpu_bf16_feature()) is not None


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
    """FLOPs (2 per multiply-add) of one `in_channels` x height x width forward pass, as torch's
    FlopCounterMode counts them (convolutions, transposed ones and matrix products), on the module's own
    device (a meta module costs nothing). Biases, activations, additions and resampling are left out:
    they are a few per output element beside a conv's hundreds."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, in_channels, height, width, device=device))
    layers = sum(isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for layer in module.modules())
    return FlopCount(flops=int(counter.get_total_flops()), height=height, width=width, layers=layers)


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
