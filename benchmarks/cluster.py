"""What a Dask cluster costs and gives on this machine: `upscale video` on one machine against the same
job on local clusters of 1 and 2 worker processes, and the time a cluster takes to start.

The clip is `--frames` frames of the bundled sample (its 24, back and forth), encoded again with a
keyframe every `--gop` frames, so that `--part-frames` cuts it into several parts. Every job runs the
same model (`--model`, default compact) with the same settings; each cluster is warmed by one job first (its
workers load the model once, as they do for a long job), then the timed jobs run. Prints the seconds of
each run, the overhead per part (cluster of 1 worker against one machine, both with every core), the
speed-up of 2 workers over 1, and checks that every output is the same file as the one-machine run's.

    .venv/bin/python benchmarks/cluster.py [--frames 48] [--gop 12] [--repeat 2] [--model compact]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import av

from upscaler.cluster.video import ClusterParts
from upscaler.cluster.worker import ModelSpec
from upscaler.models import load_model
from upscaler.options import BackendOptions, TileOptions
from upscaler.upscaling import open_upscaler
from upscaler.video.cuts import plan_cuts
from upscaler.video.job import run_parts_job, run_video_job
from upscaler.video.plan import plan_video_job, run_key

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "big_buck_bunny_320x180.mp4"


def make_clip(path: Path, frames: int, gop: int) -> Path:
    with av.open(str(SAMPLE)) as source:
        pictures = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"g": str(gop), "crf": "18"}
        # The sample's 24 frames, forwards then backwards, as often as it takes.
        cycle = pictures + pictures[::-1]
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(cycle[index % len(cycle)], format="rgb24")
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--gop", type=int, default=12)
    parser.add_argument("--part-frames", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default="compact")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    from upscaler.video.encode import usable_cores

    cores = usable_cores()
    folder = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    clip = make_clip(folder / "clip.mp4", args.frames, args.gop)
    loaded = load_model(args.model)
    tiles = TileOptions(memory_budget=1024**3)
    key = run_key(loaded.digest, "torch", BackendOptions(), tiles)
    runs = iter(range(10_000))

    def plan():
        return plan_video_job(
            clip, folder / f"out-{next(runs)}.mp4", scale=loaded.info.scale, model_key=key,
            part_frames=args.part_frames,
        )  # fmt: skip

    first = plan()
    started = time.perf_counter()
    cuts = plan_cuts(first)
    index_s = time.perf_counter() - started
    print(f"clip: {args.frames} frames 320x180, {len(cuts)} parts; model {args.model}; {cores} cores")
    print(f"finding the cuts (one decode, no RGB): {index_s:.3f} s")

    single = []
    outputs = []
    with open_upscaler(loaded, "torch", BackendOptions(), tiles) as upscaler:
        for _ in range(args.repeat):
            job = plan()
            started = time.perf_counter()
            run_video_job(job, upscaler)
            single.append(time.perf_counter() - started)
            outputs.append(job.destination.read_bytes())
    reference = outputs[0]
    print(f"one machine ({cores} threads): {' '.join(f'{s:.2f}' for s in single)} s")

    results = {}
    for workers in (1, 2):
        threads = max(1, cores // workers)
        spec = ModelSpec(args.model, loaded.digest, "torch", BackendOptions(threads=threads), tiles)
        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                memory_limit=0, silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            start_s = time.perf_counter() - started
            started = time.perf_counter()
            run_parts_job(plan(), ClusterParts(client, spec))
            warm_s = time.perf_counter() - started
            times = []
            for _ in range(args.repeat):
                job = plan()
                started = time.perf_counter()
                run_parts_job(job, ClusterParts(client, spec))
                times.append(time.perf_counter() - started)
                assert job.destination.read_bytes() == reference, "the cluster's output differs"
        results[workers] = times
        print(
            f"local cluster, {workers} worker(s) x {threads} thread(s): start {start_s:.2f} s, first job "
            f"(models load) {warm_s:.2f} s, then {' '.join(f'{s:.2f}' for s in times)} s (same bytes)"
        )
    one, cluster1, cluster2 = (statistics.median(t) for t in (single, results[1], results[2]))
    print(f"overhead per part, 1 worker against one machine: {(cluster1 - one) / len(cuts):.3f} s")
    print(
        f"speed-up of 2 workers over 1: {cluster1 / cluster2:.2f}x; over one machine: {one / cluster2:.2f}x"
    )


if __name__ == "__main__":
    main()
