"""`upscale export-onnx` and `upscale build-engine`: the ONNX graph and the TensorRT engine of a model."""

from __future__ import annotations

from pathlib import Path

import click

from upscaler.cli.options import model_option

# fp32 exports further than this from PyTorch are broken, not rounded differently.
EXPORT_TOLERANCE = 1e-3


class ShapeType(click.ParamType):
    """An input shape N x C x H x W written like `1x3x64x64`."""

    name = "NxCxHxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace(",", "x").split("x")
        if len(parts) != 4 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
            self.fail(
                f"expected four positive sizes N x C x H x W, e.g. 1x3x64x64 (got {value!r})", param, ctx
            )
        return tuple(int(part) for part in parts)


@click.command("export-onnx")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@model_option()
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="fp16: the network in fp16 with fp32 input/output, layers near fp16's range kept in fp32.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Compare the graph with PyTorch on a test batch through ONNX Runtime (when installed).",
)
def export_onnx(output: Path, model: str, precision: str, overwrite: bool, verify: bool) -> None:
    """Export a model to ONNX OUTPUT: dynamic batch, height and width, opset 17.

    The graph's metadata records the architecture, scale, weights digest and config.

    \b
    Example:
      upscale export-onnx --model compact compact.onnx
    """
    from upscaler.errors import ModelError, OutputError
    from upscaler.export import OPSET, calibration_batch, compare_with_torch, export_onnx
    from upscaler.models import load_model
    from upscaler.values import Precision

    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists", hint="pass --overwrite to replace it")
    loaded = load_model(model)
    chosen = Precision.parse(precision)
    result = export_onnx(loaded, output, chosen)
    info = loaded.info
    size = output.stat().st_size / 1e6
    click.echo(
        f"wrote {output}: {loaded.name} ({info.arch}, x{info.scale}), {chosen.value}, opset {OPSET}, "
        f"dynamic batch/height/width, {size:.1f} MB, weights digest {loaded.digest}"
    )
    if result.fp32_layers:
        click.echo(f"kept in fp32 (activations near fp16's range): {', '.join(result.fp32_layers)}")
    if not verify:
        return
    from upscaler.system.runtimes import installed

    if not installed("onnxruntime"):
        click.echo("not verified: onnxruntime is not installed (pip install 'upscaler[onnx]')")
        return
    batch = calibration_batch(loaded)
    difference = compare_with_torch(loaded, output, batch)
    shape = "x".join(str(side) for side in batch.shape)
    click.echo(f"verified with ONNX Runtime: max |onnx - torch| = {difference:.2g} on a {shape} batch")
    if chosen is Precision.FP32 and difference > EXPORT_TOLERANCE:
        raise ModelError(
            f"the exported graph differs from PyTorch by {difference:.3g} (more than {EXPORT_TOLERANCE})",
            hint="please report it with --debug output",
        )


@click.command("build-engine")
@model_option()
@click.option(
    "--precision",
    type=click.Choice(["fp16", "bf16", "fp32"]),
    default="fp16",
    show_default=True,
    help="Engine precision; an fp16 engine that gives NaN/Inf falls back to fp32 when run.",
)
@click.option(
    "--tile-size",
    type=click.IntRange(min=1),
    help="The --tile-size you will upscale with; the engine covers its tiles (default: the largest "
    "tile --tile-size auto uses).",
)
@click.option(
    "--tile-overlap",
    type=click.IntRange(min=0),
    help="The --tile-overlap you will use (default: the model's).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Most tiles per batch (with --tile-size).",
)
@click.option(
    "--min-shape", type=ShapeType(), metavar="NxCxHxW", help="Smallest input N x C x H x W, e.g. 1x3x16x16."
)
@click.option("--opt-shape", type=ShapeType(), metavar="NxCxHxW", help="Input shape TensorRT tunes for.")
@click.option("--max-shape", type=ShapeType(), metavar="NxCxHxW", help="Largest input N x C x H x W.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda or cuda:N.")
@click.option(
    "--workspace", type=click.FloatRange(min=0.0625), help="GiB of scratch memory TensorRT may use."
)
@click.option("--rebuild", is_flag=True, help="Build again even if the cache holds this engine.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also copy the engine (and its .json sidecar) here.",
)
def build_engine(
    model: str,
    precision: str,
    tile_size: int | None,
    tile_overlap: int | None,
    batch: int,
    min_shape: tuple[int, ...] | None,
    opt_shape: tuple[int, ...] | None,
    max_shape: tuple[int, ...] | None,
    device: str,
    workspace: float | None,
    rebuild: bool,
    output: Path | None,
) -> None:
    """Build a TensorRT engine for a model into the engine cache.

    Exports the ONNX graph, builds an engine whose optimisation profile covers the tiles the pipeline
    sends, and caches it under a key of the weights, TensorRT version, GPU, precision and profile;
    `--backend tensorrt` then uses it. Needs an NVIDIA GPU and `pip install 'upscaler[tensorrt]'`.

    \b
    Example:
      upscale build-engine --model esrgan --tile-size 256
    """
    from upscaler.backend import discover_backends
    from upscaler.errors import BackendError
    from upscaler.models import load_model
    from upscaler.values import Precision

    # Checked before the model is loaded: without TensorRT nothing else matters.
    status = discover_backends().get("tensorrt")
    if status is None or status.backend is None:
        problem = status.problem if status is not None else "the tensorrt backend is not registered"
        raise BackendError(f"{problem}; reinstall upscaler: pip install 'upscaler[tensorrt]'")
    if status.problem is not None:
        raise BackendError(status.problem)
    backend = status.backend
    if not hasattr(backend, "build_engine"):
        raise BackendError(f"the installed tensorrt backend ({status.description}) cannot build engines")
    loaded = load_model(model)
    profile = backend.plan_profile(loaded, tile_size, tile_overlap, batch, min_shape, opt_shape, max_shape)
    result = backend.build_engine(
        loaded,
        Precision.parse(precision),
        profile,
        device=device,
        output=output,
        workspace=int(workspace * 1024**3) if workspace else None,
        rebuild=rebuild,
    )
    what = "reused cached engine" if result.reused else f"built engine in {result.seconds:.0f} s"
    click.echo(f"{what}: {result.path}")
    click.echo(
        f"  {loaded.name} ({loaded.info.arch}, x{loaded.info.scale}), {precision}, TensorRT "
        f"{result.key.tensorrt_version} on {result.key.gpu_name} (sm {result.key.compute_capability})"
    )
    click.echo(f"  input shapes {profile.describe()}, tuned for {'x'.join(map(str, profile.opt))}")
    if result.fp32_layers:
        click.echo(f"  kept in fp32: {', '.join(result.fp32_layers)}")
    if result.output is not None:
        click.echo(f"  copied to {result.output} (+ .json sidecar)")
