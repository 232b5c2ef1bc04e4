"""The driver of `upscale images` on a cluster: each file's bytes go to a worker, its output's come back.

Nothing needs to be shared between the machines: the driver reads every input and writes every output
(atomically, as on one machine), and a worker only upscales. A few tasks per worker are kept in flight,
so a folder of any size is read as the cluster goes, not all at once.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from upscaler.cluster.connect import worker_count
from upscaler.cluster.worker import ImageTask as WorkerTask
from upscaler.cluster.worker import ModelSpec, upscale_image
from upscaler.errors import OutputError, UpscaleError
from upscaler.image.folder import ImageTask, OutputPlan
from upscaler.image.formats import EncodeOptions
from upscaler.image.job import JobReport, start_image_job
from upscaler.system.files import write_atomically

# Tasks in flight per worker: one running, one waiting there with its bytes.
IN_FLIGHT_PER_WORKER = 2


def run_images_on_cluster(
    client: Any,
    plan: OutputPlan,
    model: ModelSpec,
    *,
    scale: int,
    outscale: float | None = None,
    encode: EncodeOptions | None = None,
    gpus_per_task: float | None = None,
    progress: bool = False,
) -> JobReport:
    """`upscaler.image.job.run_image_job` with the upscaling done by the cluster's workers: the same
    files written, skipped and failed."""
    from distributed import as_completed

    report = start_image_job(plan, outscale)
    if not plan.tasks:
        return report
    resources = {"GPU": gpus_per_task} if gpus_per_task else None
    waiting = iter(plan.tasks)
    pending: dict[Any, ImageTask] = {}
    running = as_completed()

    def submit_next() -> None:
        for task in waiting:
            try:
                data = task.source.read_bytes()
            except OSError as error:
                report.failed.append((task.source, f"cannot read {task.source}: {error.strerror or error}"))
                bar.update(1)
                continue
            job = WorkerTask(task.source.name, task.target.suffix, model, scale, outscale, encode, task.mark)
            future = client.submit(upscale_image, job, data, resources=resources, pure=False)
            pending[future] = task
            running.add(future)
            return

    bar = tqdm(total=len(plan.tasks), unit="image", file=sys.stderr, disable=not progress)
    try:
        for _ in range(IN_FLIGHT_PER_WORKER * worker_count(client)):
            submit_next()
        for future in running:
            task = pending.pop(future)
            message = _write(future, task)
            if message is None:
                report.written.append(task.target)
            else:
                report.failed.append((task.source, message))
            bar.update(1)
            submit_next()
    finally:
        for future in pending:
            future.cancel()
        bar.close()
    return report


def _write(future: Any, task: ImageTask) -> str | None:
    """Write the task's output; None when written, else why not."""
    from distributed import KilledWorker

    try:
        data = future.result()
    except UpscaleError as error:
        return f"cannot upscale {task.source}: {error}"
    except KilledWorker:
        return f"cannot upscale {task.source}: the workers running it died, each time (out of memory?)"
    target = task.target
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create folder {target.parent}: {error.strerror or error}") from None
        with write_atomically(target) as temporary:
            temporary.write_bytes(data)
    except UpscaleError as error:
        return str(error)
    except OSError as error:
        return f"cannot write {target}: {error.strerror or error}"
    return None
