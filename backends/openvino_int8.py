"""int8 for the OpenVINO backend: the exported graph quantized after training by NNCF, once per weights.

NNCF inserts quantize/dequantize pairs around the convolutions and sets their ranges from the
activations it sees on the calibration crops (`upscaler/weights/calibration.npz`: 16 crops of the
bundled sample, see CALIBRATION.md), the same crops every time, so one set of weights always gives the
same int8 model. The quantized graph is saved as OpenVINO IR beside the ONNX cache, and compiled from
there on later runs: the calibration (tens of seconds for RRDBNet) happens once. The CPU plugin runs
the int8 convolutions with VNNI where the CPU has it; what is left unquantized runs in fp32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from upscaler.errors import BackendError
from upscaler.export import OnnxExport
from upscaler.models.catalog import WEIGHTS_DIR
from upscaler.system.runtimes import import_nncf, import_openvino

if TYPE_CHECKING:
    from upscaler.models import LoadedModel

CALIBRATION = WEIGHTS_DIR / "calibration.npz"
# Part of the cache name: a change to the calibration or to how NNCF is called makes a new model.
RECIPE = "nncf-mixed-minmax-v1"
NNCF_HINT = 'int8 needs NNCF: pip install "upscaler[int8]" (or pip install nncf)'


def calibration_batches(in_channels: int = 3) -> list[np.ndarray]:
    """The calibration crops as 1 x C x H x W float32 batches in [0, 1] (gray models take their mean)."""
    try:
        with np.load(CALIBRATION) as data:
            crops = data["crops"]
    except (OSError, KeyError, ValueError) as error:
        raise BackendError(f"int8: cannot read the calibration crops {CALIBRATION}: {error}") from None
    batches = []
    for crop in crops:
        chw = crop.astype(np.float32).transpose(2, 0, 1) / 255
        if in_channels == 1:
            chw = chw.mean(axis=0, keepdims=True)
        batches.append(np.ascontiguousarray(chw[None]))
    return batches


def quantized_ir(core: Any, export: OnnxExport, model: LoadedModel, cache_dir: Path) -> Path:
    """The int8 IR (.xml, with its .bin) of `model`, made from `export` on first use and kept."""
    folder = cache_dir / "openvino-int8"
    name = f"{model.digest}-{model.info.arch}-x{model.info.scale}-{export.path.stem}-{RECIPE}"
    xml = folder / f"{name}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    try:
        nncf = import_nncf()
    except ImportError:
        raise BackendError("--precision int8: NNCF is not installed", hint=NNCF_HINT) from None
    ov = import_openvino()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    batches = calibration_batches(model.info.in_channels)
    graph = core.read_model(str(export.path))
    # The activations' ranges are their whole min-max over the crops: NNCF's default estimator clips
    # the extremes, which an image-to-image network cannot afford (compact lost 1.70 dB on Set5 with
    # it, 0.034 with min-max). MIXED (asymmetric activations) then lost 0.020 dB against PERFORMANCE's
    # 0.034 (esrgan 0.074 against 0.115), at the same speed (compact 0.116 s a 320x180 frame).
    # NNCF draws progress bars and logs at INFO: a library keeps quiet (the CLI says what it runs).
    quiet = io.StringIO()
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            quantized = nncf.quantize(
                graph,
                nncf.Dataset(batches),
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(batches),
                advanced_parameters=AdvancedQuantizationParameters(
                    activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
                ),
            )
    except Exception as error:  # NNCF's own errors have no common base
        raise BackendError(f"--precision int8: NNCF could not quantize {model.name}: {error}") from error
    finally:
        logger.setLevel(level)
    # Saved into a folder of its own, then moved into place: a run killed meanwhile leaves no half model.
    staging = folder / f".{name}.{secrets.token_hex(4)}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        ov.save_model(quantized, str(staging / xml.name), compress_to_fp16=False)
        (staging / xml.with_suffix(".bin").name).replace(xml.with_suffix(".bin"))
        (staging / xml.name).replace(xml)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return xml
