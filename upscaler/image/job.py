"""The `upscale images` job: read, upscale and write every planned image, on three threads.

    report = run_image_job(plan, upscale, scale=4, progress=True)

`upscale` is the model through tiling, given by the caller: it takes a float32 H x W x 3 RGB array in
[0, 1] and returns the (H * scale) x (W * scale) x 3 result. This module never imports torch.

Decoding and encoding overlap with inference: `upscaler.pipeline.run_pipeline` reads on one thread and
writes on another, joined to the caller's thread (which runs `upscale`) by small bounded queues. A file
that cannot be read, upscaled (an `UpscaleError` from `upscale`) or written is recorded in the report and
the others go on; any other exception stops every thread and is raised, as it came, in the caller's
thread.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.image.folder import ImageTask, OutputPlan
from upscaler.image.formats import EncodeOptions, read_image, write_image
from upscaler.picture import Picture, Upscale, upscale_picture
from upscaler.pipeline import StageError, StageNames, run_pipeline
from upscaler.system.files import remove_stale_temporaries

_QUEUE_SIZE = 2
_STAGE_NAMES = StageNames(decode="read", infer="upscale", encode="write")


@dataclass
class JobReport:
    """What a job did: outputs written, inputs skipped, and (input, message) for inputs that failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    done: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Image:
    """A file's picture on its way through the stages: as read, then as upscaled."""

    task: ImageTask
    picture: Picture


@dataclass(frozen=True)
class _Failed:
    """One file failed; the job goes on."""

    task: ImageTask
    message: str


def _read_stage(tasks: Iterable[ImageTask]) -> Iterator[_Image | _Failed]:
    for task in tasks:
        try:
            picture = read_image(task.source)
        except UpscaleError as error:
            yield _Failed(task, str(error))
        else:
            yield _Image(task, picture)


def _upscale_item(
    item: _Image | _Failed, upscale: Upscale, scale: float, outscale: float | None
) -> _Image | _Failed:
    if isinstance(item, _Failed):
        return item
    try:
        picture = upscale_picture(item.picture, upscale, scale=scale, outscale=outscale)
    except UpscaleError as error:
        return _Failed(item.task, f"cannot upscale {item.task.source}: {error}")
    return _Image(item.task, picture)


def _write_item(item: _Image | _Failed, options: EncodeOptions) -> _Failed | None:
    """Write an upscaled picture to its target; None when written, else why not."""
    if isinstance(item, _Failed):
        return item
    target = item.task.target
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create folder {target.parent}: {error.strerror or error}") from None
        write_image(target, item.picture, options, mark=item.task.mark)
    except UpscaleError as error:
        return _Failed(item.task, str(error))
    return None


# ------------------------------------------------------------------------------------------- runner


def start_image_job(plan: OutputPlan, outscale: float | None) -> JobReport:
    """What every image job (here or on a cluster) does first: check `outscale`, remove what a killed
    earlier run left (temporaries beside these outputs, older than this run), and start the report
    with the plan's skipped and refused inputs."""
    if outscale is not None and not outscale > 0:
        raise InputError(f"outscale: must be greater than 0 (got {outscale})")
    started = time.time()
    for target in [task.target for task in plan.tasks] + plan.kept:
        remove_stale_temporaries(target, started)
    return JobReport(skipped=list(plan.skipped), failed=list(plan.refused), done=list(plan.done))


def run_image_job(
    plan: OutputPlan,
    upscale: Upscale,
    *,
    scale: float,
    outscale: float | None = None,
    encode: EncodeOptions | None = None,
    progress: bool = False,
) -> JobReport:
    """Upscale every task of `plan` and write it; return what was written, skipped and failed.

    scale: the factor `upscale` enlarges by; outscale: the factor of the files written (None: scale).
    progress: show a tqdm bar over files on stderr. The plan's skipped and refused inputs are in the
    report too. `upscale` runs in the calling thread.
    """
    options = encode or EncodeOptions()
    report = start_image_job(plan, outscale)
    if not plan.tasks:
        return report

    bar = tqdm(total=len(plan.tasks), unit="image", file=sys.stderr, disable=not progress)

    def write(items: Iterator[_Image | _Failed]) -> JobReport:
        for item in items:
            failed = _write_item(item, options)
            if failed is None:
                report.written.append(item.task.target)
            else:
                report.failed.append((failed.task.source, failed.message))
                bar.set_postfix(failed=len(report.failed) - len(plan.refused), refresh=False)
            bar.update(1)
        return report

    try:
        return run_pipeline(
            _read_stage(plan.tasks),
            lambda item: _upscale_item(item, upscale, scale, outscale),
            write,
            queue_size=_QUEUE_SIZE,
            names=_STAGE_NAMES,
        )
    except StageError as failure:
        # Per-file problems never fail a stage, so this is a bug: raised as it came, not as a StageError.
        crash = failure.error
    finally:
        bar.close()
    raise crash
