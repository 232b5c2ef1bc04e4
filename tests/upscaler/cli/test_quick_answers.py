"""Answers that need no model come without importing torch, ONNX Runtime or OpenVINO (seconds of
imports): help, the model and backend lists, and refusals of bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from upscaler.models import build_model, get_architecture, list_models

HEAVY = ("torch", "onnxruntime", "openvino", "tensorrt")
_RUN = """
import sys
from upscaler.cli import main
sys.argv = ["upscale", *sys.argv[1:]]
try:
    main()
except SystemExit as end:
    code = end.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:", ",".join(heavy), "EXIT:", code, file=sys.stderr)
"""


def run(*args: str) -> tuple[str, str]:
    code = _RUN.format(heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY:"), result.stderr
    return last, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "exit_code", "said"),
    [
        (("--help",), 0, "Commands:"),
        (("models",), 0, "esrgan"),
        (("backends",), 0, "torch"),
        (("video", "/nonexistent.mp4", "out.mp4"), 1, "Error: /nonexistent.mp4: no such file"),
        (("video", "in.mp4", "out.mp4", "--model", "nosuch"), 1, "is neither a known model id"),
        (("images", "/nonexistent.png"), 1, "no such file or folder"),
        (("eval", "--data", ".", "--model", "missing/weights.pth"), 1, "no such weights file"),
        (("images", "x.png", "--tile-size", "0"), 2, "must be positive"),
    ],
)
def test_no_heavy_import_before_the_answer(args: tuple[str, ...], exit_code: int, said: str) -> None:
    last, output = run(*args)
    assert last == f"HEAVY:  EXIT: {exit_code}", output
    assert said in output


def test_the_catalogs_sizes_are_the_networks(tmp_path: Path) -> None:
    import torch

    for entry in list_models():
        assert entry.scale == get_architecture(entry.arch).scale(entry.config), entry.id
        with torch.device("meta"):
            module = build_model(entry.arch, entry.config)
        assert entry.parameters == sum(p.numel() for p in module.parameters()), entry.id
