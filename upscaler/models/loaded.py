"""A loaded model as the rest of `upscale` sees it, and `load_model`, which needs torch only to build
the network.

What a job needs to plan (the architecture, scale, tiling hints) is known once a weights file has been
loaded: it is kept per weights digest in the cache folder (`model-info/<digest>.json`), so a later run
has the model's `info` at once and builds the network (`module`, importing torch, about 1.7 s here)
only when something uses it. A backend running a graph it exported before (OpenVINO, ONNX Runtime)
never does: `upscale video` with the int8 OpenVINO model starts without torch. Standard library only;
`upscaler.models.loading` does the reading and building.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upscaler.errors import UpscaleError
from upscaler.models.catalog import resolve_model_spec
from upscaler.system.files import write_bytes_atomically
from upscaler.system.places import cache_dir
from upscaler.values import SizeRequirement

if TYPE_CHECKING:
    from torch import nn

# Part of every kept info's name: a change to how an info is derived from a weights file changes it.
INFO_FORMAT = 1


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of `upscale` needs to know about a loaded model.

    config: the keyword arguments that rebuild `LoadedModel.module` with its architecture (for
    SRResNet that is the folded form, batch_norm False). overlap: the tiling hint in input pixels.
    bytes_per_pixel: estimated peak fp32 activation memory per input pixel, to size tiles.
    """

    arch: str
    scale: int
    in_channels: int
    out_channels: int
    config: dict[str, Any] = field(hash=False)
    requirement: SizeRequirement
    overlap: int
    bytes_per_pixel: int
    parameters: int


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference: eval mode, no gradients, float32 on the CPU.

    `module` is built on first use by `build` (`LoadedModel.of` wraps a network already built)."""

    info: ModelInfo
    name: str
    source: Path
    digest: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)

    @functools.cached_property
    def module(self) -> nn.Module:
        return self.build()

    @classmethod
    def of(cls, module: nn.Module, info: ModelInfo, name: str, source: Path, digest: str) -> LoadedModel:
        return cls(info=info, name=name, source=Path(source), digest=digest, build=lambda: module)

    def with_module(self, module: nn.Module) -> LoadedModel:
        """This model with another network of the same shape (a rounded or converted copy)."""
        return LoadedModel.of(module, self.info, self.name, self.source, self.digest)


def load_model(spec: str | Path) -> LoadedModel:
    """Load a model id (`esrgan`) or a weights file (`path/to/net.pth`).

    A string that is a known id means that id, even if a file of that name exists; a Path is always
    a file. The network is built when first used (see the module's docstring).
    """
    path, name, entry = resolve_model_spec(spec)
    digest = weights_digest(path)
    info = _kept_info(digest)
    if info is not None and entry is not None and info.arch != entry.arch:
        from upscaler.errors import ModelError

        raise ModelError(
            f"the bundled weights for {entry.id!r} are a {info.arch!r} network, expected {entry.arch!r}"
        )
    if info is not None:

        def build() -> nn.Module:
            from upscaler.models.loading import build_loaded

            return build_loaded(path, name, entry)[0]

        return LoadedModel(info=info, name=name, source=path, digest=digest, build=build)
    from upscaler.models.loading import build_loaded

    module, fields = build_loaded(path, name, entry)
    info = ModelInfo(**fields)
    _keep_info(digest, info)
    return LoadedModel.of(module, info, name, path, digest)


def weights_digest(path: Path) -> str:
    """The first 16 hex digits of the file's sha256: what caches and journals know weights by."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        from upscaler.errors import ModelError

        raise ModelError(f"cannot read weights file {Path(path).name}: {error.strerror or error}") from None
    return digest.hexdigest()[:16]


def _info_path(digest: str) -> Path:
    return cache_dir() / "model-info" / f"{digest}-v{INFO_FORMAT}.json"


def _kept_info(digest: str) -> ModelInfo | None:
    try:
        data = json.loads(_info_path(digest).read_text(encoding="utf-8"))
        data["requirement"] = SizeRequirement(**data["requirement"])
        return ModelInfo(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _keep_info(digest: str, info: ModelInfo) -> None:
    # A cache that cannot be written costs the next run its torch import, nothing more.
    with contextlib.suppress(UpscaleError, OSError):
        write_bytes_atomically(_info_path(digest), json.dumps(asdict(info)).encode())
