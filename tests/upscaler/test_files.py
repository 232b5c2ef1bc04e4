"""Outputs appear whole or not at all, with the mode any new file gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from upscaler.errors import OutputError
from upscaler.system.files import write_atomically, write_bytes_atomically


def test_the_file_appears_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with write_atomically(target) as temporary:
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old"
        assert temporary.parent == tmp_path and temporary.name.startswith(".out.bin.")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), write_atomically(target) as temporary:
        temporary.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_new_files_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        written = write_bytes_atomically(tmp_path / "a" / "b.bin", b"data")
    finally:
        os.umask(previous)
    assert written.read_bytes() == b"data"
    assert written.stat().st_mode & 0o777 == 0o640


def test_an_unwritable_place_is_one_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OutputError, match=r"cannot write .*x\.bin"):
        write_bytes_atomically(blocker / "x.bin", b"data")
    with pytest.raises(OutputError, match="cannot write"), write_atomically(blocker / "y.bin"):
        pass


def test_a_writer_that_replaces_the_temporary_still_gives_the_umask_mode(tmp_path: Path) -> None:
    # safetensors and torch.save may write their own private file and rename it over ours.
    previous = os.umask(0o022)
    try:
        with write_atomically(tmp_path / "w.bin") as temporary:
            private = tmp_path / "private"
            private.write_bytes(b"x")
            private.chmod(0o600)
            os.replace(private, temporary)
    finally:
        os.umask(previous)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644
