"""Writing a file so that it appears whole or not at all.

Every output of the tool (images, weights, checkpoints, ONNX graphs, engines, journals, videos) is written
to a hidden temporary file beside its destination and renamed over it only when complete, so a crash,
a full disk or Ctrl-C never leaves a half-written file under the user's name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from upscaler.errors import OutputError


def create_temporary(path: Path) -> Path:
    """A new, empty, hidden file beside `path` (same folder, so the final rename is atomic).

    Created with mode 0o666 rather than by tempfile, whose 0o600 would make every output private to its
    owner once renamed: this way the user's umask decides, as for any new file.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(candidate, flags, 0o666))
            return candidate
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    raise OutputError(f"cannot write {path}: no free temporary name in {path.parent}")


def remove_stale_temporaries(path: Path, before: float) -> list[Path]:
    """Remove the temporaries `create_temporary` made for `path` that were last written before `before`
    (a time.time()): what a run killed while writing `path` left. A live writer's newer file is kept."""
    path = Path(path)
    prefix, removed = f".{path.name}.", []
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            name = entry.name
            token = name[len(prefix) : -len(".part")]
            if not (name.startswith(prefix) and name.endswith(".part") and len(token) == 8):
                continue
            if not all(c in "0123456789abcdef" for c in token):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < before:
                    entry.unlink()
                    removed.append(entry)
    return removed


@contextmanager
def write_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` when the block ends, and is removed if it fails.

    OSErrors (a full disk, a refused rename) become OutputError naming `path`.
    """
    path = Path(path)
    temporary = create_temporary(path)
    try:
        # Writers that replace the file themselves (safetensors, torch.save) leave it 0o600; give it back
        # the mode it was created with, which the umask decided.
        mode = temporary.stat().st_mode & 0o777
        yield temporary
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: Path, data: bytes, durable: bool = False) -> Path:
    """Write `data` to `path`, whole or not at all, making its folder first if needed (caches).

    durable: the file and the rename are on the disk when this returns (fsync of the file, then of its
    folder), for records that later runs trust, such as a video job's journal.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    with write_atomically(path) as temporary, temporary.open("wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    if durable:
        _sync_folder(path.parent)
    return Path(path)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a crash (where the platform allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        # some file systems refuse fsync on a folder; the rename is then as safe as they make it
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, says the disk (or the user's quota) is full."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or getattr(error, "error", None) or error.__context__
        seen += 1
    return False


def free_bytes(path: Path) -> int | None:
    """Bytes free for the user on the file system that holds `path` (or its nearest existing folder)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def megabytes(count: float) -> str:
    """`1.2 GB`, `340 MB`: a size for people."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"
