"""The Python API: open a model once, then upscale numpy arrays, PIL images, image files and videos.

    import upscaler

    with upscaler.open_model("esrgan") as model:          # an id of `upscale models`, or a weights file
        big = model.upscale(pixels)                        # numpy H x W (x 3 or 4), uint8/uint16/float
        model.upscale_file("photo.jpg", "photo-x4.png")
        model.upscale_video("clip.mp4", "clip-x4.mp4", crf=18)

The CLI runs models through this same `open_model`. Nothing heavy (torch, PyAV) is imported until a
model is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from upscaler.errors import InputError
from upscaler.options import BackendOptions, TileOptions
from upscaler.values import Precision

if TYPE_CHECKING:
    from upscaler.models import LoadedModel
    from upscaler.upscaling import Upscaler
    from upscaler.video.events import VideoReport


def resolve_options(
    model_arch: str | None,
    backend: str,
    options: BackendOptions,
    costs: dict[str, float] | None = None,
) -> tuple[str, BackendOptions, tuple[str, ...]]:
    """(the backend `auto` picks for this architecture, the options with `--precision auto` decided,
    why auto chose each, in a few words): decided before the model is opened, so what is opened (and
    what a video journal records) is concrete. `costs`: the model's measured precision costs
    (`upscaler.precision.measured_costs`), which auto weighs."""
    from upscaler.backend import INT8_BACKEND, discover_backends, get_backend, runs_on_cpu
    from upscaler.precision import int8_choice, resolve_precision
    from upscaler.system.runtimes import installed
    from upscaler.values import Precision

    if (
        options.precision is Precision.AUTO
        and backend in ("auto", INT8_BACKEND)
        and runs_on_cpu(options.device)
    ):
        status = discover_backends().get(INT8_BACKEND)
        runs = status is not None and status.available and installed("nncf")
        choice = int8_choice(costs) if runs else None
        if choice is not None:
            return INT8_BACKEND, replace(options, precision=Precision.INT8), (choice.reason,)
    if options.precision is Precision.INT8 and backend == "auto":
        return INT8_BACKEND, options, ("auto: int8 runs on openvino",)
    chosen = get_backend(backend, options, model_arch)
    resolved, reason = resolve_precision(chosen, options, costs)
    return chosen.name, resolved, (reason,) if reason is not None else ()


class Model:
    """An opened model: `upscale` images and videos with it, then `close` it (or use `with`)."""

    def __init__(
        self,
        upscaler: Upscaler,
        closing: Callable[[], None],
        options: BackendOptions,
        reasons: tuple[str, ...] = (),
    ) -> None:
        self._upscaler = upscaler
        self._closing = closing
        self.options = options
        # Why `auto` chose the backend and the precision that run, in a few words each.
        self.reasons = reasons

    @property
    def scale(self) -> int:
        """How many times larger the model makes each side."""
        return self._upscaler.scale

    @property
    def name(self) -> str:
        return self._upscaler.model_name

    @property
    def backend(self) -> str:
        return self._upscaler.backend_name

    @property
    def description(self) -> str:
        """`model esrgan (rrdbnet, x4) on backend torch in bf16 (auto: ...)`: what runs, and why auto
        chose it."""
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return f"{self._upscaler.description}{why}"

    @property
    def upscaler(self) -> Upscaler:
        """The tiled model itself: float32 H x W x 3 in [0, 1] in and out (`upscale_stream` batches)."""
        return self._upscaler

    def upscale(self, image: Any, outscale: float | None = None) -> Any:
        """`image` upscaled, in the same kind it came in: a numpy array (H x W gray, H x W x 3 RGB or
        H x W x 4 RGBA; uint8, uint16 or float in [0, 1]) or a PIL image (modes L, RGB, RGBA, I;16).
        Alpha is upscaled too; `outscale` resizes the result to that scale instead of the model's."""
        from upscaler.picture import upscale_picture

        pil_mode = getattr(image, "mode", None)
        pixels = np.asarray(image)
        picture, kind = _picture(pixels)
        result = upscale_picture(picture, self._upscaler.upscale, scale=self.scale, outscale=outscale)
        out = _pixels(result, kind)
        if pil_mode is not None:
            from PIL import Image

            return Image.fromarray(out)
        return out

    def upscale_file(
        self, source: str | Path, destination: str | Path, outscale: float | None = None
    ) -> Path:
        """Read an image file, upscale it, and write `destination` (its format from the suffix; depth,
        alpha and grayscale kept where the format holds them), whole or not at all."""
        from upscaler.image.formats import read_image, write_image
        from upscaler.picture import upscale_picture

        picture = read_image(source)
        result = upscale_picture(picture, self._upscaler.upscale, scale=self.scale, outscale=outscale)
        write_image(destination, result)
        return Path(destination)

    def upscale_video(
        self,
        source: str | Path,
        destination: str | Path,
        *,
        codec: str | None = None,
        crf: int | None = None,
        preset: str | None = None,
        outscale: float | None = None,
        audio: bool = True,
        stabilize: bool = False,
        overwrite: bool = False,
        events: Callable[[Any], None] | None = None,
        **plan_options: Any,
    ) -> VideoReport:
        """Upscale a video file as `upscale video` does (every stream and timestamp kept, resumable,
        written whole or not at all); `plan_options` are `upscaler.video.plan.plan_video_job`'s others
        (start, duration, deinterlace, part_frames, ...)."""
        from upscaler.video.encode import EncodeSettings
        from upscaler.video.job import run_video_job
        from upscaler.video.plan import plan_video_job, run_key

        loaded = self._upscaler.model
        plan = plan_video_job(
            Path(source),
            Path(destination),
            scale=self.scale,
            model_key=run_key(loaded.digest, self.backend, self.options, self._upscaler.tile_options),
            settings=EncodeSettings(codec=codec, crf=crf, preset=preset),
            outscale=outscale,
            audio=audio,
            stabilize=stabilize,
            overwrite=overwrite,
            **plan_options,
        )
        return run_video_job(plan, self._upscaler, events=events)

    def close(self) -> None:
        self._closing()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(
    model: str | Path = "compact",
    *,
    backend: str = "auto",
    device: str = "auto",
    precision: str | Precision = "auto",
    threads: int | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    batch_size: int | None = None,
    memory_budget_gib: float = 1.0,
    report: Callable[[str], None] | None = None,
) -> Model:
    """Load `model` (an id of `upscale models`, or a weights file) and open it on `backend` ("auto": the
    best that runs here). `precision`: auto (the fastest that costs this model no measured quality; see
    upscaler.precision), fp32, fp16, bf16 or int8; `tile_size` None plans tiles within
    `memory_budget_gib` of activations. `report` receives a line saying why, when auto chose the
    backend or the precision."""
    options = BackendOptions(
        device=device,
        precision=precision if isinstance(precision, Precision) else Precision.parse(precision),
        threads=threads,
    )
    tiles = TileOptions(
        tile_size=tile_size,
        overlap=tile_overlap,
        batch_size=batch_size,
        memory_budget=int(memory_budget_gib * 1024**3),
    )
    return open_with(str(model), backend, options, tiles, report)


def open_with(
    model: str | LoadedModel,
    backend: str,
    options: BackendOptions,
    tiles: TileOptions,
    report: Callable[[str], None] | None = None,
) -> Model:
    """`open_model` with its options already built (as the CLI builds them); `model` may be loaded already."""
    from upscaler.models import LoadedModel, load_model
    from upscaler.upscaling import open_upscaler

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    from upscaler.precision import model_costs

    name, resolved, reasons = resolve_options(loaded.info.arch, backend, options, model_costs(loaded))
    if reasons and report is not None:
        report("; ".join(reasons))
    context = open_upscaler(loaded, name, resolved, tiles)
    upscaler = context.__enter__()
    return Model(upscaler, lambda: context.__exit__(None, None, None), resolved, reasons)


def _picture(pixels: np.ndarray):
    """The Picture of an array the API was given, and what to give back: its dtype, and its channel
    count (0 for a 2-D gray array)."""
    from upscaler.image.formats import pixels_to_picture

    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    if pixels.ndim not in (2, 3) or channels not in (0, 1, 3, 4):
        raise InputError(f"expected an H x W, H x W x 3 or H x W x 4 image, got shape {pixels.shape}")
    return pixels_to_picture(pixels, bgr=False), (pixels.dtype, channels)


def _pixels(picture, kind: tuple[np.dtype, int]) -> np.ndarray:
    from upscaler.image.formats import quantize_levels

    dtype, channels = kind
    planes = picture.rgb.mean(axis=2) if picture.grayscale else picture.rgb
    if channels in (1, 2):
        planes = planes[:, :, None]
    if picture.alpha is not None:
        planes = np.dstack([planes, picture.alpha])
    if dtype == np.uint8:
        return quantize_levels(planes, 255.0, np.uint8)
    if dtype == np.uint16:
        return quantize_levels(planes, 65535.0, np.uint16)
    return planes.astype(dtype)
