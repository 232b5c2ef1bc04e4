"""Backends that cache exported graphs or engines write them under a temporary folder in tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from upscaler.system.places import CACHE_ENV


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # one folder per test session: exports are reused across tests, as they are across runs
    folder = tmp_path_factory.getbasetemp() / "upscaler-cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder
