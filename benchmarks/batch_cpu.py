"""Seconds per frame of `Upscaler.upscale_stream` by tiles per batch: does batching pay on this machine?

    .venv/bin/python benchmarks/batch_cpu.py [--model compact] [--size 320x180] [--frames 8]
        [--backend torch] [--batches 1 4] [--rounds 2]

Random frames (speed does not depend on the pixels), the model's bundled weights, `--tile-size auto`;
each batch size opens its own session and runs 2 warm-up frames first. Rounds interleave the batch
sizes, so that a noisy machine hits them alike.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from upscaler.models import load_model
from upscaler.options import BackendOptions, TileOptions
from upscaler.system.allocator import keep_freed_memory
from upscaler.upscaling import open_upscaler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="compact")
    parser.add_argument("--size", default="320x180", help="input frame WxH")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    width, height = (int(v) for v in args.size.lower().split("x"))
    model = load_model(args.model)
    shape = (height, width, 3)
    frames = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(args.frames)]
    seconds: dict[int, list[float]] = {batch: [] for batch in args.batches}
    for _ in range(args.rounds):
        for batch in args.batches:
            tiles = TileOptions(batch_size=batch)
            with open_upscaler(model, args.backend, BackendOptions(device="cpu"), tiles) as upscaler:
                for _ in upscaler.upscale_stream(enumerate(frames[:2])):
                    pass
                started = time.perf_counter()
                for _ in upscaler.upscale_stream(enumerate(frames)):
                    pass
                seconds[batch].append((time.perf_counter() - started) / len(frames))
    print(f"{args.model} on {args.backend}, {args.frames} frames of {width}x{height}: seconds a frame")
    for batch, values in seconds.items():
        print(f"  batch {batch}: " + ", ".join(f"{value:.3f}" for value in values))


if __name__ == "__main__":
    main()
