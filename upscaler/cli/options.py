"""Options shared by the commands that run a model, and small output helpers."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from upscaler.options import BackendOptions, TileOptions


@dataclass(frozen=True)
class ModelRun:
    """What `--model` and the options beside it chose: the model, the backend and how to run it."""

    model: str
    backend: str
    backend_options: BackendOptions
    tile_options: TileOptions
    # Why `auto` chose the backend and precision (resolve_model_run), for the command's first line.
    reasons: tuple[str, ...] = ()


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


# The bundled model with the best Set14 PSNR (see `upscale models`), and the fastest.
DEFAULT_MODEL = "compact"
# `upscale video`'s: the model trained on real-world degradations (blur, noise, JPEG, H.264/H.265), as
# fast as compact. On compressed footage it removes the blocking and ringing that the clean-input models
# sharpen (docs/real-video.png); on a clean source compact or esrgan do better (README, "Which model").
VIDEO_MODEL = "realvideo"


def model_option(default: str = DEFAULT_MODEL) -> Callable:
    """--model as every command that loads a model spells it."""
    return click.option(
        "--model",
        "-m",
        "-n",  # Real-ESRGAN's spelling
        default=default,
        show_default=True,
        help="A model id (see `upscale models`) or a weights file (.safetensors, .pth, .pt).",
    )


# `--outscale` / `-s` of `upscale images` and `upscale video`.
outscale_option = click.option(
    "--outscale",
    "-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Final scale, resized after the model.",
)


def model_options(func: Callable | None = None, *, default: str = DEFAULT_MODEL, precision: str = "auto"):
    """The options every command that runs a model shares, handed to it as one `run: ModelRun`;
    `@model_options(default=..., precision=...)` gives a command another default model or precision
    (`upscale eval` and `bench` measure in fp32 unless told, as the model cards do)."""
    if func is None:
        return functools.partial(model_options, default=default, precision=precision)

    @functools.wraps(func)
    def command(
        *args,
        model,
        backend,
        device,
        precision,
        threads,
        tile_size,
        tile_overlap,
        batch_size,
        memory_budget,
        **kwargs,
    ):
        from upscaler.models.catalog import resolve_model_spec
        from upscaler.options import BackendOptions, TileOptions
        from upscaler.system.allocator import keep_freed_memory
        from upscaler.values import Precision

        # A bad --model is refused at once, before torch (seconds to import) is loaded.
        resolve_model_spec(model)
        # Before the model allocates anything: eager inference otherwise page-faults its activations
        # back in on every batch (upscaler/system/allocator.py). UPSCALER_MALLOC=system opts out.
        keep_freed_memory()
        run = ModelRun(
            model=model,
            backend=backend,
            backend_options=BackendOptions(
                device=device, precision=Precision.parse(precision), threads=threads
            ),
            tile_options=TileOptions(
                tile_size=tile_size,
                overlap=tile_overlap,
                batch_size=batch_size,
                memory_budget=int(memory_budget * 1024**3),
            ),
        )
        return func(*args, run=run, **kwargs)

    options = [
        model_option(default),
        click.option(
            "--backend",
            default="auto",
            show_default=True,
            help="Inference backend (see `upscale backends`); auto picks the best that can run here.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "fp16", "bf16", "int8", "auto"]),
            default=precision,
            show_default=True,
            help="Arithmetic precision (fp16 needs a GPU; bf16 is fast on CPUs with AVX512_BF16 or AMX; "
            "int8 on the openvino backend). auto: bf16 or fp16 where the hardware runs it natively and the "
            "model's card measured it to cost under 0.05 dB, else fp32; the first line says which.",
        ),
        # Thread layout: the model gets every core (the backend's default: torch and ONNX Runtime use
        # one intra-op thread per physical core), because inference is nearly all of the CPU work with
        # a CPU backend. Decoding the small input and encoding the output are a few percent of it; their
        # FFmpeg threads mostly wait on the bounded queues, so they borrow cores only while they work.
        click.option(
            "--threads", type=click.IntRange(min=1), help="CPU threads for inference (default: all cores)."
        ),
        click.option(
            "--tile-size",
            "-t",
            type=TileSize(),
            default="auto",
            show_default=True,
            help="Tile side in input pixels; auto plans the tiles that read least within --memory-budget.",
        ),
        click.option(
            "--tile-overlap",
            type=click.IntRange(min=0),
            help="Input pixels each tile reads past its edges (default: the model's receptive field).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            help="Tiles per batch (default: what the backend runs fastest: 1 on a CPU, 4 on a GPU).",
        ),
        click.option(
            "--memory-budget",
            type=click.FloatRange(min=0.05),
            # 1 GiB, not 2: upscale video of 720p x4 peaked at 2784 MiB of RSS with 2 and 2116 with 1
            # (BENCHMARKS.md); tiles planned for 1 GiB are still hundreds of pixels wide.
            default=1.0,
            show_default=True,
            help="GiB of activations that --tile-size auto plans for.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def cluster_options(func: Callable) -> Callable:
    """--cluster and --gpus-per-task, of `upscale images` and `upscale video`."""
    func = click.option(
        "--gpus-per-task",
        type=click.FloatRange(min=0, min_open=True),
        help="With --cluster: the GPU resource each task asks for, from workers started with "
        "`--resources GPU=1`.",
    )(func)
    return click.option(
        "--cluster",
        metavar="ADDRESS",
        help="Spread the work over a Dask cluster: its scheduler (tcp://host:8786), or local[:N] to start N "
        "worker processes here (README, 'On a cluster').",
    )(func)


def check_cluster(address: str | None) -> None:
    """Refuse a bad --cluster, or one without Dask installed, before the model is loaded."""
    if address is None:
        return
    from upscaler.cluster.connect import check_address, import_distributed

    check_address(address)
    import_distributed()


def cluster_model(run: ModelRun, digest: str, address: str):
    """The `ModelSpec` the workers open: a weights file by its absolute path (on shared storage), and on
    a local cluster the cores shared between its worker processes unless --threads says otherwise."""
    from pathlib import Path

    from upscaler.cluster.connect import local_workers
    from upscaler.cluster.worker import ModelSpec
    from upscaler.video.encode import usable_cores

    model = str(Path(run.model).resolve()) if Path(run.model).is_file() else run.model
    options = run.backend_options
    workers = local_workers(address)
    if workers is not None and options.threads is None:
        options = dataclasses.replace(options, threads=max(1, usable_cores() // workers))
    return ModelSpec(model, digest, run.backend, options, run.tile_options)


class KeyValue(click.ParamType):
    """KEY=VALUE, handed to the encoder as it is."""

    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, e.g. tune=film (got {value!r})", param, ctx)
        return (key.strip(), text)


def encoder_option(help: str) -> Callable:
    """The repeatable `--encoder-option KEY=VALUE` of `upscale video` and `upscale bench`."""
    return click.option("--encoder-option", "encoder_options", type=KeyValue(), multiple=True, help=help)


def resolve_model_run(
    run: ModelRun, loaded, size: tuple[int, int] | None = None, items: int | None = None
) -> ModelRun:
    """`run` with `--backend auto` and `--precision auto` decided for the LoadedModel `loaded`
    (`upscaler.api.resolve_options`), and why (`reasons`). Call it before opening the model,
    so that what is opened (and what a video journal records) is concrete. With the inputs' `size`
    (rows, columns) and how many there are (`items`), auto picks the backend by measured speed
    (`upscaler.selection`)."""
    from upscaler.api import resolve_options
    from upscaler.precision import model_costs
    from upscaler.values import Precision

    backend, options, reasons = resolve_options(
        loaded.info.arch, run.backend, run.backend_options, model_costs(loaded)
    )
    # int8 runs on one backend only (upscaler.backend.INT8_BACKEND): nothing to measure.
    if run.backend == "auto" and size is not None and options.precision is not Precision.INT8:
        from upscaler.selection import choose_backend_by_speed, probe_size

        choice = choose_backend_by_speed(loaded, options, run.tile_options, probe_size(*size), items)
        # One "auto:" for the line: the backend's reason, then the precision's.
        backend, reasons = choice.name, (choice.reason, *(r.removeprefix("auto: ") for r in reasons))
    return dataclasses.replace(run, backend=backend, backend_options=options, reasons=reasons)


class BackgroundLoad:
    """`load_model(spec)` on a daemon thread, so the command probes its input meanwhile: importing torch
    and reading the weights took 1.9 s of `upscale video`'s start here. `result()` gives the model or
    raises what loading raised; a command that fails first exits without waiting for it."""

    def __init__(self, spec: str) -> None:
        import threading

        self._model = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(spec,), name="load-model", daemon=True)
        self._thread.start()

    def _load(self, spec: str) -> None:
        try:
            from upscaler.models import load_model

            self._model = load_model(spec)
        except BaseException as error:  # handed to the caller's thread by result()
            self._error = error

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._model


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
