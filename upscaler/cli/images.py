"""`upscale images`: upscale image files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from upscaler.cli.options import ModelRun, model_options


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    help="Output folder (default: beside each input).",
)
@model_options
@click.option(
    "--outscale", type=click.FloatRange(min=0, min_open=True), help="Final scale, resized after the model."
)
@click.option("--suffix", default=None, help="Added to each output's file name (default: _x<scale>).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "jpg", "webp", "tif", "bmp"]),
    help="Output format (default: the input's).",
)
@click.option("--glob", "pattern", default=None, help="Only files whose name matches, e.g. '*.png'.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose output already exists.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (never an input).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def images(
    inputs,
    output_dir,
    run: ModelRun,
    outscale,
    suffix,
    fmt,
    pattern,
    skip_existing,
    overwrite,
    no_progress,
) -> None:
    """Upscale image files and folders (recursively).

    PNG, JPEG, WebP, TIFF and BMP; alpha, 16-bit and grayscale are kept.
    """
    from upscaler.api import open_with
    from upscaler.image.folder import find_images, job_key, plan_outputs, scale_suffix
    from upscaler.image.job import run_image_job

    if skip_existing and overwrite:
        raise click.UsageError("--skip-existing and --overwrite exclude each other")
    # Outputs inside an input folder must not become inputs of the next run.
    found = find_images(list(inputs), pattern, exclude=[output_dir] if output_dir else [])
    report = lambda line: click.echo(line, err=True)  # noqa: E731
    with open_with(run.model, run.backend, run.backend_options, run.tile_options, report) as model:
        upscaler, loaded = model.upscaler, model.upscaler.model
        scale = upscaler.scale
        plan = plan_outputs(
            found,
            output_dir=output_dir,
            suffix=suffix if suffix is not None else scale_suffix(outscale or scale),
            fmt=fmt,
            overwrite=overwrite,
            skip_existing=skip_existing,
            job=job_key(
                loaded.digest, precision=model.options.precision.value, outscale=outscale, format=fmt
            ),
        )
        for line in plan.warnings:
            click.echo(f"Warning: {line}", err=True)
        done = f"; {len(plan.done)} already done by an earlier run" if plan.done else ""
        click.echo(f"{upscaler.description}; {len(plan.tasks)} image(s) to upscale{done}", err=True)
        report = run_image_job(
            plan, upscaler.upscale, scale=scale, outscale=outscale, progress=not no_progress
        )
    for _path, message in report.failed:
        click.echo(f"failed: {message}", err=True)
    click.echo(
        f"{len(report.written)} written, {len(report.skipped) + len(report.done)} skipped, "
        f"{len(report.failed)} failed",
        err=True,
    )
    if report.failed:
        sys.exit(1)
