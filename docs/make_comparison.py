"""Make docs/comparison.png: crops of Set14 images where texture matters, bicubic | each model | HR.

    python docs/make_comparison.py ../shared/data/eval/Set14

Each model upscales the set's own LR file (torch, fp32, on the CPU); bicubic is MATLAB's, as
`upscale eval` uses. A crop is shown at twice its size with nearest-neighbour pixels, so what is seen
is the model's output, not a viewer's smoothing; the figures under each crop are the PSNR (Y, 4-pixel
border) and, where its weights are installed, the LPIPS of the whole image, as `upscale eval` measures
them: a GAN model loses PSNR and gains LPIPS (lower is better) by drawing texture instead of blur.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from upscaler.models import list_models
from upscaler.options import BackendOptions, TileOptions
from upscaler.quality.metrics import psnr, to_uint8
from upscaler.quality.resampling import bicubic_resize
from upscaler.upscaling import open_upscaler

# (image, left, top, side) of each HR crop: the baboon's nose, the bridge's stonework and a zebra's stripes
CROPS = (("img_001", 180, 250, 112), ("img_003", 150, 260, 112), ("img_014", 250, 110, 112))
ZOOM = 2
LABEL_HEIGHT = 44


def _read(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return bgr[:, :, ::-1].astype(np.float32) / 255.0


def _panel(image: np.ndarray, crop: tuple[int, int, int], title: str, figure: str) -> np.ndarray:
    left, top, side = crop
    piece = to_uint8(image[top : top + side, left : left + side])[:, :, ::-1]
    piece = cv2.resize(piece, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)
    label = np.full((LABEL_HEIGHT, piece.shape[1], 3), 255, np.uint8)
    for row, text in ((18, title), (38, figure)):
        cv2.putText(label, text, (6, row), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([piece, label])


def _lpips():
    from upscaler.models.lpips import load_lpips, lpips_path

    return load_lpips() if lpips_path().is_file() else None


def make_comparison(data: Path, destination: Path, models: tuple[str, ...]) -> None:
    names = [name for name, *_ in CROPS]
    hr = {name: _read(data / "HR" / f"{name}_SRF_4_HR.png") for name in names}
    lr = {name: _read(data / "LR_x4" / f"{name}_SRF_4_LR.png") for name in names}
    results: dict[str, dict[str, np.ndarray]] = {"bicubic": {}}
    for name in names:
        height, width = lr[name].shape[:2]
        results["bicubic"][name] = bicubic_resize(lr[name], width * 4, height * 4)
    options = BackendOptions(device="cpu")
    for model in models:
        with open_upscaler(model, "torch", options, TileOptions()) as upscaler:
            title = Path(model).stem if Path(model).suffix else model
            results[title] = {name: upscaler.upscale(lr[name]) for name in names}

    lpips = _lpips()
    rows = []
    for name, left, top, side in CROPS:
        panels = []
        for method, outputs in results.items():
            sr8 = to_uint8(outputs[name])
            figure = f"{psnr(sr8, to_uint8(hr[name]), border=4):.2f} dB"
            if lpips is not None:
                hr8 = to_uint8(hr[name]).astype(np.float32) / 255
                figure += f"  {lpips.distance(sr8.astype(np.float32) / 255, hr8):.3f}"
            panels.append(_panel(outputs[name], (left, top, side), method, figure))
        key = "PSNR, LPIPS" if lpips is not None else "PSNR on Y"
        panels.append(_panel(hr[name], (left, top, side), f"HR ({name})", key))
        gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.hstack([part for panel in panels for part in (panel, gap)][:-1]))
    spacer = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    figure = np.vstack([part for row in rows for part in (row, spacer)][:-1])
    destination.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(destination), figure):
        raise SystemExit(f"cannot write {destination}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the Set14 folder (HR/ and LR_x4/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "comparison.png")
    parser.add_argument(
        "--model", action="append", help="a model id or weights file (repeatable; default: every bundled one)"
    )
    args = parser.parse_args()
    bundled = tuple(entry.id for entry in list_models() if entry.weights_present)
    make_comparison(args.data, args.out, tuple(args.model) if args.model else bundled)
    print(args.out)


if __name__ == "__main__":
    main()
