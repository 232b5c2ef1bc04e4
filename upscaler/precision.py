"""`--precision auto` (the default of `upscale images` and `upscale video`): the fastest precision the
hardware runs well *and* that costs the model no visible quality, chosen before a backend opens.

Measured on these machines (../shared/notes-cpu-performance.md): bf16 convolutions run about 2x fp32 on
CPUs with AVX512_BF16 (AMX is faster still); without those instructions oneDNN emulates bf16 and it is
slower than fp32. On CUDA GPUs with tensor cores (compute capability 7.0 and later) fp16 is the fast
path. Anywhere else auto means fp32. A backend says what it can run fast through an optional
`auto_precision(options) -> PrecisionChoice` method; a backend without it runs fp32 under auto.

Quality: a faster precision is taken only where the model's card records its measured cost
(`precision_cost`, written by docs/make_precision_costs.py: the PSNR lost against fp32 on Set5 and
Set14, the largest over the backends measured) and that cost is under NEGLIGIBLE_DB on every set. A
model without that measurement (a weights file of your own, a pulled model) runs fp32 under auto;
`--precision bf16` runs it anyway.

The library chooses and returns the reason; the CLI says it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from upscaler.values import Precision

if TYPE_CHECKING:
    from upscaler.backend import Backend
    from upscaler.options import BackendOptions

CPUINFO = Path("/proc/cpuinfo")
# Volta (7.0) brought tensor cores; Pascal's fp16 has no such speed-up.
TENSOR_CORE_CAPABILITY = (7, 0)
# The PSNR (dB) a precision may lose against fp32, on every set, for auto to take it: a tenth of what
# a person can see between two models, and well under the run-to-run spread of training.
NEGLIGIBLE_DB = 0.05


@dataclass(frozen=True)
class PrecisionChoice:
    """What auto chose and why, in words a user can check (`auto: this CPU has AVX512_BF16`)."""

    precision: Precision
    reason: str


def cpu_bf16_feature() -> str | None:
    """The bf16 feature of this CPU ("AMX" or "AVX512_BF16"), or None where it has neither.

    torch's own check where torch is imported already (it knows whether the OS enabled AMX, and works
    off Linux); else the flags in /proc/cpuinfo, which Linux lists only for features it enabled, so a
    run on another backend need not import torch (1.7 s) to decide. Off Linux, torch's check.
    """
    if "torch" not in sys.modules and CPUINFO.is_file():
        return cpuinfo_bf16_feature()
    try:
        import torch.cpu as torch_cpu

        if getattr(torch_cpu, "_is_amx_tile_supported", lambda: False)():
            return "AMX"
        check = getattr(torch_cpu, "_is_avx512_bf16_supported", None)
        if check is not None:
            return "AVX512_BF16" if check() else None
    except Exception:  # an old or broken torch: fall back to the flags
        pass
    return cpuinfo_bf16_feature()


def cpuinfo_field(name: str, path: Path = CPUINFO) -> str | None:
    """The value of the first `name` line of /proc/cpuinfo ("flags", "model name"), or None where there
    is no such file (macOS, Windows) or line. The one reader of that file."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return frozenset((cpuinfo_field("flags", path) or "").split())


def bf16_feature_of(flags: Iterable[str]) -> str | None:
    """The bf16 feature among CPU flags ("AMX" or "AVX512_BF16"): either gives oneDNN bf16 convolutions
    in hardware; without them torch emulates bf16, slower than fp32."""
    flags = set(flags)
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512_BF16"
    return None


def cpuinfo_bf16_feature(path: Path = CPUINFO) -> str | None:
    return bf16_feature_of(cpu_flags(path))


def cuda_capability(index: int) -> tuple[str, tuple[int, int]]:
    """The name and compute capability of CUDA device `index`."""
    import torch

    return torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))


def choose_auto_precision(
    device_type: str, fast: Mapping[str, Precision], cuda_index: int = 0
) -> PrecisionChoice:
    """Auto's choice for a backend running on `device_type` ("cpu", "cuda", "mps", ...).

    `fast` maps the device types where the backend has a faster precision to it (bf16 on "cpu", fp16
    on "cuda"); it is taken only when the hardware runs it natively.
    """
    wanted = fast.get(device_type)
    if wanted is None:
        return PrecisionChoice(Precision.FP32, f"auto: fp32 is what this backend runs on {device_type}")
    if device_type == "cpu":
        feature = cpu_bf16_feature()
        if feature is None:
            return PrecisionChoice(Precision.FP32, "auto: this CPU has no AVX512_BF16 or AMX")
        return PrecisionChoice(wanted, f"auto: this CPU has {feature}")
    if device_type == "cuda":
        name, capability = cuda_capability(cuda_index)
        where = f"{name} (compute {capability[0]}.{capability[1]})"
        if capability < TENSOR_CORE_CAPABILITY:
            return PrecisionChoice(Precision.FP32, f"auto: {where} has no tensor cores")
        return PrecisionChoice(wanted, f"auto: {where} has tensor cores")
    return PrecisionChoice(Precision.FP32, f"auto: fp32 on {device_type}")


def resolve_precision(
    backend: Backend, options: BackendOptions, costs: Mapping[str, float] | None = None
) -> tuple[BackendOptions, str | None]:
    """`options` with `--precision auto` replaced by the backend's choice, and the reason (None when
    the precision was given). `costs`: the model's measured PSNR loss (dB) per precision value (its
    card's, see `measured_costs`); a faster precision whose cost is unknown or not under NEGLIGIBLE_DB
    gives way to fp32."""
    if options.precision is not Precision.AUTO:
        return options, None
    choose = getattr(backend, "auto_precision", None)
    if choose is None:
        choice = PrecisionChoice(Precision.FP32, f"auto: the {backend.name} backend offers no faster one")
    else:
        choice = choose(options)
    if choice.precision is not Precision.FP32:
        choice = _weighed(choice, (costs or {}).get(choice.precision.value))
    return dataclasses.replace(options, precision=choice.precision), choice.reason


def _weighed(choice: PrecisionChoice, cost: float | None) -> PrecisionChoice:
    """`choice` where its measured cost is negligible, else fp32, with the reason either way."""
    name = choice.precision.value
    hardware = choice.reason.removeprefix("auto: ")
    if cost is None:
        return PrecisionChoice(
            Precision.FP32,
            f"auto: fp32; {name} would be faster ({hardware}) but its cost to this model is not measured "
            f"(--precision {name} runs it anyway)",
        )
    if cost >= NEGLIGIBLE_DB:
        return PrecisionChoice(
            Precision.FP32, f"auto: fp32; {name} costs this model {cost:.3f} dB on its benchmarks"
        )
    return PrecisionChoice(
        choice.precision, f"auto: {hardware}, and {name} costs this model {max(cost, 0):.3f} dB (measured)"
    )


def int8_feature(flags: Iterable[str] | None = None) -> str | None:
    """The CPU feature that runs int8 convolutions fast ("AMX", "AVX512_VNNI", "AVX_VNNI"), or None."""
    flags = set(cpu_flags() if flags is None else flags)
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX512_VNNI"), ("avx_vnni", "AVX_VNNI")):
        if flag in flags:
            return name
    return None


def int8_choice(
    costs: Mapping[str, float] | None, flags: Iterable[str] | None = None
) -> PrecisionChoice | None:
    """int8 for `--precision auto` on a CPU, where the CPU has int8 dot products and the model's
    measured int8 cost is negligible; else None (auto goes on to bf16 or fp32). int8 runs on the
    openvino backend only."""
    cost = (costs or {}).get(Precision.INT8.value)
    feature = int8_feature(flags)
    if cost is None or cost >= NEGLIGIBLE_DB or feature is None:
        return None
    return PrecisionChoice(
        Precision.INT8,
        f"auto: this CPU has {feature}, and int8 costs this model {max(cost, 0):.3f} dB (measured)",
    )


def model_costs(model) -> dict[str, float] | None:
    """What each faster precision costs the LoadedModel `model`, from its card (None without one)."""
    from upscaler.models.catalog import card_of

    return measured_costs(card_of(model.name, model.digest))


def measured_costs(card: Mapping | None) -> dict[str, float] | None:
    """A model card's `precision_cost` as {precision: the largest PSNR loss over its sets, in dB}, or
    None where the card has none."""
    cost = ((card or {}).get("precision_cost") or {}).get("cost")
    if not cost:
        return None
    return {
        precision: max(float(figures["psnr_loss_db"]) for figures in per_set.values())
        for precision, per_set in cost.items()
        if per_set
    }
