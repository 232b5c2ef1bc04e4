"""The driver of a video job on a cluster: the parts planned here, made by the workers, recorded here.

    with open_cluster("local:2") as client:
        run_parts_job(plan, ClusterParts(client, spec), events=print)

The cuts (`upscaler.video.cuts`) are those a run on one machine makes, so the parts are the same files
under the same names. Each part is a task; a part a worker finishes is written into the work folder and
recorded: in the journal's parts while every part before it is done, else in its `ahead` list, so a
driver killed mid-job resumes from every finished part. A worker that dies mid-part is Dask's to handle:
the scheduler runs the part again on another worker, and it comes out the same.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from upscaler.cluster.worker import PROGRESS_TOPIC, InputFile, ModelSpec, PartTask, make_part
from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.system.files import write_bytes_atomically
from upscaler.video import encode
from upscaler.video.cuts import Cut, plan_cuts
from upscaler.video.events import Event, Note, Progress
from upscaler.video.plan import VideoPlan
from upscaler.video.resume.journal import Journal, PartRecord, part_problem, write_journal

# The largest input sent through the cluster (--send-input); larger ones go on shared storage.
SEND_LIMIT_BYTES = 2 * 1024**3


class ClusterParts:
    """Makes a job's missing parts on the cluster `client` is connected to (a `PartMaker`).

    send_input: the input's bytes go to the workers through the cluster (else every worker reads it at
    the same path). gpus_per_task: each part asks for that many of the workers' `GPU` resource.
    """

    def __init__(
        self,
        client: Any,
        model: ModelSpec,
        *,
        send_input: bool = False,
        gpus_per_task: float | None = None,
        progress_interval: float = 0.5,
    ) -> None:
        self.client = client
        self.model = model
        self.send_input = send_input
        self.gpus_per_task = gpus_per_task
        self.progress_interval = progress_interval

    def __call__(
        self,
        plan: VideoPlan,
        journal: Journal,
        events: Callable[[Event], None],
        notify: Callable[[Note], None],
    ) -> None:
        problems: list[str] = []
        cuts = plan_cuts(plan, problems)
        _check_prefix(plan, journal, cuts)
        _keep_sound_ahead(plan, journal, notify)
        done = {part.file for part in journal.parts} | {part.file for part in journal.ahead}
        todo = [cut for cut in cuts if cut.file not in done]
        if todo:
            _Driver(self, plan, journal, cuts, events).run(todo)
        for line in problems:
            notify(Note(line, warning=True))

    def input_file(self, plan: VideoPlan) -> tuple[InputFile, bytes | None]:
        path = plan.source.path
        try:
            size = path.stat().st_size
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from None
        if not self.send_input:
            return InputFile(str(path.resolve()), size), None
        if size > SEND_LIMIT_BYTES:
            raise InputError(
                f"--send-input: {path.name} is {size / 1024**3:.1f} GiB, more than the "
                f"{SEND_LIMIT_BYTES // 1024**3} GiB sent through a cluster",
                hint="put it on storage every worker mounts at the same path, and leave out --send-input",
            )
        data = path.read_bytes()
        return InputFile(str(path), size, sent=True, digest=hashlib.sha256(data).hexdigest()), data


class _Driver:
    """One run's tasks: submitted, waited for, written and recorded as they finish, progress counted."""

    def __init__(
        self,
        parts: ClusterParts,
        plan: VideoPlan,
        journal: Journal,
        cuts: list[Cut],
        events: Callable[[Event], None],
    ) -> None:
        self.parts = parts
        self.plan = plan
        self.journal = journal
        self.cuts = cuts
        self.events = events
        self.job = secrets.token_hex(6)
        self.total = sum(cut.frames for cut in cuts)
        self.resumed = journal.frames + sum(part.frames for part in journal.ahead)
        self.running: dict[int, int] = {}  # part index -> frames a worker reported
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def run(self, todo: list[Cut]) -> None:
        from distributed import wait

        client = self.parts.client
        source, data = self.parts.input_file(self.plan)
        sent = client.scatter(data, hash=False) if data is not None else None
        resources = {"GPU": self.parts.gpus_per_task} if self.parts.gpus_per_task else None
        client.subscribe_topic(PROGRESS_TOPIC, self._reported)
        pending = {}
        try:
            for cut in todo:
                task = PartTask(self.job, self.plan, cut, self.parts.model, source, encode.ENCODER_THREADS)
                future = client.submit(
                    make_part,
                    task,
                    sent,
                    key=f"upscale-part-{self.job}-{cut.index:05d}",
                    resources=resources,
                    pure=False,
                )
                pending[future] = cut
            self._progress()
            if resources and not _has_resource(client, "GPU"):
                self.events(
                    Note("no worker offers the GPU resource yet: the parts wait for one", warning=True)
                )
            while pending:
                try:
                    finished = wait(
                        list(pending), timeout=self.parts.progress_interval, return_when="FIRST_COMPLETED"
                    ).done
                except TimeoutError:
                    finished = set()
                for future in finished:
                    cut = pending.pop(future)
                    self._finished(cut, _result(future, cut))
                self._progress()
        finally:
            for future in pending:
                future.cancel()
            client.unsubscribe_topic(PROGRESS_TOPIC)

    def _reported(self, event: tuple[float, dict]) -> None:
        # Called on the client's own thread; a part run again after its worker died starts from 0.
        message = event[1]
        if isinstance(message, dict) and message.get("job") == self.job:
            with self.lock:
                self.running[int(message["part"])] = int(message["frames"])

    def _finished(self, cut: Cut, data: bytes) -> None:
        plan, journal = self.plan, self.journal
        # On the disk before the journal counts it, as on one machine.
        write_bytes_atomically(plan.work_dir / cut.file, data, durable=True)
        sha256 = hashlib.sha256(data).hexdigest()
        journal.ahead.append(PartRecord(cut.file, cut.frames, cut.first_pts, cut.last_pts, len(data), sha256))
        # Parts join the journal's in-order list as soon as every part before them is there.
        waiting = {part.file: part for part in journal.ahead}
        while len(journal.parts) < len(self.cuts) and self.cuts[len(journal.parts)].file in waiting:
            journal.parts.append(waiting.pop(self.cuts[len(journal.parts)].file))
        journal.ahead = sorted(waiting.values(), key=lambda part: part.file)
        write_journal(plan.journal_path, journal)
        with self.lock:
            self.running.pop(cut.index, None)

    def _progress(self) -> None:
        journal = self.journal
        finished = journal.frames + sum(part.frames for part in journal.ahead)
        with self.lock:
            frames = finished + sum(self.running.values())
        elapsed = time.monotonic() - self.started
        new = frames - self.resumed
        fps = new / elapsed if elapsed > 0 and new > 0 else None
        eta = max(0.0, (self.total - frames) / fps) if fps else None
        parts_done = len(journal.parts) + len(journal.ahead)
        self.events(
            Progress(
                frames=frames,
                total=self.total,
                fps=fps,
                eta=eta,
                part=min(len(self.cuts), parts_done + 1),
                parts_done=parts_done,
                resumed=self.resumed,
                elapsed=elapsed,
            )
        )


def _result(future: Any, cut: Cut) -> bytes:
    """The part's bytes, or the task's error as one an user can act on."""
    from distributed import KilledWorker

    try:
        return future.result()
    except UpscaleError:
        raise
    except KilledWorker:
        raise UpscaleError(
            f"part {cut.index}: the workers running it died, each time (out of memory?)",
            hint="finished parts are kept; run the same command again, with fewer workers per machine",
        ) from None


def _has_resource(client: Any, name: str) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(name in (worker.get("resources") or {}) for worker in workers.values())


def _check_prefix(plan: VideoPlan, journal: Journal, cuts: list[Cut]) -> None:
    """The journal's parts must be the cuts' first parts (they are, for one fingerprint, unless the
    file changed under the same name and size)."""
    for part, cut in zip(journal.parts, cuts, strict=False):
        if (part.file, part.first_pts, part.last_pts, part.frames) != (
            cut.file,
            cut.first_pts,
            cut.last_pts,
            cut.frames,
        ):
            raise OutputError(
                f"the finished parts in {plan.work_dir} do not match {plan.source.path.name}'s frames",
                hint="run again with --restart",
            )
    if len(journal.parts) > len(cuts):
        raise OutputError(
            f"{plan.work_dir} holds more parts than {plan.source.path.name} has",
            hint="run again with --restart",
        )


def _keep_sound_ahead(plan: VideoPlan, journal: Journal, notify: Callable[[Note], None]) -> None:
    """Drop the `ahead` parts whose files are missing, cut or changed: they are made again."""
    kept = []
    for part in journal.ahead:
        problem = part_problem(plan.work_dir / part.file, part)
        if problem is None:
            kept.append(part)
        else:
            notify(Note(f"{part.file} {problem}: making it again", warning=True))
            (plan.work_dir / part.file).unlink(missing_ok=True)
    if len(kept) != len(journal.ahead):
        journal.ahead = kept
        write_journal(plan.journal_path, journal)
    if kept:
        frames = sum(part.frames for part in kept)
        notify(Note(f"resuming: {len(kept)} more part(s), {frames} frame(s), finished on the cluster"))
