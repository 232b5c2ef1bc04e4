"""`--precision auto`: bf16 on CPUs that compute it natively, fp16 on GPUs with tensor cores, else fp32."""

from __future__ import annotations

from pathlib import Path

import pytest

from upscaler import precision
from upscaler.errors import UpscaleError
from upscaler.options import BackendOptions
from upscaler.precision import PrecisionChoice, choose_auto_precision, cpuinfo_bf16_feature, resolve_precision
from upscaler.values import Precision

FAST = {"cpu": Precision.BF16, "cuda": Precision.FP16}


def test_auto_parses() -> None:
    assert Precision.parse("AUTO") is Precision.AUTO
    assert Precision.parse("int8") is Precision.INT8
    with pytest.raises(UpscaleError, match="known: fp32, fp16, bf16, int8, auto"):
        Precision.parse("int4")


@pytest.mark.parametrize(
    ("flags", "feature"),
    [
        ("fpu sse avx512f avx512_bf16 avx512_vnni", "AVX512_BF16"),
        ("fpu avx512f avx512_bf16 amx_bf16 amx_tile", "AMX"),
        ("fpu sse avx2 avx512f", None),
    ],
)
def test_cpuinfo_flags(tmp_path: Path, flags: str, feature: str | None) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\n")
    assert cpuinfo_bf16_feature(cpuinfo) == feature


def test_no_cpuinfo_means_no_bf16(tmp_path: Path) -> None:
    assert cpuinfo_bf16_feature(tmp_path / "missing") is None


def test_cpu_with_and_without_bf16(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AVX512_BF16")
    assert choose_auto_precision("cpu", FAST) == PrecisionChoice(
        Precision.BF16, "auto: this CPU has AVX512_BF16"
    )
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: None)
    choice = choose_auto_precision("cpu", FAST)
    assert choice.precision is Precision.FP32 and "no AVX512_BF16 or AMX" in choice.reason


@pytest.mark.parametrize(
    ("capability", "expected", "words"),
    [((8, 6), Precision.FP16, "has tensor cores"), ((6, 1), Precision.FP32, "has no tensor cores")],
)
def test_cuda_needs_tensor_cores(monkeypatch, capability, expected, words) -> None:
    asked = []

    def fake(index: int):
        asked.append(index)
        return "NVIDIA Test GPU", capability

    monkeypatch.setattr(precision, "cuda_capability", fake)
    choice = choose_auto_precision("cuda", FAST, cuda_index=1)
    assert choice.precision is expected
    assert words in choice.reason and "compute" in choice.reason
    assert asked == [1]


def test_other_devices_and_backends_without_a_fast_precision_run_fp32() -> None:
    assert choose_auto_precision("mps", FAST).precision is Precision.FP32
    assert choose_auto_precision("cpu", {"cuda": Precision.FP16}).precision is Precision.FP32


class Plain:
    name = "plain"


class Fast:
    name = "fast"

    def __init__(self) -> None:
        self.seen: list[BackendOptions] = []

    def auto_precision(self, options: BackendOptions) -> PrecisionChoice:
        self.seen.append(options)
        return PrecisionChoice(Precision.BF16, "auto: because")


def test_resolve_leaves_a_given_precision_alone() -> None:
    options = BackendOptions(precision=Precision.BF16)
    assert resolve_precision(Fast(), options) == (options, None)


def test_resolve_asks_the_backend_or_runs_fp32() -> None:
    options = BackendOptions(device="cpu", precision=Precision.AUTO, threads=3)
    backend = Fast()
    resolved, reason = resolve_precision(backend, options, {"bf16": 0.001})
    assert resolved == BackendOptions(device="cpu", precision=Precision.BF16, threads=3)
    assert reason == "auto: because, and bf16 costs this model 0.001 dB (measured)"
    assert backend.seen == [options]

    resolved, reason = resolve_precision(Plain(), options)
    assert resolved.precision is Precision.FP32
    assert reason == "auto: the plain backend offers no faster one"


# ------------------------------------------------------------------------- measured quality costs


def test_auto_takes_a_faster_precision_only_where_its_measured_cost_is_negligible() -> None:
    from upscaler.precision import NEGLIGIBLE_DB

    options = BackendOptions(precision=Precision.AUTO)
    fast = Fast()
    chosen, why = resolve_precision(fast, options, {"bf16": 0.004})
    assert chosen.precision is Precision.BF16 and "costs this model 0.004 dB (measured)" in why
    chosen, why = resolve_precision(fast, options, {"bf16": NEGLIGIBLE_DB})
    assert chosen.precision is Precision.FP32
    assert why == "auto: fp32; bf16 costs this model 0.050 dB on its benchmarks"
    chosen, why = resolve_precision(fast, options, None)
    assert chosen.precision is Precision.FP32 and "not measured" in why
    chosen, why = resolve_precision(fast, options, {"int8": 0.0})  # another precision's figure is no help
    assert chosen.precision is Precision.FP32


def test_measured_costs_take_the_worst_set_from_the_card() -> None:
    from upscaler.precision import measured_costs

    card = {
        "precision_cost": {
            "cost": {
                "bf16": {"Set5": {"psnr_loss_db": 0.01}, "Set14": {"psnr_loss_db": 0.03}},
                "int8": {"Set5": {"psnr_loss_db": 0.4}, "Set14": {"psnr_loss_db": 0.2}},
            }
        }
    }
    assert measured_costs(card) == {"bf16": 0.03, "int8": 0.4}
    assert measured_costs({}) is None and measured_costs(None) is None


def test_a_card_belongs_only_to_the_bundled_weights() -> None:
    from upscaler.models import load_model
    from upscaler.models.catalog import card_of

    loaded = load_model("compact")
    assert card_of("compact", loaded.digest)["id"] == "compact"
    assert card_of("compact", "0123456789abcdef") is None  # a file of another's named compact
    assert card_of("my-own-weights", loaded.digest) is None
