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
Two weights files are accepted, and each carries its own input convention, read from the file's
content (never from a flag a user could forget, since a perceptual loss fed the wrong convention still
trains and quietly does the wrong thing):

- torchvision's `vgg19-dcbb9e9d.pth` (keys `features.N.weight`): RGB in [0, 1], minus ImageNet's
  mean, divided by its std;
- Keras's `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (HDF5, layers `block1_conv1` ...,
  kernels HWIO): Caffe's convention, BGR in 0-255 minus the per-channel means, no std. Read with h5py
  (the `train` extra). The BGR order is folded into conv1_1's input channels, so the network still
  takes RGB in [0, 1] and the rest is a per-channel affine map, like torchvision's.

The two networks were trained apart, and their deep features differ in scale: for the same SR and HR
batches Keras's conv5_4 differences came out about 17 times larger than ESRGAN's published training
logs show for torchvision's (BasicSR, 128-pixel crops, early iterations: perceptual L1 about 0.8 against
14.2 here). Loss weights are tuned against one scale, so each convention carries a `gain` that puts
its features on torchvision's: 1 for torchvision, CAFFE_GAIN for Keras. Recipes' feature scales are
written for torchvision's scale (SRGAN's 1/12.75, which the paper applied to the Caffe VGG19 that
Keras's file is, becomes 1 / (12.75 x CAFFE_GAIN) in its recipe: the same loss on this file).

Nothing here downloads: the weights come from a file the user has (see `find_vgg_weights`);
`upscale weights install vgg19` puts Keras's file where the trainer looks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.loading import SUFFIXES, read_weights
from upscaler.system.places import weights_dir

# Output channels of each conv, per block; every block ends with a 2x2 max pooling.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))

# torchvision's file name for the ImageNet VGG19 weights (without batch norm).
VGG19_FILE = "vgg19-dcbb9e9d.pth"

# Keras's file name for the ImageNet VGG19 convolutions (the Oxford VGG group's weights, CC BY 4.0).
KERAS_VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe's (and Keras's "caffe" preprocessing) means, in RGB order, in 0-255 levels.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

# Keras's (Caffe's) conv5_4 features times this are on torchvision's scale (an estimate; see above).
CAFFE_GAIN = 1 / 17

# name -> (mean, std, gain): mean and std map RGB in [0, 1] to what the weights were trained on (after
# the BGR fold); the output is multiplied by gain.
CONVENTIONS = {
    "torchvision": (IMAGENET_MEAN, IMAGENET_STD, 1.0),
    "caffe": (tuple(m / 255 for m in CAFFE_MEAN_RGB), (1 / 255,) * 3, CAFFE_GAIN),
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


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

    `layer` may name several layers, comma-separated ("conv1_2,conv2_2,conv3_4,conv4_4,conv5_4", as
    Real-ESRGAN's perceptual loss reads them): the network then runs up to the deepest and returns the
    list of their outputs, shallowest first. Load ImageNet weights with `load_vgg19_features`; a bare
    instance is random and only for tests.
    """

    def __init__(
        self, layer: str = "conv5_4", before_activation: bool = True, convention: str = "torchvision"
    ) -> None:
        super().__init__()
        names = [name.strip() for name in layer.split(",") if name.strip()] or [layer]
        self.taps = sorted(feature_index(name, before_activation) for name in names)
        layer = max(names, key=lambda name: feature_index(name, before_activation))
        if convention not in CONVENTIONS:
            known = ", ".join(CONVENTIONS)
            raise ModelError(f"unknown VGG19 input convention {convention!r}; known: {known}")
        self.layer = layer
        self.before_activation = before_activation
        self.convention = convention
        mean, std, self.gain = CONVENTIONS[convention]
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
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        # Frozen by design; eval and train are the same for this stack (no dropout or batch norm), and
        # keeping `training` False says so to anyone who looks.
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = (rgb - self.mean) / self.std
        if len(self.taps) == 1:
            features = self.features(x)
            return features * self.gain if self.gain != 1.0 else features
        found = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.taps:
                # a copy: the next ReLU works in place
                found.append(x * self.gain if self.gain != 1.0 else x.clone())
        return found


def load_vgg19_features(path: Path, layer: str = "conv5_4", before_activation: bool = True) -> VGG19Features:
    """VGG19Features with ImageNet weights from torchvision's .pth/.safetensors or Keras's .h5 file.

    Which of the two a file is comes from its content: HDF5 with Keras's layer names, or a state dict
    with torchvision's `features.N` keys. Layers past the one a loss reads (and a classifier) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such VGG19 weights file: {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_HDF5_MAGIC))
    except OSError as exc:
        raise ModelError(f"cannot read VGG19 weights file {path}: {exc.strerror or exc}") from None
    if magic == _HDF5_MAGIC:
        return _load_keras(path, layer, before_activation)
    # by its name where that is a weights suffix; else torch's zip or a raw pickle, or safetensors
    kind = None
    if path.suffix.lower() not in SUFFIXES:
        kind = ".pth" if magic[:2] == b"PK" or magic[:1] == b"\x80" else ".safetensors"
    try:
        state, _metadata = read_weights(path, kind)
    except ModelError as exc:
        raise ModelError(
            f"{path.name} is not a VGG19 weights file: {exc.message}", hint=_INSTALL_HINT
        ) from None
    network = VGG19Features(layer, before_activation, "torchvision")
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise ModelError(
            f"{path.name} is not VGG19 weights: it lacks {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
            hint=_INSTALL_HINT,
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise ModelError(
                f"{path.name} is not VGG19 weights: {key} has shape {tuple(state[key].shape)}, "
                f"VGG19 needs {tuple(tensor.shape)}",
                hint=_INSTALL_HINT,
            )
    network.load_state_dict({key: state[key] for key in expected})
    return network


_INSTALL_HINT = (
    f"run `upscale weights install vgg19` (Keras's {KERAS_VGG19_FILE}), or pass --vgg-weights with "
    f"torchvision's {VGG19_FILE}"
)


def keras_layer_arrays(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keras layer name (`block1_conv1`) -> (kernel HWIO, bias) from Keras's VGG19 .h5 file."""
    try:
        import h5py
    except ImportError:
        raise ModelError(
            f"{path.name} is Keras's HDF5 format, which needs the h5py package",
            hint='pip install h5py (or the train extra: pip install -e ".[train]")',
        ) from None
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get("model_weights", handle)  # a whole saved model keeps them in a group
            for name in CONV_INDEX:
                keras_name = "block{}_conv{}".format(*name[len("conv") :].split("_"))
                if keras_name not in group:
                    continue
                layer = group[keras_name]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer.attrs["weight_names"]]
                kernel, bias = (np.asarray(layer[n], dtype=np.float32) for n in names[:2])
                arrays[keras_name] = (kernel, bias)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(
            f"{path.name} is not a readable Keras VGG19 weights file ({type(exc).__name__}: {exc})",
            hint=_INSTALL_HINT,
        ) from None
    return arrays


def _load_keras(path: Path, layer: str, before_activation: bool) -> VGG19Features:
    arrays = keras_layer_arrays(path)
    network = VGG19Features(layer, before_activation, "caffe")
    state = {}
    for name, index in CONV_INDEX.items():
        if index >= len(network.features):
            break
        keras_name = "block{}_conv{}".format(*name[len("conv") :].split("_"))
        if keras_name not in arrays:
            raise ModelError(
                f"{path.name} is not Keras's VGG19 weights: it has no layer {keras_name}", hint=_INSTALL_HINT
            )
        kernel, bias = arrays[keras_name]
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
        expected = network.features[index].weight.shape
        if weight.shape != expected or bias.shape != (expected[0],):
            raise ModelError(
                f"{path.name} is not Keras's VGG19 weights: {keras_name} has kernel shape "
                f"{tuple(kernel.shape)}, VGG19 needs {(3, 3, expected[1], expected[0])}",
                hint=_INSTALL_HINT,
            )
        if index == 0:
            weight = weight.flip(1)  # Caffe's BGR input order, folded into the first conv: RGB in
        state[f"features.{index}.weight"] = weight
        state[f"features.{index}.bias"] = torch.from_numpy(bias.copy())
    network.load_state_dict(state)
    return network


def vgg_search_paths() -> list[Path]:
    """Our weights folder (Keras's file, or torchvision's), then the torch hub cache (torchvision's)."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        home = Path(torch_home).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        home = (Path(cache).expanduser() if cache else Path.home() / ".cache") / "torch"
    ours = weights_dir()
    return [ours / KERAS_VGG19_FILE, ours / VGG19_FILE, home / "hub" / "checkpoints" / VGG19_FILE]


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
        hint=f"run `upscale weights install vgg19` (looked in {places}), or pass --vgg-weights FILE "
        f"(torchvision's {VGG19_FILE} or Keras's {KERAS_VGG19_FILE})",
    )
