"""Seconds per batch of tiles on the CPU: torch against onnxruntime (and openvino, when installed).

Both run the same random-weight network on the same batch of tiles (speed does not depend on the
weights' values), with the same thread count. Prints one line per case: median and spread of `--runs`
timed batches after one warm-up batch. bf16 runs only where the backend supports it (the onnxruntime
backend refuses it, and the line says so). The exported graph goes to a temporary cache folder, so the
one-off export is not timed. The openvino plugin joins when `openvino` is installed; it always runs
the precision asked for (left alone, its CPU plugin would pick bf16 on CPUs that have it).

    .venv/bin/python benchmarks/backends_cpu.py [--tile 128] [--batch 4] [--runs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from backends.onnxruntime import OnnxRuntimeBackend
from backends.openvino import OpenVINOBackend
from backends.pytorch import TorchBackend
from upscaler.errors import BackendError
from upscaler.models import build_model, load_model, save_weights
from upscaler.options import BackendOptions
from upscaler.values import Precision

CASES = {
    "compact-16": ("compact", {"num_feat": 64, "num_conv": 16, "upscale": 4}),
    "rrdbnet-6": ("rrdbnet", {"num_feat": 64, "num_block": 6, "num_grow_ch": 32, "scale": 4}),
    "rrdbnet-23": ("rrdbnet", {"num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4}),
}


def time_batch(session, batch: np.ndarray, runs: int) -> list[float]:
    session.infer(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.infer(batch)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128, help="tile side in input pixels, overlap included")
    parser.add_argument("--batch", type=int, default=4, help="tiles per batch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--cases", nargs="+", default=["compact-16", "rrdbnet-6"], choices=list(CASES))
    args = parser.parse_args()
    import onnxruntime

    batch = np.random.default_rng(0).random((args.batch, 3, args.tile, args.tile), dtype=np.float32)
    versions = f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    with_openvino = OpenVINOBackend().check() is None
    if with_openvino:
        import openvino

        versions += f", openvino {openvino.__version__.split('-')[0]}"
    print(f"{versions}, {args.threads} threads, batch {args.batch} x 3 x {args.tile} x {args.tile}")
    print(f"{'model':<12} {'backend':<12} {'precision':<9} {'s/batch':>8} {'spread':>13} {'out Mpx/s':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        backends = {"torch": TorchBackend(), "onnxruntime": OnnxRuntimeBackend(cache_dir=Path(scratch))}
        if with_openvino:
            backends["openvino"] = OpenVINOBackend(cache_dir=Path(scratch))
        for name in args.cases:
            arch, config = CASES[name]
            torch.manual_seed(0)
            path = save_weights(
                build_model(arch, config), Path(scratch) / f"{name}.safetensors", arch, config
            )
            model = load_model(path)
            out_px = args.batch * (args.tile * model.info.scale) ** 2
            for precision in args.precision:
                options = BackendOptions(device="cpu", precision=Precision(precision), threads=args.threads)
                for backend_name, backend in backends.items():
                    try:
                        session = backend.open(model, options)
                    except BackendError as exc:
                        print(f"{name:<12} {backend_name:<12} {precision:<9} {'-':>8}  refused: {exc}")
                        continue
                    with session:
                        times = time_batch(session, batch, args.runs)
                    median = statistics.median(times)
                    spread = f"{min(times):.2f}-{max(times):.2f}"
                    print(
                        f"{name:<12} {backend_name:<12} {precision:<9} {median:8.2f} {spread:>13} "
                        f"{out_px / median / 1e6:9.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
