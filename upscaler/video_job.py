"""The `upscale video` job: plan it, upscale every frame into parts, mux the parts into the output.

    plan = plan_video_job(Path("in.mp4"), Path("out.mp4"), scale=4, model_key={"digest": "..."})
    report = run_video_job(plan, upscaler.upscale, events=print)

Planning does everything that can fail before a frame is decoded: it probes the source, resolves the
encoding against this FFmpeg and the output container, refuses to overwrite the input (ever) or an
existing output (without `overwrite`), and computes a fingerprint of every setting that changes the
result.

Running decodes the source in display order, upscales each frame in the calling thread (the model's
thread) and encodes it into *parts*: small video-only files in a work folder beside the output. A part
is closed once it holds `part_frames` frames (or spans `part_seconds`) and the next decoded frame is a
keyframe, which starts the next part; so part boundaries depend only on the frames. A small JSON journal
in the work folder records each finished part (file, frame count, first and last pts) under the
fingerprint. Running the same plan again skips the finished parts: decoding resumes after the last
finished pts and produces the very parts a clean run would have. A journal written for other settings
is discarded with a note. When every part is done, the parts' video and the source's audio, subtitles,
metadata, chapters and rotation are muxed into a temporary file beside the output, which is renamed
onto it; then the work folder is removed. If anything fails, no output file is left behind, and the
finished parts stay for the next run.

The library never prints: progress and notes reach the caller through the `events` callback (called
from the encoding thread for progress, and from the calling thread for notes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from upscaler.encoding import EncodeSettings, Encoding, PartWriter, frame_size, resolve_encoding
from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.image_job import upscale_picture
from upscaler.images import Picture
from upscaler.muxing import mux_output
from upscaler.pipeline import run_pipeline
from upscaler.video import VideoFrame, VideoInfo, decode_frames, probe_video

Upscale = Callable[[np.ndarray], np.ndarray]

JOURNAL_VERSION = 1
JOURNAL_NAME = "journal.json"
# A part of about ten seconds at 25 fps: small enough that a crash loses little, large enough that the
# encoder's look-ahead and rate control barely notice the cuts.
DEFAULT_PART_FRAMES = 250


# ------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PartRecord:
    """A finished part: its file name in the work folder, its frame count and its first and last pts."""

    file: str
    frames: int
    first_pts: int
    last_pts: int


@dataclass
class Journal:
    """What the work folder holds: the fingerprint it was made for and the finished parts, in order."""

    fingerprint: str
    parts: list[PartRecord] = field(default_factory=list)
    complete: bool = False

    @property
    def frames(self) -> int:
        return sum(part.frames for part in self.parts)


@dataclass(frozen=True)
class VideoPlan:
    """A video job, checked and ready to run. Sizes are coded sizes (before the display rotation)."""

    source: VideoInfo
    destination: Path
    encoding: Encoding
    width: int
    height: int
    scale: int
    outscale: float | None
    start: float | None
    duration: float | None
    audio: bool
    deinterlace: bool
    part_frames: int
    part_seconds: float | None
    fingerprint: str
    work_dir: Path
    warnings: tuple[str, ...]

    @property
    def journal_path(self) -> Path:
        return self.work_dir / JOURNAL_NAME

    @property
    def expected_frames(self) -> int | None:
        """How many frames the job will upscale: the header's count, else an estimate from the duration and
        the average rate (exact for constant frame rates), else None."""
        info = self.source
        if self.start is None and self.duration is None and info.frame_count is not None:
            return info.frame_count
        if info.average_rate is None:
            return None
        start = self.start or 0.0
        end = info.duration if self.duration is None else start + self.duration
        if end is None:
            return None
        if info.duration is not None:
            end = min(end, info.duration)
        return max(0, round((end - start) * float(info.average_rate)))


@dataclass(frozen=True)
class Progress:
    """How far the job is: frames done (finished parts included) out of `total` (None: unknown).

    fps counts only the frames upscaled by this run; eta is in seconds (None while unknown); part is the
    number of the part being written (from 1); parts_done counts the finished ones; resumed counts the
    frames finished by earlier runs.
    """

    frames: int
    total: int | None
    fps: float | None
    eta: float | None
    part: int
    parts_done: int
    resumed: int
    elapsed: float


@dataclass(frozen=True)
class Note:
    """A line for the person running the job; `warning` marks something they may want to act on."""

    message: str
    warning: bool = False


Event = Progress | Note


@dataclass
class VideoReport:
    """What a finished job did."""

    destination: Path
    frames: int
    parts: int
    resumed_parts: int
    resumed_frames: int
    width: int
    height: int
    encoding: str
    warnings: list[str]
    seconds: float


# ------------------------------------------------------------------------------------------ planning


def plan_video_job(
    source: Path,
    destination: Path,
    *,
    scale: int,
    model_key: Mapping[str, object],
    settings: EncodeSettings | None = None,
    outscale: float | None = None,
    start: float | None = None,
    duration: float | None = None,
    audio: bool = True,
    deinterlace: bool = False,
    overwrite: bool = False,
    part_frames: int = DEFAULT_PART_FRAMES,
    part_seconds: float | None = None,
) -> VideoPlan:
    """Check everything that can be checked before any work, and decide the output size and work folder.

    model_key: what about the model and how it runs changes the pixels (weights digest, backend,
    precision, tiling); it goes into the fingerprint as it is, so it must be JSON-serialisable.
    Raises InputError (the source, a window outside it) or OutputError (the destination, the encoding).
    """
    source, destination = Path(source), Path(destination)
    if outscale is not None and not outscale > 0:
        raise InputError(f"--outscale: must be greater than 0 (got {outscale:g})")
    if start is not None and not (start >= 0 and math.isfinite(start)):
        raise InputError(f"--start: must be 0 or more seconds (got {start:g})")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise InputError(f"--duration: must be more than 0 seconds (got {duration:g})")
    if part_frames < 1:
        raise ValueError(f"part_frames must be at least 1, got {part_frames}")

    info = probe_video(source)
    _refuse_to_overwrite(source, destination, overwrite)
    encoding = resolve_encoding(destination, info, settings or EncodeSettings())
    if info.duration is not None and start is not None and start >= info.duration:
        raise InputError(
            f"--start {start:g}: {source.name} is only {info.duration:.3f} s long",
            hint="choose a --start inside the video",
        )

    final = outscale if outscale is not None else scale
    width, height = _round_half_up(info.width * final), _round_half_up(info.height * final)

    warnings: list[str] = []
    coded = frame_size(encoding, width, height)
    if coded != (width, height):
        warnings.append(
            f"{encoding.pix_fmt} needs even sides: {width}x{height} is encoded as {coded[0]}x{coded[1]} "
            "(the last row or column repeated; another --outscale avoids it)"
        )
    if info.interlaced and not deinterlace:
        warnings.append(
            f"{source.name} is interlaced; upscaling its fields as frames gives combing "
            "(--deinterlace deinterlaces it first)"
        )
    fingerprint = _fingerprint(
        source=source,
        model_key=model_key,
        scale=scale,
        outscale=outscale,
        encoding=encoding,
        size=(width, height),
        start=start,
        duration=duration,
        deinterlace=deinterlace,
        part_frames=part_frames,
        part_seconds=part_seconds,
    )
    return VideoPlan(
        source=info,
        destination=destination,
        encoding=encoding,
        width=width,
        height=height,
        scale=scale,
        outscale=outscale,
        start=start,
        duration=duration,
        audio=audio,
        deinterlace=deinterlace,
        part_frames=part_frames,
        part_seconds=part_seconds,
        fingerprint=fingerprint,
        work_dir=work_dir_for(destination),
        warnings=tuple(warnings),
    )


def work_dir_for(destination: Path) -> Path:
    """The folder beside `destination` that holds its parts and journal while the job runs."""
    return destination.parent / f".{destination.name}.upscale-parts"


def _refuse_to_overwrite(source: Path, destination: Path, overwrite: bool) -> None:
    same = os.path.abspath(source) == os.path.abspath(destination)
    if not same and destination.exists():
        with contextlib.suppress(OSError):
            same = os.path.samefile(source, destination)
    if same:
        raise OutputError(f"{destination}: is the input; choose another output file")
    if destination.is_dir():
        raise OutputError(f"{destination}: is a folder; give an output file name such as out.mp4")
    if destination.exists() and not overwrite:
        raise OutputError(f"{destination}: already exists", hint="--overwrite replaces it")


def _fingerprint(
    *,
    source: Path,
    model_key: Mapping[str, object],
    scale: int,
    outscale: float | None,
    encoding: Encoding,
    size: tuple[int, int],
    start: float | None,
    duration: float | None,
    deinterlace: bool,
    part_frames: int,
    part_seconds: float | None,
) -> str:
    # Everything that changes a part's bytes or where parts begin. Audio and subtitle choices only
    # change the final mux, which always runs again, so they are left out.
    stat = source.stat()
    identity = {
        "version": JOURNAL_VERSION,
        "source": {"path": os.path.abspath(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "model": dict(model_key),
        "scale": scale,
        "outscale": outscale,
        "encoding": {
            "container": encoding.container,
            "codec": encoding.codec,
            "pix_fmt": encoding.pix_fmt,
            "options": sorted(encoding.options.items()),
            "part_suffix": encoding.part_suffix,
        },
        "size": list(size),
        "window": [start, duration],
        "deinterlace": deinterlace,
        "parts": [part_frames, part_seconds],
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _round_half_up(value: float) -> int:
    return max(1, math.floor(value + 0.5))


# ------------------------------------------------------------------------------------------- journal


def read_journal(path: Path) -> Journal | None:
    """The journal at `path`, or None when there is none or it cannot be understood."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != JOURNAL_VERSION:
            return None
        parts = [
            PartRecord(
                file=str(part["file"]),
                frames=int(part["frames"]),
                first_pts=int(part["first_pts"]),
                last_pts=int(part["last_pts"]),
            )
            for part in data["parts"]
        ]
        return Journal(fingerprint=str(data["fingerprint"]), parts=parts, complete=bool(data["complete"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_journal(path: Path, journal: Journal) -> None:
    """Write `journal` so that a crash leaves the old or the new one, never half of one."""
    data = {
        "version": JOURNAL_VERSION,
        "fingerprint": journal.fingerprint,
        "complete": journal.complete,
        "parts": [asdict(part) for part in journal.parts],
    }
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temporary.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _open_journal(plan: VideoPlan, resume: bool, notify: Callable[[Note], None]) -> Journal:
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
            shutil.rmtree(plan.work_dir)
    if found is not None:
        # A part file that went missing invalidates it and every later part.
        for index, part in enumerate(found.parts):
            if not (plan.work_dir / part.file).is_file():
                found = Journal(plan.fingerprint, found.parts[:index])
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


@dataclass(frozen=True)
class _Upscaled:
    pts: int
    key_frame: bool
    rgb: np.ndarray


class _PartSink:
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

    def __call__(self, frames: Iterator[_Upscaled]) -> int:
        time_base = self.plan.source.time_base
        stack = ExitStack()
        writer: PartWriter | None = None
        count = first = last = 0
        try:
            for frame in frames:
                if writer is not None and frame.key_frame and self._full(count, first, last, time_base):
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

    def _full(self, count: int, first: int, last: int, time_base: Fraction) -> bool:
        if count >= self.plan.part_frames:
            return True
        seconds = self.plan.part_seconds
        return seconds is not None and float((last - first) * time_base) >= seconds

    def _name(self) -> str:
        return f"part-{len(self.journal.parts):05d}{self.plan.encoding.part_suffix}"

    def _finished(self, part: PartRecord) -> None:
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


def run_video_job(
    plan: VideoPlan,
    upscale: Upscale,
    *,
    resume: bool = True,
    events: Callable[[Event], None] | None = None,
    progress_interval: float = 0.5,
    queue_size: int = 2,
) -> VideoReport:
    """Run `plan` with `upscale` (H x W x 3 float32 [0, 1] -> scaled up by plan.scale, in this thread).

    resume: go on from a journal made with the same settings (False: discard it and start again).
    events: receives Progress (at most every `progress_interval` seconds, and at each finished part)
    and Note lines. Raises UpscaleError; on any failure no output file is left behind, and the finished
    parts stay in plan.work_dir for the next run (the error's hint says so).
    """
    started = time.monotonic()
    warnings: list[str] = list(plan.warnings)

    def notify(note: Note) -> None:
        if note.warning:
            warnings.append(note.message)
        if events is not None:
            events(note)

    for line in plan.warnings:
        if events is not None:
            events(Note(line, warning=True))

    try:
        plan.destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {plan.destination.parent}: {error.strerror or error}") from None
    journal = _open_journal(plan, resume, notify)
    resumed_parts, resumed_frames = len(journal.parts), journal.frames
    sink = _PartSink(plan, journal, events or (lambda event: None), progress_interval)
    try:
        if not journal.complete:
            problems: list[str] = []
            after_pts = journal.parts[-1].last_pts if journal.parts else None
            frames = decode_frames(
                plan.source,
                start=plan.start,
                duration=plan.duration,
                after_pts=after_pts,
                deinterlace=plan.deinterlace,
                problems=problems,
            )
            run_pipeline(
                frames,
                lambda frame: _upscale_frame(frame, upscale, plan),
                sink,
                queue_size=queue_size,
                first_frame=journal.frames,
            )
            for line in problems:
                notify(Note(line, warning=True))
            if not journal.parts:
                raise InputError(_no_frames_message(plan))
            journal.complete = True
            write_journal(plan.journal_path, journal)
        for line in _mux(plan, journal):
            notify(Note(line, warning=True))
    except UpscaleError as error:
        _leave_for_resume(plan, journal, error)
        raise
    except BaseException:
        _leave_for_resume(plan, journal, None)
        raise
    shutil.rmtree(plan.work_dir, ignore_errors=True)
    return VideoReport(
        destination=plan.destination,
        frames=journal.frames,
        parts=len(journal.parts),
        resumed_parts=resumed_parts,
        resumed_frames=resumed_frames,
        width=plan.width,
        height=plan.height,
        encoding=plan.encoding.describe(),
        warnings=warnings,
        seconds=time.monotonic() - started,
    )


def _upscale_frame(frame: VideoFrame, upscale: Upscale, plan: VideoPlan) -> _Upscaled:
    picture = upscale_picture(Picture(rgb=frame.rgb), upscale, scale=plan.scale, outscale=plan.outscale)
    return _Upscaled(frame.pts, frame.key_frame, picture.rgb)


def _mux(plan: VideoPlan, journal: Journal) -> list[str]:
    destination = plan.destination
    temporary = destination.with_name(
        f".{destination.stem}.{secrets.token_hex(4)}.partial{destination.suffix}"
    )
    try:
        lines = mux_output(
            [plan.work_dir / part.file for part in journal.parts],
            plan.source,
            temporary,
            plan.encoding,
            audio=plan.audio,
            subtitles=True,
            start=plan.start,
            duration=plan.duration,
        )
        os.replace(temporary, destination)
    except OutputError as error:
        temporary.unlink(missing_ok=True)
        # The person knows the output by its name, not by the temporary file's.
        error.message = error.message.replace(temporary.name, destination.name)
        error.args = (error.message,)
        raise
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"{destination}: cannot be written: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return lines


def _leave_for_resume(plan: VideoPlan, journal: Journal, error: UpscaleError | None) -> None:
    # Finished parts are worth keeping; an empty work folder is only clutter.
    if not journal.parts:
        shutil.rmtree(plan.work_dir, ignore_errors=True)
        return
    if error is None:
        return
    if not journal.complete:
        note = (
            f"{len(journal.parts)} finished part(s) ({journal.frames} frames) are kept in {plan.work_dir}; "
            "run the same command again to resume"
        )
        error.hint = f"{error.hint}; {note}" if error.hint else note
    elif not error.hint:
        # The mux failed; its own hint (if any) knows better whether the parts are any good.
        error.hint = f"the upscaled parts are kept in {plan.work_dir}; the same command muxes them again"


def _no_frames_message(plan: VideoPlan) -> str:
    if plan.start is not None or plan.duration is not None:
        return f"{plan.source.path.name}: no frame in the chosen --start/--duration window"
    return f"{plan.source.path.name}: no frame could be decoded"
