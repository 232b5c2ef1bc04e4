"""Where `upscale` keeps files outside its outputs: installed feature-network weights."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "UPSCALER_WEIGHTS_DIR"


def weights_dir() -> Path:
    """Where `upscale weights install` puts the VGG19 and LPIPS weights: $UPSCALER_WEIGHTS_DIR, else
    $XDG_DATA_HOME/upscaler/weights (~/.local/share/upscaler/weights). Not a cache: the trainer and
    `upscale eval` read them from here."""
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    data = os.environ.get("XDG_DATA_HOME")
    return (Path(data).expanduser() if data else Path.home() / ".local" / "share") / "upscaler" / "weights"
