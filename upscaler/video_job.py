"""The `upscale video` job: plan it, upscale every frame into parts, mux the parts into the output.

    plan = plan_video_job(Path("in.mp4"), Path("out.mp4"), scale=4, model_key={"digest": "..."})
    report = run_video_job(plan, upscaler, events=print)

Planning does everything that can fail before a frame is decoded: it probes the source, resolves the
encoding against this FFmpeg and the output container, refuses to overwrite the input (ever) or an
existing output (without `overwrite`), and computes a fingerprint of every setting that changes the
result.

Running decodes the source in display order, upscales each frame in the calling thread (the model's
thread; an upscaler with `upscale_stream` fills its batches with tiles of consecutive frames) and encodes
it into *parts*: small video-only files in a work folder beside the output. A part
is closed once it holds `part_frames` frames (or spans `part_seconds`) and the next decoded frame is a
keyframe, which starts the next part; so part boundaries depend only on the frames. A small JSON journal
in the work folder records each finished part (file, frame count, first and last pts) under the
fingerprint. Running the same plan again skips the finished parts: decoding resumes after the last
finished pts and produces the very parts a clean run would have. A journal written for other settings
is discarded with a note. When every part is done, the parts' video and the source's audio, subtitles,
metadata, chapters and rotation are muxed into a temporary file beside the output, which is renamed
onto it; then the work folder is removed. If anything fails, no output file is left behind, and the
finished parts stay for the next run.

One process at a time works on an output: the work folder's lock file is held for the job's whole life
(`hold_output`), so a second run for the same output stops at once with an OutputError naming the pid
that holds it, and changes nothing. The operating system lets go of the lock when the process ends, however
it ends.

The library never prints: progress and notes reach the caller through the `events` callback (called
from the encoding thread for progress, and from the calling thread for notes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import av.logging
import numpy as np

from upscaler.encoding import (
    EncodeSettings,
    Encoding,
    PartWriter,
    bound_lookahead,
    frame_size,
    level_dtype,
    quantize,
    resolve_encoding,
    row_quantizer,
)
from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.files import free_bytes, is_disk_full, megabytes, write_bytes_atomically
from upscaler.muxing import mux_output
from upscaler.picture import Picture, upscale_picture
from upscaler.pipeline import InferStream, run_pipeline
from upscaler.video import VideoFrame, VideoInfo, decode_frames, probe_video

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to a file created exclusively (see _hold)
    fcntl = None

Upscale = Callable[[np.ndarray], np.ndarray]
K = TypeVar("K")


@runtime_checkable
class UpscaleStream(Protocol):
    """An upscaler that takes frames as a stream, to batch tiles of consecutive frames together
    (`upscaler.upscaling.Upscaler`): (key, H x W x 3 float32) pairs in, (key, upscaled) pairs out, one
    per frame and in order. Each upscaled frame is a new array (or a view of one, in any memory layout)
    that the job may overwrite; with `finish` (see upscaler.tiling.Finish), what `finish` made of the
    frame's rows."""

    def upscale_stream(
        self,
        frames: Iterable[tuple[K, np.ndarray]],
        finish: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[tuple[K, np.ndarray]]: ...


# 2: parts carry their size and sha256, checked on resume (1 had neither: such a journal is discarded).
JOURNAL_VERSION = 2
JOURNAL_NAME = "journal.json"
# In the work folder: held (flock) by the one process that writes the output; its pid is written inside.
LOCK_NAME = "lock"
# A part of about ten seconds at 25 fps: small enough that a crash loses little, large enough that the
# encoder's look-ahead and rate control barely notice the cuts.
DEFAULT_PART_FRAMES = 250

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


# ------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PartRecord:
    """A finished part: its file name in the work folder, its frame count, its first and last pts, and
    the size and sha256 it had when it was flushed to disk (checked before a resume trusts it)."""

    file: str
    frames: int
    first_pts: int
    last_pts: int
    size: int = 0
    sha256: str = ""


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
    encoding = _resolve_encoding(destination, info, settings or EncodeSettings())
    if info.duration is not None and start is not None and start >= info.duration:
        raise InputError(
            f"--start {start:g}: {source.name} is only {info.duration:.3f} s long",
            hint="choose a --start inside the video",
        )

    final = outscale if outscale is not None else scale
    width, height = _round_half_up(info.width * final), _round_half_up(info.height * final)

    warnings: list[str] = []
    coded = frame_size(encoding, width, height)
    encoding, lookahead_note = bound_lookahead(encoding, *coded)
    if lookahead_note:
        warnings.append(lookahead_note)
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


def _resolve_encoding(destination: Path, source: VideoInfo, settings: EncodeSettings) -> Encoding:
    """resolve_encoding, with what encoder libraries print during its trial open kept off the terminal.

    x264 and others write their complaints to stderr themselves (`x264 [error]: invalid tune 'bogus'`)
    and FFmpeg logs the rest, while PyAV's error says only 'Invalid argument'. Their reason goes into our
    one-line error instead, and an --encoder-option the encoder opens without is named as the culprit.
    """
    with _library_messages() as heard:
        try:
            return resolve_encoding(destination, source, settings)
        except OutputError as error:
            failure = error
    head, opened, _ = failure.message.partition(" cannot be opened: ")
    if not opened:
        raise failure
    reason = heard.reason()
    for option in settings.options:
        rest = tuple(other for other in settings.options if other != option)
        try:
            with _library_messages():
                codec = resolve_encoding(
                    destination, source, dataclasses.replace(settings, options=rest)
                ).codec
        except OutputError:
            continue
        key, value = option
        raise OutputError(
            f"--encoder-option {key}={value}: {codec} refused it{': ' + reason if reason else ''}"
        ) from None
    if reason:
        raise OutputError(f"{head} cannot be opened: {reason}", hint=failure.hint) from None
    raise failure


# `x264 [error]: ...`, `Svt[error]: ...`: a library's own prefix before an error line.
_LIBRARY_ERROR = re.compile(r"^\s*[\w.-]*\s*\[(?:error|fatal|panic)\]\s*:?\s*(.*)$", re.IGNORECASE)


@dataclass
class _Heard:
    """Error lines encoder libraries emitted: their own (on stderr) and FFmpeg's log."""

    own: list[str] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)

    def reason(self) -> str:
        """One short reason, '' when they said nothing. A library's own words are the most precise
        (FFmpeg's wrapper adds only 'Error setting preset/tune'); else FFmpeg's."""
        lines = self.own or self.logged
        return "; ".join(line.rstrip(".") for line in list(dict.fromkeys(lines))[:2])


@contextlib.contextmanager
def _library_messages() -> Iterator[_Heard]:
    """Collect the error lines encoder libraries emit while the block runs, instead of showing them: what
    libraries write to stderr themselves and what FFmpeg logs (through PyAV's log callback). Filled when
    the block ends. Where FFmpeg's log was turned on (av.logging.set_level, as `--debug` does), nothing is
    held back and nothing collected."""
    heard = _Heard()
    if av.logging.get_level() is not None:
        yield heard
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    skip_repeated = av.logging.get_skip_repeated()
    with tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:
            saved = None  # no stderr at all: nothing to keep clean
        if saved is not None:
            os.dup2(sink.fileno(), 2)
        # Every line, repeats included: PyAV otherwise holds a repeat back and emits it with the next one.
        av.logging.set_skip_repeated(False)
        av.logging.set_level(av.logging.ERROR)
        try:
            with av.logging.Capture() as logs:
                yield heard
        finally:
            av.logging.set_level(None)
            av.logging.set_skip_repeated(skip_repeated)
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                matched = _LIBRARY_ERROR.match(line)
                if matched and matched.group(1).strip():
                    heard.own.append(matched.group(1).strip())
            heard.logged.extend(message.strip() for level, _, message in logs if level <= av.logging.ERROR)


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


# ------------------------------------------------------------------------------------------- locking


# Work folders this process holds (absolute path -> how many nested holds), so the CLI can hold the output
# before it loads the model and run_video_job's own hold simply nests inside.
_held: dict[str, int] = {}


@contextlib.contextmanager
def hold_output(destination: Path) -> Iterator[None]:
    """Hold `destination`'s work folder for this process while the block runs: OutputError at once when
    another process holds it. The folder is created if needed; on leaving, the lock file is removed, and
    the folder too when nothing else is left in it. Nested holds in one process are fine."""
    work_dir = work_dir_for(Path(destination))
    key = os.path.abspath(work_dir)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    release = _hold(work_dir, Path(destination))
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        release()


def _hold(work_dir: Path, destination: Path) -> Callable[[], None]:
    """Take the lock of `work_dir`; return what lets go of it."""
    path = work_dir / LOCK_NAME
    while True:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                return _hold_exclusive(path, destination)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the holder before us removed the folder just now
        except OSError as error:
            raise OutputError(f"cannot create {work_dir}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            pid = _read_pid(descriptor)
            os.close(descriptor)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(_busy(destination, pid)) from None
            raise OutputError(f"cannot lock {path}: {error.strerror or error}") from None
        # The holder before us may have removed the file after we opened it: then we hold a file nobody
        # else will find, so we take the one at the path instead.
        try:
            current = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())

    def release() -> None:
        _remove_lock(work_dir)
        os.close(descriptor)  # lets go of the flock

    return release


def _hold_exclusive(path: Path, destination: Path) -> Callable[[], None]:
    """Where there is no flock: the lock file is created exclusively with our pid inside; one whose
    process is gone (killed, crashed) is stale and taken over."""
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = _read_pid_file(path)
            if pid is None and _age(path) < 10:
                raise OutputError(_busy(destination, None)) from None  # its holder is writing its pid
            if pid is not None and _alive(pid):
                raise OutputError(_busy(destination, pid)) from None
            # Stale: moved aside first, so that of two runs taking it over only one removes it.
            aside = path.with_name(f"{path.name}.{secrets.token_hex(4)}.stale")
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, aside)
                aside.unlink()
            continue
        try:
            os.write(descriptor, f"{os.getpid()}\n".encode())
        finally:
            os.close(descriptor)

        def release() -> None:
            _remove_lock(path.parent)

        return release
    raise OutputError(_busy(destination, _read_pid_file(path)))


def _busy(destination: Path, pid: int | None) -> str:
    holder = f" (pid {pid})" if pid is not None else ""
    return f"{destination} is being written by another upscale video{holder}"


def _read_pid(descriptor: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(descriptor, 32, 0).decode().strip())
    return None


def _read_pid_file(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text(encoding="ascii").strip())
    return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return math.inf


def _alive(pid: int) -> bool:
    """Whether process `pid` is running (where in doubt, yes)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, and belongs to someone else
    return True


def _clear_work_dir(work_dir: Path) -> None:
    """Remove everything in `work_dir` but its lock."""
    with contextlib.suppress(FileNotFoundError):
        for entry in work_dir.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


def _remove_lock(work_dir: Path) -> None:
    # Removed while still held: a run that opened this file meanwhile finds it gone and takes a new one.
    with contextlib.suppress(OSError):
        (work_dir / LOCK_NAME).unlink()
    with contextlib.suppress(OSError):
        work_dir.rmdir()  # only when nothing else is left in it


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
                size=int(part["size"]),
                sha256=str(part["sha256"]),
            )
            for part in data["parts"]
        ]
        return Journal(fingerprint=str(data["fingerprint"]), parts=parts, complete=bool(data["complete"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_journal(path: Path, journal: Journal) -> None:
    """Write `journal` so that a crash leaves the old or the new one, never half of one, and the new one
    is on the disk (not only in the OS's cache) when this returns."""
    data = {
        "version": JOURNAL_VERSION,
        "fingerprint": journal.fingerprint,
        "complete": journal.complete,
        "parts": [asdict(part) for part in journal.parts],
    }
    write_bytes_atomically(path, (json.dumps(data, indent=1) + "\n").encode(), durable=True)


def seal_part(path: Path) -> tuple[int, str]:
    """Flush a finished part file to the disk; its size and sha256, which the journal records."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputError(f"cannot finish {path}: {error.strerror or error}") from None
    return size, digest.hexdigest()


def part_problem(path: Path, part: PartRecord) -> str | None:
    """Why the part file at `path` is not what the journal recorded (missing, cut, changed), or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return "is missing"
    if size != part.size:
        return f"holds {size} bytes where {part.size} were written"
    if seal_part(path)[1] != part.sha256:
        return "has changed since it was written (its sha256 differs)"
    return None


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
            _clear_work_dir(plan.work_dir)
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
                found = Journal(plan.fingerprint, found.parts[:index])
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


@dataclass(frozen=True)
class _Upscaled:
    pts: int
    key_frame: bool
    rgb: np.ndarray  # H x W x 3 levels for the encoder (see `quantize`)


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
                    _infer_stage(upscale, plan),
                    sink,
                    queue_size=queue_size or _queue_sizes(plan),
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
            if is_disk_full(error):
                error = _disk_full(plan, journal)
            _leave_for_resume(plan, journal, error)
            raise error from None
        except BaseException:
            _leave_for_resume(plan, journal, None)
            raise
        _clear_work_dir(plan.work_dir)
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


def _infer_stage(
    upscale: Upscale | UpscaleStream, plan: VideoPlan
) -> Callable[[VideoFrame], _Upscaled] | InferStream[VideoFrame, _Upscaled]:
    if isinstance(upscale, UpscaleStream):
        return InferStream(lambda frames: _upscale_frames(frames, upscale, plan))
    return lambda frame: _upscale_frame(frame, upscale, plan)


def _queue_sizes(plan: VideoPlan) -> tuple[int, int]:
    decoded = plan.source.width * plan.source.height * 3 * (2 if plan.source.bit_depth > 8 else 1)
    upscaled = plan.width * plan.height * 3 * np.dtype(level_dtype(plan.encoding.bit_depth)).itemsize
    return _queue_depth(DECODE_QUEUE_FRAMES, decoded), _queue_depth(ENCODE_QUEUE_FRAMES, upscaled)


def _queue_depth(frames: int, frame_bytes: int) -> int:
    """`frames`, or fewer where they would hold more than QUEUE_BYTES; never below _SMALLEST_QUEUE."""
    return max(_SMALLEST_QUEUE, min(frames, QUEUE_BYTES // max(1, frame_bytes)))


def _upscale_frame(frame: VideoFrame, upscale: Upscale, plan: VideoPlan, owned: bool = False) -> _Upscaled:
    """`owned`: what `upscale` returns is a new array nobody else holds, so it may be quantized in place
    (a caller's own function may return an array it keeps)."""
    picture = upscale_picture(Picture(rgb=frame.rgb), upscale, scale=plan.scale, outscale=plan.outscale)
    # Quantized here, so the encode queue holds a quarter (8-bit) or half (deeper) of the float frame.
    levels = quantize(picture.rgb, plan.encoding.bit_depth, in_place=owned)
    return _Upscaled(frame.pts, frame.key_frame, levels)


def _upscale_frames(
    frames: Iterator[VideoFrame], upscale: UpscaleStream, plan: VideoPlan
) -> Iterator[_Upscaled]:
    """The infer stage with batches across frames: the same frames out as `_upscale_frame` gives."""
    pairs = ((frame, frame.rgb) for frame in frames)
    if plan.outscale in (None, plan.scale):
        # Quantized as the rows of each frame are stitched: at 720p x4 no float32 frame (177 MB) is
        # held whole. The tiler has checked every batch's size against the model's scale.
        finish = row_quantizer(plan.encoding.bit_depth)
        for frame, levels in upscale.upscale_stream(pairs, finish=finish):
            yield _Upscaled(frame.pts, frame.key_frame, levels)
        return
    for frame, rgb in upscale.upscale_stream(pairs):
        # `rgb` is the Upscaler's new output frame, which may be changed in place; upscale_picture
        # checks its size and resizes to --outscale exactly as it does for a frame upscaled alone (a
        # video frame has no alpha to upscale).
        yield _upscale_frame(frame, lambda _, done=rgb: done, plan, owned=True)


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
        _clear_work_dir(plan.work_dir)
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
