"""The plugin's own tests: upscale's conformance checks, and its refusals."""

from __future__ import annotations

import pytest
from upscale_minimal import MinimalBackend

from upscaler.errors import BackendError
from upscaler.options import BackendOptions
from upscaler.testing import check_backend, tiny_model


def test_it_conforms(tmp_path) -> None:
    check_backend(MinimalBackend(), tmp_path)


def test_it_refuses_a_gpu_with_a_hint(tmp_path) -> None:
    with pytest.raises(BackendError, match="CPU only") as refused:
        MinimalBackend().open(tiny_model(tmp_path, "compact"), BackendOptions(device="cuda"))
    assert refused.value.hint == "pass --device cpu, or --backend torch for a GPU"
