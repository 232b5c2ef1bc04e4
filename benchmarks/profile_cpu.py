"""Where a model's time goes on a CPU runtime: seconds per operator type, and the convolutions one by one.

    .venv/bin/python benchmarks/profile_cpu.py [--model rrdb-psnr] [--runtime onnxruntime|openvino]
        [--precision fp32|bf16] [--size 320x180] [--runs 3] [--layers]

Profiles the cached ONNX export that the `onnxruntime` and `openvino` backends run (made here if it is
not cached yet), with each runtime's own profiler: ONNX Runtime's `enable_profiling` (kernel time per
node, after its graph optimisations: `ReorderInput` / `ReorderOutput` are its NCHWc layout changes) or
OpenVINO's `enable_profiling` (per executed layer, with the kernel it chose). Prints, for `--runs` runs
after two warm-ups, each operator type's seconds per run and share; with `--layers`, each convolution's
seconds and GFLOP/s (its FLOPs from the graph's shapes, 2 per multiply-add; blank for a layer OpenVINO
renamed when it fused it, such as a convolution followed by a Mul). Random input: the time does
not depend on the pixels. The profilers add a little time of their own; compare shares, not totals.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def onnxruntime_profile(path: Path, batch: np.ndarray, runs: int, threads: int | None) -> list[tuple]:
    """(node name, op type, seconds per run) of every node ONNX Runtime ran."""
    import onnxruntime as ort

    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    settings.inter_op_num_threads = 1
    if threads:
        settings.intra_op_num_threads = threads
    settings.enable_profiling = True
    settings.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(2 + runs):
        session.run(None, {name: batch})
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")]
            totals[(node, event["args"].get("op_name", "?"))] += event["dur"] / 1e6
    # The two warm-ups are in the file too: the time per run is the total over all of them.
    return [(node, op, seconds / (2 + runs)) for (node, op), seconds in totals.items()]


def openvino_profile(path: Path, batch: np.ndarray, runs: int, precision: str, threads: int | None) -> list:
    """(layer name, type and kernel, seconds per run) of every layer OpenVINO's CPU plugin ran."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {
        hints.inference_precision: getattr(ov.Type, {"fp32": "f32", "bf16": "bf16"}[precision]),
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.enable_profiling: True,
    }
    if threads:
        config[props.inference_num_threads] = threads
    core = ov.Core()
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    for _ in range(2):
        request.infer([batch])
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for _ in range(runs):
        request.infer([batch])
        for layer in request.profiling_info:
            totals[(layer.node_name, f"{layer.node_type} {layer.exec_type}")] += (
                layer.real_time.total_seconds()
            )
    return [(node, kind, seconds / runs) for (node, kind), seconds in totals.items()]


def conv_flops(path: Path, height: int, width: int) -> dict[str, float]:
    """FLOPs of each Conv node of the graph at this input size (shapes inferred by ONNX)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = height
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = width
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    weights = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    flops = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights or node.output[0] not in shapes:
            continue
        out_channels, in_per_group, kh, kw = weights[node.input[1]]
        _, _, out_h, out_w = shapes[node.output[0]]
        flops[node.name] = 2.0 * out_channels * in_per_group * kh * kw * out_h * out_w
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rrdb-psnr")
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--size", default="320x180", help="input WxH")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the runtime's)")
    parser.add_argument("--layers", action="store_true", help="also each convolution, with GFLOP/s")
    args = parser.parse_args()
    if args.runtime == "onnxruntime" and args.precision != "fp32":
        sys.exit("onnxruntime runs fp32 only")

    from upscaler.export import cached_onnx
    from upscaler.models import load_model
    from upscaler.values import Precision

    width, height = (int(side) for side in args.size.lower().split("x"))
    model = load_model(args.model)
    width, height = model.info.requirement.padded(width), model.info.requirement.padded(height)
    path = cached_onnx(model, Precision.FP32).path
    batch = np.random.default_rng(0).random((1, model.info.in_channels, height, width), dtype=np.float32)
    if args.runtime == "onnxruntime":
        rows = onnxruntime_profile(path, batch, args.runs, args.threads)
    else:
        rows = openvino_profile(path, batch, args.runs, args.precision, args.threads)

    total = sum(seconds for _, _, seconds in rows)
    print(f"{args.model} on {args.runtime} {args.precision} at {width}x{height}: {total:.3f} s a run in all")
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for _, kind, seconds in rows:
        by_kind[kind].append(seconds)
    print(f"{'operator':40} {'s/run':>7} {'share':>6} {'nodes':>5}")
    for kind, times in sorted(by_kind.items(), key=lambda item: -sum(item[1])):
        if sum(times) > 0:
            print(f"{kind:40} {sum(times):7.3f} {sum(times) / total:6.1%} {len(times):5d}")
    if args.layers:
        flops = conv_flops(path, height, width)
        print(f"\n{'convolution':60} {'ms':>7} {'GFLOP/s':>8}")
        for node, kind, seconds in rows:
            if not kind.startswith(("Conv", "Convolution", "GroupConvolution")) or seconds <= 0:
                continue
            # OpenVINO names a layer after the ONNX node it came from, sometimes with a suffix.
            work = next((f for name, f in flops.items() if node == name or node.startswith(name + "/")), None)
            rate = "" if work is None else f"{work / seconds / 1e9:8.1f}"
            print(f"{node[:60]:60} {seconds * 1000:7.1f} {rate:>8}")


if __name__ == "__main__":
    main()
