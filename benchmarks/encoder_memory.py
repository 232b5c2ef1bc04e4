"""Peak memory (RSS) and CPU time of the video encoder alone: what x264 holds and costs by itself.

    .venv/bin/python benchmarks/encoder_memory.py SOURCE [--preset medium] [--threads 0] [--frames 40]
        [--size 5120x2880] [--option rc-lookahead=10 ...]

`PartWriter` (the encode stage of `upscale video`) writes `--frames` 8-bit frames of `--size` with the
encoding `upscale video` would choose for an MP4 of SOURCE (its time base and colour), with the given
preset, encoder threads (0: FFmpeg's choice, one per core and more) and extra options. Prints the
process's peak RSS (which includes about 140 MiB of Python, numpy and the two input frames at 5K) and
the CPU time the encoding took, all threads, per frame. The
look-ahead that `upscale video` shortens for large frames is left as given here.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
from pathlib import Path

import cv2
import numpy as np

import upscaler.video.encode as encoding
from upscaler.system.allocator import keep_freed_memory
from upscaler.video.decode import decode_frames
from upscaler.video.probe import probe_video
from upscaler.video.writer import PartWriter, quantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a video whose time base and colour the output takes")
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", default="5120x2880")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for the encoder")
    parser.add_argument(
        "--content",
        choices=["source", "random"],
        default="source",
        help="SOURCE's first frames resized (x264's CPU time depends on it), or noise (the memory table)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as `upscale video` does
    width, height = (int(v) for v in args.size.lower().split("x"))
    source = probe_video(args.source)
    encoding.ENCODER_THREADS = args.threads
    options = tuple(tuple(option.split("=", 1)) for option in args.option)
    settings = encoding.EncodeSettings(preset=args.preset, options=options)
    chosen = encoding.resolve_encoding(Path("out.mp4"), source, settings)
    if args.content == "random":
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
    else:
        decoded = [frame.rgb for frame in itertools.islice(decode_frames(source), min(args.frames, 24))]
        frames = [quantize(cv2.resize(rgb, (width, height)), 8) for rgb in decoded]
    before = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as scratch:
        part = Path(scratch) / "part.nut"
        with PartWriter(part, source, chosen, width, height) as writer:
            for index in range(args.frames):
                writer.write(index, frames[index % len(frames)])
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    peak = after.ru_maxrss / 1024
    print(f"{chosen.describe()}, threads {args.threads or 'auto'}, {args.frames} frames of {width}x{height}")
    print(f"peak RSS {peak:.0f} MiB; CPU {cpu:.2f} s, {1000 * cpu / args.frames:.1f} ms a frame")


if __name__ == "__main__":
    main()
