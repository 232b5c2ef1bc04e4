"""The model on each backend and precision, one whole frame per call, and bf16's quality cost."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.backend import CUDA_ONLY, INT8_BACKEND
from upscaler.bench.machine import ConvProbe, time_runs
from upscaler.bench.report import BackendRun, QualityRun, Timing
from upscaler.errors import BackendError, UpscaleError
from upscaler.options import BackendOptions, TileOptions
from upscaler.values import Precision

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


def measure_quality(
    loaded: Any,
    backend: str,
    options: BackendOptions,
    tile_options: TileOptions,
    data: Path,
) -> QualityRun:
    """Mean PSNR / SSIM (and LPIPS, where its weights are installed) of the model in fp32 and in bf16
    on the set in `data` (as `upscale eval`), and in int8 on the backend that runs it."""
    from upscaler.backend import get_backend
    from upscaler.quality.evaluation import evaluate_pairs, load_eval_set
    from upscaler.upscaling import open_upscaler

    # Chosen as for bf16: both precisions run on the one backend, and for an fp32 RRDBNet on the CPU
    # auto would take onnxruntime (CPU_FP32_FIRST), which has no bf16.
    chosen = get_backend(backend, replace(options, precision=Precision.BF16), loaded.info.arch).name
    evaluation = load_eval_set(data, loaded.info.scale)
    arrays = [(pair.lr, pair.hr) for pair in evaluation.pairs]
    names = [pair.name for pair in evaluation.pairs]
    perceptual = _lpips()
    run = QualityRun(backend=chosen, data=str(data), images=len(arrays))

    def scored(name: str, precision: Precision) -> tuple[float | None, float | None, float | None]:
        with open_upscaler(loaded, name, replace(options, precision=precision), tile_options) as up:
            report = evaluate_pairs(
                up.upscale, arrays, evaluation.scale, names, bicubic=False, perceptual=perceptual
            )
        return report.mean_psnr, report.mean_ssim, report.mean_lpips

    scores: dict[Precision, tuple[float | None, float | None, float | None]] = {}
    for precision in (Precision.FP32, Precision.BF16):
        try:
            scores[precision] = scored(chosen, precision)
        except BackendError as error:
            return replace(run, problem=f"{precision.value}: {error.message}")
    run = replace(
        run,
        fp32_psnr=scores[Precision.FP32][0],
        fp32_ssim=scores[Precision.FP32][1],
        fp32_lpips=scores[Precision.FP32][2],
        bf16_psnr=scores[Precision.BF16][0],
        bf16_ssim=scores[Precision.BF16][1],
        bf16_lpips=scores[Precision.BF16][2],
    )
    if backend not in ("auto", INT8_BACKEND):
        return replace(run, int8_problem=f"int8 runs on {INT8_BACKEND}, not {backend}")
    try:
        psnr, ssim, lpips = scored(INT8_BACKEND, Precision.INT8)
    except BackendError as error:
        return replace(run, int8_backend=INT8_BACKEND, int8_problem=error.message)
    return replace(run, int8_backend=INT8_BACKEND, int8_psnr=psnr, int8_ssim=ssim, int8_lpips=lpips)


def _lpips():
    """LPIPS's distance where its weights are installed (upscale weights install lpips), else None."""
    from upscaler.models.lpips import load_lpips, lpips_path

    return load_lpips().distance if lpips_path().is_file() else None
