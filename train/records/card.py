"""The model card a finished run writes beside its weights, and the run's progress line."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from train.recipes.schema import Recipe
from upscaler.system.files import write_bytes_atomically


def write_card(
    path: Path,
    *,
    recipe: Recipe,
    weights: Path,
    iteration: int,
    wall_time: float,
    images,
    scores: tuple[float, float] | None,
    bicubic: tuple[float, float] | None,
    validation_set: str,
    commands: list[str],
    device: torch.device,
    world_size: int,
    ema: bool,
) -> Path:
    """The model card: what the weights are, how they were trained, and how well they do."""
    card = {
        "weights": weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "arch": recipe.model.arch,
        "config": recipe.model.config,
        "scale": recipe.scale,
        "recipe": recipe.name,
        "description": recipe.summary,  # from the resolved config: --set may have changed the recipe
        "generator": "EMA of the generator" if ema else "the generator",
        "iterations": iteration,
        "wall_time_s": round(wall_time, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": commands[0] if commands else "",  # the command that started the run
        "commands": commands,  # that one, then each --resume
        "device": str(device),
        "processes": world_size,
        "torch": torch.__version__,
        "data": {
            "hr": list(recipe.data.hr),
            "lq": recipe.data.lq,
            "gt": recipe.data.gt,
            "images": images.files,
            "skipped": len(images.skipped),
            "digest_sha256": images.digest,
        },
        "validation": None
        if scores is None
        else {
            "set": validation_set,
            # an infinite PSNR (identical images: bicubic at x1) is null, as in `upscale eval --json`
            "psnr_y": rounded(scores[0], 4),
            "ssim_y": rounded(scores[1], 5),
            "bicubic_psnr_y": rounded(bicubic[0], 4),
            "bicubic_ssim_y": rounded(bicubic[1], 5),
            "definition": f"Y of BT.601, {recipe.scale}-pixel border cropped, SR rounded to 8 bits (BasicSR)",
        },
        "training_config": recipe.to_dict(),
    }
    write_bytes_atomically(path, (json.dumps(card, indent=2, allow_nan=False) + "\n").encode())
    return path


def progress_line(iteration: int, iterations: int, means: dict[str, float], lr: float, rate: float) -> str:
    """`iteration 200/1000: pixel 0.0213, lr 0.0002; 3.41 it/s, ETA 0:03:54` (a line for a log file)."""
    losses = ", ".join(f"{name} {value:.4g}" for name, value in means.items())
    eta = int(round((iterations - iteration) / rate)) if rate > 0 else None
    when = "?" if eta is None else f"{eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
    return f"iteration {iteration}/{iterations}: {losses}, lr {lr:.3g}; {rate:.3g} it/s, ETA {when}"


def earlier_commands(checkpoint: dict[str, Any], card: Path) -> list[str]:
    """The commands of the run so far: from the checkpoint, or, for one written before checkpoints
    kept them, from the card of a finished earlier part (empty when there is neither)."""
    if "commands" in checkpoint:
        return list(checkpoint["commands"])
    try:
        written = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(written.get("commands"), list):
        return [str(item) for item in written["commands"]]
    return [written["command"]] if isinstance(written.get("command"), str) and written["command"] else []


def rounded(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None
