"""Make docs/real-video.png: crops of real clips upscaled x4 as they are (no ground truth exists), by
bicubic and each model side by side: what a model does with the blocking, ringing and noise that real
footage carries.

    python docs/make_video_comparison.py --data ../shared/data/video --model esrgan --model realvideo

Each frame is decoded at its own resolution and upscaled whole (torch, fp32, on the CPU); a crop is
shown at x4 with nearest-neighbour pixels, so what is seen is the model's output, not a viewer's
smoothing. The clips: `fixture.3gp` (H.263, MIT, sindresorhus/file-type), `test.avi` (MPEG-4 ASP,
Apache-2.0, open-mmlab/mmaction2) and the bundled Big Buck Bunny sample (H.264, CC-BY 3.0, Blender
Foundation); see examples/ATTRIBUTION.md and ../shared/data/MANIFEST.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np

from upscaler.options import BackendOptions, TileOptions
from upscaler.quality.metrics import to_uint8
from upscaler.quality.resampling import bicubic_resize
from upscaler.upscaling import open_upscaler

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# (clip, folder: "data" or "examples", frame number, left, top, side) in the clip's own pixels
CROPS = (
    ("fixture.3gp", "data", 10, 110, 70, 72),
    ("test.avi", "data", 10, 170, 20, 72),
    ("big_buck_bunny_320x180.mp4", "examples", 20, 124, 60, 72),
)
LABEL_HEIGHT = 26


def read_frame(path: Path, number: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == number:
                return frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    raise SystemExit(f"{path} has fewer than {number + 1} frames")


def panel(image: np.ndarray, crop: tuple[int, int, int], title: str) -> np.ndarray:
    left, top, side = (value * 4 for value in crop)
    piece = to_uint8(image[top : top + side, left : left + side])[:, :, ::-1]
    label = np.full((LABEL_HEIGHT, piece.shape[1], 3), 255, np.uint8)
    cv2.putText(label, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([piece, label])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="../shared/data/video")
    parser.add_argument("--model", action="append", required=True, help="a model id or weights file")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "real-video.png")
    args = parser.parse_args()
    frames = {
        clip: read_frame((args.data if where == "data" else EXAMPLES) / clip, number)
        for clip, where, number, *_ in CROPS
    }
    outputs = {"bicubic": {}}
    for clip, frame in frames.items():
        height, width = frame.shape[:2]
        outputs["bicubic"][clip] = bicubic_resize(frame, width * 4, height * 4)
    for model in args.model:
        with open_upscaler(model, "torch", BackendOptions(device="cpu"), TileOptions()) as upscaler:
            title = Path(model).stem if Path(model).suffix else model
            outputs[title] = {clip: upscaler.upscale(frame) for clip, frame in frames.items()}
    rows = []
    for clip, _where, number, left, top, side in CROPS:
        panels = [
            panel(
                by_clip[clip],
                (left, top, side),
                f"{method}  ({clip} #{number})" if method == "bicubic" else method,
            )
            for method, by_clip in outputs.items()
        ]
        gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.hstack([part for piece in panels for part in (piece, gap)][:-1]))
    spacer = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    figure = np.vstack([part for row in rows for part in (row, spacer)][:-1])
    if not cv2.imwrite(str(args.out), figure):
        raise SystemExit(f"cannot write {args.out}")
    print(args.out)


if __name__ == "__main__":
    main()
