"""ONNX export of any registered architecture, and the cache of exported graphs.

The graph takes `input` (N x C x H x W float32 in [0, 1]) and gives `output` (N x C x H*s x W*s
float32); batch, height and width are dynamic. Opset 17 (`OPSET`): ONNX Runtime has run it since 1.13
and TensorRT's ONNX parser since 8.6, and it holds every operator these networks need (Conv, PRelu,
LeakyRelu, Resize, DepthToSpace, Concat).

Exporter: torch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`). Since torch 2.9 the
default is the torch.export-based exporter, which needs the `onnxscript` package (not a dependency
here, and not installed by `.[onnx]`); the TorchScript exporter needs only torch and `onnx`, works
offline, and exports all four architectures with dynamic axes to within 1e-6 of PyTorch. It is
deprecated; when torch removes it, this is the one function to move to `dynamo=True`.

The model's metadata (`metadata_props`) records the architecture, scale, weights digest, config,
precision and the layers kept in fp32, so an exported file says what it is.

fp16 variant (for TensorRT's strongly typed networks, and ONNX Runtime on CUDA): the network runs in
fp16 with fp32 input and output (casts at both ends), and layers whose activations come near fp16's
range on a calibration batch stay in fp32 (`find_fp16_overflows`). Precision lives in the graph, so a
strongly typed TensorRT build uses exactly these types. There is no bf16 variant: ONNX allows bf16
convolutions only from opset 22, and the TorchScript exporter writes at most opset 20.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from upscaler.errors import BackendError, ModelError, OutputError, UpscaleError
from upscaler.system.files import write_atomically, write_bytes_atomically
from upscaler.system.places import cache_dir
from upscaler.values import Precision

T = TypeVar("T")

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from upscaler.models import LoadedModel

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Bumped whenever the exported graph changes for the same weights, so that cached exports are redone.
EXPORT_FORMAT = 2
# Largest activation a layer may reach on the calibration batch and still run in fp16. fp16 ends at
# 65504; a quarter of that leaves room for inputs busier than the calibration noise.
FP16_SAFE_LIMIT = 16384.0
ONNX_MISSING = "onnx is not installed: pip install 'upscaler[onnx]'"


@dataclass(frozen=True)
class OnnxExport:
    """An exported graph: where it is, its precision and the layers kept in fp32 (fp16 only)."""

    path: Path
    precision: Precision
    opset: int
    fp32_layers: tuple[str, ...]


def default_cache_dir() -> Path:
    """Where exported graphs and engines are kept (`upscaler.system.places.cache_dir`)."""
    return cache_dir()


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise BackendError(ONNX_MISSING) from None
    return onnx


def _mixed_precision(module: nn.Module, fp32_layers: Sequence[str]) -> nn.Module:
    """`module` in fp16 with fp32 input and output, and the named layers still in fp32."""
    from torch import nn

    class KeepFloat(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.float()).half()

    class HalfInside(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    half = copy.deepcopy(module).half()
    for name in fp32_layers:
        parent_name, _, leaf = name.rpartition(".")
        parent = half.get_submodule(parent_name) if parent_name else half
        original = copy.deepcopy(module.get_submodule(name)).float()
        setattr(parent, leaf, KeepFloat(original))
    return HalfInside(half).eval()


def calibration_batch(model: LoadedModel, size: int = 64) -> np.ndarray:
    """A fixed 1 x C x size x size batch: uniform noise, busier than photographs, so activations run high."""
    import numpy as np

    side = model.info.requirement.padded(size)
    return np.random.default_rng(0).random((1, model.info.in_channels, side, side), dtype=np.float32)


def find_fp16_overflows(
    model: LoadedModel, batch: np.ndarray | None = None, limit: float = FP16_SAFE_LIMIT
) -> list[str]:
    """The layers (modules without children) whose output on `batch` exceeds `limit` in magnitude.

    Those run in fp32 in the fp16 graph. A layer whose output itself passes 65504 overflows when it
    is cast back to fp16 all the same; the TensorRT backend checks the first batch's output for that
    and falls back to fp32.
    """
    import torch

    batch = calibration_batch(model) if batch is None else batch
    peaks: dict[str, float] = {}
    handles = []

    def record(name: str):
        def hook(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                peaks[name] = max(peaks.get(name, 0.0), float(output.detach().abs().max()))

        return hook

    for name, module in model.module.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(record(name)))
    try:
        with torch.inference_mode():
            model.module(torch.from_numpy(batch))
    finally:
        for handle in handles:
            handle.remove()
    # named_modules order is definition order, which is what a reader of the metadata expects
    return [name for name, _ in model.module.named_modules() if peaks.get(name, 0.0) > limit]


def export_onnx(
    model: LoadedModel,
    path: str | Path,
    precision: Precision = Precision.FP32,
    fp32_layers: Sequence[str] | None = None,
    form: str | None = None,
) -> OnnxExport:
    """Export `model` to an ONNX file at `path` (written atomically) and check it with onnx.checker.

    precision: FP32, or FP16 (fp32 input/output; `fp32_layers` kept in fp32, by default the ones
    `find_fp16_overflows` finds). BF16 is refused (see the module docstring). form: one of the
    architecture's `forms` (the same function computed another way, which some runtime runs faster);
    an architecture without that form is exported as it is.
    """
    import torch

    onnx = _import_onnx()
    path = Path(path)
    if precision is Precision.BF16:
        raise UpscaleError(
            "ONNX export: bf16 is not supported (ONNX has bf16 convolutions only from opset 22, and "
            "torch's TorchScript exporter writes at most opset 20)",
            hint="export fp32 or fp16",
        )
    if precision is Precision.FP16:
        layers = tuple(find_fp16_overflows(model) if fp32_layers is None else fp32_layers)
        network = _mixed_precision(model.module, layers)
    else:
        layers = ()
        network = copy.deepcopy(model.module).float().eval()
    form = _known_form(model, form)
    if form is not None:
        from upscaler.models import get_architecture

        network = get_architecture(model.info.arch).forms[form](network)
    side = model.info.requirement.padded(32)
    example = torch.rand(1, model.info.in_channels, side, side)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with write_atomically(path) as temporary:
        try:
            with warnings.catch_warnings():
                # the TorchScript exporter warns that it is deprecated; the module docstring says why
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    network,
                    (example,),
                    temporary,
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={
                        INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                        OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
                    },
                    do_constant_folding=True,
                )
            proto = onnx.load(temporary)
            metadata = {
                "model": model.name,
                "arch": model.info.arch,
                "scale": str(model.info.scale),
                "weights_digest": model.digest,
                "config": json.dumps(model.info.config, sort_keys=True),
                "multiple_of": str(model.info.requirement.multiple_of),
                "precision": precision.value,
                "fp32_layers": ",".join(layers),
                "form": form or "",
                "export_format": str(EXPORT_FORMAT),
                "exporter": f"torch {torch.__version__} (TorchScript exporter)",
            }
            del proto.metadata_props[:]
            for key, value in metadata.items():
                proto.metadata_props.add(key=key, value=value)
            proto.doc_string = (
                f"upscale: {model.name} ({model.info.arch}, x{model.info.scale}), {precision.value}; "
                f"input N x {model.info.in_channels} x H x W in [0, 1]"
            )
            onnx.checker.check_model(proto, full_check=True)
            onnx.save(proto, temporary)
        except onnx.checker.ValidationError as exc:
            raise ModelError(f"ONNX export of {model.name}: the exported graph is invalid: {exc}") from exc
    return OnnxExport(path=path, precision=precision, opset=OPSET, fp32_layers=layers)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (without loading its weights)."""
    onnx = _import_onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError for a damaged file
        raise ModelError(f"cannot read ONNX file {path}: {exc}") from exc
    return {prop.key: prop.value for prop in proto.metadata_props}


def cached_onnx(
    model: LoadedModel, precision: Precision, cache_dir: Path | None = None, form: str | None = None
) -> OnnxExport:
    """The exported graph of `model` in `precision` (and `form`, see `export_onnx`), exported once per
    weights digest and reused.

    Kept under `<cache>/onnx/`; a file whose metadata does not match (another export format, a
    damaged file) is exported again. An architecture without `form` shares the plain export.
    """
    folder = (cache_dir or default_cache_dir()) / "onnx"
    form = _known_form(model, form)
    suffix = f"-{form}" if form else ""
    path = folder / (
        f"{model.digest}-{model.info.arch}-x{model.info.scale}-{precision.value}{suffix}-opset{OPSET}.onnx"
    )
    if path.is_file():
        try:
            metadata = _cached_metadata(path)
        except ModelError:
            metadata = {}
        if (
            metadata.get("weights_digest") == model.digest
            and metadata.get("export_format") == str(EXPORT_FORMAT)
            and metadata.get("precision") == precision.value
            and metadata.get("form", "") == (form or "")
        ):
            layers = tuple(filter(None, metadata.get("fp32_layers", "").split(",")))
            return OnnxExport(path=path, precision=precision, opset=OPSET, fp32_layers=layers)
    return export_onnx(model, path, precision, form=form)


def _cached_metadata(path: Path) -> dict[str, str]:
    """`read_onnx_metadata(path)`, kept beside the file (`NAME.onnx.json`, with the file's size and
    time) so that a run on a cached graph need not import onnx (0.6 s here) to check it."""
    sidecar = path.with_name(path.name + ".json")
    try:
        stat = path.stat()
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        if data["size"] == stat.st_size and data["mtime_ns"] == stat.st_mtime_ns:
            return {str(key): str(value) for key, value in data["metadata"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    metadata = read_onnx_metadata(path)
    try:
        stat = path.stat()
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "metadata": metadata}
        write_bytes_atomically(sidecar, json.dumps(record).encode())
    except (OSError, UpscaleError):
        pass  # no sidecar costs the next run the onnx import, nothing more
    return metadata


def load_cached(
    export: OnnxExport,
    load: Callable[[Path], T],
    rebuild: Callable[[], OnnxExport],
    runtime: str,
) -> tuple[T, OnnxExport]:
    """`load(export.path)`, and where the runtime cannot load the cached graph (damaged or cut on the
    disk), the graph made again once and loaded; a BackendError naming the file when that fails too."""
    try:
        return load(export.path), export
    except Exception:  # each runtime raises its own types for a graph it cannot read
        export.path.unlink(missing_ok=True)
    fresh = rebuild()
    try:
        return load(fresh.path), fresh
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BackendError(
            f"{runtime} cannot load the exported graph {fresh.path.name}: {first}",
            hint=f"delete {fresh.path} (the cache, see the README) and run again; report it if it persists",
        ) from exc


def _known_form(model: LoadedModel, form: str | None) -> str | None:
    """`form` where the model's architecture has it, else None (the plain export)."""
    from upscaler.models.catalog import EXPORT_FORMS

    return form if form in EXPORT_FORMS.get(model.info.arch, ()) else None


def compare_with_torch(model: LoadedModel, path: str | Path, batch: np.ndarray) -> float:
    """Largest absolute difference between the ONNX file (ONNX Runtime, CPU) and PyTorch on `batch`."""
    import numpy as np
    import torch

    from upscaler.system.runtimes import import_onnxruntime

    try:
        onnxruntime = import_onnxruntime()
    except ImportError:
        raise BackendError("onnxruntime is not installed: pip install 'upscaler[onnx]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
    with torch.inference_mode():
        expected = model.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
    if got.shape != expected.shape:
        raise ModelError(f"the ONNX graph gave shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got.astype(np.float32) - expected).max())
