"""The module boundaries of ../shared/STYLE.md: an import points down the layer list only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layer of each core module (by dotted prefix); a module may import only from its own layer or below.
LAYERS = {
    "upscaler.errors": 1,
    "upscaler.values": 1,
    "upscaler.system": 1,
    "upscaler.tiling": 2,
    "upscaler.quality.metrics": 2,
    "upscaler.quality": 5,
    "upscaler.options": 2,
    "upscaler.models": 3,
    "upscaler.backend": 4,
    "upscaler.precision": 4,
    "upscaler.export": 4,
    "upscaler.picture": 5,
    "upscaler.image": 5,
    "upscaler.video": 5,
    "upscaler.cluster": 5,
    "upscaler.pipeline": 5,
    "upscaler.upscaling": 5,
    "upscaler.selection": 5,
    "upscaler.bench": 5,
    "upscaler.cli": 6,
    "upscaler": 6,
}
# Third-party packages a layer may not use.
FORBIDDEN_THIRD_PARTY = {
    1: {"numpy", "torch", "av", "cv2", "click", "tqdm", "PIL", "tensorrt", "onnx", "onnxruntime"},
    2: {"torch", "av", "cv2", "click", "tqdm", "PIL", "tensorrt", "onnx", "onnxruntime"},
    3: {"av", "cv2", "click", "tqdm", "PIL", "tensorrt", "onnxruntime"},
    4: {"av", "cv2", "click", "tqdm", "PIL"},
    5: {"click"},
    6: set(),
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("upscaler"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_point_down(path: Path) -> None:
    own = layer_of(module_name(path))
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top != "backends", f"{path.name} imports {name}: the core never imports plugins"
        # `upscale train` is the one door from the core into train/, and only the CLI opens it.
        if top == "train":
            assert own == 6, f"{module_name(path)} imports {name}: only the CLI may use train/"
            continue
        if top == "upscaler":
            assert layer_of(name) <= own, f"{module_name(path)} (layer {own}) imports {name}"
        else:
            assert top not in FORBIDDEN_THIRD_PARTY[own], f"{module_name(path)} (layer {own}) imports {name}"


@pytest.mark.parametrize("path", python_files("backends"), ids=lambda p: str(p.relative_to(ROOT)))
def test_backends_use_only_protocol_models_and_export(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top not in {"train", "click"}, f"{path.name} imports {name}"
        if top == "upscaler":
            assert layer_of(name) <= 4, f"backend {path.name} imports {name} (pipeline, IO or CLI)"


@pytest.mark.parametrize("path", python_files("train"), ids=lambda p: str(p.relative_to(ROOT)))
def test_train_never_uses_backends_or_cli(path: Path) -> None:
    for name in imports_of(path):
        assert name.split(".")[0] != "backends", f"{path.name} imports {name}"
        assert not name.startswith("upscaler.cli"), f"{path.name} imports {name}"


def test_layer_table_knows_every_core_module() -> None:
    for path in python_files("upscaler"):
        layer_of(module_name(path))  # raises KeyError for a module missing from LAYERS


def test_help_imports_no_heavy_module() -> None:
    import subprocess

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from upscaler.cli import cli\n"
        "from upscaler.cli import COMMANDS\n"
        "for args in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "heavy = sorted(m for m in ('torch', 'av', 'cv2', 'tensorrt', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"--help imported {result.stdout.strip()}"


def test_the_image_and_video_packages_do_not_borrow_from_each_other() -> None:
    # both stand on upscaler.picture and upscaler.upscaling, the shared frame-upscaling layer
    for package, other in (("image", "upscaler.video"), ("video", "upscaler.image")):
        for path in python_files(f"upscaler/{package}"):
            borrowed = [name for name in imports_of(path) if name == other or name.startswith(other + ".")]
            assert not borrowed, f"{module_name(path)} imports {borrowed}"
