"""`upscale images`: upscale image files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from upscaler.cli.options import ModelRun, model_options, outscale_option


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    help="Output folder (default: beside each input); with one input file, a file name (-o out.png).",
)
@model_options
@outscale_option
@click.option(
    "--suffix",
    default=None,
    help="Added to each output's name after an underscore: --suffix out gives photo_out.png "
    "(default: _x<scale>).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp"], case_sensitive=False),
    help="Output format (default: the input's).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    help="JPEG and WebP quality, 1-100 (default 95).",
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
    quality,
    pattern,
    skip_existing,
    overwrite,
    no_progress,
) -> None:
    """Upscale image files and folders (recursively).

    PNG, JPEG, WebP, TIFF and BMP; alpha, 16-bit and grayscale are kept.

    \b
    Examples:
      upscale images photos/ -o big/ --model esrgan
      upscale images photo.jpg -o photo-x4.png
    """
    from upscaler.api import open_with
    from upscaler.errors import InputError
    from upscaler.image.folder import find_images, job_key, plan_outputs, scale_suffix
    from upscaler.image.formats import EncodeOptions
    from upscaler.image.job import run_image_job

    if skip_existing and overwrite:
        raise click.UsageError("--skip-existing and --overwrite exclude each other")
    fmt = {"jpeg": "jpg", "tiff": "tif"}.get(fmt.lower(), fmt.lower()) if fmt else None
    if suffix and suffix[0] not in "_-.":
        suffix = f"_{suffix}"  # as Real-ESRGAN joins it: photo_out.png
    # Outputs inside an input folder must not become inputs of the next run.
    output_file = _output_file(output_dir)
    if output_file is not None:
        output_dir = None
    found = find_images(list(inputs), pattern, exclude=[output_dir] if output_dir else [])
    if output_file is not None and len(found) != 1:
        raise InputError(
            f"-o {output_file} names one file, but {len(found)} images were found",
            hint="give -o a folder for several images",
        )
    report = lambda line: click.echo(line, err=True)  # noqa: E731
    with open_with(run.model, run.backend, run.backend_options, run.tile_options, report) as model:
        upscaler, loaded = model.upscaler, model.upscaler.model
        scale = upscaler.scale
        plan = plan_outputs(
            found,
            output_dir=output_dir,
            output_file=output_file,
            suffix=suffix if suffix is not None else scale_suffix(outscale or scale),
            fmt=fmt,
            overwrite=overwrite,
            skip_existing=skip_existing,
            job=job_key(
                loaded.digest,
                precision=model.options.precision.value,
                outscale=outscale,
                format=fmt,
                quality=quality,
            ),
        )
        for line in plan.warnings:
            click.echo(f"Warning: {line}", err=True)
        done = f"; {len(plan.done)} already done by an earlier run" if plan.done else ""
        click.echo(f"{upscaler.description}; {len(plan.tasks)} image(s) to upscale{done}", err=True)
        encode = EncodeOptions(jpeg_quality=quality, webp_quality=quality) if quality else None
        report = run_image_job(
            plan, upscaler.upscale, scale=scale, outscale=outscale, encode=encode, progress=not no_progress
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


def _output_file(output: Path | None) -> Path | None:
    """`-o` as a file name: an image suffix on a path that is not a folder (`-o big.png`); the caller
    checks that exactly one image was found."""
    from upscaler.image.formats import SUPPORTED_SUFFIXES

    if output is None or output.is_dir() or output.suffix.lower() not in SUPPORTED_SUFFIXES:
        return None
    return output
