"""The encode stage of a video job: upscaled frames into parts, each sealed and recorded in the journal,
and the journal a run goes on from (verified part by part).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from upscaler.errors import OutputError
from upscaler.video.events import Event, Note, Progress
from upscaler.video.plan import VideoPlan
from upscaler.video.resume.journal import (
    Journal,
    PartRecord,
    part_problem,
    read_journal,
    seal_part,
    write_journal,
)
from upscaler.video.resume.lock import clear_work_dir
from upscaler.video.writer import PartWriter


def open_journal(plan: VideoPlan, resume: bool, notify: Callable[[Note], None]) -> Journal:
    """The journal to go on from: the matching one with its finished parts, or a fresh, empty one."""
    found = read_journal(plan.journal_path) if plan.journal_path.exists() else None
    if plan.work_dir.exists():
        if found is None or found.fingerprint != plan.fingerprint:
            if found is not None:
                notify(
                    Note(
                        f"discarded the finished parts in {plan.work_dir}: they were made with other settings"
                    )
                )
            found = None
        elif not resume:
            if found.parts:
                count = len(found.parts)
                notify(Note(f"restarting: discarded the {count} finished part(s) in {plan.work_dir}"))
            found = None
        elif found.parts and not plan.source.has_timestamps:
            notify(
                Note(
                    f"cannot resume: the frames of {plan.source.path.name} carry no timestamps; restarting",
                    warning=True,
                )
            )
            found = None
        if found is None:
            clear_work_dir(plan.work_dir)
    if found is not None:
        # A part file that is missing, cut short (a crash before the OS flushed it, a disk error) or
        # changed invalidates it and every later part: they are made again.
        for index, part in enumerate(found.parts):
            problem = part_problem(plan.work_dir / part.file, part)
            if problem is not None:
                redo = len(found.parts) - index
                notify(
                    Note(
                        f"{part.file} {problem}: making it and the {redo - 1} part(s) after it again",
                        warning=True,
                    )
                )
                for later in found.parts[index:]:
                    (plan.work_dir / later.file).unlink(missing_ok=True)
                found = Journal(plan.fingerprint, found.parts[:index], ahead=found.ahead)
                write_journal(plan.journal_path, found)
                break
        if found.parts:
            notify(
                Note(
                    f"resuming: {len(found.parts)} part(s), {found.frames} frame(s) already done "
                    f"(--restart starts again)"
                )
            )
        return found
    try:
        plan.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {plan.work_dir}: {error.strerror or error}") from None
    journal = Journal(plan.fingerprint)
    write_journal(plan.journal_path, journal)
    return journal


# ------------------------------------------------------------------------------------------- running


def part_is_full(plan: VideoPlan, count: int, first: int, last: int) -> bool:
    """Whether a part of `count` frames from pts `first` to `last` ends at the next keyframe: the one
    rule that cuts a job into parts, wherever the parts are made."""
    if count >= plan.part_frames:
        return True
    seconds = plan.part_seconds
    return seconds is not None and float((last - first) * plan.source.time_base) >= seconds


def part_name(plan: VideoPlan, index: int) -> str:
    """The file name of the job's part number `index` (from 0) in its work folder."""
    return f"part-{index:05d}{plan.encoding.part_suffix}"


@dataclass(frozen=True)
class Upscaled:
    pts: int
    key_frame: bool
    rgb: np.ndarray  # H x W x 3 levels for the encoder (see `quantize`)


class PartSink:
    """The encode stage: upscaled frames into parts, cut by the segment rule, each recorded in the journal."""

    def __init__(
        self,
        plan: VideoPlan,
        journal: Journal,
        events: Callable[[Event], None],
        progress_interval: float,
    ) -> None:
        self.plan = plan
        self.journal = journal
        self.events = events
        self.progress_interval = progress_interval
        self.total = plan.expected_frames
        self.resumed_frames = journal.frames
        self.new_frames = 0
        self.started = time.monotonic()
        self.last_report = -math.inf
        self.ended = False

    def __call__(self, frames: Iterator[Upscaled]) -> int:
        stack = ExitStack()
        writer: PartWriter | None = None
        count = first = last = 0
        try:
            for frame in frames:
                if writer is not None and frame.key_frame and part_is_full(self.plan, count, first, last):
                    stack.close()
                    writer = None
                    self._finished(PartRecord(self._name(), count, first, last))
                if writer is None:
                    path = self.plan.work_dir / self._name()
                    writer = stack.enter_context(
                        PartWriter(
                            path, self.plan.source, self.plan.encoding, self.plan.width, self.plan.height
                        )
                    )
                    count, first = 0, frame.pts
                writer.write(frame.pts, frame.rgb)
                count += 1
                last = frame.pts
                self.new_frames += 1
                self._progress(force=False)
            self.ended = True
            if writer is not None:
                stack.close()
                writer = None
                self._finished(PartRecord(self._name(), count, first, last))
            else:
                self._progress(force=True)
        except BaseException as error:
            # Leaving the writer's context with the exception removes its unfinished file.
            if not stack.__exit__(type(error), error, error.__traceback__):
                raise
        return self.new_frames

    def _name(self) -> str:
        return part_name(self.plan, len(self.journal.parts))

    def _finished(self, part: PartRecord) -> None:
        # On the disk before the journal counts it: a crash after this point leaves a whole part.
        size, sha256 = seal_part(self.plan.work_dir / part.file)
        part = dataclasses.replace(part, size=size, sha256=sha256)
        self.journal.parts.append(part)
        write_journal(self.plan.journal_path, self.journal)
        self._progress(force=True)

    def _progress(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < self.progress_interval:
            return
        self.last_report = now
        elapsed = now - self.started
        fps = self.new_frames / elapsed if elapsed > 0 and self.new_frames else None
        done = self.resumed_frames + self.new_frames
        eta = None
        if fps and self.total is not None:
            eta = max(0.0, (self.total - done) / fps)
        self.events(
            Progress(
                frames=done,
                total=self.total,
                fps=fps,
                eta=eta,
                part=len(self.journal.parts) + (0 if self.ended else 1),
                parts_done=len(self.journal.parts),
                resumed=self.resumed_frames,
                elapsed=elapsed,
            )
        )
