"""VGG19 features for perceptual losses, in torchvision's layout, without torchvision.

`features` is torchvision's `vgg19().features` cut after the layer a loss reads, so torchvision's
ImageNet weights (`features.N.weight` / `features.N.bias`) load as they are. The indices:

    block 1: conv 0, 2            pool 4
    block 2: conv 5, 7            pool 9
    block 3: conv 10, 12, 14, 16  pool 18
    block 4: conv 19, 21, 23, 25  pool 27
    block 5: conv 28, 30, 32, 34  pool 36      (each conv's ReLU at its index + 1)

SRGAN's "VGG54" is relu5_4 (index 35: after the activation, before the 5th pooling); ESRGAN's is
conv5_4 before the activation (index 34), which keeps the negative responses the ReLU would drop.

The network is frozen: no parameter wants a gradient and it stays in eval mode whatever `train()`
is called with, so a training loop can hold it inside a loss module without thinking about it.
Nothing here downloads: the weights come from a file the user has (see `find_vgg_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.loading import read_weights

# Output channels of each conv, per block; every block ends with a 2x2 max pooling.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))

# torchvision's file name for the ImageNet VGG19 weights (without batch norm).
VGG19_FILE = "vgg19-dcbb9e9d.pth"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_table() -> tuple[dict[str, int], list[tuple[int, int] | None]]:
    """conv name -> index in `features`, and each index's (in, out) channels (None for ReLU or pooling)."""
    names: dict[str, int] = {}
    layers: list[tuple[int, int] | None] = []
    channels = 3
    for block, widths in enumerate(_BLOCKS, start=1):
        for number, width in enumerate(widths, start=1):
            names[f"conv{block}_{number}"] = len(layers)
            layers.append((channels, width))
            layers.append(None)  # ReLU
            channels = width
        layers.append(None)  # max pooling
    return names, layers


CONV_INDEX, _LAYERS = _layer_table()


def feature_index(layer: str, before_activation: bool) -> int:
    """The index in `features` whose output a loss reads: conv `layer`'s, or its ReLU's."""
    if layer not in CONV_INDEX:
        raise ModelError(f"unknown VGG19 layer {layer!r}; known: {', '.join(CONV_INDEX)}")
    return CONV_INDEX[layer] + (0 if before_activation else 1)


class VGG19Features(nn.Module):
    """VGG19 up to `layer` (before or after its ReLU), taking RGB in [0, 1]; frozen, random weights.

    Load ImageNet weights with `load_vgg19_features`; a bare instance is random and only for tests.
    """

    def __init__(self, layer: str = "conv5_4", before_activation: bool = True) -> None:
        super().__init__()
        self.layer = layer
        self.before_activation = before_activation
        last = feature_index(layer, before_activation)
        modules: list[nn.Module] = []
        for index in range(last + 1):
            spec = _LAYERS[index]
            if spec is not None:
                modules.append(nn.Conv2d(spec[0], spec[1], kernel_size=3, padding=1))
            elif _LAYERS[index - 1] is not None:  # a conv's ReLU
                modules.append(nn.ReLU(inplace=True))
            else:
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*modules)
        # Not persistent: the state dict holds exactly torchvision's `features` keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        # Frozen by design; eval and train are the same for this stack (no dropout or batch norm), and
        # keeping `training` False says so to anyone who looks.
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.features((rgb - self.mean) / self.std)


def load_vgg19_features(path: Path, layer: str = "conv5_4", before_activation: bool = True) -> VGG19Features:
    """VGG19Features with torchvision-format weights from a .pth or .safetensors file.

    Keys other than the `features` layers kept (the classifier, deeper layers) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such VGG19 weights file: {path}")
    state, _metadata = read_weights(path)
    network = VGG19Features(layer, before_activation)
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise ModelError(
            f"{path.name} is not torchvision VGG19 weights: it lacks {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
            hint=f"use torchvision's ImageNet VGG19 file ({VGG19_FILE}), keys features.N.weight/bias",
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise ModelError(
                f"{path.name} is not torchvision VGG19 weights: {key} has shape {tuple(state[key].shape)}, "
                f"VGG19 needs {tuple(tensor.shape)}",
                hint=f"use torchvision's ImageNet VGG19 file ({VGG19_FILE})",
            )
    network.load_state_dict({key: state[key] for key in expected})
    return network


def vgg_search_paths() -> list[Path]:
    """Where torch hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints, else ~/.cache/torch/...."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        home = Path(torch_home).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        home = (Path(cache).expanduser() if cache else Path.home() / ".cache") / "torch"
    return [home / "hub" / "checkpoints" / VGG19_FILE]


def find_vgg_weights(explicit: Path | None = None) -> Path:
    """The VGG19 weights file to use: `explicit` when given, else torchvision's file in the hub cache."""
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            raise ModelError(f"no such VGG19 weights file: {explicit}")
        return explicit
    for candidate in vgg_search_paths():
        if candidate.is_file():
            return candidate
    places = " or ".join(str(path) for path in vgg_search_paths())
    raise ModelError(
        "this recipe's perceptual loss needs ImageNet VGG19 weights, and none were found",
        hint=f"put torchvision's {VGG19_FILE} at {places}, or pass --vgg-weights FILE "
        "(a torchvision-format state dict, .pth or .safetensors)",
    )
