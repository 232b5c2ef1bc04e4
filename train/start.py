"""Starting a run: everything that can fail before the data is read (VGG19, the discriminator's crop
size, the data folders, the checkpoint to resume or the weights to start from), and notes on the
configuration worth a line before hours of training."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.networks import build_discriminator, check_pretrained_config, load_pretrained, pretrained_path
from train.recipes.schema import ConfigError, Recipe
from train.records.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from upscaler.errors import InputError, OutputError
from upscaler.models import build_model, read_weights


def preflight(
    recipe: Recipe, run_dir: Path, resume: bool, vgg: nn.Module | None, report: Callable[[str], None]
) -> tuple[nn.Module | None, dict[str, Any] | None, dict[str, torch.Tensor] | None]:
    """(the VGG19 features a perceptual loss reads, the checkpoint to resume, the pretrained generator's
    state): each None where the recipe or the run has none. Raises the error a user can act on."""
    cfg, losses_cfg = recipe.train, recipe.losses
    if losses_cfg.uses_vgg and vgg is None:
        from upscaler.models.vgg import find_vgg_weights, load_vgg19_features

        explicit = Path(losses_cfg.vgg_weights) if losses_cfg.vgg_weights else None
        vgg_path = find_vgg_weights(explicit)
        vgg = load_vgg19_features(
            vgg_path, losses_cfg.perceptual_layer, losses_cfg.perceptual_before_activation
        )
    if losses_cfg.uses_gan:
        with torch.device("meta"):  # a crop size the discriminator cannot take fails here, costing nothing
            build_discriminator(recipe)
    for key, flag, folder in (
        *(("data.hr", "--data", folder) for folder in recipe.data.hr),
        ("data.lq", "--lq", recipe.data.lq),
        ("data.gt", "--gt", recipe.data.gt),
        ("data.val", "--val", recipe.data.val),
    ):
        if folder and not Path(folder).is_dir():
            what = "not a folder" if Path(folder).exists() else "no such folder"
            raise InputError(f"{key} ({flag}): {what}: {folder}")
    checkpoint: dict[str, Any] | None = None
    pretrained: dict[str, torch.Tensor] | None = None
    if not resume and list_checkpoints(run_dir):
        raise OutputError(
            f"{run_dir} already holds a run (checkpoints/)",
            hint="pass --resume to continue it, or another --out for a new run",
        )
    if resume:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise InputError(
                f"--resume: no checkpoint in {run_dir / 'checkpoints'}", hint="start without --resume"
            )
        checkpoint = load_checkpoint(found)
        if checkpoint["model"] != {"arch": recipe.model.arch, "config": recipe.model.config}:
            raise ConfigError(
                f"--resume: {found.name} holds a {checkpoint['model']['arch']} generator with config "
                f"{checkpoint['model']['config']}, but the configuration asks for {recipe.model.arch} "
                f"with {recipe.model.config}"
            )
        if checkpoint["iteration"] > cfg.iterations:
            raise ConfigError(
                f"train.iterations: {cfg.iterations} is fewer than the {checkpoint['iteration']} "
                f"iterations {found.name} has done",
                hint=f"pass --iterations N with N >= {checkpoint['iteration']} to continue or extend the run",
            )
        report(f"Resuming {run_dir} from iteration {checkpoint['iteration']} ({found.name}).")
    elif cfg.pretrained:
        path = pretrained_path(cfg.pretrained)
        if not path.is_file():
            raise InputError(
                f"train.pretrained: no such weights file: {path}",
                hint=f"train the recipe this one starts from first, or pass --pretrained FILE or a bundled "
                f"model id (--pretrained '' starts {recipe.name} from random weights)",
            )
        pretrained, metadata = read_weights(path)
        check_pretrained_config(recipe, metadata, cfg.pretrained)
        with torch.device("meta"):  # does it fit? known before the data is read, at no cost
            load_pretrained(
                build_model(recipe.model.arch, recipe.model.config), dict(pretrained), path, False
            )
    return vgg, checkpoint, pretrained


def schedule_note(recipe: Recipe) -> str | None:
    """A note when --iterations and a cosine schedule's period disagree: what the rate will do instead."""
    cfg = recipe.train
    schedule = recipe.scheduler
    if schedule.kind == "cosine" and schedule.period != cfg.iterations:
        # --iterations does not move the period: say what the schedule will do instead
        lr, low = recipe.optim_g.lr, schedule.eta_min
        end = low + (lr - low) * (1 + math.cos(math.pi * cfg.iterations / schedule.period)) / 2
        what = (
            f"ends at {end:.3g}, not at eta_min {low:.3g}"
            if cfg.iterations < schedule.period
            else f"climbs back up after iteration {schedule.period}"
        )
        return (
            f"Note: scheduler.period is {schedule.period} iterations but the run has {cfg.iterations}: "
            f"the learning rate {what}; --set scheduler.period={cfg.iterations} anneals over the whole run."
        )

    return None
