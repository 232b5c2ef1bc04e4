"""Measure what each faster precision costs every bundled model, and write it into the model cards.

    python docs/make_precision_costs.py --set ../shared/data/eval/Set5 --set ../shared/data/eval/Set14

For each bundled model, `upscale eval`'s PSNR (Y, BT.601) and LPIPS on each set in fp32 on torch, then
in every lower precision on every CPU backend that runs it here (bf16: torch and OpenVINO; int8:
OpenVINO, quantized by NNCF on crops of the bundled sample video). fp16 is a GPU's precision and this
machine has none: it is measured as a GPU's tensor cores compute it, every layer's inputs, weights
and outputs rounded to fp16 and the sums kept in fp32 (`fp16_rounded`), on torch on the CPU.

A precision's cost on a set is its largest PSNR loss over those backends, and its LPIPS change beside
it. The card's `precision_cost` keeps every figure and the rule `--precision auto` applies
(upscaler.precision.NEGLIGIBLE_DB): a precision runs under auto only where its cost is under that on
every set.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from upscaler.errors import BackendError
from upscaler.models import list_models, load_model
from upscaler.models.lpips import load_lpips
from upscaler.options import BackendOptions, TileOptions
from upscaler.precision import NEGLIGIBLE_DB
from upscaler.quality.evaluation import evaluate_pairs, load_eval_set
from upscaler.upscaling import open_upscaler
from upscaler.values import Precision

# The lower precisions, each on the backends that run it on a CPU.
CANDIDATES = {Precision.BF16: ("torch", "openvino"), Precision.INT8: ("openvino",)}


def fp16_rounded(loaded):
    """`loaded` with a network that rounds to fp16 what a GPU holds in fp16: the weights, and every
    layer's input and output (the arithmetic inside a layer stays fp32, as tensor cores accumulate)."""
    import copy

    import torch

    module = copy.deepcopy(loaded.module)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(parameter.half().float())

    def rounded(value):
        return (
            value.half().float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
        )

    for layer in module.modules():
        if not list(layer.children()):
            layer.register_forward_pre_hook(lambda _, inputs: tuple(rounded(v) for v in inputs))
            layer.register_forward_hook(lambda _, inputs, output: rounded(output))
    return loaded.with_module(module)


def score(loaded, backend: str, precision: Precision, sets: dict, lpips) -> dict[str, dict[str, float]]:
    options = BackendOptions(device="cpu", precision=precision)
    result = {}
    with open_upscaler(loaded, backend, options, TileOptions(memory_budget=1024**3)) as upscaler:
        for name, evaluation in sets.items():
            pairs = [(pair.lr, pair.hr) for pair in evaluation.pairs]
            report = evaluate_pairs(
                upscaler.upscale, pairs, evaluation.scale, bicubic=False, perceptual=lpips
            )
            result[name] = {"psnr_y": round(report.mean_psnr, 4), "lpips": round(report.mean_lpips, 4)}
    return result


def worst(fp32: dict[str, float], runs: list[dict[str, float]]) -> dict[str, float]:
    """The largest PSNR loss and LPIPS rise against fp32 over the backends' runs on one set."""
    return {
        "psnr_loss_db": round(max(fp32["psnr_y"] - run["psnr_y"] for run in runs), 4),
        "lpips_change": round(max(run["lpips"] - fp32["lpips"] for run in runs), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="sets", type=Path, action="append", required=True)
    parser.add_argument("--model", dest="models", action="append", help="only these ids (default: all)")
    args = parser.parse_args()
    lpips = load_lpips().distance
    for entry in list_models():
        if not entry.weights_present or (args.models and entry.id not in args.models):
            continue
        started = time.monotonic()
        loaded = load_model(entry.id)
        sets = {path.name: load_eval_set(path, loaded.info.scale) for path in args.sets}
        fp32 = score(loaded, "torch", Precision.FP32, sets, lpips)
        measured: dict[str, dict] = {"fp32": {"torch": fp32}}
        costs: dict[str, dict] = {}
        measured["fp16"] = {
            "torch, fp16-rounded": score(fp16_rounded(loaded), "torch", Precision.FP32, sets, lpips)
        }
        for precision, backends in CANDIDATES.items():
            for backend in backends:
                try:
                    figures = score(loaded, backend, precision, sets, lpips)
                except BackendError as error:
                    print(f"{entry.id} {precision.value} on {backend}: not measured ({error.message})")
                    continue
                measured.setdefault(precision.value, {})[backend] = figures
        for precision in ("fp16", *(p.value for p in CANDIDATES)):
            runs = measured.get(precision)
            if runs:
                costs[precision] = {
                    name: worst(fp32[name], [r[name] for r in runs.values()]) for name in sets
                }
        card_path = entry.weights.with_suffix(".json")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["precision_cost"] = {
            "rule": f"--precision auto runs a precision only where it loses under {NEGLIGIBLE_DB} dB of PSNR "
            "on every set against fp32 (the largest loss over the backends measured)",
            "command": "python docs/make_precision_costs.py " + " ".join(f"--set {p}" for p in args.sets),
            "measured": measured,
            "cost": costs,
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        summary = "; ".join(
            f"{precision} " + ", ".join(f"{name} {-c['psnr_loss_db']:+.4f} dB" for name, c in per_set.items())
            for precision, per_set in costs.items()
        )
        print(f"{entry.id}: {summary} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
