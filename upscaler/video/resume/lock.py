"""One process at a time per output: the work folder beside the output and its lock file.

The lock file is held for the job's whole life (`hold_output`), so a second run for the same output
stops at once with an OutputError naming the pid that holds it, and changes nothing. The operating
system lets go of the lock when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from upscaler.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to a file created exclusively (see _hold)
    fcntl = None
# In the work folder: held (flock) by the one process that writes the output; its pid is written inside.
LOCK_NAME = "lock"


def work_dir_for(destination: Path) -> Path:
    """The folder beside `destination` that holds its parts and journal while the job runs."""
    return destination.parent / f".{destination.name}.upscale-parts"


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


def clear_work_dir(work_dir: Path) -> None:
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
