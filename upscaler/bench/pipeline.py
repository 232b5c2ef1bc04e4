"""`upscale video`'s own job on a generated clip, beside the model alone on the same frames."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.bench.backends import bench_picture
from upscaler.bench.machine import time_runs
from upscaler.bench.report import BenchSettings, Timing, VideoRun
from upscaler.options import BackendOptions, TileOptions

CLIP_FPS = 24
# The most the video measurement holds of the model's outputs, to time the job without the model.
REPLAY_BYTES = 1024**3


def write_test_clip(path: Path, width: int, height: int, frames: int, fps: int = CLIP_FPS) -> Path:
    """A short H.264 (else MPEG-4 part 2) clip of bench_picture frames; width and height must be even."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(bench_picture(width, height, index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def measure_video(
    loaded: Any,
    backend: str,
    options: BackendOptions,
    tile_options: TileOptions,
    *,
    width: int,
    height: int,
    frames: int,
    repeat: int,
    warmup: int,
    work_dir: Path,
    preset: str | None = None,
    encoder_options: tuple[tuple[str, str], ...] = (),
) -> VideoRun:
    """`upscale video`'s job on a generated clip, and the same upscaler on the same frames alone."""
    from upscaler.backend import get_backend
    from upscaler.upscaling import open_upscaler
    from upscaler.video.decode import decode_frames
    from upscaler.video.encode import EncodeSettings, lookahead_frames, usable_cores
    from upscaler.video.job import run_video_job
    from upscaler.video.plan import plan_video_job
    from upscaler.video.probe import probe_video
    from upscaler.video.writer import level_dtype, row_quantizer

    # yuv420p needs even sides.
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    clip = write_test_clip(work_dir / "clip.mp4", width, height, frames)
    chosen = get_backend(backend, options, loaded.info.arch).name
    destination = work_dir / "upscaled.mp4"
    model_key = {"digest": loaded.digest, "backend": chosen, "precision": options.precision.value}
    plan = plan_video_job(
        clip,
        destination,
        scale=loaded.info.scale,
        model_key=model_key,
        settings=EncodeSettings(preset=preset, options=encoder_options),
        audio=False,
        overwrite=True,
    )
    decoded = [frame.rgb for frame in decode_frames(probe_video(clip))]
    bits = plan.encoding.bit_depth
    out_bytes = len(decoded) * plan.width * plan.height * 3 * np.dtype(level_dtype(bits)).itemsize
    with open_upscaler(loaded, chosen, options, tile_options) as upscaler:
        # Both as `upscale video` runs the model: tiles of consecutive frames share batches.
        def job() -> None:
            run_video_job(plan, upscaler, resume=False)

        def model_only() -> None:
            for _ in upscaler.upscale_stream(enumerate(decoded)):
                pass

        # The model's outputs, as the job's encoder gets them, for the job without the model.
        replay: _Replay | None = None
        io_problem = None
        if out_bytes <= REPLAY_BYTES:
            made = upscaler.upscale_stream(enumerate(decoded), row_quantizer(bits))
            replay = _Replay([levels for _, levels in made])
            io_only = functools.partial(run_video_job, plan, replay, resume=False)
        else:
            io_problem = f"the {len(decoded)} upscaled frames would take {out_bytes / 2**30:.1f} GiB to hold"
        for _ in range(max(0, warmup - 1 if replay is not None else warmup)):
            model_only()

        # Interleaved, so that all see the same state of a shared, noisy machine.
        job_times: list[float] = []
        model_times: list[float] = []
        io_times: list[float] = []
        model_cpu: list[float] = []
        io_cpu: list[float] = []
        for _ in range(repeat):
            job_times += time_runs(job, 1, 0, lambda: None).samples
            model_times.append(_timed_with_cpu(model_only, model_cpu))
            if replay is not None:
                io_times.append(_timed_with_cpu(io_only, io_cpu))
    return VideoRun(
        backend=chosen,
        precision=options.precision.value,
        width=width,
        height=height,
        frames=len(decoded),
        encoding=plan.encoding.describe(),
        job=Timing(tuple(job_times)),
        model_only=Timing(tuple(model_times)),
        io_only=Timing(tuple(io_times)) if io_times else None,
        model_cpu=statistics.median(model_cpu),
        io_cpu=statistics.median(io_cpu) if io_cpu else None,
        cores=usable_cores(),
        io_problem=io_problem,
        lookahead=lookahead_frames(plan.encoding),
    )


def check_video_settings(settings: BenchSettings, scale: int, work_dir: Path) -> None:
    """Raise the error `upscale video` would give for the video job's encoder settings."""
    from upscaler.video.encode import EncodeSettings
    from upscaler.video.plan import plan_video_job

    clip = write_test_clip(work_dir / "check.mp4", 16, 16, 1)
    plan_video_job(
        clip,
        work_dir / "check-upscaled.mp4",
        scale=scale,
        model_key={},
        settings=EncodeSettings(preset=settings.preset, options=settings.encoder_options),
        audio=False,
        overwrite=True,
    )


def _timed_with_cpu(run: Callable[[], object], cpu: list[float]) -> float:
    """Wall seconds of one call of `run`; its CPU seconds (every thread of the process) go to `cpu`."""
    # process_time counts every thread of the process, in nanoseconds (os.times ticks in 10 ms).
    before, start = time.process_time(), time.perf_counter()
    run()
    seconds, after = time.perf_counter() - start, time.process_time()
    cpu.append(after - before)
    return seconds


class _Replay:
    """An UpscaleStream that gives back stored outputs, in order, instead of running a model: the video
    job with it is the job's decoding, encoding and muxing alone. Stored as `finish` made them (the
    encoder's levels), so it needs no `finish` of its own."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs = outputs

    def upscale_stream(
        self, frames: Iterable[tuple[Any, np.ndarray]], finish: Callable | None = None
    ) -> Iterable[tuple[Any, np.ndarray]]:
        # The job decodes the clip the outputs were made from: as many frames as outputs.
        for (key, _), output in zip(frames, self.outputs, strict=True):
            yield key, output.copy()  # the job may write into what it is given
