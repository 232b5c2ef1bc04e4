"""`upscaler.bench`: the FLOP counter, the report's shape, and a tiny bench end to end."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tests.conftest import tiny_weights
from upscaler.bench.machine import architecture_flops, count_flops, cpu_has_bf16, hardware_precisions
from upscaler.bench.report import BenchSettings, Timing, VideoRun
from upscaler.bench.run import run_bench
from upscaler.cli import cli
from upscaler.models import find_model
from upscaler.system.runtimes import installed
from upscaler.values import Precision

# --- FLOPs ---------------------------------------------------------------------------------------------


def test_flops_of_a_tiny_net_by_hand() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8 outputs x 3*9 MACs per pixel
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # 8 outputs x 4*9 MACs per pixel
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # 8 inputs x 4*4 MACs per input pixel
        nn.Flatten(),
        nn.Linear(4 * 10 * 12, 5),  # 5 x 480 MACs
    )
    count = count_flops(net, 5, 6)
    pixels = 5 * 6
    expected = 2 * (pixels * 8 * 27 + pixels * 8 * 36 + pixels * 8 * 16 + 5 * 480)
    assert count.flops == expected
    assert count.layers == 4
    assert count.per_pixel == pytest.approx(expected / pixels)


def test_flops_on_the_meta_device_match_the_cpu() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1))
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1))
    assert count_flops(meta, 7, 9).flops == count_flops(net, 7, 9).flops == 2 * 63 * (4 * 27 + 3 * 4)


@pytest.mark.parametrize(
    ("model", "change", "mflops"),
    [
        # the figures in ../shared/notes-cpu-performance.md (64 features, x4), to 3 significant figures
        ("compact", {}, 1.24),
        ("esrgan-23x64", {}, 35.9),
        ("esrgan-23x64", {"num_block": 6}, 11.4),
        # SRGAN's SRResNet: 9x9 head and tail, no convs at output size but the tail:
        # 2*(81*3*64 + 33*9*64*64 + 9*64*256 * (1 + 4) + 16*81*64*3) = 4.44 M
        ("srgan", {}, 4.436352),
    ],
)
def test_flops_per_pixel_of_the_real_architectures(model: str, change: dict, mflops: float) -> None:
    entry = find_model(model)
    count = architecture_flops(entry.arch, {**entry.config, **change})
    assert count.per_pixel / 1e6 == pytest.approx(mflops, rel=2e-3)


def test_flops_per_pixel_of_msrresnet() -> None:
    config = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "upscale": 4}
    assert architecture_flops("msrresnet", config).per_pixel / 1e6 == pytest.approx(5.07, rel=2e-3)


# --- small pieces --------------------------------------------------------------------------------------


def test_timing_median_spread_and_rates() -> None:
    timing = Timing((2.0, 1.0, 4.0))
    assert (timing.median, timing.low, timing.high) == (2.0, 1.0, 4.0)
    rate = timing.rate(8.0)
    assert (rate.median, rate.low, rate.high) == (4.0, 2.0, 8.0)


def test_bf16_from_cpu_flags() -> None:
    assert cpu_has_bf16({"avx512f", "avx512_bf16"})
    assert cpu_has_bf16({"amx_bf16", "amx_tile"})
    assert not cpu_has_bf16({"avx2", "avx512f"})
    assert hardware_precisions("cpu", bf16=False) == (Precision.FP32,)
    assert hardware_precisions("cpu", bf16=True) == (Precision.FP32, Precision.BF16)
    assert hardware_precisions("cuda", bf16=True) == (Precision.FP32, Precision.FP16, Precision.BF16)


# --- end to end ----------------------------------------------------------------------------------------


def _settings(weights: Path, **changes) -> BenchSettings:
    base = {
        "model": str(weights),
        "backends": ("torch",),
        "precisions": (Precision.FP32,),
        "device": "cpu",
        "width": 16,
        "height": 12,
        "repeat": 2,
        "warmup": 1,
        "frames": 2,
    }
    return BenchSettings(**{**base, **changes})


def test_tiny_bench_report(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    lines: list[str] = []
    report = run_bench(_settings(weights), progress=lines.append)
    assert lines and all(isinstance(line, str) for line in lines)
    assert report.model == weights.name and report.arch == "compact" and report.scale == 4
    assert not report.random_weights
    assert report.flops_per_pixel > 0
    (conv,) = report.conv
    # Two samples of its own, then one before each of the model's two timed runs: all pooled.
    assert conv.precision == "fp32" and len(conv.timing.samples) == 4 and conv.gflops.median > 0
    (run,) = report.backends
    assert (run.backend, run.precision, run.problem) == ("torch", "fp32", None)
    assert run.pixels == 16 * 12 and run.megapixels.median > 0 and run.gflops.median > 0
    # The model's fraction is of the samples taken between its own runs.
    paired = statistics.median(conv.timing.samples[2:])
    assert run.conv_gflops == pytest.approx(conv.flops / paired / 1e9)
    assert run.conv_fraction == pytest.approx(run.gflops.median / run.conv_gflops)
    video = report.video
    assert video.problem is None and video.frames == 2 and (video.width, video.height) == (16, 12)
    assert video.job_fps.median > 0 and video.model_fps.median > 0 and video.efficiency > 0
    # The job again with the model's outputs replayed: decoding, encoding and muxing alone.
    assert len(video.io_only.samples) == 2 and video.io_fps.median > 0 and video.io_problem is None
    assert video.model_cpu > 0 and video.io_cpu > 0 and video.cores >= 1
    assert 0 < video.ceiling <= 1
    # x264 medium holds 40 frames before its first: a 2-frame clip is encoded after the model is done.
    assert video.lookahead == 40
    assert any("looks ahead 40 frames: with 2" in note for note in report.notes)
    assert report.quality is None
    assert any("--eval-data" in note for note in report.notes)


def test_a_backend_that_refuses_a_precision_is_listed_with_the_reason(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    report = run_bench(_settings(weights, precisions=(Precision.FP16,), video=False))
    (conv,) = report.conv
    assert conv.timing is None and "GPU" in conv.problem
    (run,) = report.backends
    assert run.timing is None and "fp16" in run.problem
    assert run.megapixels is None and run.conv_fraction is None
    assert report.video is None


def test_a_model_id_without_bundled_weights_runs_with_random_weights(tmp_path, monkeypatch) -> None:
    from upscaler.models import catalog

    monkeypatch.setattr(catalog, "WEIGHTS_DIR", tmp_path / "no-weights")
    report = run_bench(_settings(Path("compact"), model="compact", video=False, repeat=1, warmup=0))
    assert report.model == "compact" and report.random_weights
    assert report.flops_per_pixel == pytest.approx(1.2384e6)
    assert any("random weights" in note for note in report.notes)


# --- the command ---------------------------------------------------------------------------------------


def run_cli(*args: object):
    return CliRunner().invoke(cli, ["bench", *(str(a) for a in args)])


def test_help_names_the_options() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for flag in ("--model", "--backend", "--precision", "--size", "--repeat", "--json", "--eval-data"):
        assert flag in result.output
    assert "--preset" in result.output and "--encoder-option" in result.output


def test_bad_size_is_a_usage_error() -> None:
    result = run_cli("--size", "320by180")
    assert result.exit_code == 2
    assert "WIDTHxHEIGHT" in result.output


def test_command_table_and_json(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    common = ("--model", weights, "--backend", "torch", "--precision", "fp32", "--device", "cpu")
    common += ("--size", "16x12", "--repeat", "1", "--warmup", "0", "--frames", "2")
    result = run_cli(*common, "--eval-data", tmp_path / "missing")
    assert result.exit_code == 1
    assert "--eval-data" in result.output

    result = run_cli(*common)
    assert result.exit_code == 0, result.output
    output = result.stdout
    assert output.startswith("machine: ")
    assert "torch " in output and "ISA: " in output
    assert "model: tiny-compact.safetensors (compact, x4)" in output
    assert "3x3 conv 64->64" in output and "fp32, batch 1" in output
    table = next(line for line in output.splitlines() if line.startswith("backend "))
    assert table.split() == ["backend", "precision", "MP/s", "[min-max]", "GFLOP/s", "of", "conv", "s/frame"]
    assert any(line.split()[:2] == ["torch", "fp32"] for line in output.splitlines())
    assert "upscale video (end to end)" in output and "pipeline efficiency" in output
    assert "decode + encode alone" in output and "the job can reach at most" in output

    # the video job with the encoder settings `upscale video` would take
    result = run_cli(*common, "--preset", "veryfast", "--encoder-option", "rc-lookahead=3")
    assert result.exit_code == 0, result.output
    assert "preset veryfast" in result.stdout and "rc-lookahead=3" in result.stdout
    assert "looks ahead 3 frames: with 2" in result.stdout
    result = run_cli(*common, "--preset", "warp")
    assert result.exit_code == 1 and "--preset: libx264 knows" in result.output
    assert "Traceback" not in result.output
    assert "3x3 conv" not in result.output  # stopped before measuring anything

    result = run_cli(*common, "--no-video", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert set(document) == {
        *("machine", "model", "size", "repeat", "warmup"),
        *("conv", "backends", "video", "quality", "notes"),
    }
    assert set(document["machine"]) == {
        *("cpu", "logical_cpus", "threads", "torch_version", "device", "isa", "bf16"),
    }
    assert document["model"]["arch"] == "compact" and document["model"]["flops_per_pixel"] > 0
    assert document["size"] == {"width": 16, "height": 12}
    (backend,) = document["backends"]
    assert backend["backend"] == "torch" and backend["problem"] is None
    for key in ("seconds", "megapixels_per_s", "gflops"):
        assert 0 < backend[key]["min"] <= backend[key]["median"] <= backend[key]["max"]
    assert backend["conv_fraction"] > 0
    assert document["conv"][0]["gflops"]["median"] > 0
    assert document["video"] is None


@pytest.mark.slow
def test_command_measures_bf16_psnr_on_a_set(tmp_path: Path) -> None:
    import numpy as np

    from upscaler.image.formats import write_image
    from upscaler.picture import Picture

    weights = tiny_weights(tmp_path, "compact")
    rng = np.random.default_rng(0)
    data = tmp_path / "set"
    data.mkdir()
    for index in range(2):
        write_image(data / f"{index}.png", Picture(rgb=rng.random((48, 40, 3), dtype=np.float32)))
    result = run_cli(
        *("--model", weights, "--backend", "torch", "--device", "cpu", "--size", "16x12"),
        *("--repeat", "1", "--warmup", "0", "--no-video", "--eval-data", data, "--json"),
    )
    assert result.exit_code == 0, result.output
    quality = json.loads(result.stdout)["quality"]
    assert quality["images"] == 2 and quality["backend"] == "torch"
    assert quality["fp32_psnr"] > 0 and quality["bf16_psnr"] > 0
    assert quality["psnr_delta"] == pytest.approx(quality["bf16_psnr"] - quality["fp32_psnr"])


def test_bf16_psnr_is_measured_on_a_backend_that_has_bf16(tmp_path: Path) -> None:
    # For an fp32 RRDBNet on the CPU auto takes onnxruntime (CPU_FP32_FIRST), which has no bf16; the
    # quality run must not stop at its bf16 half.
    pytest.importorskip("onnxruntime", reason="the case needs onnxruntime, which auto takes for RRDBNet")
    from upscaler.bench.backends import measure_quality
    from upscaler.image.formats import write_image
    from upscaler.models import load_model
    from upscaler.options import BackendOptions, TileOptions
    from upscaler.picture import Picture

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 (AVX512_BF16 or AMX)")
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_image(data / "0.png", Picture(rgb=rng.random((24, 20, 3), dtype=np.float32)))
    loaded = load_model(tiny_weights(tmp_path, "rrdbnet"))
    options = BackendOptions(device="cpu", precision=Precision.FP32)
    quality = measure_quality(loaded, "auto", options, TileOptions(), data)
    assert quality.problem is None
    assert quality.backend == "torch"
    assert quality.fp32_psnr is not None and quality.bf16_psnr is not None
    # int8 is measured on the backend that runs it, where it is installed.
    if installed("openvino") and installed("nncf"):
        assert quality.int8_backend == "openvino" and quality.int8_problem is None
        assert quality.int8_psnr is not None and abs(quality.int8_psnr - quality.fp32_psnr) < 10
    else:
        assert quality.int8_psnr is None


def test_the_video_run_takes_the_backend_upscale_video_would(tmp_path: Path) -> None:
    # Unlike the quality run, the video job runs in one precision, and auto chooses for it as the video
    # command does: onnxruntime for an fp32 RRDBNet on the CPU.
    pytest.importorskip("onnxruntime", reason="the case needs onnxruntime, which auto takes for RRDBNet")
    weights = tiny_weights(tmp_path, "rrdbnet")
    report = run_bench(_settings(weights, repeat=1, warmup=0, video_backend="auto"))
    assert report.video.problem is None and report.video.backend == "onnxruntime"


def test_the_ceiling_is_what_the_cores_leave_after_the_model_and_the_io() -> None:
    def run(model_cpu: float, io_cpu: float, cores: int) -> VideoRun:
        timing = Timing((10.0,))
        return VideoRun(
            "torch",
            "fp32",
            16,
            12,
            24,
            "",
            timing,
            timing,
            io_only=timing,
            model_cpu=model_cpu,
            io_cpu=io_cpu,
            cores=cores,
        )

    # The model keeps 2 cores busy for 10 s; 2 s of IO on top need at least 11 s: 10/11 at best.
    assert run(20.0, 2.0, 2).ceiling == pytest.approx(10 / 11)
    # A model on a GPU leaves the CPU to the IO: nothing in the way.
    assert run(1.0, 2.0, 2).ceiling == 1.0
    assert run(20.0, 2.0, 0).ceiling is None


def test_the_replayed_job_encodes_what_the_model_made(tmp_path: Path, monkeypatch) -> None:
    # The job without the model is the same job: its encoder gets the same frames at the same times.
    from upscaler.bench.pipeline import _Replay, write_test_clip
    from upscaler.models import load_model
    from upscaler.options import BackendOptions, TileOptions
    from upscaler.upscaling import open_upscaler
    from upscaler.video import writer as encoding
    from upscaler.video.decode import decode_frames
    from upscaler.video.job import run_video_job
    from upscaler.video.plan import plan_video_job
    from upscaler.video.probe import probe_video

    written: dict[str, list] = {}
    write = encoding.PartWriter.write

    def recording(writer, pts: int, rgb) -> None:
        write(writer, pts, rgb)
        written.setdefault(writer.path.parent.name, []).append((pts, rgb.copy()))

    monkeypatch.setattr(encoding.PartWriter, "write", recording)
    clip = write_test_clip(tmp_path / "clip.mp4", 16, 12, 3)
    loaded = load_model(tiny_weights(tmp_path, "compact"))
    frames = [frame.rgb for frame in decode_frames(probe_video(clip))]
    with open_upscaler(loaded, "torch", BackendOptions(device="cpu"), TileOptions()) as upscaler:
        made = upscaler.upscale_stream(enumerate(frames), encoding.row_quantizer(8))
        replay = _Replay([levels for _, levels in made])
        for name, upscale in (("model", upscaler), ("replay", replay)):
            plan = plan_video_job(clip, tmp_path / f"{name}.mp4", scale=4, model_key={}, audio=False)
            run_video_job(plan, upscale, resume=False)
    model, replayed = written.values()
    assert [pts for pts, _ in model] == [pts for pts, _ in replayed] and len(model) == 3
    for (_, by_model), (_, by_replay), stored in zip(model, replayed, replay.outputs, strict=True):
        assert by_model.shape == (48, 64, 3) and by_model.dtype == np.uint8
        assert (by_model == by_replay).all() and (by_model == stored).all()


def test_outputs_too_big_to_hold_leave_the_io_unmeasured(tmp_path: Path, monkeypatch) -> None:
    import upscaler.bench.pipeline

    monkeypatch.setattr(upscaler.bench.pipeline, "REPLAY_BYTES", 100)
    video = run_bench(_settings(tiny_weights(tmp_path, "compact"), repeat=1)).video
    assert video.job is not None and video.io_only is None and video.ceiling is None
    assert "GiB to hold" in video.io_problem
