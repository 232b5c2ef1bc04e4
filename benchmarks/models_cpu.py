"""Seconds per frame of each architecture through the whole `Upscaler` (tiling + torch backend).

Random weights: speed does not depend on the values. Prints one line per case: median and spread of
`--runs` timed frames after one warm-up frame.

    .venv/bin/python benchmarks/models_cpu.py [--size 320x180] [--runs 3] [--precision fp32 bf16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from upscaler.models import build_model, load_model, save_weights
from upscaler.options import BackendOptions, TileOptions
from upscaler.upscaling import open_upscaler
from upscaler.values import Precision

CASES = {
    "compact-16": ("compact", {"num_feat": 64, "num_conv": 16, "upscale": 4}),
    "srresnet-16": ("srresnet", {"num_feat": 64, "num_block": 16, "scale": 4}),
    "rrdbnet-6": ("rrdbnet", {"num_feat": 64, "num_block": 6, "num_grow_ch": 32, "scale": 4}),
    "rrdbnet-23": ("rrdbnet", {"num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x180", help="input frame WxH")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--tile-size", default="auto", help="auto or a tile side in pixels")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    tile = None if args.tile_size == "auto" else int(args.tile_size)
    frame = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"frame {width}x{height}, tile {args.tile_size}"
    )
    print(f"{'model':<12} {'precision':<9} {'s/frame':>8} {'spread':>15} {'out Mpx/s':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.cases:
            arch, config = CASES[name]
            torch.manual_seed(0)
            path = save_weights(
                build_model(arch, config), Path(scratch) / f"{name}.safetensors", arch, config
            )
            model = load_model(path)
            for precision in args.precision:
                options = BackendOptions(device="cpu", precision=Precision(precision))
                with open_upscaler(model, "torch", options, TileOptions(tile_size=tile)) as upscaler:
                    upscaler.upscale(frame)
                    times = []
                    for _ in range(args.runs):
                        start = time.perf_counter()
                        out = upscaler.upscale(frame)
                        times.append(time.perf_counter() - start)
                median = statistics.median(times)
                spread = f"{min(times):.2f}-{max(times):.2f}"
                mpx = out.shape[0] * out.shape[1] / median / 1e6
                print(f"{name:<12} {precision:<9} {median:8.2f} {spread:>15} {mpx:9.2f}", flush=True)


if __name__ == "__main__":
    main()
