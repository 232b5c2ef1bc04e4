"""Measuring what this machine can do, and how much of it `upscale` gets (`upscale bench`).

    report = run_bench(BenchSettings(model="compact", width=320, height=180))

Four measurements, each a plain dataclass in the BenchReport (`upscaler.bench.report`): the machine's
convolution limit (`machine`), the model on every backend and precision and bf16's PSNR cost
(`backends`), and the video job end to end (`pipeline`). Times come from time.perf_counter around each
run (CUDA synchronised), after warm-up runs; every figure is a median with its min-max over the runs.
The library never prints: `progress` receives a line before each measurement.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from upscaler.backend import AUTO_PREFERENCE, discover_backends
from upscaler.bench.backends import bench_picture, load_bench_model, measure_backend, measure_quality
from upscaler.bench.machine import (
    CONV_CHANNELS,
    ConvProbe,
    _precision_problem,
    architecture_flops,
    describe_machine,
    hardware_precisions,
    resolve_bench_device,
)
from upscaler.bench.pipeline import check_video_settings, measure_video
from upscaler.bench.report import BackendRun, BenchReport, BenchSettings, ConvRun, Progress, VideoRun
from upscaler.errors import BackendError, InputError
from upscaler.options import BackendOptions
from upscaler.values import Precision

# ../shared/data beside this checkout (the project's own machines); a user's install has none.
SHARED_SET5 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval" / "Set5"


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
