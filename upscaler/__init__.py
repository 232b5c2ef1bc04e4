"""upscale: super-resolve videos and folders of images with GAN generators.

`upscaler.open_model(...)` is the Python API (see `upscaler.api`); it is imported on first use, so
`import upscaler` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Model", "open_model", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("open_model", "Model"):
        from upscaler import api

        return getattr(api, name)
    raise AttributeError(f"module 'upscaler' has no attribute {name!r}")
