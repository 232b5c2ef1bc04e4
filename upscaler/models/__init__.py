"""The networks `upscale` runs, the registry that recognises their weights, and loading them.

Imports torch, numpy and safetensors; never PyAV, click, backends or train. The names below are
imported from their modules on first use, so the model ids (`upscaler.models.catalog`, no torch) can be
listed and checked in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "catalog": ("MODELS", "ModelEntry", "find_model", "list_models"),
    "compact": ("SRVGGNetCompact",),
    "loaded": ("LoadedModel", "ModelInfo", "load_model"),
    "loading": (
        "normalize_state_dict",
        "read_weights",
        "save_weights",
    ),
    "registry": ("ARCHITECTURES", "Architecture", "build_model", "detect_architecture", "get_architecture"),
    "rrdbnet": ("RRDBNet", "convert_esrgan_state_dict", "convert_mmsr_state_dict"),
    "srresnet": ("MSRResNet", "SRResNet", "SRResNetInference", "fold_batch_norm"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'upscaler.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"upscaler.models.{module}"), name)
    globals()[name] = value  # found once, then an ordinary attribute
    return value
