"""Training recipes: TOML files whose every number a user can read, copy and edit, checked at start.

A recipe is a table of sections (`model`, `data`, `train`, `optim_g`, `optim_d`, `scheduler`, `losses`,
`discriminator`). The bundled ones live in `train/recipes/*.toml`. A run's configuration is a recipe
with overrides laid on top, in this order: a `--config FILE` (any subset of the same tables), then
`--set key=value` pairs, then the dedicated CLI flags. The result is checked once, before anything is
loaded, into frozen dataclasses; a bad value stops the run with one line naming its key.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from train.degradations.settings import DegradationConfig, DegradationError, check_degradation
from train.recipes.schema import (
    DISCRIMINATORS,
    GAN_LOSSES,
    PIXEL_LOSSES,
    PRECISIONS,
    SCHEDULERS,
    VGG_LAYERS,
    ConfigError,
    DataConfig,
    DiscriminatorConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    Recipe,
    RunConfig,
    SchedulerConfig,
    model_defaults,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# --------------------------------------------------------------------------------------------- files


# ----------------------------------------------------------------------------------------- overrides


def merge(base: Mapping[str, Any], override: Mapping[str, Any], _prefix: str = "") -> dict[str, Any]:
    """`base` with `override` laid on top; tables merge key by key, anything else is replaced.

    A table laid over a value that is not one is a ConfigError naming the key: the earlier layer put a
    value where a table belongs (`--set data=3` and then `--data DIR`), and replacing it would report
    the table's keys as missing instead.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        path = f"{_prefix}.{key}" if _prefix else str(key)
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value, path)
        elif isinstance(value, Mapping) and key in merged:
            raise ConfigError(f"{path}: must be a table ([{path}]; got {_shown(merged[key])})")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_assignment(text: str) -> tuple[str, Any]:
    """`optim_g.lr=2e-4` -> ("optim_g.lr", 0.0002). The value is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. optim_g.lr=2e-4")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def nested(key: str, value: Any) -> dict[str, Any]:
    """("a.b.c", v) -> {"a": {"b": {"c": v}}}."""
    table: Any = value
    for part in reversed(key.split(".")):
        table = {part: table}
    return table


def resolve(table: Mapping[str, Any], overrides: Sequence[Mapping[str, Any]] = ()) -> Recipe:
    """Lay `overrides` over `table` in order and check the result."""
    for override in overrides:
        table = merge(table, override)
    return check(table)


# ---------------------------------------------------------------------------------------------- check


def _shown(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, str(kind))


def _convert(value: Any, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _convert(value, options[0], key)
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list (got {json.dumps(value)})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: must be a list of {len(args)} values (got {len(value)})")
        return tuple(
            _convert(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a table (got {_shown(value)})")
        return dict(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number (got {value})")
    if kind is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # 1e6 in a file means a million iterations
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: must be {_type_name(kind)} (got {json.dumps(value)})")
    return value


def _section(cls: type, table: Any, prefix: str) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{prefix}: must be a table ([{prefix}]; got {_shown(table)})")
    hints = typing.get_type_hints(cls)
    known = [item.name for item in fields(cls)]
    unknown = [key for key in table if key not in known]
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]}; known in [{prefix}]: {', '.join(known)}")
    values = {}
    for item in fields(cls):
        key = f"{prefix}.{item.name}"
        if item.name not in table:
            if item.default is not MISSING or item.default_factory is not MISSING:
                continue
            raise ConfigError(f"{key}: missing")
        values[item.name] = _convert(table[item.name], hints[item.name], key)
    return cls(**values)


def _positive(value: float, key: str, zero: bool = False) -> None:
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{key}: must be {'zero or more' if zero else 'positive'} (got {value})")


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)} (got {value!r})")


# Model config sizes that must not be 0 (counts of blocks and convs may be).
_POSITIVE_MODEL_KEYS = ("num_feat", "num_grow_ch", "num_in_ch", "num_out_ch", "scale", "upscale")


@functools.lru_cache(maxsize=32)
def _model_problem(arch: str, config_json: str) -> str | None:
    """Why the generator cannot be built or run with this config (on the meta device: no memory), or None."""
    import torch

    from upscaler.errors import ModelError
    from upscaler.models import build_model, get_architecture

    config = json.loads(config_json)
    known = list(model_defaults(arch))
    unknown = [name for name in config if name not in known]
    if unknown:
        return f"model.config.{unknown[0]}: unknown key for {arch}; known: {', '.join(known)}"
    for name, value in config.items():
        counted = isinstance(value, int) and not isinstance(value, bool)
        if counted and (value < 0 or (value == 0 and name in _POSITIVE_MODEL_KEYS)):
            wanted = "positive" if name in _POSITIVE_MODEL_KEYS else "zero or more"
            return f"model.config.{name}: must be {wanted} (got {value})"
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = build_model(arch, config)
            # A forward pass on meta tensors costs nothing and finds configs that build but cannot
            # run, which would otherwise fail at the first iteration.
            side = 16 * get_architecture(arch).multiple_of(config)
            net(torch.empty(1, config.get("num_in_ch", 3), side, side))
    except ModelError as exc:
        return f"model.config: {exc.message}"
    except (RuntimeError, ValueError, TypeError) as exc:
        return f"model.config: a {arch} network with config {config} cannot run: {exc}"
    return None


def check(table: Mapping[str, Any]) -> Recipe:
    """The checked Recipe of a raw table; raises ConfigError naming the first bad key."""
    from upscaler.models import ARCHITECTURES, get_architecture

    sections = {
        "model": None,
        "data": DataConfig,
        "train": RunConfig,
        "optim_g": OptimizerConfig,
        "optim_d": OptimizerConfig,
        "scheduler": SchedulerConfig,
        "losses": LossConfig,
        "discriminator": DiscriminatorConfig,
        "degradation": DegradationConfig,
    }
    unknown = [key for key in table if key not in (*sections, "name", "description")]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]}; known: name, description, {', '.join(sections)}")
    for key in ("name", "description"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{key}: missing (a string)")
    for key in ("model", "data", "train", "optim_g", "scheduler", "losses"):
        if key not in table:
            raise ConfigError(f"[{key}]: missing")

    model_table = table["model"]
    if not isinstance(model_table, Mapping):
        raise ConfigError(f"model: must be a table ([model]; got {_shown(model_table)})")
    unknown = [key for key in model_table if key not in ("arch", "config")]
    if unknown:
        raise ConfigError(f"unknown key model.{unknown[0]}; known in [model]: arch, config")
    arch = model_table.get("arch")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: must be one of {', '.join(ARCHITECTURES)} (got {arch!r})")
    model = ModelConfig(
        arch=arch, config=_convert(model_table.get("config", {}), dict[str, Any], "model.config")
    )
    problem = _model_problem(arch, json.dumps(model.config, sort_keys=True))
    if problem:
        raise ConfigError(problem)

    data = _section(DataConfig, table["data"], "data")
    run = _section(RunConfig, table["train"], "train")
    optim_g = _section(OptimizerConfig, table["optim_g"], "optim_g")
    scheduler = _section(SchedulerConfig, table["scheduler"], "scheduler")
    losses = _section(LossConfig, table["losses"], "losses")
    optim_d = _section(OptimizerConfig, table["optim_d"], "optim_d") if "optim_d" in table else None
    discriminator = (
        _section(DiscriminatorConfig, table["discriminator"], "discriminator")
        if "discriminator" in table
        else None
    )

    degradation = (
        _section(DegradationConfig, table["degradation"], "degradation") if "degradation" in table else None
    )
    if degradation is not None:
        try:
            check_degradation(degradation)
        except DegradationError as exc:
            raise ConfigError(exc.message) from None

    architecture = get_architecture(arch)
    scale = architecture.scale(model.config)
    multiple = architecture.multiple_of(model.config)
    _positive(data.patch_size, "data.patch_size")
    if data.patch_size % (scale * multiple):
        raise ConfigError(
            f"data.patch_size: must be a multiple of {scale * multiple} for {arch} x{scale} "
            f"(got {data.patch_size})"
        )
    _positive(data.batch_size, "data.batch_size")
    _positive(data.workers, "data.workers", zero=True)
    _positive(data.cache_gib, "data.cache_gib", zero=True)
    if bool(data.lq) != bool(data.gt):
        raise ConfigError("data.lq and data.gt: give both (paired folders) or neither")

    _positive(run.iterations, "train.iterations")
    _positive(run.seed, "train.seed", zero=True)
    if not 0 <= run.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: must be in [0, 1) (got {run.ema_decay})")
    _choice(run.precision, PRECISIONS, "train.precision")
    for key in ("log_every", "val_every", "checkpoint_every", "keep_checkpoints"):
        _positive(getattr(run, key), f"train.{key}")

    for name, optimizer in (("optim_g", optim_g), ("optim_d", optim_d)):
        if optimizer is None:
            continue
        _positive(optimizer.lr, f"{name}.lr")
        _positive(optimizer.weight_decay, f"{name}.weight_decay", zero=True)
        for index, beta in enumerate(optimizer.betas):
            if not 0 <= beta < 1:
                raise ConfigError(f"{name}.betas[{index}]: must be in [0, 1) (got {beta})")

    _choice(scheduler.kind, SCHEDULERS, "scheduler.kind")
    if scheduler.kind == "multistep":
        if list(scheduler.milestones) != sorted(set(scheduler.milestones)) or any(
            m <= 0 for m in scheduler.milestones
        ):
            raise ConfigError(
                "scheduler.milestones: must be increasing positive iterations "
                f"(got {list(scheduler.milestones)})"
            )
        _positive(scheduler.gamma, "scheduler.gamma")
    if scheduler.kind == "cosine":
        _positive(scheduler.period, "scheduler.period")
        _positive(scheduler.eta_min, "scheduler.eta_min", zero=True)

    _choice(losses.pixel, PIXEL_LOSSES, "losses.pixel")
    _choice(losses.perceptual_criterion, PIXEL_LOSSES, "losses.perceptual_criterion")
    _choice(losses.gan, GAN_LOSSES, "losses.gan")
    for layer in losses.perceptual_layers or ("",):
        _choice(layer, VGG_LAYERS, "losses.perceptual_layer")
    if losses.perceptual_layer_weights and len(losses.perceptual_layer_weights) != len(
        losses.perceptual_layers
    ):
        raise ConfigError(
            f"losses.perceptual_layer_weights: {len(losses.perceptual_layer_weights)} weights for "
            f"{len(losses.perceptual_layers)} layers ({losses.perceptual_layer})"
        )
    for key in ("pixel_weight", "perceptual_weight", "gan_weight", "perceptual_feature_scale"):
        _positive(getattr(losses, key), f"losses.{key}", zero=True)
    if losses.pixel_weight == 0 and losses.perceptual_weight == 0 and losses.gan_weight == 0:
        raise ConfigError("losses: every weight is 0; give pixel_weight, perceptual_weight or gan_weight")
    if losses.uses_gan:
        if discriminator is None:
            raise ConfigError("[discriminator]: missing; losses.gan_weight > 0 needs a discriminator")
        if optim_d is None:
            raise ConfigError("[optim_d]: missing; losses.gan_weight > 0 needs the discriminator's optimiser")
        _choice(discriminator.arch, DISCRIMINATORS, "discriminator.arch")
        _positive(discriminator.num_feat, "discriminator.num_feat")

    return Recipe(
        name=table["name"],
        description=table["description"],
        model=model,
        data=data,
        train=run,
        optim_g=optim_g,
        scheduler=scheduler,
        losses=losses,
        optim_d=optim_d if losses.uses_gan else None,
        discriminator=discriminator if losses.uses_gan else None,
        degradation=degradation,
    )


# ---------------------------------------------------------------------------------------------- write


def to_toml(table: Mapping[str, Any]) -> str:
    """TOML text for a table of scalars, lists and nested tables (the shape of a recipe)."""
    import tomli_w

    return tomli_w.dumps(dict(table)).rstrip("\n")
