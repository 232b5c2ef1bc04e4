"""Keep freed memory in the process, so eager inference does not page-fault its activations back in.

glibc's malloc serves big blocks (activations, frames) with mmap and gives them back to the kernel on
free, and trims the top of the heap once more than 128 KiB is free there. Eager PyTorch allocates and
frees every layer's activations on every batch, so each batch faults the same memory in again, page by
page: a per-frame loop of the compact model spent 11.8 s of its 42 s of CPU in the kernel (see
../shared/notes-cpu-performance.md). Measured here (compact model, channels_last, 2 busy cores, `nice`):

    batch      activation   default: sys, faults   mmap threshold 32 MiB + no trim   + M_MMAP_MAX=0
    4x96x96      9 MiB        0.27-0.62 s, 183-371k      0.01-0.03 s, 8k              0.01-0.07 s, 5-7k
    1x180x320   14 MiB        0.32-0.73 s, 237-392k      0.01 s, 7-9k                 0.00-0.01 s, 7-9k
    4x192x192   36 MiB        2.0-2.2 s, ~1.0M           0.41-0.76 s, 217-325k        0.03 s, 14-18k

glibc refuses an mmap threshold above 32 MiB (HEAP_MAX/2 on 64-bit), so blocks bigger than that
still come from mmap and go back to the kernel when freed. That is kept on purpose: switching mmap off
as well (M_MMAP_MAX = 0) took the 36 MiB case above to 0.03 s of sys time, but it kept every frame-
sized block in the heap for good, and `upscale video` of a 720p clip x4 (5120x2880 frames, 177 MiB
each in float32) then peaked at 4991 MiB of RSS instead of 2655 MiB with glibc's defaults. So: an mmap
threshold of 32 MiB (activations of ordinary tiles stay in the heap and are reused) and no trimming
of the heap top. The cost is that the heap keeps its peak until the process exits.

Called by the commands that run a model, not at import, so `upscale --help` and library users are not
affected. `UPSCALER_MALLOC=system` leaves malloc as it is; so do any MALLOC_* / GLIBC_TUNABLES malloc
settings or an LD_PRELOAD allocator the user chose. A no-op where libc is not glibc (macOS, musl,
Windows). Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 * 1024**2
# Largest value mallopt takes (an int): the heap top is never trimmed in practice.
NEVER_TRIM = 2**31 - 1

OPT_OUT_VARIABLE = "UPSCALER_MALLOC"


def glibc_version() -> str | None:
    """glibc's version ("2.36"), or None where the C library is another one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; musl has no such name
    except (ValueError, OSError, AttributeError):
        return None
    if not text or not text.startswith("glibc "):
        return None
    return text.split()[1]


def user_choice(environ: Mapping[str, str] | None = None) -> str | None:
    """Why malloc is left as it is by the user's own settings, or None."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_VARIABLE, "").strip().lower() == "system":
        return f"{OPT_OUT_VARIABLE}=system"
    for name in env:
        if name.startswith("MALLOC_") and name.endswith("_"):
            return f"{name} is set"
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc"
    preload = env.get("LD_PRELOAD", "")
    if any(name in preload for name in ("tcmalloc", "jemalloc", "mimalloc")):
        return "an allocator is preloaded"
    return None


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> str:
    """Tune glibc's malloc for inference (see the module docstring); return what was done, in words.

    Never raises: a C library that lacks mallopt or refuses a setting leaves malloc as it is.
    """
    reason = user_choice(environ)
    if reason is not None:
        return f"malloc left as it is ({reason})"
    version = glibc_version()
    if version is None:
        return "malloc left as it is (not glibc)"
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        # mallopt returns 1 on success, 0 when it refuses the value.
        done = mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    except (OSError, AttributeError, TypeError):
        return "malloc left as it is (mallopt not found)"
    if not done:
        return f"malloc only partly tuned (glibc {version} refused a mallopt setting)"
    return f"malloc keeps freed memory (glibc {version}: no trimming, mmap only above 32 MiB)"
