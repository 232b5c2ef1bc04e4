"""Seconds per frame, peak memory and kernel time of `Upscaler.upscale_stream` by tile plan, CPU.

    .venv/bin/python benchmarks/tiles_cpu.py [--model compact] [--size 1280x720] [--frames 3]
        [--backend torch] [--tiles auto 330]

Each `--tiles` value (`auto`, or a square side in input pixels) runs in a process of its own, so that
its peak RSS (from the kernel) is its own: random frames (speed does not depend on the pixels), the
model's bundled weights, 2 threads, one tile per batch, malloc tuned as the commands tune it. Prints
the tile the plan chose, each frame's seconds (the first includes the heap's growth), and the user and
system CPU time of the frames: system time is the kernel faulting in activations that malloc gave back.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np


def run_one(model: str, backend: str, width: int, height: int, frames: int, tile: str) -> None:
    from upscaler.system.allocator import keep_freed_memory

    keep_freed_memory()
    from upscaler.options import BackendOptions, TileOptions
    from upscaler.upscaling import open_upscaler
    from upscaler.values import Precision

    options = BackendOptions(device="cpu", precision=Precision.FP32, threads=2)
    tiles = TileOptions(tile_size=None if tile == "auto" else int(tile), batch_size=1)
    rng = np.random.default_rng(0)
    pictures = [(n, rng.random((height, width, 3), dtype=np.float32)) for n in range(frames)]
    with open_upscaler(model, backend, options, tiles) as upscaler:
        before = resource.getrusage(resource.RUSAGE_SELF)
        seconds = []
        started = time.perf_counter()
        for _ in upscaler.upscale_stream(pictures):
            now = time.perf_counter()
            seconds.append(now - started)
            started = now
        after = resource.getrusage(resource.RUSAGE_SELF)
        shape = upscaler.tiler.tile_shape
    each = " ".join(f"{s:.2f}" for s in seconds)
    print(
        f"{tile:>6} {str(shape):>12} {each:>22} {after.ru_maxrss / 1024:>9.0f} "
        f"{after.ru_utime - before.ru_utime:>7.1f} {after.ru_stime - before.ru_stime:>6.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="compact")
    parser.add_argument("--size", default="1280x720", help="input frame WxH")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--tiles", nargs="+", default=["auto", "330"], help="auto, or square sides")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's own setting
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.one is not None:
        run_one(args.model, args.backend, width, height, args.frames, args.one)
        return
    print(f"{args.model} on {args.backend}, {width}x{height} x{args.frames} frames, 2 threads, batch 1")
    print(f"{'tiles':>6} {'tile (h, w)':>12} {'s per frame':>22} {'peak MiB':>9} {'user s':>7} {'sys s':>6}")
    for tile in args.tiles:
        child = [sys.executable, __file__, "--model", args.model, "--size", args.size]
        child += ["--frames", str(args.frames), "--backend", args.backend, "--one", tile]
        subprocess.run(child, check=True)


if __name__ == "__main__":
    main()
