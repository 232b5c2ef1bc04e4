"""Checkpoints: everything a run needs to continue exactly, written atomically, the newest K kept.

A checkpoint is `RUN_DIR/checkpoints/iter_<N>.pt`, a dict of tensors, numbers and strings only (so it
loads with `torch.load(weights_only=True)`): the networks, optimisers, schedulers, gradient scaler,
EMA, RNG states (Python, NumPy, torch, CUDA), the data sampler's state, the iteration and the history
of logged values the plots are drawn from.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upscaler.errors import InputError, ModelError, OutputError
from upscaler.system.files import write_atomically

_NAME = re.compile(r"iter_(\d+)\.pt")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [
        (int(match.group(1)), path) for path in folder.iterdir() if (match := _NAME.fullmatch(path.name))
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """The global RNG states; NumPy's as a tensor so that the file needs no pickled objects."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` as the checkpoint of `iteration` (whole or not at all); keep the newest `keep`."""
    folder = checkpoint_dir(run_dir)
    path = folder / f"iter_{iteration:08d}.pt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write a checkpoint in {folder}: {exc.strerror or exc}") from exc
    with write_atomically(path) as temporary:
        torch.save(state, temporary)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of `upscale train`, read with tensors and plain values only; one line when refused."""
    from upscaler.models.loading import read_torch_file

    try:
        checkpoint = read_torch_file(path)
    except ModelError as exc:  # a truncated file, a foreign one, or one holding code: the user picks another
        raise InputError(
            f"checkpoint {path.name}: {exc.message}", hint="delete it to resume from the one before"
        ) from None
    if not isinstance(checkpoint, dict) or "iteration" not in checkpoint:
        raise InputError(
            f"checkpoint {path.name}: not a checkpoint of upscale train",
            hint="delete it to resume from the one before",
        )
    return checkpoint
