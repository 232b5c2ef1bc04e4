"""The `upscale` command line: parse, build options, call the library, report errors.

Heavy modules (torch, av, cv2) are imported inside the commands so that `upscale --help` stays fast.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from upscaler import __version__
from upscaler.errors import UpscaleError


class UpscaleGroup(click.Group):
    """Turns `UpscaleError` into `Error: ...` / `Hint: ...` and exit 1; `--debug` shows the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except UpscaleError as exc:
            if _debug(ctx):
                traceback.print_exc()
            click.echo(f"Error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception as exc:
            if _debug(ctx):
                traceback.print_exc()
            click.echo(f"Error: internal error: {type(exc).__name__}: {exc}", err=True)
            if not _debug(ctx):
                click.echo("Hint: run again with --debug for the traceback, and please report it", err=True)
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug"))


class TileSize(click.ParamType):
    """`auto` or a positive whole number of input pixels."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() == "auto":
            return None
        try:
            size = int(value)
        except ValueError:
            self.fail(f"must be 'auto' or a whole number of pixels (got {value!r})", param, ctx)
        if size < 1:
            self.fail(f"must be positive (got {size})", param, ctx)
        return size


@click.group(cls=UpscaleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="upscale")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def cli(debug: bool) -> None:
    """Super-resolve videos and folders of images with GAN generators."""


def model_options(func):
    """The options every command that runs a model shares."""
    options = [
        click.option(
            "--model",
            "-m",
            default="esrgan",
            show_default=True,
            help="A model id (see `upscale models`) or a weights file (.safetensors, .pth, .pt).",
        ),
        click.option(
            "--backend",
            default="auto",
            show_default=True,
            help="Inference backend (see `upscale backends`); auto picks the best that can run here.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "fp16", "bf16"]),
            default="fp32",
            show_default=True,
            help="Arithmetic precision (fp16 needs a GPU; bf16 is fast on CPUs with AVX512_BF16 or AMX).",
        ),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads for inference."),
        click.option(
            "--tile-size",
            type=TileSize(),
            default="auto",
            show_default=True,
            help="Tile side in input pixels; auto picks the largest that fits --memory-budget.",
        ),
        click.option(
            "--tile-overlap",
            type=click.IntRange(min=0),
            help="Input pixels each tile reads past its edges (default: the model's receptive field).",
        ),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Tiles per batch."
        ),
        click.option(
            "--memory-budget",
            type=click.FloatRange(min=0.05),
            default=2.0,
            show_default=True,
            help="GiB of activations that --tile-size auto plans for.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_options(device, precision, threads, tile_size, tile_overlap, batch_size, memory_budget):
    from upscaler.options import BackendOptions, TileOptions
    from upscaler.values import Precision

    backend_options = BackendOptions(device=device, precision=Precision.parse(precision), threads=threads)
    tile_options = TileOptions(
        tile_size=tile_size,
        overlap=tile_overlap,
        batch_size=batch_size,
        memory_budget=int(memory_budget * 1024**3),
    )
    return backend_options, tile_options


@cli.command()
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
    model,
    backend,
    device,
    precision,
    threads,
    tile_size,
    tile_overlap,
    batch_size,
    memory_budget,
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
    from upscaler.image_job import find_images, plan_outputs, run_image_job, scale_suffix
    from upscaler.upscaling import open_upscaler

    if skip_existing and overwrite:
        raise click.UsageError("--skip-existing and --overwrite exclude each other")
    backend_options, tile_options = build_options(
        device, precision, threads, tile_size, tile_overlap, batch_size, memory_budget
    )
    # Outputs inside an input folder must not become inputs of the next run.
    found = find_images(list(inputs), pattern, exclude=[output_dir] if output_dir else [])
    with open_upscaler(model, backend, backend_options, tile_options) as upscaler:
        scale = upscaler.scale
        plan = plan_outputs(
            found,
            output_dir=output_dir,
            suffix=suffix if suffix is not None else scale_suffix(outscale or scale),
            fmt=fmt,
            overwrite=overwrite,
            skip_existing=skip_existing,
        )
        click.echo(f"{upscaler.description}; {len(plan.tasks)} image(s) to upscale", err=True)
        report = run_image_job(
            plan, upscaler.upscale, scale=scale, outscale=outscale, progress=not no_progress
        )
    for _path, message in report.failed:
        click.echo(f"failed: {message}", err=True)
    click.echo(
        f"{len(report.written)} written, {len(report.skipped)} skipped, {len(report.failed)} failed", err=True
    )
    if report.failed:
        sys.exit(1)


@cli.command()
def models() -> None:
    """List the registered models, their scale, size, weights and measured quality."""
    from upscaler.models import list_models

    rows = [("id", "arch", "scale", "params", "weights", "quality", "description")]
    for entry in list_models():
        rows.append(
            (
                entry.id,
                entry.arch,
                f"x{entry.scale}",
                _millions(entry.parameters),
                "bundled" if entry.weights_present else "not bundled yet",
                entry.quality or "-",
                entry.description,
            )
        )
    _print_table(rows)
    click.echo("\nAny weights file of these architectures also works: --model path/to/weights.safetensors")


@cli.command()
def backends() -> None:
    """List the inference backends, whether each can run here, and why not."""
    from upscaler.backend import discover_backends

    rows = [("backend", "status", "description")]
    for status in sorted(discover_backends().values(), key=lambda s: s.name):
        state = "available" if status.available else f"unavailable: {status.problem}"
        rows.append((status.name, state, status.description))
    _print_table(rows)


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    cli(prog_name="upscale")
