"""Running a planned video job: upscale every frame into parts, then mux the parts into the output.

    plan = plan_video_job(Path("in.mp4"), Path("out.mp4"), scale=4, model_key={"digest": "..."})
    report = run_video_job(plan, upscaler, events=print)

Running decodes the source in display order, upscales each frame in the calling thread (the model's
thread; an upscaler with `upscale_stream` fills its batches with tiles of consecutive frames) and encodes
it into *parts*: small video-only files in a work folder beside the output. A part is closed once it
holds `part_frames` frames (or spans `part_seconds`) and the next decoded frame is a keyframe, which
starts the next part; so part boundaries depend only on the frames. Each finished part is recorded in
the journal (`upscaler.video.resume.journal`). Running the same plan again skips the finished parts: decoding
resumes after the last finished pts and produces the very parts a clean run would have. When every part
is done, the parts' video and the source's audio, subtitles, metadata, chapters and rotation are muxed
into a temporary file beside the output, which is renamed onto it; then the work folder is removed. If
anything fails, no output file is left behind, and the finished parts stay for the next run.

The library never prints: progress and notes reach the caller through the `events` callback (called
from the encoding thread for progress, and from the calling thread for notes).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.picture import Picture, upscale_picture
from upscaler.pipeline import InferStream, run_pipeline
from upscaler.system.files import free_bytes, is_disk_full, megabytes
from upscaler.video.decode import VideoFrame, decode_frames
from upscaler.video.events import Event, Note, VideoReport
from upscaler.video.mux.output import mux_output
from upscaler.video.plan import VideoPlan
from upscaler.video.resume.journal import Journal, write_journal
from upscaler.video.resume.lock import clear_work_dir, hold_output
from upscaler.video.resume.parts import PartSink, Upscaled, open_journal
from upscaler.video.stabilize import Stabilizer
from upscaler.video.writer import level_dtype, quantize, row_quantizer

Upscale = Callable[[np.ndarray], np.ndarray]
K = TypeVar("K")


@runtime_checkable
class UpscaleStream(Protocol):
    """An upscaler that takes frames as a stream, to batch tiles of consecutive frames together
    (`upscaler.upscaling.Upscaler`): (key, H x W x 3 float32) pairs in, (key, upscaled) pairs out, one
    per frame and in order. Each upscaled frame is a new array (or a view of one, in any memory layout)
    that the job may overwrite; with `finish` (see upscaler.tiling.runner.Finish), what `finish` made of the
    frame's rows."""

    def upscale_stream(
        self,
        frames: Iterable[tuple[K, np.ndarray]],
        finish: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[tuple[K, np.ndarray]]: ...


# How many frames wait between decoding and upscaling, and between upscaling and encoding. Decoding and
# encoding run on their own threads, so a queue only has to absorb their jitter (a slow keyframe, a part
# being closed and the next opened) and, before upscaling, the burst of frames a batch across frames
# takes at once; deeper queues only cost memory. Both queues hold levels (uint8, or uint16 above 8
# bits), not float32: the decode queue the source's as decoded, turned into floats on the upscaling
# thread; the encode queue the encoder's, quantized there, where one pass over the frame is cheap next to
# the model and saves 3/4 of the bytes of the largest frames in the job (720p x4 is 44 MB a frame in
# uint8, 177 MB in float32). Each queue is also capped in bytes (`_queue_depth`): a 4K frame as decoded
# is 25 MB (100 MB in float32), and where frames are
# that large each one takes long enough to upscale that two waiting absorb any jitter (at 720p x4 on
# the CPU a frame takes seconds; the cap of 64 MiB keeps the encode queue at two 44 MB frames, not four).
# Depths not measured on a GPU: to tune, run `upscale video` there while sampling both queues' fill
# (Pipe.qsize): a decode queue often empty means decoding stalls inference (deeper, or more decoder
# threads), an encode queue often full means encoding does.
DECODE_QUEUE_FRAMES = 8
ENCODE_QUEUE_FRAMES = 4
QUEUE_BYTES = 64 * 1024**2
# Below two frames, one slow frame on either side stalls upscaling; worth it even for the largest frames.
_SMALLEST_QUEUE = 2


class PartMaker(Protocol):
    """Makes the parts of a job that `journal` does not hold yet: each one written into plan.work_dir
    under the name the order gives it (`part_name`) and appended to journal.parts (sealed, then the
    journal written) in order. Progress goes to `events`, warnings and notes to `notify`. On one
    machine that is `LocalParts`; on a cluster, `upscaler.cluster.video.ClusterParts`."""

    def __call__(
        self,
        plan: VideoPlan,
        journal: Journal,
        events: Callable[[Event], None],
        notify: Callable[[Note], None],
    ) -> None: ...


class LocalParts:
    """The parts made here, in order: decode, upscale (in the calling thread) and encode, overlapped."""

    def __init__(
        self,
        upscale: Upscale | UpscaleStream,
        progress_interval: float = 0.5,
        queue_size: tuple[int, int] | None = None,
    ) -> None:
        self.upscale = upscale
        self.progress_interval = progress_interval
        self.queue_size = queue_size

    def __call__(
        self,
        plan: VideoPlan,
        journal: Journal,
        events: Callable[[Event], None],
        notify: Callable[[Note], None],
    ) -> None:
        # Parts a cluster finished out of order are made again here, in order, under the same names.
        journal.ahead.clear()
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
            infer_stage(self.upscale, plan),
            PartSink(plan, journal, events, self.progress_interval),
            queue_size=self.queue_size or queue_sizes(plan),
            first_frame=journal.frames,
        )
        for line in problems:
            notify(Note(line, warning=True))


def run_video_job(
    plan: VideoPlan,
    upscale: Upscale | UpscaleStream,
    *,
    resume: bool = True,
    events: Callable[[Event], None] | None = None,
    progress_interval: float = 0.5,
    queue_size: tuple[int, int] | None = None,
) -> VideoReport:
    """Run `plan` with `upscale` (H x W x 3 float32 [0, 1] -> scaled up by plan.scale, in this thread):
    a function of one frame, or an `UpscaleStream`, which batches tiles of consecutive frames.

    resume: go on from a journal made with the same settings (False: discard it and start again).
    events: receives Progress (at most every `progress_interval` seconds, and at each finished part)
    and Note lines. queue_size: the (decode, encode) queue depths in frames; None picks them from the
    frame sizes (see DECODE_QUEUE_FRAMES). Raises UpscaleError; on any failure no output file is left
    behind, and the finished parts stay in plan.work_dir for the next run (the error's hint says so).
    """
    parts = LocalParts(upscale, progress_interval, queue_size)
    return run_parts_job(plan, parts, resume=resume, events=events)


def run_parts_job(
    plan: VideoPlan,
    make_parts: PartMaker,
    *,
    resume: bool = True,
    events: Callable[[Event], None] | None = None,
) -> VideoReport:
    """`run_video_job` with the parts made by `make_parts` (here, or on a cluster): the output held,
    the journal opened, the missing parts made, then everything muxed into the output."""
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
    # Held until the job ends: a second run for the same output stops here and changes nothing.
    with hold_output(plan.destination):
        _remove_mux_leftovers(plan.destination)
        journal = open_journal(plan, resume, notify)
        resumed_parts, resumed_frames = len(journal.parts), journal.frames
        try:
            if not journal.complete:
                make_parts(plan, journal, events or (lambda event: None), notify)
                if not journal.parts:
                    raise InputError(_no_frames_message(plan))
                journal.complete = True
                write_journal(plan.journal_path, journal)
            for line in _mux(plan, journal):
                notify(Note(line, warning=True))
        except UpscaleError as error:
            if is_disk_full(error):
                error = _disk_full(plan, journal)
            _leave_for_resume(plan, journal, error)
            raise error from None
        except BaseException:
            _leave_for_resume(plan, journal, None)
            raise
        clear_work_dir(plan.work_dir)
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


def infer_stage(
    upscale: Upscale | UpscaleStream, plan: VideoPlan
) -> Callable[[VideoFrame], Upscaled] | InferStream[VideoFrame, Upscaled]:
    """The infer stage of a job's pipeline (frames in, `Upscaled` out), with --stabilize applied."""
    # One infer stage sees the frames in order, as the stabilizer must (--stabilize).
    stabilizer = Stabilizer() if plan.stabilize else None
    if isinstance(upscale, UpscaleStream):
        return InferStream(
            lambda frames: (
                _stabilized(frame, upscaled, stabilizer)
                for frame, upscaled in _upscale_frames(frames, upscale, plan)
            )
        )
    return lambda frame: _stabilized(frame, _upscale_frame(frame, upscale, plan), stabilizer)


def _stabilized(frame: VideoFrame, upscaled: Upscaled, stabilizer: Stabilizer | None) -> Upscaled:
    """The frame's output held still where its input did not change (a keyframe starts afresh)."""
    if stabilizer is None:
        return upscaled
    levels = stabilizer.apply(frame.rgb, upscaled.rgb, restart=frame.key_frame)
    return Upscaled(upscaled.pts, upscaled.key_frame, levels)


def queue_sizes(plan: VideoPlan) -> tuple[int, int]:
    """The (decode, encode) queue depths in frames for `plan`'s frame sizes (see DECODE_QUEUE_FRAMES)."""
    decoded = plan.source.width * plan.source.height * 3 * (2 if plan.source.bit_depth > 8 else 1)
    upscaled = plan.width * plan.height * 3 * np.dtype(level_dtype(plan.encoding.bit_depth)).itemsize
    return _queue_depth(DECODE_QUEUE_FRAMES, decoded), _queue_depth(ENCODE_QUEUE_FRAMES, upscaled)


def _queue_depth(frames: int, frame_bytes: int) -> int:
    """`frames`, or fewer where they would hold more than QUEUE_BYTES; never below _SMALLEST_QUEUE."""
    return max(_SMALLEST_QUEUE, min(frames, QUEUE_BYTES // max(1, frame_bytes)))


def _upscale_frame(frame: VideoFrame, upscale: Upscale, plan: VideoPlan, owned: bool = False) -> Upscaled:
    """`owned`: what `upscale` returns is a new array nobody else holds, so it may be quantized in place
    (a caller's own function may return an array it keeps)."""
    picture = upscale_picture(Picture(rgb=frame.rgb), upscale, scale=plan.scale, outscale=plan.outscale)
    # Quantized here, so the encode queue holds a quarter (8-bit) or half (deeper) of the float frame.
    levels = quantize(picture.rgb, plan.encoding.bit_depth, in_place=owned)
    return Upscaled(frame.pts, frame.key_frame, levels)


def _upscale_frames(
    frames: Iterator[VideoFrame], upscale: UpscaleStream, plan: VideoPlan
) -> Iterator[tuple[VideoFrame, Upscaled]]:
    """The infer stage with batches across frames: the same frames out as `_upscale_frame` gives."""
    pairs = ((frame, frame.rgb) for frame in frames)
    if plan.outscale in (None, plan.scale):
        # Quantized as the rows of each frame are stitched: at 720p x4 no float32 frame (177 MB) is
        # held whole. The tiler has checked every batch's size against the model's scale.
        finish = row_quantizer(plan.encoding.bit_depth)
        for frame, levels in upscale.upscale_stream(pairs, finish=finish):
            yield frame, Upscaled(frame.pts, frame.key_frame, levels)
        return
    for frame, rgb in upscale.upscale_stream(pairs):
        # `rgb` is the Upscaler's new output frame, which may be changed in place; upscale_picture
        # checks its size and resizes to --outscale exactly as it does for a frame upscaled alone (a
        # video frame has no alpha to upscale).
        yield frame, _upscale_frame(frame, lambda _, done=rgb: done, plan, owned=True)


def _mux_temporary(destination: Path, token: str) -> Path:
    return destination.with_name(f".{destination.stem}.{token}.partial{destination.suffix}")


def _remove_mux_leftovers(destination: Path) -> None:
    """Remove what a run killed during its mux left beside the output (a whole film's worth, maybe).
    Called with the output held, so no other run is muxing into one of them."""
    pattern = re.compile(re.escape(_mux_temporary(destination, "TOKEN").name).replace("TOKEN", "[0-9a-f]{8}"))
    with contextlib.suppress(OSError):
        for entry in destination.parent.iterdir():
            if pattern.fullmatch(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


def _mux(plan: VideoPlan, journal: Journal) -> list[str]:
    destination = plan.destination
    temporary = _mux_temporary(destination, secrets.token_hex(4))
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
        if is_disk_full(error):
            raise _disk_full(plan, journal) from None
        raise OutputError(f"{destination}: cannot be written: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return lines


def _disk_full(plan: VideoPlan, journal: Journal) -> OutputError:
    """The one line for a full disk: where, how much is free, and about how much more the job needs
    (the parts still to make, at the finished parts' bytes per frame, and the output the mux writes)."""
    free = free_bytes(plan.work_dir)
    done_bytes = sum(part.size for part in journal.parts)
    total = plan.expected_frames
    where = f"no space left on the device that holds {plan.work_dir.parent}"
    if free is not None:
        where += f" ({megabytes(free)} free)"
    if journal.frames and total:
        per_frame = done_bytes / journal.frames
        needed = per_frame * max(0, total - journal.frames) + per_frame * total
        where += f"; the job needs about {megabytes(needed)} more (parts still to make, then the output)"
    return OutputError(where, hint="free some space, or write the output to another disk")


def _leave_for_resume(plan: VideoPlan, journal: Journal, error: UpscaleError | None) -> None:
    # Finished parts are worth keeping; an empty work folder is only clutter.
    if not journal.parts:
        clear_work_dir(plan.work_dir)
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
