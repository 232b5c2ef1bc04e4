"""`upscale images`: upscale image files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from upscaler.cli.options import (
    ModelRun,
    check_cluster,
    cluster_model,
    cluster_options,
    model_options,
    outscale_option,
)


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
@cluster_options
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
    cluster,
    gpus_per_task,
    no_progress,
) -> None:
    """Upscale image files and folders (recursively).

    PNG, JPEG, WebP, TIFF and BMP; alpha, 16-bit and grayscale are kept.

    \b
    Examples:
      upscale images photos/ -o big/ --model esrgan
      upscale images photo.jpg -o photo-x4.png
      upscale images scans/ -o big/ --cluster tcp://10.0.0.5:8786
    """
    from upscaler.api import open_with
    from upscaler.cli.options import resolve_model_run
    from upscaler.errors import InputError
    from upscaler.image.folder import find_images, job_key, plan_outputs, scale_suffix
    from upscaler.image.formats import EncodeOptions
    from upscaler.image.job import run_image_job

    if skip_existing and overwrite:
        raise click.UsageError("--skip-existing and --overwrite exclude each other")
    if gpus_per_task is not None and cluster is None:
        raise click.UsageError("--gpus-per-task goes with --cluster")
    check_cluster(cluster)
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
    encode = EncodeOptions(jpeg_quality=quality, webp_quality=quality) if quality else None

    def plan_for(digest: str, scale: int, precision: str):
        plan = plan_outputs(
            found,
            output_dir=output_dir,
            output_file=output_file,
            suffix=suffix if suffix is not None else scale_suffix(outscale or scale),
            fmt=fmt,
            overwrite=overwrite,
            skip_existing=skip_existing,
            job=job_key(digest, precision=precision, outscale=outscale, format=fmt, quality=quality),
        )
        for line in plan.warnings:
            click.echo(f"Warning: {line}", err=True)
        return plan

    def announce(description: str, plan) -> None:
        done = f"; {len(plan.done)} already done by an earlier run" if plan.done else ""
        click.echo(f"{description}; {len(plan.tasks)} image(s) to upscale{done}", err=True)

    if cluster is not None:
        from upscaler.cluster.connect import open_cluster, workers_phrase
        from upscaler.cluster.images import run_images_on_cluster
        from upscaler.models import load_model

        loaded = load_model(run.model)
        run = resolve_model_run(run, loaded)
        scale = loaded.info.scale
        plan = plan_for(loaded.digest, scale, run.backend_options.precision.value)
        with open_cluster(cluster) as client:
            why = f" ({'; '.join(run.reasons)})" if run.reasons else ""
            announce(
                f"model {loaded.name} ({loaded.info.arch}, x{scale}) on backend {run.backend} in "
                f"{run.backend_options.precision.value}{why}, on the cluster {cluster} "
                f"({workers_phrase(client)})",
                plan,
            )
            report = run_images_on_cluster(
                client,
                plan,
                cluster_model(run, loaded.digest, cluster),
                scale=scale,
                outscale=outscale,
                encode=encode,
                gpus_per_task=gpus_per_task,
                progress=not no_progress,
            )
    else:
        from upscaler.models import load_model

        loaded = load_model(run.model)
        # Auto measures the backends on a 256x256 picture for a folder of MEASURE_FROM images or more.
        run = resolve_model_run(run, loaded, (256, 256), len(found))
        with open_with(loaded, run.backend, run.backend_options, run.tile_options) as model:
            upscaler = model.upscaler
            plan = plan_for(upscaler.model.digest, upscaler.scale, model.options.precision.value)
            why = f" ({'; '.join(run.reasons)})" if run.reasons else ""
            announce(f"{upscaler.description}{why}", plan)
            report = run_image_job(
                plan,
                upscaler.upscale,
                scale=upscaler.scale,
                outscale=outscale,
                encode=encode,
                progress=not no_progress,
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
