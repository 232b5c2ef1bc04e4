"""`upscale bench`: how fast this machine can run a model, and how much of that `upscale` gets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from upscaler.cli.options import ModelRun, encoder_option, model_options, print_table

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class FrameSize(click.ParamType):
    """WxH in pixels, e.g. 320x180."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = _SIZE.match(str(value))
        if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
            self.fail(f"expected WIDTHxHEIGHT in pixels, e.g. 320x180 (got {value!r})", param, ctx)
        return int(match.group(1)), int(match.group(2))


@click.command()
@model_options(precision="fp32")
@click.option(
    "--size",
    type=FrameSize(),
    default="320x180",
    show_default=True,
    help="Input frame size the model, the convolution and the video clip are measured at.",
)
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs each.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed runs first."
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=24,
    show_default=True,
    help="Frames of the video clip (the encoder's flush after the last frame weighs less in more).",
)
@click.option("--no-video", is_flag=True, help="Leave out the end-to-end video measurement.")
@click.option("--preset", help="The video job's encoder preset, as for `upscale video` (default: medium).")
@encoder_option("An option for the video job's encoder, KEY=VALUE (repeatable), as for `upscale video`.")
@click.option(
    "--eval-data",
    type=click.Path(path_type=Path),
    help="A benchmark set (as for `upscale eval --data`) to measure bf16's PSNR cost against fp32 on.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of tables.")
def bench(
    run: ModelRun, size, repeat, warmup, frames, no_video, preset, encoder_options, eval_data, as_json
) -> None:
    """Measure this machine and the model on it.

    A plain 64->64 3x3 convolution (the practical limit here); the model on every available backend and
    precision (input megapixels/s, GFLOP/s from its counted FLOPs, and the fraction of the convolution's
    rate, the convolution timed again between the model's runs); `upscale video` end to end on a
    generated clip beside the model alone on the same frames; and, with a benchmark set, the PSNR of
    bf16 against fp32. --backend and --precision narrow the backends and precisions measured (by
    default all that run here); the video and PSNR measurements use them as `upscale video` would
    (auto, fp32 unless given). Medians of --repeat runs, with min-max.

    \b
    Example:
      upscale bench --model compact --size 320x180
    """
    from upscaler.bench.report import BenchSettings
    from upscaler.bench.run import SHARED_SET5, run_bench

    ctx = click.get_current_context()
    given = {name for name in ("backend", "precision") if ctx.get_parameter_source(name).name != "DEFAULT"}
    options = run.backend_options
    if eval_data is None and SHARED_SET5.is_dir():
        eval_data = SHARED_SET5
    settings = BenchSettings(
        model=run.model,
        backends=(run.backend,) if "backend" in given and run.backend != "auto" else None,
        precisions=(options.precision,) if "precision" in given else None,
        device=options.device,
        threads=options.threads,
        tile_options=run.tile_options,
        width=size[0],
        height=size[1],
        repeat=repeat,
        warmup=warmup,
        video=not no_video,
        frames=frames,
        video_backend=run.backend,
        video_precision=options.precision,
        preset=preset,
        encoder_options=tuple(encoder_options),
        eval_data=eval_data,
    )
    report = run_bench(settings, progress=lambda line: click.echo(f"bench: {line} ...", err=True))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        return
    print_report(report)


def print_report(report) -> None:
    machine = report.machine
    isa = " ".join(machine.isa) or "none found"
    click.echo(
        f"machine: {machine.cpu}, {machine.logical_cpus} logical CPUs, {machine.threads} threads used; "
        f"torch {machine.torch_version}; device {machine.device}; ISA: {isa}; "
        f"bf16 in hardware: {'yes' if machine.bf16 else 'no'}"
    )
    weights = ", random weights" if report.random_weights else ""
    click.echo(
        f"model: {report.model} ({report.arch}, x{report.scale}{weights}), "
        f"{report.flops_per_pixel / 1e6:.2f} MFLOP per input pixel; size {report.width}x{report.height}; "
        f"medians of {report.repeat} run(s) after {report.warmup} warm-up, [min-max]"
    )
    skipped: list[str] = []

    click.echo("")
    rows = [("3x3 conv 64->64", "GFLOP/s", "[min-max]")]
    for run in report.conv:
        if run.gflops is None:
            skipped.append(f"conv {run.precision}: {run.problem}")
            continue
        rows.append((f"{run.precision}, batch {run.batch}", f"{run.gflops.median:.1f}", _spread(run.gflops)))
    if len(rows) > 1:
        print_table(rows)

    click.echo("")
    rows = [("backend", "precision", "MP/s", "[min-max]", "GFLOP/s", "of conv", "s/frame")]
    for run in report.backends:
        if run.timing is None:
            skipped.append(f"{run.backend} {run.precision}: {run.problem}")
            continue
        fraction = run.conv_fraction
        rows.append(
            (
                run.backend,
                run.precision,
                f"{run.megapixels.median:.3f}",
                _spread(run.megapixels, 3),
                f"{run.gflops.median:.1f}",
                "-" if fraction is None else f"{fraction:.0%}",
                f"{run.timing.median:.3f}",
            )
        )
    if len(rows) > 1:
        print_table(rows)

    video = report.video
    if video is not None:
        click.echo("")
        if video.job is None or video.model_only is None:
            skipped.append(f"video ({video.backend} {video.precision}): {video.problem}")
        else:
            click.echo(
                f"video: {video.frames} frames {video.width}x{video.height} -> x{report.scale}, "
                f"{video.backend} {video.precision}, {video.encoding}"
            )
            rows = [
                ("", "fps", "[min-max]"),
                ("upscale video (end to end)", f"{video.job_fps.median:.3f}", _spread(video.job_fps, 3)),
                ("model alone, same frames", f"{video.model_fps.median:.3f}", _spread(video.model_fps, 3)),
            ]
            if video.io_fps is not None:
                rows.append(("decode + encode alone", f"{video.io_fps.median:.3f}", _spread(video.io_fps, 3)))
            print_table(rows)
            click.echo(f"pipeline efficiency (end to end / model alone): {video.efficiency:.0%}")
            if video.ceiling is not None:
                per_frame = 1000 / video.frames
                cores = f"{video.cores} core{'s' if video.cores != 1 else ''}"
                click.echo(
                    f"  decoding and encoding alone take {video.io_cpu * per_frame:.0f} ms of CPU a frame, "
                    f"the model {video.model_cpu * per_frame:.0f}: on {cores} the job can reach at most "
                    f"{video.ceiling:.0%}"
                )
            elif video.io_problem is not None:
                skipped.append(f"video decode + encode alone: {video.io_problem}")

    quality = report.quality
    if quality is not None:
        click.echo("")
        if quality.psnr_delta is None:
            skipped.append(f"bf16 PSNR ({quality.backend}): {quality.problem}")
        else:
            click.echo(f"precisions against fp32 on {quality.data} ({quality.images} images):")
            rows = [("precision", "backend", "PSNR (Y)", "SSIM (Y)", "LPIPS", "PSNR cost")]
            rows.append(
                _quality_row(
                    "fp32", quality.backend, quality.fp32_psnr, quality.fp32_ssim, quality.fp32_lpips, None
                )
            )
            rows.append(
                _quality_row(
                    "bf16",
                    quality.backend,
                    quality.bf16_psnr,
                    quality.bf16_ssim,
                    quality.bf16_lpips,
                    quality.fp32_psnr,
                )
            )
            if quality.int8_psnr is not None:
                rows.append(
                    _quality_row(
                        "int8",
                        quality.int8_backend or "",
                        quality.int8_psnr,
                        quality.int8_ssim,
                        quality.int8_lpips,
                        quality.fp32_psnr,
                    )
                )
            elif quality.int8_problem:
                skipped.append(f"int8 quality: {quality.int8_problem}")
            print_table(rows)

    if skipped or report.notes:
        click.echo("")
    for line in skipped:
        click.echo(f"skipped: {line}")
    for line in report.notes:
        click.echo(f"note: {line}")


def _quality_row(name, backend, psnr, ssim, lpips, reference) -> tuple[str, ...]:
    """One precision's figures; its PSNR cost is what it loses against fp32 (`reference`)."""
    cost = "" if reference is None or psnr is None else f"{reference - psnr:.3f} dB"
    lpips_text = "-" if lpips is None else f"{lpips:.4f}"
    return (name, backend, f"{psnr:.3f}", f"{ssim:.4f}", lpips_text, cost)


def _spread(rate, digits: int = 1) -> str:
    return f"[{rate.low:.{digits}f}-{rate.high:.{digits}f}]"
