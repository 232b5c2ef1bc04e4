"""Print the README's quality table: every model's PSNR and LPIPS on image sets (clean and degraded)
and its per-frame and temporal scores (tOF, tLP) on a clip, each from `upscale eval --json`.

    upscale degrade-set ../shared/data/eval/Set5 degraded/Set5
    upscale degrade-set ../shared/data/eval/Set14 degraded/Set14
    python docs/make_quality_table.py --set ../shared/data/eval/Set5 --set ../shared/data/eval/Set14 \\
        --set degraded/Set5 --set degraded/Set14 \\
        --video ../shared/data/video/big_buck_bunny_432_433.webm --frames 24 --stabilized esrgan

Every figure is what `upscale eval --model ID --data SET` (or `--video CLIP --frames N`) prints, in
fp32 on torch, with LPIPS (its weights installed: `upscale weights install lpips`). The JSON of each run
is kept in --out so the table can be printed again without measuring.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from upscaler.models import list_models


def measure(model: str | None, target: list[str], out: Path, threads: int | None) -> dict:
    name = (
        (model or "bicubic")
        + "__"
        + Path(target[1]).stem
        + ("__stabilize" if "--stabilize" in target else "")
    )
    path = out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    command = [
        sys.executable,
        "-c",
        "from upscaler.cli import main; main()",
        "eval",
        *target,
        "--json",
        "--no-progress",
        "--lpips",
    ]
    command += (
        ["--bicubic-only"]
        if model is None
        else ["--model", model, "--backend", "torch", "--precision", "fp32"]
    )
    command += ["--threads", str(threads)] if threads and model is not None else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(result.stdout)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], help="an image set (repeatable)")
    parser.add_argument("--video", help="a high-resolution clip (ground truth)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--model", action="append", help="model ids (default: every bundled one)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/quality"), help="where each run's JSON is kept"
    )
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--stabilized",
        action="append",
        default=[],
        help="a model to measure on the clip with --stabilize too",
    )
    args = parser.parse_args()
    models = args.model or [entry.id for entry in list_models() if entry.weights_present]
    header = ["model"]
    for folder in args.set:
        header += [f"{Path(folder).name} PSNR", f"{Path(folder).name} LPIPS"]
    if args.video:
        header += ["clip PSNR", "clip LPIPS", "tOF", "tLP"]
    rows = []
    for model in [None, *models]:
        row = [model or "bicubic"]
        for folder in args.set:
            document = measure(model, ["--data", folder], args.out, args.threads)
            prefix = "bicubic_" if model is None else ""
            mean = document["mean"]
            row += [f"{mean[f'{prefix}psnr']:.2f}", f"{mean[f'{prefix}lpips']:.4f}"]
        if args.video:
            document = measure(
                model, ["--video", args.video, "--frames", str(args.frames)], args.out, args.threads
            )
            prefix = "bicubic_" if model is None else ""
            row += [
                f"{document[f'{prefix}{key}']:.{digits}f}"
                for key, digits in (("psnr", 2), ("lpips", 4), ("tof", 3), ("tlp", 4))
            ]
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)
    for model in args.stabilized if args.video else []:
        target = ["--video", args.video, "--frames", str(args.frames), "--stabilize"]
        document = measure(model, target, args.out, args.threads)
        row = [f"{model} --stabilize"] + ["-", "-"] * len(args.set)
        row += [
            f"{document[key]:.{digits}f}"
            for key, digits in (("psnr", 2), ("lpips", 4), ("tof", 3), ("tlp", 4))
        ]
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
