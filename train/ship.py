"""Turn a finished training run into a bundled model: `upscaler/weights/<id>.safetensors` and its card.

    python -m train.ship --run RUN_DIR --id compact \
        --eval ../shared/data/eval/Set5 --eval ../shared/data/eval/Set14

A maintainer's step, not a user command. The run's generator is measured with `upscale eval` itself
(a subprocess, so the published figures are exactly what that command prints) in fp32, and again from
an fp16 copy of the weights. The fp16 copy ships only when it changes no printed figure (PSNR to
0.01 dB, SSIM to 1e-4) on any set; the card records both measurements and which one shipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from upscaler.models import read_weights, save_weights
from upscaler.models.catalog import WEIGHTS_DIR
from upscaler.system.files import write_bytes_atomically

# Below what `upscale eval` prints (0.01 dB, 1e-4 SSIM): an fp16 file within these changes no figure.
PSNR_TOLERANCE = 0.005
SSIM_TOLERANCE = 0.00005


def evaluate(weights: Path, data: Path, threads: int | None = None) -> dict[str, Any]:
    """`upscale eval --json` of `weights` on `data` (fp32, torch on the CPU), as a dict; `threads` CPU
    threads (None: all), to measure beside a training run."""
    command = [
        *_upscale(),
        "eval",
        "--model",
        str(weights),
        "--data",
        str(data),
        "--backend",
        "torch",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--json",
        "--no-progress",
        "--lpips",
        *(["--threads", str(threads)] if threads else []),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"upscale eval failed on {weights} / {data}:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


def ship(
    run: Path,
    model_id: str,
    eval_sets: list[Path],
    destination: Path = WEIGHTS_DIR,
    note: str = "",
    before: tuple[Path, ...] = (),
    threads: int | None = None,
) -> Path:
    """Measure the run's weights, choose fp16 or fp32, write `<destination>/<model_id>.safetensors|.json`.

    `before`: the earlier stages the run started from (`--pretrained`), earliest first, each a finished
    run folder or the checkpoint a stopped stage was continued from; the card lists every stage's
    commands, iterations and wall time, and their sum."""
    stages = [earlier_stage(path) for path in before]
    card_path = finished_card(run)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    last_stage = _stage(run, card)
    state, metadata = read_weights(card_path.with_suffix(".safetensors"))
    arch, config = metadata["arch"], json.loads(metadata["config"])

    measured: dict[str, dict[str, dict[str, Any]]] = {"fp32": {}, "fp16": {}}
    with tempfile.TemporaryDirectory() as work:
        files = {
            "fp32": save_weights(
                {k: v.float() for k, v in state.items()}, Path(work, "fp32.safetensors"), arch, config
            ),
            "fp16": save_weights(_half(state), Path(work, "fp16.safetensors"), arch, config),
        }
        for dtype, path in files.items():
            for data in eval_sets:
                measured[dtype][data.name] = evaluate(path, data, threads)
        differences = {
            name: (
                abs(measured["fp16"][name]["mean"]["psnr"] - measured["fp32"][name]["mean"]["psnr"]),
                abs(measured["fp16"][name]["mean"]["ssim"] - measured["fp32"][name]["mean"]["ssim"]),
            )
            for name in measured["fp32"]
        }
        lossless = all(dp <= PSNR_TOLERANCE and ds <= SSIM_TOLERANCE for dp, ds in differences.values())
        chosen = "fp16" if lossless else "fp32"
        weights = destination / f"{model_id}.safetensors"
        destination.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(weights, files[chosen].read_bytes())

    card.update(
        {
            "id": model_id,
            "weights": weights.name,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "weights_dtype": chosen,
            "evaluation": {
                name: {
                    "psnr_y": round(report["mean"]["psnr"], 4),
                    "ssim_y": round(report["mean"]["ssim"], 5),
                    "bicubic_psnr_y": round(report["mean"]["bicubic_psnr"], 4),
                    "bicubic_ssim_y": round(report["mean"]["bicubic_ssim"], 5),
                    "lpips": round(report["mean"]["lpips"], 4),
                    "bicubic_lpips": round(report["mean"]["bicubic_lpips"], 4),
                    "images": len(report["images"]),
                    "command": f"upscale eval --model {model_id} --data {_shown(data)}",
                }
                for data in eval_sets
                for name, report in [(data.name, measured[chosen][data.name])]
            },
            "evaluation_definition": "Y of BT.601, scale-pixel border cropped, SR rounded to 8 bits "
            "(BasicSR); LPIPS v0.1 AlexNet on the whole 8-bit RGB image; fp32 on the CPU",
            "fp16_check": {
                "shipped": chosen,
                "rule": f"fp16 ships when it moves no set's PSNR by more than {PSNR_TOLERANCE} dB "
                f"nor its SSIM by more than {SSIM_TOLERANCE}",
                "fp32": {name: _pair(report) for name, report in measured["fp32"].items()},
                "fp16": {name: _pair(report) for name, report in measured["fp16"].items()},
            },
            "shipped_from": run.name,
            "notes": note,
        }
    )
    if stages:
        card["stages"] = [*stages, last_stage]
        seconds = sum(float(stage["wall_time_s"] or 0) for stage in card["stages"])
        card["wall_time_total_s"] = round(seconds, 1)
        card["iterations_total"] = sum(int(stage["iterations"] or 0) for stage in card["stages"])
    card = without_machine_paths(card)
    card_path = destination / f"{model_id}.json"
    write_bytes_atomically(card_path, (json.dumps(card, indent=2, allow_nan=False) + "\n").encode())
    return weights


def add_lpips(
    model_id: str, eval_sets: list[Path], destination: Path = WEIGHTS_DIR, threads: int | None = None
) -> dict[str, Any]:
    """Measure a shipped model's LPIPS (and its bicubic's) on `eval_sets` and add them to its card's
    `evaluation`, for cards shipped before LPIPS was measured; PSNR/SSIM are checked to be unchanged."""
    card_path = destination / f"{model_id}.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    weights = destination / card["weights"]
    for data in eval_sets:
        report = evaluate(weights, data, threads)
        figures = card["evaluation"][data.name]
        if abs(report["mean"]["psnr"] - figures["psnr_y"]) > 1e-3:
            raise SystemExit(
                f"{model_id} on {data.name}: PSNR {report['mean']['psnr']:.4f} is not the card's"
            )
        figures["lpips"] = round(report["mean"]["lpips"], 4)
        figures["bicubic_lpips"] = round(report["mean"]["bicubic_lpips"], 4)
    card["evaluation_definition"] = (
        "Y of BT.601, scale-pixel border cropped, SR rounded to 8 bits (BasicSR); LPIPS v0.1 AlexNet on "
        "the whole 8-bit RGB image; fp32 on the CPU"
    )
    card = without_machine_paths(card)
    write_bytes_atomically(card_path, (json.dumps(card, indent=2, allow_nan=False) + "\n").encode())
    return card


def without_machine_paths(value: Any) -> Any:
    """The card with every absolute path cut to its last two parts (`train/T91`): a card says which
    data, not where it lay on the machine that trained it (names, counts and digests stay)."""
    if isinstance(value, dict):
        return {key: without_machine_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_machine_paths(item) for item in value]
    if isinstance(value, str) and value.startswith("/") and " " not in value:
        return "/".join(Path(value).parts[-2:])
    return value


def finished_card(run: Path) -> Path:
    """The card of the one finished run in `run` (a .json beside its .safetensors); stops otherwise."""
    cards = [card for card in sorted(run.glob("*.json")) if card.with_suffix(".safetensors").is_file()]
    if len(cards) != 1:
        raise SystemExit(f"{run}: expected one finished run (a .safetensors beside its .json card)")
    return cards[0]


def earlier_stage(path: Path) -> dict[str, Any]:
    """Commands, iterations and wall time of an earlier stage: from a finished run folder's card, or from
    the checkpoint (`.pt`) of a stage that was stopped and continued from there."""
    if path.is_dir():
        return _stage(path, json.loads(finished_card(path).read_text(encoding="utf-8")))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a maintainer's script: say which file and why, and stop
        raise SystemExit(f"--before {path}: not a run folder nor a readable checkpoint ({exc})") from exc
    return {
        "from": path.name,
        "commands": list(checkpoint.get("commands", [])),
        "iterations": checkpoint["iteration"],
        "wall_time_s": round(float(checkpoint["wall_time"]), 1),
        "stopped_at_checkpoint": True,
    }


def _stage(run: Path, card: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": run.name,
        "commands": card.get("commands") or [card.get("command", "")],
        "iterations": card["iterations"],
        "wall_time_s": card["wall_time_s"],
        "validation_psnr_y": (card.get("validation") or {}).get("psnr_y"),
    }


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # integer buffers (batch norm's num_batches_tracked) stay as they are
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}


def _pair(report: dict[str, Any]) -> dict[str, float]:
    return {"psnr_y": round(report["mean"]["psnr"], 4), "ssim_y": round(report["mean"]["ssim"], 5)}


def _shown(path: Path) -> str:
    # a relative path as given (../shared/data/eval/Set5); an absolute one by its last two parts
    return shlex.quote(str(path) if not path.is_absolute() else "/".join(path.parts[-2:]))


def _upscale() -> list[str]:
    return [sys.executable, "-c", "from upscaler.cli import main; main()"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.ship", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished `upscale train` run folder")
    parser.add_argument(
        "--add-lpips",
        action="store_true",
        help="only measure LPIPS of the shipped --id and add it to its card",
    )
    parser.add_argument("--id", required=True, help="the model id to ship it as (upscaler/weights/<id>)")
    parser.add_argument("--eval", type=Path, action="append", required=True, help="an eval set (repeatable)")
    parser.add_argument("--to", type=Path, default=WEIGHTS_DIR, help="where the weights go")
    parser.add_argument("--threads", type=int, help="CPU threads of each measurement (default: all)")
    parser.add_argument("--note", default="", help="how the run went, for the card (machine, sharing)")
    parser.add_argument(
        "--before",
        type=Path,
        action="append",
        default=[],
        help="an earlier stage the run started from, earliest first: a run folder, or the checkpoint a "
        "stopped stage was continued from (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.add_lpips:
        card = add_lpips(args.id, args.eval, args.to, args.threads)
        for name, figures in card["evaluation"].items():
            print(f"  {name}: LPIPS {figures['lpips']:.4f} (bicubic {figures['bicubic_lpips']:.4f})")
        return
    if args.run is None:
        parser.error("--run is required to ship a run")
    weights = ship(args.run, args.id, args.eval, args.to, args.note, tuple(args.before), args.threads)
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    print(f"{weights} ({card['weights_dtype']}, {weights.stat().st_size / 1e6:.2f} MB)")
    for name, figures in card["evaluation"].items():
        print(
            f"  {name}: {figures['psnr_y']:.2f} dB / {figures['ssim_y']:.4f} "
            f"(bicubic {figures['bicubic_psnr_y']:.2f} / {figures['bicubic_ssim_y']:.4f})"
        )
    for dtype in ("fp32", "fp16"):
        print(
            f"  {dtype}: "
            + ", ".join(f"{k} {v['psnr_y']:.4f} dB" for k, v in card["fp16_check"][dtype].items())
        )


if __name__ == "__main__":
    main()
