"""Make `upscaler/weights/calibration.npz`: the frames int8 quantization is calibrated on.

    python docs/make_calibration.py

16 crops of 96x96 pixels, uint8 RGB, from the 24 frames of the bundled sample
(`examples/big_buck_bunny_320x180.mp4`, CC BY 3.0, Blender Foundation; see
upscaler/weights/CALIBRATION.md): four places a frame, on frames 0, 7, 14 and 21, so flat sky, fur,
grass and edges are all in it. Deterministic: the same file every time.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "big_buck_bunny_320x180.mp4"
OUT = ROOT / "upscaler" / "weights" / "calibration.npz"
SIDE = 96
FRAMES = (0, 7, 14, 21)
CORNERS = ((0, 0), (0, 224), (84, 40), (84, 180))  # (top, left) in a 180x320 frame


def main() -> None:
    with av.open(str(SAMPLE)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    crops = [frames[i][top : top + SIDE, left : left + SIDE] for i in FRAMES for top, left in CORNERS]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, crops=np.stack(crops))
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT}: {len(crops)} crops of {SIDE}x{SIDE}, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
