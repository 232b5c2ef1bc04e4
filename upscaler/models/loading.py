"""Read a weights file and build its network, and save weights so that they load again
(`upscaler.models.loaded.load_model` is the way in).

A weights file is `.safetensors` or a PyTorch checkpoint (`.pth`, `.pt`, `.ckpt`). Checkpoints are
read with `weights_only=True`: a file that would run code when unpickled is refused, never opened.
"""

from __future__ import annotations

import json
import pickletools
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from upscaler.errors import ModelError, OutputError
from upscaler.models.catalog import CHECKPOINT_SUFFIXES, SUFFIXES, ModelEntry
from upscaler.models.registry import (
    ARCHITECTURES,
    build_model,
    convert_state_dict,
    detect_architecture,
    get_architecture,
)
from upscaler.system.files import write_atomically

# Training frameworks wrap the weights; the averaged generator (BasicSR's `params_ema`, the EMA in a
# checkpoint of `upscale train`) is what a run means to be used, so it wins over the raw one.
_WRAPPERS = ("params_ema", "net_g_ema", "params", "net_g", "state_dict", "model")


def build_loaded(path: Path, name: str, entry: ModelEntry | None) -> tuple[nn.Module, dict[str, Any]]:
    """The network held by the weights file at `path` (resolved by `resolve_model_spec`), ready for
    inference, and the fields of its `upscaler.models.loaded.ModelInfo`, whose `load_model` calls this."""
    state, metadata = read_weights(path)
    arch_name, config = _identify(state, metadata, name)
    if entry is not None and arch_name != entry.arch:
        raise ModelError(
            f"the bundled weights for {entry.id!r} are a {arch_name!r} network, expected {entry.arch!r}"
        )
    architecture = get_architecture(arch_name)
    module = _build(arch_name, config, name)
    _fit(module, state, arch_name, config, name)
    module = architecture.inference(module).eval().requires_grad_(False)

    config = dict(module.config) if hasattr(module, "config") else dict(config)
    info = {
        "arch": arch_name,
        "scale": architecture.scale(config),
        "in_channels": int(config["num_in_ch"]),
        "out_channels": int(config["num_out_ch"]),
        "config": config,
        "requirement": architecture.requirement(config),
        "overlap": architecture.overlap(config),
        "bytes_per_pixel": architecture.bytes_per_pixel(config),
        "parameters": sum(parameter.numel() for parameter in module.parameters()),
    }
    return module, info


def read_weights(
    path: str | Path, suffix: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The float32 state dict in BasicSR keys held by a weights file, and its safetensors metadata.

    Wrappers (`params_ema`, `params`, `state_dict`, `model`, and `net_g_ema`/`net_g` of a checkpoint of
    `upscale train`) are unwrapped, a DataParallel `module.`
    prefix is dropped, and the older ESRGAN layouts are renamed. Training code uses this to start
    from published weights. `suffix` reads the file as that kind whatever its name says.
    """
    path = Path(path)
    suffix = (suffix or path.suffix).lower()
    metadata: dict[str, str] = {}
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                raw: Any = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own and OS errors alike for a bad file
            raise ModelError(
                f"cannot read weights file {path.name}: not a valid safetensors file ({exc})"
            ) from exc
    elif suffix in CHECKPOINT_SUFFIXES:
        raw = _read_checkpoint(path)
    else:
        raise ModelError(
            f"cannot read weights file {path.name}: unknown suffix {path.suffix!r}",
            hint="weights files end in " + ", ".join(SUFFIXES),
        )
    return normalize_state_dict(raw, path.name), metadata


def _read_checkpoint(path: Path) -> Any:
    return read_torch_file(path)


# Globals a tensors-only torch file may name (what torch.load(weights_only=True) admits for state dicts).
_SAFE_MODULES = ("torch", "collections", "_codecs", "numpy.core.multiarray", "numpy")


def read_torch_file(path: Path) -> Any:
    """A `torch.save` file's content, read with tensors and plain containers only (weights_only).

    A file that holds other pickled Python objects is refused in one line that names what it asks for,
    whether it is torch's zip format or a raw pickle of any protocol; torch's own text (which suggests
    weights_only=False, i.e. running the file's code) and its warnings never reach the user.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip, a truncated pickle, a refused global, an OS error
        refused = _refused_global(path, exc)
        if refused is not None:
            raise ModelError(
                f"refusing to load {path.name}: it holds pickled Python objects, not only tensors, and "
                f"unpickling them could run code (it asks for {refused})",
                hint="save only the state dict (torch.save(net.state_dict(), path)) or convert it to "
                ".safetensors where you trust the file",
            ) from None
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(
            f"cannot read weights file {path.name}: not a valid PyTorch checkpoint ({type(exc).__name__}"
            + (f": {reason[:120]}" if reason and "weights_only" not in reason else "")
            + ")"
        ) from None


def _refused_global(path: Path, error: BaseException) -> str | None:
    """The global a refused file asks for: from torch's message, else from the pickle's own opcodes."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found is not None:
        return found.group(1)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:1] != b"\x80":  # not a raw pickle (a zip holds its pickle inside; torch named that above)
        return None
    strings: list[str] = []
    try:
        for opcode, argument, _position in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings = [*strings[-1:], str(argument)]
                continue
            if opcode.name == "GLOBAL":
                name = str(argument).replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                name = ".".join(strings)
            else:
                continue
            if not name.startswith(_SAFE_MODULES):
                return name
    except Exception:  # a damaged pickle: whatever it asked for before the damage was named above
        return None
    return None


def normalize_state_dict(obj: Any, name: str = "weights") -> dict[str, torch.Tensor]:
    """A state dict as published (wrapped, prefixed, half precision, an older layout) in BasicSR keys."""
    while isinstance(obj, Mapping):
        wrapper = next((key for key in _WRAPPERS if isinstance(obj.get(key), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ModelError(f"{name}: holds a {type(obj).__name__}, not a state dict of tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            continue
        if value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
        state[key.removeprefix("module.")] = value
    if not state:
        raise ModelError(f"{name}: holds no tensors", hint="pass a file saved from a network's state_dict()")
    try:
        return convert_state_dict(state)
    except ModelError as exc:
        raise ModelError(f"{name}: {exc.message}", hint=exc.hint) from exc


def _identify(state: dict[str, torch.Tensor], metadata: Mapping[str, str], name: str) -> tuple[str, dict]:
    # Other tools write an "arch" of their own into safetensors metadata; only ours is trusted, and
    # anything else is recognised from the tensors like a file without metadata.
    if metadata.get("arch") in ARCHITECTURES and "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except ValueError as exc:
            raise ModelError(f"{name}: its metadata holds a config that is not JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ModelError(f"{name}: its metadata config is not a JSON object")
        return metadata["arch"], config
    try:
        found = detect_architecture(state)
    except ModelError as exc:
        raise ModelError(f"{name}: {exc.message}", hint=exc.hint) from exc
    if found is None:
        keys = list(state)
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise ModelError(
            f"{name}: unrecognised network: {len(keys)} tensors, starting with {shown}",
            hint="supported architectures: SRResNet, MSRResNet, RRDBNet (ESRGAN, Real-ESRGAN) and "
            "SRVGGNetCompact, in BasicSR, original-ESRGAN or mmsr key names",
        )
    return found


def _build(arch: str, config: Mapping[str, Any], name: str) -> nn.Module:
    try:
        return build_model(arch, config)
    except ModelError as exc:
        raise ModelError(f"{name}: {exc.message}", hint=exc.hint) from exc


def _describe_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    def some(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} is {tuple(state[key].shape)}, expected {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    parts = []
    if wrong:
        parts.append(f"wrong shapes: {some(wrong)}")
    if missing:
        parts.append(f"missing: {some(missing)}")
    if unexpected:
        parts.append(f"unexpected: {some(unexpected)}")
    return "; ".join(parts)


def _fit(module: nn.Module, state: dict[str, torch.Tensor], arch: str, config: Mapping, name: str) -> None:
    expected = module.state_dict()
    # a batch-norm counter that only matters while training; files from other tools may omit it
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    mismatch = _describe_mismatch(expected, state)
    if mismatch:
        raise ModelError(
            f"{name}: weights do not fit a {arch!r} network with config {dict(config)}: {mismatch}"
        )
    module.load_state_dict(state)


def save_weights(
    source: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    arch: str,
    config: Mapping[str, Any],
) -> Path:
    """Write `source`'s weights to a .safetensors file that records `arch` and `config`.

    The file appears whole or not at all (a temporary file is renamed over `path`). Raises ModelError
    if the weights do not fit `arch` with `config`, so a file written here always loads.
    """
    path = Path(path)
    state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    # safetensors refuses tensors that share memory, so each gets its own copy
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    with torch.device("meta"):
        expected = build_model(arch, config).state_dict()
    mismatch = _describe_mismatch(expected, tensors)
    if mismatch:
        raise ModelError(f"weights do not fit a {arch!r} network with config {dict(config)}: {mismatch}")

    metadata = {"format": "pt", "arch": arch, "config": json.dumps(dict(config), sort_keys=True)}
    try:
        with write_atomically(path) as temporary:
            save_file(tensors, temporary, metadata=metadata)
    except OutputError as exc:
        raise OutputError(f"cannot write weights to {path}: {exc.message.split(': ', 1)[-1]}") from exc
    return path
