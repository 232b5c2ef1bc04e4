"""Peak memory (RSS) of `upscale video` for a short and a long clip, side by side.

The pipeline holds a few frames in its queues and one part open at a time, so the peak should not grow
with the video's length. This makes two clips of the same frame size (default 10 s and 60 s at 24 fps,
H.264 + AAC), runs `upscale video` on each in its own process with a small compact model (random weights:
memory does not depend on the values) and prints each process's peak RSS from the kernel (wait4).

    .venv/bin/python benchmarks/video_memory.py [--size 160x90] [--seconds 10 60] [--threads 1]
    .venv/bin/python benchmarks/video_memory.py --model compact --size 1280x720 --seconds 0.5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from upscaler.models import build_model, save_weights

MODEL = ("compact", {"num_feat": 32, "num_conv": 8, "upscale": 4})
RATE = 24


def make_clip(path: Path, seconds: float, width: int, height: int) -> Path:
    """A moving gradient with a 440 Hz tone, every frame different."""
    frames = round(seconds * RATE)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        # Both streams exist before the first packet: the header is written then.
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index in range(frames):
            rgb = np.stack(
                [(x + index) % 256, (y + 2 * index) % 256, np.full_like(x, (index * 3) % 256)], axis=-1
            ).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, RATE)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        step = 1024
        for start in range(0, int(seconds * 48000), step):
            t = np.arange(start, start + step, dtype=np.float32) / 48000
            chunk = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            sound = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = 48000, start, Fraction(1, 48000)
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


def peak_rss(args: list[str]) -> tuple[float, float, int]:
    """Run `upscale` with `args` in a child process: (peak RSS in MiB, wall seconds, exit status)."""
    command = [sys.executable, "-c", "from upscaler.cli import main; main()", *args]
    started = time.monotonic()
    # A file, not a pipe, for stderr: nobody reads a pipe while we wait, and a full one would block.
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        seconds = time.monotonic() - started
        if code != 0:
            errors.seek(0)
            print(errors.read().decode(errors="replace"), file=sys.stderr)
    return usage.ru_maxrss / 1024, seconds, code  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160x90", help="input frame WxH")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    parser.add_argument("--preset", default="veryfast", help="x264 preset of the output")
    parser.add_argument("--model", help="a model id or weights file (default: a small random compact model)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        arch, config = MODEL
        torch.manual_seed(0)
        weights = save_weights(build_model(arch, config), folder / "model.safetensors", arch, config)
        described = f"{arch} x4 ({config['num_feat']} features, {config['num_conv']} convs)"
        if args.model:
            weights, described = args.model, f"model {args.model}"
        print(
            f"upscale video, {described}, "
            f"{width}x{height} -> {4 * width}x{4 * height}, {RATE} fps, libx264 {args.preset}, "
            f"{args.threads} thread(s)"
        )
        print(f"{'clip':>8} {'frames':>7} {'peak RSS MiB':>13} {'wall s':>8}")
        for seconds in args.seconds:
            clip = make_clip(folder / f"clip-{seconds:g}s.mp4", seconds, width, height)
            out = folder / f"out-{seconds:g}s.mp4"
            rss, wall, status = peak_rss(
                [
                    "video",
                    str(clip),
                    str(out),
                    "--model",
                    str(weights),
                    "--progress",
                    "none",
                    "--threads",
                    str(args.threads),
                    "--preset",
                    args.preset,
                ]  # fmt: skip
            )
            frames = round(seconds * RATE)
            outcome = "" if status == 0 else f"  (exit status {status})"
            print(f"{seconds:>7g}s {frames:>7} {rss:>13.1f} {wall:>8.1f}{outcome}")


if __name__ == "__main__":
    main()
