"""The shape of a training recipe: its sections as frozen dataclasses, and the choices each key allows.

Parsing, merging overrides and checking values into these classes is `train.recipes.config`'s work.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any

from train.degradations.settings import DegradationConfig
from upscaler.errors import UpscaleError


class ConfigError(UpscaleError):
    """A recipe, config file or override that cannot be used."""


PIXEL_LOSSES = ("l1", "mse")
GAN_LOSSES = ("vanilla", "ragan")
SCHEDULERS = ("constant", "multistep", "cosine")
DISCRIMINATORS = ("srgan", "vgg_style")
PRECISIONS = ("fp32", "bf16", "fp16")
# VGG19's convs, conv1_1 ... conv5_4 (as upscaler.models.vgg names them); `before_activation` picks
# the conv's output or its ReLU's.
VGG_LAYERS = tuple(
    f"conv{block}_{index}"
    for block, count in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
    for index in range(1, count + 1)
)


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    config: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class DataConfig:
    patch_size: int
    batch_size: int
    workers: int
    flip: bool
    rotate: bool
    cache_gib: float
    # Paths, not numbers: empty in the bundled recipes, filled from the command line.
    hr: tuple[str, ...] = ()
    lq: str = ""
    gt: str = ""
    val: str = ""


@dataclass(frozen=True)
class RunConfig:
    iterations: int
    seed: int
    pretrained: str
    ema_decay: float
    device: str
    precision: str
    log_every: int
    val_every: int
    checkpoint_every: int
    keep_checkpoints: int


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float
    betas: tuple[float, float]
    weight_decay: float


@dataclass(frozen=True)
class SchedulerConfig:
    kind: str
    milestones: tuple[int, ...]
    gamma: float
    period: int
    eta_min: float


@dataclass(frozen=True)
class LossConfig:
    pixel: str
    pixel_weight: float
    perceptual_weight: float
    perceptual_layer: str
    perceptual_before_activation: bool
    perceptual_criterion: str
    perceptual_feature_scale: float
    gan: str
    gan_weight: float
    vgg_weights: str
    # One weight per layer of `perceptual_layer` when it names several ("conv1_2,conv2_2,..."), as
    # Real-ESRGAN weighs its five; empty: 1 each.
    perceptual_layer_weights: tuple[float, ...] = ()

    @property
    def uses_vgg(self) -> bool:
        return self.perceptual_weight > 0

    @property
    def perceptual_layers(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.perceptual_layer.split(",") if name.strip())

    @property
    def uses_gan(self) -> bool:
        return self.gan_weight > 0


@dataclass(frozen=True)
class DiscriminatorConfig:
    arch: str
    num_feat: int


@dataclass(frozen=True)
class Recipe:
    """A resolved, checked training configuration."""

    name: str
    description: str
    model: ModelConfig
    data: DataConfig
    train: RunConfig
    optim_g: OptimizerConfig
    scheduler: SchedulerConfig
    losses: LossConfig
    optim_d: OptimizerConfig | None = None
    discriminator: DiscriminatorConfig | None = None
    # None: LR is the clean bicubic downscale of HR (or the paired LR files)
    degradation: DegradationConfig | None = None

    @property
    def scale(self) -> int:
        from upscaler.models import get_architecture

        return get_architecture(self.model.arch).scale(self.model.config)

    @property
    def summary(self) -> str:
        """What this configuration trains, from its resolved values (the recipe's `description` is prose
        that an override can make wrong): `compact (64 ch, 16 convs) x4 on L1`."""
        config = {**model_defaults(self.model.arch), **self.model.config}
        details = [text.format(config[key]) for key, text in _SUMMARY_KEYS if key in config]
        if "batch_norm" in config:
            details.append("batch norm" if config["batch_norm"] else "no batch norm")
        losses = self.losses
        terms = [
            term
            for term, used in (
                (losses.pixel.upper(), losses.pixel_weight > 0),
                (f"perceptual {losses.perceptual_layer}", losses.uses_vgg),
                ({"ragan": "RaGAN", "vanilla": "GAN"}.get(losses.gan, losses.gan), losses.uses_gan),
            )
            if used
        ]
        described = f"{self.model.arch} ({', '.join(details)})" if details else self.model.arch
        degraded = ", real-world degradations" if self.degradation is not None else ""
        return f"{described} x{self.scale} on {' + '.join(terms)}{degraded}"

    def to_dict(self) -> dict[str, Any]:
        """The plain table this recipe was built from (optional sections left out when absent)."""
        table = asdict(self)
        return {key: value for key, value in table.items() if value is not None}


_SUMMARY_KEYS = (
    ("num_feat", "{} ch"),
    ("num_block", "{} blocks"),
    ("num_grow_ch", "{} grow ch"),
    ("num_conv", "{} convs"),
)


def model_defaults(arch: str) -> dict[str, Any]:
    """The config keys architecture `arch` takes, with their defaults (None where it has none)."""
    from upscaler.models import get_architecture

    parameters = inspect.signature(get_architecture(arch).cls).parameters.values()
    return {
        parameter.name: None if parameter.default is parameter.empty else parameter.default
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
