"""`upscale video` with its defaults against a plain fp32 PyTorch loop, on the same clip and weights.

The plain loop is what common scripts do: PyAV decodes a frame, it becomes a float32 NCHW tensor, the
model runs on it whole in fp32 (torch's default threads, NCHW, no tiling), the result is rounded to
8 bits and PyAV encodes it with libx264 (CRF 18, preset medium, yuv420p), one frame after another in
one thread. Both are whole processes, run in turn (plain, upscale, plain, upscale, ...), timed from
the start of the process to its end; the ratio is taken pair by pair and its median printed. Also the
time to the first upscaled frame (the plain loop's first encoded frame; upscale's first JSON progress
line with a frame done), and `upscale images` on a single 256x256 image (whole process).

    .venv/bin/python benchmarks/defaults_vs_plain.py [--model compact] [--repeat 3] [--clip FILE]
    .venv/bin/python benchmarks/defaults_vs_plain.py --plain MODEL IN OUT    # the plain loop alone
    .venv/bin/python benchmarks/defaults_vs_plain.py --tree /tmp/old    # upscale of another checkout

`--tree` runs `upscale` (and loads the plain loop's weights) from another checkout of the project (a
`git worktree` of an older commit), to measure defaults before and after a change on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "big_buck_bunny_320x180.mp4"
UPSCALE = [str(Path(sys.executable).with_name("upscale"))]


def upscale_command(tree: Path | None) -> list[str]:
    if tree is None:
        return UPSCALE
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from upscaler.cli import main; main()"
    return [sys.executable, "-c", code]


def plain_loop(model_name: str, source: str, destination: str) -> None:
    """The plain per-frame loop; prints `first-frame SECONDS` after the first frame is encoded."""
    started = time.perf_counter()
    import av
    import torch

    from upscaler.models import load_model

    model = load_model(model_name).module.eval()
    with av.open(source) as src, av.open(destination, "w") as dst:
        in_stream = src.streams.video[0]
        stream = dst.add_stream("libx264", rate=in_stream.average_rate)
        stream.options = {"crf": "18", "preset": "medium"}
        stream.pix_fmt = "yuv420p"
        first = True
        for frame in src.decode(in_stream):
            rgb = frame.to_ndarray(format="rgb24")
            tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unsqueeze(0)
            with torch.no_grad():
                out = model(tensor)
            pixels = out.squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).contiguous().numpy()
            if first:
                stream.width, stream.height = pixels.shape[1], pixels.shape[0]
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            if first:
                print(f"first-frame {time.perf_counter() - started:.3f}", flush=True)
                first = False
        dst.mux(stream.encode(None))


def timed(command: list[str], first_marker) -> tuple[float, float | None]:
    """(whole-process seconds, seconds to the first frame as `first_marker` finds it in stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    for line in process.stdout:
        if first is None and first_marker(line):
            first = time.perf_counter() - started
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - started, first


def _upscale_first(line: str) -> bool:
    if not line.startswith("{"):
        return False
    event = json.loads(line)
    return event.get("event") == "progress" and event.get("frames", 0) >= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", nargs=3, metavar=("MODEL", "IN", "OUT"))
    parser.add_argument("--tree", type=Path, help="run upscale from this checkout")
    parser.add_argument("--model", default="compact")
    parser.add_argument("--clip", type=Path, default=SAMPLE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--extra", default="", help="more `upscale video` options, e.g. '--precision fp32'")
    args = parser.parse_args()
    if args.plain:
        if args.tree is not None:
            sys.path.insert(0, str(args.tree))
        plain_loop(*args.plain)
        return
    global UPSCALE
    UPSCALE = upscale_command(args.tree)
    folder = Path(tempfile.mkdtemp(prefix="defaults-bench-"))
    plain = [sys.executable, __file__, "--plain", args.model, str(args.clip), str(folder / "plain.mp4")]
    plain += ["--tree", str(args.tree)] if args.tree else []
    ours = [*UPSCALE, "video", str(args.clip), str(folder / "ours.mp4"), "--model", args.model, "--overwrite",
            "--progress", "json", *args.extra.split()]  # fmt: skip
    import av

    with av.open(str(args.clip)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    extra = args.extra or "defaults"
    print(f"clip {args.clip.name}: {frames} frames; model {args.model}; upscale options: {extra}")
    print(f"cores: {os.cpu_count()}; first run of each untimed (caches, page cache)")
    timed(plain, lambda line: False)
    timed(ours, lambda line: False)
    rows = []
    for _ in range(args.repeat):
        plain_s, plain_first = timed(plain, lambda line: line.startswith("first-frame"))
        ours_s, ours_first = timed(ours, _upscale_first)
        rows.append((plain_s, ours_s, plain_first, ours_first))
        print(f"plain {plain_s:.2f} s (first frame {plain_first:.2f} s); upscale {ours_s:.2f} s "
              f"(first frame {ours_first:.2f} s); ratio {plain_s / ours_s:.2f}x")  # fmt: skip
    median = statistics.median
    plain_s, ours_s = median(r[0] for r in rows), median(r[1] for r in rows)
    print(f"median: plain {frames / plain_s:.2f} fps, upscale {frames / ours_s:.2f} fps; "
          f"ratio (pair by pair) {median(r[0] / r[1] for r in rows):.2f}x; "
          f"first frame {median(r[2] for r in rows):.2f} s against "
          f"{median(r[3] for r in rows):.2f} s")  # fmt: skip

    import cv2
    import numpy as np

    image = folder / "one.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    command = [*UPSCALE, "images", str(image), "-o", str(folder / "one-x4.png"), "--model", args.model,
               "--overwrite", "--no-progress", *args.extra.split()]  # fmt: skip
    timed(command, lambda line: False)
    seconds = [timed(command, lambda line: False)[0] for _ in range(args.repeat)]
    print(f"upscale images, one 256x256 image: {median(seconds):.2f} s whole process "
          f"({' '.join(f'{s:.2f}' for s in seconds)})")  # fmt: skip


if __name__ == "__main__":
    main()
