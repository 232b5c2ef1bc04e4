"""The pure-Python half of the TensorRT backend: optimisation profiles, engine cache keys, sidecars.

Nothing here imports tensorrt, torch or CUDA, so all of it is tested on any machine.

Profiles. The tiler (upscaler/tiling/runner.py) sends tiles of one shape per frame: each side is
`tile + 2 * context` (the context is the overlap, grown until the model accepts the side), or the
whole padded frame side where that is shorter. So across portrait and landscape frames, small frames
and the last tiles of a row (shifted inward, never cut short), every side lies between the smallest
side the model accepts and the full window; after an out-of-memory retry tiles only get smaller and
batches only shrink. A profile from (1, C, smallest, smallest) to (batch, C, window, window), tuned at
the maximum, covers all of it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from upscaler.errors import BackendError, UpscaleError
from upscaler.system.files import write_bytes_atomically
from upscaler.values import SizeRequirement

Shape = tuple[int, int, int, int]
# Sidecar layout version; a sidecar of another version is ignored, never misread.
SIDECAR_FORMAT = 1
# The largest side an engine built on first use covers when nothing else says how large tiles get.
DEFAULT_MAX_SIDE = 1024


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile for the input: smallest, tuned-for and largest NCHW shapes."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            shape = getattr(self, name)
            if len(shape) != 4 or any(int(side) < 1 for side in shape):
                raise UpscaleError(
                    f"profile {name} shape must be four positive sizes N x C x H x W (got {shape})"
                )
        if self.min[1] != self.opt[1] or self.opt[1] != self.max[1]:
            raise UpscaleError(
                f"profile shapes must have one channel count (got {self.min}, {self.opt}, {self.max})"
            )
        for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise UpscaleError(
                    f"profile: {label} must satisfy min <= opt <= max "
                    f"(got {self.min[axis]}, {self.opt[axis]}, {self.max[axis]})"
                )

    def covers(self, shape: Shape) -> bool:
        return len(shape) == 4 and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )

    def describe(self) -> str:
        return " .. ".join("x".join(str(s) for s in shape) for shape in (self.min, self.max))

    def as_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: dict) -> Profile:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))  # type: ignore[arg-type]


def tile_window(tile: int, overlap: int, requirement: SizeRequirement) -> int:
    """The side of what a `tile` x `tile` tile reads: the tiler's `tile + 2 * context`."""
    if tile < 1:
        raise UpscaleError(f"--tile-size: must be positive (got {tile})")
    if overlap < 0:
        raise UpscaleError(f"--tile-overlap: must be >= 0 (got {overlap})")
    window = tile + 2 * overlap
    # the tiler widens the context one pixel a side at a time until the model accepts the side
    while not requirement.accepts(window):
        window += 2
    return window


def plan_profile(channels: int, requirement: SizeRequirement, tile: int, overlap: int, batch: int) -> Profile:
    """The profile that covers every batch the tiler sends with `tile` and `overlap`, `batch` at most."""
    if batch < 1:
        raise UpscaleError(f"--batch: must be positive (got {batch})")
    window = tile_window(tile, overlap, requirement)
    smallest = requirement.padded(1)
    return Profile(
        min=(1, channels, smallest, smallest),
        opt=(batch, channels, window, window),
        max=(batch, channels, window, window),
    )


def default_profile(
    channels: int,
    requirement: SizeRequirement,
    bytes_per_pixel: int,
    memory_budget: int,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Profile:
    """The profile of an engine built on first use, when the tile size is not known yet.

    Sides up to the largest square window whose activations fit `memory_budget` (what `--tile-size
    auto` plans with, one tile per batch), at most `max_side`; batch 1 (the session runs larger
    batches one tile at a time).
    """
    step = requirement.multiple_of
    side = max_side // step * step
    while side > step and bytes_per_pixel > 0 and side * side * bytes_per_pixel > memory_budget:
        side -= step
    side = max(side, requirement.padded(64))
    smallest = requirement.padded(1)
    return Profile(
        min=(1, channels, smallest, smallest), opt=(1, channels, side, side), max=(1, channels, side, side)
    )


def explicit_profile(channels: int, min_shape: Shape, opt_shape: Shape, max_shape: Shape) -> Profile:
    """A profile from `--min-shape/--opt-shape/--max-shape`, checked against the model's channels."""
    for label, shape in (("--min-shape", min_shape), ("--opt-shape", opt_shape), ("--max-shape", max_shape)):
        if len(shape) != 4:
            raise UpscaleError(f"{label}: expected N x C x H x W, e.g. 1x3x64x64 (got {shape})")
        if shape[1] != channels:
            raise UpscaleError(f"{label}: the model takes {channels} channels (got {shape[1]} in {shape})")
    return Profile(tuple(min_shape), tuple(opt_shape), tuple(max_shape))  # type: ignore[arg-type]


def check_batch_shape(profile: Profile, shape: tuple[int, ...]) -> None:
    """Raise a clear BackendError when a batch's H, W or C lies outside the engine's profile.

    The batch size is not checked: the session splits a larger batch into the engine's largest.
    """
    if len(shape) != 4 or shape[1] != profile.max[1]:
        raise BackendError(
            f"tensorrt backend: expected a batch of shape (N, {profile.max[1]}, H, W), got {tuple(shape)}"
        )
    _, _, height, width = shape
    inside = all(profile.min[axis] <= size <= profile.max[axis] for axis, size in ((2, height), (3, width)))
    if not inside:
        raise BackendError(
            f"tensorrt backend: tiles of {height}x{width} are outside the engine's profile "
            f"({profile.min[2]}x{profile.min[3]} to {profile.max[2]}x{profile.max[3]})",
            hint=f"use a --tile-size whose tiles with overlap fit {profile.max[2]}x{profile.max[3]}, or "
            "build an engine for your tile size: upscale build-engine --model M --tile-size N --batch B",
        )


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two engines with different keys are never interchangeable."""

    weights_digest: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: Profile
    opset: int
    export_format: int

    def fields(self) -> dict:
        data = asdict(self)
        data["profile"] = self.profile.as_json()
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def same_target(self, other: EngineKey) -> bool:
        """Same weights, TensorRT, GPU and precision: only the profile may differ."""
        mine, theirs = self.fields(), other.fields()
        mine.pop("profile")
        theirs.pop("profile")
        return mine == theirs

    @classmethod
    def from_fields(cls, data: dict) -> EngineKey:
        return cls(
            weights_digest=str(data["weights_digest"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
            precision=str(data["precision"]),
            profile=Profile.from_json(data["profile"]),
            opset=int(data["opset"]),
            export_format=int(data["export_format"]),
        )


def engine_path(cache_dir: Path, key: EngineKey, model_name: str) -> Path:
    """`<cache>/tensorrt/<model stem>-<precision>-<key digest>.engine`; the sidecar is `.json` beside it."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(model_name).stem)[:40] or "model"
    return cache_dir / "tensorrt" / f"{stem}-{key.precision}-{key.digest()}.engine"


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def write_sidecar(engine: Path, key: EngineKey, details: dict) -> Path:
    """Write the JSON that says what `engine` was built from (atomically, like the engine)."""
    data = {"format": SIDECAR_FORMAT, "key": key.fields(), "key_digest": key.digest(), **details}
    data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return write_bytes_atomically(
        sidecar_path(engine), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    )


def read_sidecar(engine: Path) -> dict | None:
    """The sidecar of `engine` when it is readable, of this format and consistent with itself."""
    try:
        data = json.loads(sidecar_path(engine).read_text(encoding="utf-8"))
        if data.get("format") != SIDECAR_FORMAT:
            return None
        key = EngineKey.from_fields(data["key"])
    except (OSError, ValueError, KeyError, TypeError, UpscaleError):
        return None
    return data if key.digest() == data.get("key_digest") else None


def find_engine(cache_dir: Path, key: EngineKey, any_profile: bool = False) -> Path | None:
    """A cached engine for `key`: the exact one, else with `any_profile` the newest for the same target.

    Only engines whose sidecar matches are used, so an engine for other weights, another TensorRT,
    another GPU or another precision is never picked up.
    """
    folder = cache_dir / "tensorrt"
    if not folder.is_dir():
        return None
    candidates: list[tuple[float, str, Path]] = []
    for engine in folder.glob("*.engine"):
        data = read_sidecar(engine)
        if data is None:
            continue
        other = EngineKey.from_fields(data["key"])
        if other == key:
            return engine
        if any_profile and other.same_target(key):
            candidates.append((engine.stat().st_mtime, engine.name, engine))
    return max(candidates)[2] if candidates else None
