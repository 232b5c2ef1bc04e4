"""Which images a folder job reads and where each output goes: finding, planning, marks.

    found = find_images([Path("photos")], glob="*.jpg")
    plan = plan_outputs(found, suffix=scale_suffix(4), output_dir=Path("big"), job=job_key(digest))

An output of `upscale` carries a mark (`upscaler.image.formats.add_mark`) of its job's settings and its
input, so that the same command again finishes an interrupted job and never reads its own outputs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from upscaler.errors import InputError, OutputError
from upscaler.image.formats import SUPPORTED_SUFFIXES, output_format, read_mark


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
    output_file: Path | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    job: str = "",
) -> OutputPlan:
    """Decide each input's output file: `<stem><suffix>.<ext>`.

    found: pairs from `find_images`. output_dir: None writes beside each input; a folder keeps each file's
    sub-folder relative to the folder it was found under. fmt: an output format ("png", "jpg", ...), or
    None for the input's own. output_file: the one output's path, for a single input (its suffix is the
    format). An input is refused (never silently overwritten) when its output is an
    input, when an earlier input already maps to the same output, or when the output exists and
    `overwrite` is off; with `skip_existing` an existing output is skipped instead (it wins over
    `overwrite`). job: the job's `job_key`; an existing output that carries this job's mark for its
    input is done (a rerun finishes the job without --overwrite). Raises OutputError for an unknown `fmt`.
    """
    extension = None
    if fmt is not None:
        output_format(fmt)  # raises, listing the known formats
        extension = "." + fmt.lower().lstrip(".")
    if output_file is not None:
        if len(found) != 1:
            raise OutputError(f"{output_file}: one output file for {len(found)} inputs")
        output_format(Path(output_file).suffix)  # raises, listing the known formats

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
        target = Path(output_file) if output_file is not None else folder / name
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


# ------------------------------------------------------------------------------------------- stages
# The three stages `run_pipeline` joins, each testable without threads. A file that cannot be read,
# upscaled or written travels on as a `_Failed` value and the job goes on; only a bug fails a stage.
