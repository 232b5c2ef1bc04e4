"""Building the run's networks, optimisers and schedules, and starting G from pretrained weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from train.recipes.schema import ConfigError, Recipe, SchedulerConfig
from upscaler.errors import ModelError
from upscaler.models import find_model

# --------------------------------------------------------------------------------------------- helpers


def pretrained_path(spec: str) -> Path:
    """A bundled model id (`rrdb-psnr`) means its shipped weights; anything else is a file."""
    entry = find_model(spec)
    return entry.weights if entry is not None and entry.weights_present else Path(spec).expanduser()


def check_pretrained_config(recipe: Recipe, metadata: dict[str, str], source: str) -> None:
    """Weights of our own format say their config: name the --set flags that make the recipe fit them."""
    if metadata.get("arch") != recipe.model.arch or "config" not in metadata:
        return
    theirs = json.loads(metadata["config"])
    differing = {key: value for key, value in theirs.items() if recipe.model.config.get(key) != value}
    if differing:
        shown = ", ".join(f"{key} {value}" for key, value in differing.items())
        flags = " ".join(f"--set model.config.{key}={json.dumps(value)}" for key, value in differing.items())
        raise ConfigError(
            f"train.pretrained: {source} is a {recipe.model.arch} with {shown}; the recipe's generator "
            "differs, and a GAN stage keeps the shape of the generator it starts from",
            hint=f"add {flags}",
        )


def load_pretrained(net: nn.Module, state: dict[str, torch.Tensor], source: str, load: bool = True) -> None:
    """Load `state` into `net`; a ModelError saying what does not fit. `load` False only checks."""
    expected = net.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or wrong:
        what = (
            f"wrong shapes: {', '.join(wrong[:3])}"
            if wrong
            else f"missing: {', '.join(missing[:3])}"
            if missing
            else f"unexpected: {', '.join(unexpected[:3])}"
        )
        raise ModelError(
            f"train.pretrained: {source} does not fit the recipe's generator ({what})",
            hint="start from weights of the same architecture and config (an SRResNet with batch norm "
            "for srgan: the srresnet recipe's result)",
        )
    if load:
        net.load_state_dict(state)


def build_discriminator(recipe: Recipe) -> nn.Module:
    from upscaler.models.discriminators import SRGANDiscriminator, VGGStyleDiscriminator

    spec = recipe.discriminator
    in_channels = int(recipe.model.config.get("num_out_ch", 3))
    try:
        if spec.arch == "srgan":
            return SRGANDiscriminator(in_channels, spec.num_feat, input_size=recipe.data.patch_size)
        return VGGStyleDiscriminator(in_channels, spec.num_feat, input_size=recipe.data.patch_size)
    except (ValueError, ModelError) as exc:
        raise ConfigError(f"discriminator: {exc}") from None


def adam(net: nn.Module, spec) -> torch.optim.Adam:
    return torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad],
        lr=spec.lr,
        betas=tuple(spec.betas),
        weight_decay=spec.weight_decay,
    )


def scheduler(
    optimizer: torch.optim.Optimizer, spec: SchedulerConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration: milestones and periods count iterations."""
    if spec.kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(spec.milestones), spec.gamma)
    if spec.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.period, spec.eta_min)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [], 1.0)  # constant
