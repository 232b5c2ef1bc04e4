"""What a cluster's workers run: one part of a video, or one image, with the model kept open.

The driver sends a task (a frozen dataclass) naming the model by id or file and by its digest; the
worker loads and opens it once and keeps it for every later task with the same model, so a film's
hundreds of parts load the weights once per worker. Tasks in one worker process run one at a time (a
session is not shared between threads): start workers with `--nthreads 1` and as many processes as the
machine's devices or cores call for.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from upscaler.errors import InputError, ModelError
from upscaler.image.formats import EncodeOptions, image_bytes, read_image
from upscaler.options import BackendOptions, TileOptions
from upscaler.picture import upscale_picture
from upscaler.pipeline import run_pipeline
from upscaler.system.allocator import keep_freed_memory
from upscaler.video import encode
from upscaler.video.cuts import Cut
from upscaler.video.decode import VideoFrame, decode_frames
from upscaler.video.encode import usable_cores
from upscaler.video.job import infer_stage, queue_sizes
from upscaler.video.plan import VideoPlan
from upscaler.video.resume.parts import Upscaled
from upscaler.video.writer import PartWriter

PROGRESS_TOPIC = "upscale-progress"
# What Dask's nanny sets in every worker's environment (distributed.nanny.pre-spawn-environ).
DASK_TRIM_THRESHOLD = "65536"
# How often a worker reports the frames of the part it is making.
PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ModelSpec:
    """The model a task runs, as the driver resolved it: what `load_model` takes, the digest the weights
    must have, and the backend with its options (precision and backend decided already)."""

    model: str
    digest: str
    backend: str
    options: BackendOptions
    tiles: TileOptions


@dataclass(frozen=True)
class InputFile:
    """The job's input as a worker finds it: at `path` on storage every worker shares, or (`sent`) in
    the bytes the task carries, whose sha256 is `digest` (taken once, by the driver). `size` tells a
    worker's copy from another file at the same path."""

    path: str
    size: int
    sent: bool = False
    digest: str = ""


@dataclass(frozen=True)
class PartTask:
    """Make one part of a video job: its frames decoded from the input, upscaled and encoded as the
    job's own run would. `encoder_threads` is the driver's, so the encoder makes the same bytes on a
    worker with another core count."""

    job: str
    plan: VideoPlan
    cut: Cut
    model: ModelSpec
    source: InputFile
    encoder_threads: int


@dataclass(frozen=True)
class ImageTask:
    """Upscale one image (its file's bytes travel with the task) into the bytes of its output file."""

    source_name: str
    target_suffix: str
    model: ModelSpec
    scale: int
    outscale: float | None
    encode: EncodeOptions | None
    mark: str


_lock = threading.Lock()
_opened: dict[str, Any] = {}
_inputs: dict[str, Path] = {}
_folder: list[Path] = []


def make_part(task: PartTask, data: bytes | None = None) -> bytes:
    """The finished part file's bytes. `data`: the input's bytes when task.source.sent."""
    with _lock:
        path = _input_path(task.source, data)
        plan = replace(task.plan, source=replace(task.plan.source, path=path))
        upscaler = _upscaler(task.model)
        # Read when each encoder opens (`upscaler.video.writer`); tasks in this process run one at a time.
        encode.ENCODER_THREADS = task.encoder_threads
        with tempfile.TemporaryDirectory(prefix="upscale-part-") as folder:
            target = Path(folder) / task.cut.file
            run_pipeline(
                _cut_frames(plan, task.cut),
                infer_stage(upscaler, plan),
                _PartFile(target, plan, task, _reporter()),
                queue_size=queue_sizes(plan),
            )
            return target.read_bytes()


def upscale_image(task: ImageTask, data: bytes) -> bytes:
    """The output file's bytes for the image file whose bytes are `data`."""
    with _lock:
        upscaler = _upscaler(task.model)
        with tempfile.TemporaryDirectory(prefix="upscale-image-") as folder:
            # Read from a file of the same name, so its format and orientation are found as at home.
            source = Path(folder) / Path(task.source_name).name
            source.write_bytes(data)
            picture = read_image(source)
        result = upscale_picture(picture, upscaler.upscale, scale=task.scale, outscale=task.outscale)
        return image_bytes(task.target_suffix, result, task.encode, task.mark)


def _reporter() -> Callable[[dict], None]:
    """Sends a message to the driver's progress; taken in the task's thread (the pipeline's encode stage,
    which reports, runs on another), and a no-op where this does not run on a worker."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return lambda message: None
    return lambda message: worker.log_event(PROGRESS_TOPIC, message)


# ------------------------------------------------------------------------------------------- parts


def _cut_frames(plan: VideoPlan, cut: Cut) -> Iterator[VideoFrame]:
    """The frames of `cut`, decoded as a run resumed after cut.after_pts decodes them; an InputError if
    they are not the frames the cuts were planned from."""
    count = 0
    first = None
    frames = decode_frames(
        plan.source,
        start=plan.start,
        duration=plan.duration,
        after_pts=cut.after_pts,
        deinterlace=plan.deinterlace,
    )
    with contextlib.closing(frames):
        for frame in frames:
            if frame.pts > cut.last_pts:
                break
            first = frame.pts if first is None else first
            count += 1
            yield frame
    if first != cut.first_pts or count != cut.frames:
        raise InputError(
            f"{plan.source.path.name}: part {cut.index} decoded as {count} frames from pts {first}, where "
            f"the cuts planned {cut.frames} from pts {cut.first_pts}",
            hint="this file does not decode the same way from every keyframe; run it without --cluster",
        )


class _PartFile:
    """The encode stage of one part: every upscaled frame into one part file, progress reported."""

    def __init__(self, path: Path, plan: VideoPlan, task: PartTask, report: Callable[[dict], None]) -> None:
        self.path = path
        self.plan = plan
        self.task = task
        self.report = report

    def __call__(self, frames: Iterator[Upscaled]) -> int:
        plan = self.plan
        count = 0
        last_report = time.monotonic()
        with PartWriter(self.path, plan.source, plan.encoding, plan.width, plan.height) as writer:
            for frame in frames:
                writer.write(frame.pts, frame.rgb)
                count += 1
                if time.monotonic() - last_report >= PROGRESS_INTERVAL_S:
                    last_report = time.monotonic()
                    self.report({"job": self.task.job, "part": self.task.cut.index, "frames": count})
        return count


# ------------------------------------------------------------------------------------------- caches


def _upscaler(spec: ModelSpec) -> Any:
    """The open model for `spec`: opened on first use and kept; another model closes it first."""
    if _opened.get("spec") == spec:
        return _opened["upscaler"]
    _close_model()
    from upscaler.models import load_model
    from upscaler.upscaling import open_upscaler

    _tune_process()
    loaded = load_model(spec.model)
    if loaded.digest != spec.digest:
        raise ModelError(
            f"model {spec.model!r} on this worker is not the one the job was planned with "
            f"(digest {loaded.digest[:12]}, expected {spec.digest[:12]})",
            hint="give every machine the same weights file and the same version of upscale",
        )
    options = spec.options
    if options.threads is None:
        # Dask starts workers with OMP_NUM_THREADS=1, which torch would take for the thread count.
        options = replace(options, threads=usable_cores())
    context = open_upscaler(loaded, spec.backend, options, spec.tiles)
    _opened.update(spec=spec, upscaler=context.__enter__(), context=context)
    return _opened["upscaler"]


def _tune_process() -> None:
    """Keep freed memory in this worker process, as the CLI does in its own (upscaler.system.allocator).
    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which is Dask's choice, not the
    user's: left alone, it made a part 40% slower here (BENCHMARKS.md, "Cluster")."""
    environ = dict(os.environ)
    if environ.get("MALLOC_TRIM_THRESHOLD_") == DASK_TRIM_THRESHOLD:
        del environ["MALLOC_TRIM_THRESHOLD_"]
    keep_freed_memory(environ)


def _close_model() -> None:
    context = _opened.pop("context", None)
    _opened.clear()
    if context is not None:
        context.__exit__(None, None, None)


def _input_path(source: InputFile, data: bytes | None) -> Path:
    """Where this worker reads the input: the shared path, checked, or a copy of the sent bytes kept
    for the worker's life (a film's parts all read it)."""
    if not source.sent:
        path = Path(source.path)
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        if size != source.size:
            seen = "cannot see" if size is None else f"sees {size} bytes, not the driver's {source.size}, in"
            raise InputError(
                f"a worker {seen} {source.path}",
                hint="put the input on storage every worker mounts at the same path, or pass --send-input",
            )
        return path
    if data is None or len(data) != source.size:
        raise InputError(f"the input's bytes did not arrive whole on a worker: {source.path}")
    key = source.digest
    if key not in _inputs or not _inputs[key].exists():
        if not _folder:
            _folder.append(Path(tempfile.mkdtemp(prefix="upscale-inputs-")))
            atexit.register(shutil.rmtree, _folder[0], True)
        copy = _folder[0] / f"{key[:16]}{Path(source.path).suffix}"
        copy.write_bytes(data)
        _inputs[key] = copy
    return _inputs[key]
