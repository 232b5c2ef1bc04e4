"""Planning a video job: everything that can fail before a frame is decoded.

It probes the source, resolves the encoding against this FFmpeg and the output container, refuses to
overwrite the input (ever) or an existing output (without `overwrite`), and computes a fingerprint of
every setting that changes the result (the journal is trusted only under the same fingerprint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av.logging

from upscaler.errors import InputError, OutputError
from upscaler.options import BackendOptions, TileOptions
from upscaler.picture import round_half_up
from upscaler.video.encode import EncodeSettings, Encoding, bound_lookahead, frame_size, resolve_encoding
from upscaler.video.probe import VideoInfo, probe_video
from upscaler.video.resume.journal import JOURNAL_NAME, JOURNAL_VERSION
from upscaler.video.resume.lock import work_dir_for

# A part of about ten seconds at 25 fps: small enough that a crash loses little, large enough that the
# encoder's look-ahead and rate control barely notice the cuts.
DEFAULT_PART_FRAMES = 250


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
    stabilize: bool
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


# ------------------------------------------------------------------------------------------ planning


def run_key(digest: str, backend: str, options: BackendOptions, tiles: TileOptions) -> dict[str, Any]:
    """What about the model and its running changes the pixels (weights, backend, device, precision,
    tiling), for the plan's fingerprint: a journal made otherwise is not reused."""
    return {
        "digest": digest,
        "backend": backend,
        "device": options.device,
        "precision": options.precision.value,
        "tile_size": tiles.tile_size,
        "tile_overlap": tiles.overlap,
        "memory_budget": tiles.memory_budget if tiles.tile_size is None else None,
    }


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
    stabilize: bool = False,
    overwrite: bool = False,
    part_frames: int = DEFAULT_PART_FRAMES,
    part_seconds: float | None = None,
    info: VideoInfo | None = None,
) -> VideoPlan:
    """Check everything that can be checked before any work, and decide the output size and work folder.

    model_key: what about the model and how it runs changes the pixels (weights digest, backend,
    precision, tiling); it goes into the fingerprint as it is, so it must be JSON-serialisable.
    info: `probe_video(source)` where the caller has it already (it is not read twice).
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

    info = info if info is not None else probe_video(source)
    _refuse_to_overwrite(source, destination, overwrite)
    encoding = _resolve_encoding(destination, info, settings or EncodeSettings())
    if info.duration is not None and start is not None and start >= info.duration:
        raise InputError(
            f"--start {start:g}: {source.name} is only {info.duration:.3f} s long",
            hint="choose a --start inside the video",
        )

    final = outscale if outscale is not None else scale
    width, height = round_half_up(info.width * final), round_half_up(info.height * final)

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
        stabilize=stabilize,
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
        stabilize=stabilize,
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
    stabilize: bool,
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
        "stabilize": stabilize,
        "parts": [part_frames, part_seconds],
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
