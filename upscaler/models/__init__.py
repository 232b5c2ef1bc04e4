"""The networks `upscale` runs, the registry that recognises their weights, and loading them.

Imports torch, numpy and safetensors; never PyAV, click, backends or train.
"""

from upscaler.models.catalog import MODELS, ModelEntry, find_model, list_models
from upscaler.models.compact import SRVGGNetCompact
from upscaler.models.loading import (
    LoadedModel,
    ModelInfo,
    load_model,
    normalize_state_dict,
    read_weights,
    save_weights,
)
from upscaler.models.registry import (
    ARCHITECTURES,
    Architecture,
    build_model,
    detect_architecture,
    get_architecture,
)
from upscaler.models.rrdbnet import RRDBNet, convert_esrgan_state_dict, convert_mmsr_state_dict
from upscaler.models.srresnet import MSRResNet, SRResNet, SRResNetInference, fold_batch_norm

__all__ = [
    "ARCHITECTURES",
    "MODELS",
    "Architecture",
    "LoadedModel",
    "MSRResNet",
    "ModelEntry",
    "ModelInfo",
    "RRDBNet",
    "SRResNet",
    "SRVGGNetCompact",
    "build_model",
    "convert_esrgan_state_dict",
    "convert_mmsr_state_dict",
    "detect_architecture",
    "find_model",
    "SRResNetInference",
    "fold_batch_norm",
    "get_architecture",
    "list_models",
    "load_model",
    "normalize_state_dict",
    "read_weights",
    "save_weights",
]
