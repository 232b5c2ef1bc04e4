"""`--backend auto`: TensorRT where it can run, then torch, then onnxruntime, then other plugins;
onnxruntime first for RRDBNet in fp32 on the CPU."""

from __future__ import annotations

import pytest

from upscaler.backend import BackendStatus, choose_backend, get_backend
from upscaler.errors import BackendError
from upscaler.options import BackendOptions


class Fake:
    def __init__(self, name: str) -> None:
        self.name = name
        self.description = name

    def check(self) -> None:
        return None

    def open(self, model, options):
        raise NotImplementedError


def statuses(**problems: str | None) -> dict[str, BackendStatus]:
    return {name: BackendStatus(name, name, problem, Fake(name)) for name, problem in problems.items()}


def test_tensorrt_first_where_it_can_run() -> None:
    found = statuses(onnxruntime=None, torch=None, tensorrt=None)
    assert choose_backend(found).name == "tensorrt"
    assert choose_backend(found, BackendOptions(device="cuda:1")).name == "tensorrt"


def test_a_cpu_or_mps_device_passes_over_cuda_only_backends() -> None:
    found = statuses(onnxruntime=None, torch=None, tensorrt=None)
    assert choose_backend(found, BackendOptions(device="cpu")).name == "torch"
    assert choose_backend(found, BackendOptions(device="mps")).name == "torch"


def test_torch_before_onnxruntime_as_measured_on_the_cpu() -> None:
    found = statuses(
        onnxruntime=None, torch=None, tensorrt="TensorRT needs an NVIDIA GPU with CUDA; none found"
    )
    assert choose_backend(found).name == "torch"
    assert choose_backend(statuses(onnxruntime=None, torch="torch is not installed")).name == "onnxruntime"


def test_other_plugins_come_last_and_nothing_is_an_error() -> None:
    assert choose_backend(statuses(zeta=None, alpha=None, torch="broken")).name == "alpha"
    with pytest.raises(BackendError, match="no backend can run here") as info:
        choose_backend(statuses(torch="broken", tensorrt="no GPU"))
    assert "upscale backends" in info.value.hint


def test_auto_here_is_a_real_backend_with_its_own_name() -> None:
    chosen = get_backend("auto", BackendOptions(device="cpu"))
    assert chosen.name in {"torch", "onnxruntime"}


def test_unknown_and_unavailable_backends() -> None:
    with pytest.raises(BackendError, match="unknown backend 'nope'; known: auto, .*onnxruntime"):
        get_backend("nope")


def test_rrdbnet_in_fp32_on_the_cpu_takes_onnxruntime_first() -> None:
    # Measured faster for RRDBNet on the CPU (upscaler.backend.CPU_FP32_FIRST); elsewhere the usual order.
    from upscaler.values import Precision

    found = statuses(onnxruntime=None, torch=None, tensorrt="no GPU")
    cpu = BackendOptions(device="cpu", precision=Precision.FP32)
    assert choose_backend(found, cpu, "rrdbnet").name == "onnxruntime"
    assert choose_backend(found, cpu, "compact").name == "torch"
    assert choose_backend(found, cpu).name == "torch"  # the model not known
    # bf16 and auto precision keep torch: onnxruntime has no bf16
    for precision in (Precision.BF16, Precision.AUTO):
        assert (
            choose_backend(found, BackendOptions(device="cpu", precision=precision), "rrdbnet").name
            == "torch"
        )
    # a GPU device, and a machine without onnxruntime, keep the usual order
    assert (
        choose_backend(found, BackendOptions(device="cuda", precision=Precision.FP32), "rrdbnet").name
        == "torch"
    )
    without = statuses(onnxruntime="onnxruntime is not installed", torch=None)
    assert choose_backend(without, cpu, "rrdbnet").name == "torch"


def test_runs_on_cpu() -> None:
    import torch

    from upscaler.backend import runs_on_cpu

    assert runs_on_cpu("cpu") and not runs_on_cpu("cuda:0") and not runs_on_cpu("mps")
    assert runs_on_cpu("auto") == (not (torch.cuda.is_available() or torch.backends.mps.is_available()))
