"""The `upscale images` job: find images, plan where each output goes, and upscale them all.

    found = find_images([Path("photos")], glob="*.jpg")
    plan = plan_outputs(found, suffix=scale_suffix(4), output_dir=Path("big"))
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

import fnmatch
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.files import remove_stale_temporaries
from upscaler.images import (
    SUPPORTED_SUFFIXES,
    EncodeOptions,
    Picture,
    output_format,
    read_image,
    read_mark,
    write_image,
)
from upscaler.pipeline import StageError, StageNames, run_pipeline

Upscale = Callable[[np.ndarray], np.ndarray]

_QUEUE_SIZE = 2
_STAGE_NAMES = StageNames(decode="read", infer="upscale", encode="write")


@dataclass(frozen=True)
class ImageTask:
    """One input file and the output file it becomes; `mark` goes into the output's metadata."""

    source: Path
    target: Path
    mark: str = ""


@dataclass
class OutputPlan:
    """The tasks to run, and the inputs left out before any pixel is read.

    skipped: inputs whose output exists (with skip_existing); done: inputs whose output an earlier run
    of the same job finished (its mark matches); refused: (input, why) for inputs whose output must not
    be written (it exists, it is an input, another input already maps to it).
    """

    tasks: list[ImageTask] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    done: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # the outputs of `skipped` and `done`
    warnings: list[str] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class JobReport:
    """What a job did: outputs written, inputs skipped, and (input, message) for inputs that failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    done: list[Path] = field(default_factory=list)


def job_key(model_digest: str, **settings: object) -> str:
    """A short key for everything that decides an output's pixels and format: the model's weights and
    the settings given (precision, outscale, format, quality). Outputs carry it with their input's
    identity (see `output_mark`), so a rerun of the same job knows its finished outputs."""
    text = json.dumps({"model": model_digest, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def output_mark(key: str, source: Path) -> str:
    """The mark of `source`'s output in job `key`: the key and the input's size and modification time."""
    try:
        stat = source.stat()
        identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        identity = "?"
    return f"{key}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------- finding


def find_images(
    inputs: Sequence[Path],
    glob: str | None = None,
    recursive: bool = True,
    exclude: Sequence[Path] = (),
) -> list[tuple[Path, Path]]:
    """(file, the folder it was found under) for every image named by `inputs`, in a stable order.

    A file named directly is taken whatever its suffix, with its own folder as the second element. A
    folder contributes the files with a supported suffix (case-insensitive) below it (only directly in
    it when not `recursive`), narrowed by `glob`: a pattern without "/" matches file names, one with
    "/" matches the path relative to the folder; matching ignores case. Hidden files and folders
    (".name") are passed over, and so is everything under a folder in `exclude` (the output folder,
    so a second run does not upscale the first run's outputs). A file found twice is listed once.

    Raises InputError for an input that does not exist or when nothing is found.
    """
    excluded = [_resolved(folder) for folder in exclude]
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for given in inputs:
        given = Path(given)
        if given.is_file():
            candidates = [(given, given.parent)]
        elif given.is_dir():
            candidates = [(file, given) for file in _walk(given, glob, recursive, excluded)]
        elif given.exists():
            raise InputError(f"{given}: neither a file nor a folder")
        else:
            raise InputError(f"{given}: no such file or folder")
        for file, root in candidates:
            if given.is_dir() and read_mark(file) is not None:
                continue  # an output of this tool (an earlier run's, in an input folder): never an input
            key = _resolved(file)
            if key not in seen:
                seen.add(key)
                found.append((file, root))
    if not found:
        names = ", ".join(str(p) for p in inputs)
        known = ", ".join(SUPPORTED_SUFFIXES)
        narrowed = f" matching {glob!r}" if glob else ""
        raise InputError(f"no images{narrowed} found in {names}", hint=f"supported suffixes: {known}")
    return found


def _walk(root: Path, glob: str | None, recursive: bool, excluded: list[Path]) -> list[Path]:
    # An excluded folder that holds the root itself (the output folder given as an input) excludes
    # nothing: the user asked for it.
    top = _resolved(root)
    excluded = [folder for folder in excluded if not _is_under(top, [folder])]
    pattern = glob.lower() if glob else None
    files: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        here = Path(folder)
        if recursive:
            # Pruning in place stops os.walk from descending into hidden or excluded folders.
            dirnames[:] = sorted(
                name
                for name in dirnames
                if not name.startswith(".") and not _is_under(_resolved(here / name), excluded)
            )
        else:
            dirnames[:] = []
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            file = here / name
            if pattern is not None:
                subject = file.relative_to(root).as_posix() if "/" in pattern else name
                if not fnmatch.fnmatchcase(subject.lower(), pattern):
                    continue
            if file.is_file():
                files.append(file)
    return files


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _is_under(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


# ------------------------------------------------------------------------------------------ planning


def scale_suffix(scale: float) -> str:
    """The default output suffix for a scale: "_x4", "_x2.5"."""
    return f"_x{scale:g}"


def plan_outputs(
    found: Sequence[tuple[Path, Path]],
    *,
    suffix: str,
    output_dir: Path | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    job: str = "",
) -> OutputPlan:
    """Decide each input's output file: `<stem><suffix>.<ext>`.

    found: pairs from `find_images`. output_dir: None writes beside each input; a folder keeps each file's
    sub-folder relative to the folder it was found under. fmt: an output format ("png", "jpg", ...), or
    None for the input's own. An input is refused (never silently overwritten) when its output is an
    input, when an earlier input already maps to the same output, or when the output exists and
    `overwrite` is off; with `skip_existing` an existing output is skipped instead (it wins over
    `overwrite`). job: the job's `job_key`; an existing output that carries this job's mark for its
    input is done (a rerun finishes the job without --overwrite). Raises OutputError for an unknown `fmt`.
    """
    extension = None
    if fmt is not None:
        output_format(fmt)  # raises, listing the known formats
        extension = "." + fmt.lower().lstrip(".")

    input_paths = {_resolved(file) for file, _ in found}
    input_files = {_identity(file) for file, _ in found} - {None}
    claimed: dict[Path, Path] = {}
    plan = OutputPlan()
    for file, root in found:
        file, root = Path(file), Path(root)
        ext = extension or file.suffix
        if extension is None and file.suffix.lower() not in SUPPORTED_SUFFIXES:
            known = ", ".join(s.lstrip(".") for s in SUPPORTED_SUFFIXES)
            plan.refused.append(
                (
                    file,
                    f"{file}: cannot write {file.suffix or 'files without a suffix'}; "
                    f"choose an output format ({known})",
                )
            )
            continue
        name = f"{file.stem}{suffix}{ext}"
        folder = file.parent if output_dir is None else Path(output_dir) / file.parent.relative_to(root)
        target = folder / name
        key = _resolved(target)

        if key in input_paths or (target.exists() and _identity(target) in input_files):
            plan.refused.append((file, f"{file}: its output {target} is an input; not overwritten"))
            continue
        if key in claimed:
            plan.refused.append(
                (file, f"{file}: its output {target} is also the output of {claimed[key]}; not written")
            )
            continue
        claimed[key] = file
        mark = output_mark(job, file) if job else ""
        if target.exists():
            found_mark = read_mark(target)
            if mark and found_mark == mark:
                plan.done.append(file)
                plan.kept.append(target)
                continue
            if skip_existing:
                plan.skipped.append(file)
                plan.kept.append(target)
                continue
            if not overwrite:
                made = (
                    " (made by an earlier run with other settings, or from another version of the input)"
                    if found_mark is not None
                    else ""
                )
                plan.refused.append(
                    (
                        file,
                        f"{file}: output {target} already exists{made} "
                        "(--overwrite replaces it, --skip-existing skips it)",
                    )
                )
                continue
        plan.tasks.append(ImageTask(source=file, target=target, mark=mark))
        frames = animation_frames(file)
        if frames > 1:
            plan.warnings.append(
                f"{file} is animated ({frames} frames): only its first frame is upscaled "
                "(upscale video reads animations and upscales every frame)"
            )
    return plan


def animation_frames(path: Path) -> int:
    """How many frames an animated GIF, WebP or PNG holds (1 for a still image or another format)."""
    if path.suffix.lower() not in (".gif", ".webp", ".png", ".apng"):
        return 1
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except Exception:  # not readable by Pillow: the reader reports it, this only counts frames
        return 1


def _identity(path: Path) -> tuple[int, int] | None:
    # Device and inode catch the same file under another name: a hard link, a symlink, or a name
    # differing only in case on a case-insensitive file system.
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


# --------------------------------------------------------------------------------------- upscaling


def upscale_picture(
    picture: Picture, upscale: Upscale, *, scale: float, outscale: float | None = None
) -> Picture:
    """Run `upscale` on a picture's colour (and alpha), and resize to `outscale` when it differs.

    A non-opaque alpha goes through the same `upscale` as a gray image (its three outputs averaged);
    a fully opaque one is recreated at the output size without running the model. The final size is
    round(W * outscale) x round(H * outscale), resized from the model's output with INTER_AREA when
    shrinking and INTER_LANCZOS4 when growing. Depth and grayscale are carried over unchanged.
    """
    outscale = scale if outscale is None else outscale
    final = (_round_half_up(picture.height * outscale), _round_half_up(picture.width * outscale))

    rgb = _run_model(upscale, picture.rgb, scale)
    alpha = None
    if picture.alpha is not None and not np.all(picture.alpha == 1.0):
        alpha = _run_model(upscale, np.repeat(picture.alpha[:, :, None], 3, axis=2), scale)
        alpha = alpha.mean(axis=2, dtype=np.float32)

    rgb = _resize(rgb, final)
    if alpha is not None:
        alpha = _resize(alpha, final)
    elif picture.alpha is not None:
        alpha = np.ones(final, dtype=np.float32)
    return Picture(rgb=rgb, alpha=alpha, depth=picture.depth, grayscale=picture.grayscale)


def _run_model(upscale: Upscale, pixels: np.ndarray, scale: float) -> np.ndarray:
    out = upscale(pixels)
    height, width = pixels.shape[:2]
    expected = (_round_half_up(height * scale), _round_half_up(width * scale), 3)
    if out.shape != expected:
        # The caller's callable broke its contract: a bug, so not a per-file UpscaleError.
        raise ValueError(f"upscale returned {out.shape} for a {height}x{width} input; expected {expected}")
    return np.ascontiguousarray(out, dtype=np.float32)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if pixels.shape[:2] == size:
        return pixels
    shrinking = height * width < pixels.shape[0] * pixels.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(pixels, (width, height), interpolation=interpolation)
    # Lanczos overshoots at edges; keep values in [0, 1] for the next stage.
    return np.clip(resized, 0.0, 1.0, out=resized)


def _round_half_up(value: float) -> int:
    return max(1, math.floor(value + 0.5))


# ------------------------------------------------------------------------------------------- stages
# The three stages `run_pipeline` joins, each testable without threads. A file that cannot be read,
# upscaled or written travels on as a `_Failed` value and the job goes on; only a bug fails a stage.


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
    if outscale is not None and not outscale > 0:
        raise InputError(f"outscale: must be greater than 0 (got {outscale})")
    options = encode or EncodeOptions()
    report = JobReport(skipped=list(plan.skipped), failed=list(plan.refused), done=list(plan.done))
    # What a killed earlier run left: temporaries beside these outputs, older than this run
    started = time.time()
    for target in [task.target for task in plan.tasks] + plan.kept:
        remove_stale_temporaries(target, started)
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
