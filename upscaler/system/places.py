"""Where `upscale` keeps files outside its outputs: the cache (exported graphs, engines) and the
installed feature-network weights. One rule for both: the tool's own variable, else the XDG folder."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "UPSCALER_CACHE_DIR"
WEIGHTS_ENV = "UPSCALER_WEIGHTS_DIR"


def _folder(variable: str, xdg: str, default: Path, *parts: str) -> Path:
    explicit = os.environ.get(variable)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get(xdg)
    return (Path(base).expanduser() if base else default).joinpath(*parts)


def cache_dir() -> Path:
    """Exported graphs and engines: $UPSCALER_CACHE_DIR, else $XDG_CACHE_HOME/upscaler (~/.cache/upscaler).
    Safe to delete: everything in it is made again when needed."""
    return _folder(CACHE_ENV, "XDG_CACHE_HOME", Path.home() / ".cache", "upscaler")


def weights_dir() -> Path:
    """Where `upscale weights install` puts the VGG19 and LPIPS weights: $UPSCALER_WEIGHTS_DIR, else
    $XDG_DATA_HOME/upscaler/weights (~/.local/share/upscaler/weights). Not a cache: the trainer and
    `upscale eval` read them from here."""
    return _folder(WEIGHTS_ENV, "XDG_DATA_HOME", Path.home() / ".local" / "share", "upscaler", "weights")
