"""`--backend auto` by measured speed: the candidate backends timed on this machine, the fastest kept.

Which backend is fastest depends on the architecture, the precision, the input size and the machine
(on these 2-core CPUs torch beat OpenVINO for compact in bf16 and lost to it for RRDBNet), so a fixed
order is only the fallback. For a job long enough to pay for it (MEASURE_FROM items: frames of a video,
or images), every backend that can run the model here in the chosen precision upscales a frame of the
job's size (once to warm up, then TIMED_RUNS times, the quickest kept), and the fastest runs the job.
The timings are kept per machine, model, precision, device, tiling and size in the cache folder
(`backend-timings.json`), so the next job of that kind starts at once with the same choice, however
short; `upscale bench` measures the same way. A job too short to pay for a measurement, with nothing
kept, takes the fixed order (`upscaler.backend.choose_backend`) and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.backend import CUDA_ONLY, discover_backends, get_backend, runs_on_cpu
from upscaler.errors import BackendError, UpscaleError
from upscaler.models import LoadedModel
from upscaler.options import BackendOptions, TileOptions
from upscaler.precision import cpuinfo_field
from upscaler.system.files import write_bytes_atomically
from upscaler.system.places import cache_dir
from upscaler.upscaling import open_upscaler

# Jobs of this many frames (or images) or more measure the backends when nothing is kept: measuring
# costs about three frames a backend, plus opening each (an ONNX export and a compile the first time),
# once per machine, model and size. UPSCALER_MEASURE_FROM sets another threshold (a huge one: never).
MEASURE_FROM = 20
MEASURE_VARIABLE = "UPSCALER_MEASURE_FROM"
TIMED_RUNS = 2
CACHE_NAME = "backend-timings.json"
_RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")


@dataclass(frozen=True)
class BackendChoice:
    """The backend auto chose, and why, in a few words (for the command's first line)."""

    name: str
    reason: str


def choose_backend_by_speed(
    loaded: LoadedModel,
    options: BackendOptions,
    tiles: TileOptions,
    size: tuple[int, int],
    items: int | None,
    cache_file: Path | None = None,
) -> BackendChoice:
    """What `--backend auto` runs for `loaded` in `options` (a concrete precision) on inputs of `size`
    (rows, columns), for a job of `items` frames or images (None: unknown, counted as long)."""
    names = _candidates(options)
    table = get_backend("auto", options, loaded.info.arch).name
    if len(names) <= 1:
        return BackendChoice(table, "auto: the only backend here for this")
    path = cache_file or cache_dir() / CACHE_NAME
    key = _key(loaded, options, tiles, size)
    kept = _read(path).get(key)
    if kept and kept.get("chosen") in names:
        return BackendChoice(kept["chosen"], _reason(kept["timings"], size, "measured here before"))
    threshold = measure_from()
    if items is not None and items < threshold:
        return BackendChoice(
            table, f"auto: the usual order; a job of {threshold} frames or more measures the backends"
        )
    timings = measure_backends(loaded, names, options, tiles, size)
    if not timings:
        return BackendChoice(table, "auto: the usual order (no backend could be measured)")
    chosen = min(timings, key=timings.get)
    _write(path, key, {"chosen": chosen, "timings": timings, "size": list(size), "at": time.time()})
    return BackendChoice(chosen, _reason(timings, size, "measured now"))


def measure_from() -> int:
    """How many frames (or images) a job needs to measure the backends (MEASURE_VARIABLE, else
    MEASURE_FROM)."""
    try:
        return max(0, int(os.environ.get(MEASURE_VARIABLE, MEASURE_FROM)))
    except ValueError:
        return MEASURE_FROM


def measure_backends(
    loaded: LoadedModel,
    names: list[str],
    options: BackendOptions,
    tiles: TileOptions,
    size: tuple[int, int],
) -> dict[str, float]:
    """Seconds each backend in `names` takes to upscale a `size` frame (tiled as a job tiles it); a
    backend that cannot run it here (another precision, no such device) is left out."""
    frame = _probe_frame(size, loaded.info.in_channels)
    timings = {}
    for name in names:
        try:
            with open_upscaler(loaded, name, options, tiles) as upscaler:
                upscaler.upscale(frame)
                runs = []
                for _ in range(TIMED_RUNS):
                    started = time.perf_counter()
                    upscaler.upscale(frame)
                    runs.append(time.perf_counter() - started)
        except BackendError:
            continue
        timings[name] = round(min(runs), 4)
    return timings


def _candidates(options: BackendOptions) -> list[str]:
    """The available backends that could serve `options.device` (precision is found out by opening)."""
    on_cpu = runs_on_cpu(options.device)
    names = []
    for name, status in sorted(discover_backends().items()):
        if not status.available or status.backend is None:
            continue
        if name in CUDA_ONLY and on_cpu:
            continue
        names.append(name)
    return names


def _reason(timings: dict[str, float], size: tuple[int, int], when: str) -> str:
    ranked = sorted(timings.items(), key=lambda item: item[1])
    figures = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in ranked)
    return f"auto: the fastest {when}, a {size[1]}x{size[0]} frame in {figures}"


def _probe_frame(size: tuple[int, int], channels: int) -> np.ndarray:
    """A frame with texture (speed does not depend on the content, but no runtime gets a blank one)."""
    rows, columns = size
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, columns, dtype=np.float32)[None, :, None]
    noise = rng.random((rows, columns, channels), dtype=np.float32) * 0.2
    return np.clip(ramp * 0.8 + noise, 0, 1).astype(np.float32)


def _key(loaded: LoadedModel, options: BackendOptions, tiles: TileOptions, size: tuple[int, int]) -> str:
    versions = {}
    for runtime in _RUNTIMES:
        try:
            versions[runtime] = metadata.version(runtime)
        except metadata.PackageNotFoundError:
            continue
    parts = {
        "cpu": cpuinfo_field("model name") or "",
        "cores": os.cpu_count(),
        "runtimes": versions,
        "model": loaded.digest,
        "precision": options.precision.value,
        "device": options.device,
        "threads": options.threads,
        "tile": tiles.tile_size,
        "budget": tiles.memory_budget,
        "size": list(size),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, key: str, entry: dict[str, Any]) -> None:
    data = _read(path)
    data[key] = entry
    # A cache that cannot be written costs a measurement next time, nothing more.
    with contextlib.suppress(UpscaleError, OSError):
        write_bytes_atomically(path, (json.dumps(data, indent=1) + "\n").encode())


def probe_size(rows: int, columns: int, largest: int = 1080) -> tuple[int, int]:
    """The size a measurement runs at for inputs of `rows` x `columns`: the input's own, with the larger
    side at most `largest` (beyond that every backend runs the same tiles, only more of them)."""
    factor = min(1.0, largest / max(rows, columns, 1))
    return max(1, math.floor(rows * factor)), max(1, math.floor(columns * factor))
