"""Run from upscale's own suite (testpaths) without installing the plugin: its module is importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
