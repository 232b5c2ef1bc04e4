"""Inference runtimes imported without their telemetry: nothing `upscale` runs touches the network.

ONNX Runtime (1.29 and later, Linux and macOS) starts a telemetry uploader when it initialises, which
resolves `mobile.events.data.microsoft.com` a few seconds after `import onnxruntime`; its documented
opt-out is the environment variable `ORT_DISABLE_TELEMETRY=1`, read once, before initialisation.
`disable_telemetry_events()` comes too late for that first event.

OpenVINO's package imports its model converter (`openvino.tools.ovc`) for `openvino.convert_model`,
and importing the converter starts openvino-telemetry: a DNS lookup, an analytics POST and files under
~/intel. Its only opt-out is a consent file in the user's home, which is not ours to write. `upscale`
never calls the converter (OpenVINO reads our exported ONNX file itself), so the converter is kept from
importing while `openvino` itself is imported: OpenVINO catches that ImportError and goes on without
`convert_model`. A caller who imports the converter afterwards gets it as usual.

NNCF (int8 quantization) sends usage events through openvino-telemetry whenever that package imports,
unless it runs under NNCF's own CI or tests. `import_nncf()` keeps openvino-telemetry from importing
while NNCF is, so NNCF takes its no-telemetry stub.

`installed()` answers "could this run here" from the import system alone, so listing or choosing
backends imports no runtime at all.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

ORT_TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"
OPENVINO_CONVERTER = "openvino.tools.ovc"
OPENVINO_TELEMETRY = "openvino_telemetry"


def installed(module: str) -> bool:
    """Whether `module` (a top-level name) can be imported, found without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def import_onnxruntime() -> ModuleType:
    """`onnxruntime`, with its telemetry off (unless the user set ORT_DISABLE_TELEMETRY themselves)."""
    os.environ.setdefault(ORT_TELEMETRY_VARIABLE, "1")
    return importlib.import_module("onnxruntime")


def import_nncf() -> ModuleType:
    """`nncf`, with its telemetry stubbed (see the module's docstring). Raises ImportError without it."""
    if "nncf" in sys.modules:
        return sys.modules["nncf"]
    import_openvino()
    return _import_without("nncf", OPENVINO_TELEMETRY)


def _import_without(name: str, blocked_module: str) -> ModuleType:
    """Import `name` while `blocked_module` cannot be imported (its import raises ImportError)."""
    blocked = blocked_module not in sys.modules
    if blocked:
        sys.modules[blocked_module] = None  # type: ignore[assignment]
    try:
        return importlib.import_module(name)
    finally:
        if blocked and sys.modules.get(blocked_module, 0) is None:
            del sys.modules[blocked_module]


def import_openvino() -> ModuleType:
    """`openvino`, without the model converter whose import starts OpenVINO's telemetry."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    return _import_without("openvino", OPENVINO_CONVERTER)
