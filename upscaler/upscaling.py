"""One model on one backend, behind tiling: the piece every job (images, video) upscales frames with."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

from upscaler.backend import Session, get_backend, largest_input, preferred_batch, reused_bytes
from upscaler.errors import UpscaleError
from upscaler.models import LoadedModel, load_model
from upscaler.options import BackendOptions, TileOptions
from upscaler.tiling.runner import Tiler
from upscaler.tiling.stitch import Finish
from upscaler.values import Precision

K = TypeVar("K")


class Upscaler:
    """Upscales H x W x C float32 RGB frames in [0, 1] with a model running in a backend session.

    The tile size that finally worked (after any out-of-memory retry) is kept for later frames.
    """

    def __init__(
        self,
        model: LoadedModel,
        session: Session,
        tile_options: TileOptions,
        backend_name: str = "",
        precision: Precision | None = None,
    ) -> None:
        info = model.info
        tile = tile_options.tile_size
        if tile is not None and not info.requirement.accepts(tile):
            raise UpscaleError(
                f"--tile-size: must be a multiple of {info.requirement.multiple_of} "
                f"(and at least {info.requirement.minimum}) for model '{model.name}' (got {tile})"
            )
        overlap = info.overlap if tile_options.overlap is None else tile_options.overlap
        self.model = model
        self.session = session
        self.tile_options = tile_options
        self.backend_name = backend_name
        self.precision = precision
        self.tiler = Tiler(
            session.infer,
            scale=info.scale,
            requirement=info.requirement,
            tile=tile,
            overlap=overlap,
            batch_size=tile_options.batch_size or preferred_batch(session),
            bytes_per_pixel=info.bytes_per_pixel,
            memory_budget=tile_options.memory_budget,
            # The widest activation taken as a quarter of the estimated peak (which holds about four):
            # compact 275 bytes a pixel against its real 256, RRDBNet 2336 against 2048.
            reuse_pixels=reused_bytes(session) // max(1, info.bytes_per_pixel // 4),
            largest_input=largest_input(session),
        )

    @property
    def scale(self) -> int:
        return self.model.info.scale

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def description(self) -> str:
        info = self.model.info
        precision = self.precision
        runs = f" in {precision.value}" if precision not in (None, Precision.AUTO) else ""
        return f"model {self.model.name} ({info.arch}, x{info.scale}) on backend {self.backend_name}{runs}"

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x C float32 in [0, 1] -> (H * scale) x (W * scale) x C float32 in [0, 1]."""
        return _hwc(self.tiler.upscale(self._chw(rgb)))

    def upscale_stream(
        self, frames: Iterable[tuple[K, np.ndarray]], finish: Finish | None = None
    ) -> Iterator[tuple[K, np.ndarray]]:
        """(key, H x W x C frame) pairs -> (key, upscaled frame) pairs, one per frame, in order.

        Batches are filled with tiles of consecutive frames (see `Tiler.upscale_stream`), so a video of
        small frames runs full batches; a few frames are held back while a batch fills. Each upscaled
        frame is an H x W x C view of a new C x H x W array, not row-major: the caller may change it in
        place, and a copy in another layout or type is its to make (at 720p x4 a float32 frame is
        177 MB, and quantizing straight from the view makes no second one). With `finish` (C x rows x W
        float32 in [0, 1] -> rows x W x C), each frame is what it made of the frame's rows, which go to
        it a row of tiles at a time (`Tiler.upscale_stream`): no whole float32 frame is held at all.
        """
        chw = ((key, self._chw(rgb)) for key, rgb in frames)
        for key, output in self.tiler.upscale_stream(chw, finish):
            yield key, output if finish is not None else output.transpose(1, 2, 0)

    def _chw(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != self.model.info.in_channels:
            raise UpscaleError(
                f"expected an H x W x {self.model.info.in_channels} image, got shape {rgb.shape}"
            )
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


def _hwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


@contextmanager
def open_upscaler(
    model: str | LoadedModel,
    backend: str,
    backend_options: BackendOptions,
    tile_options: TileOptions,
) -> Iterator[Upscaler]:
    """Load `model` (an id, a file, or an already loaded model), open it on `backend`, close it after."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    chosen = get_backend(backend, backend_options, loaded.info.arch)
    session = chosen.open(loaded, backend_options)
    try:
        yield Upscaler(
            loaded, session, tile_options, backend_name=chosen.name, precision=backend_options.precision
        )
    finally:
        session.close()
