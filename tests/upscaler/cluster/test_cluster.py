"""`--cluster`: a video's parts and a folder's images made by the workers of a real Dask cluster on
127.0.0.1, compared with the same job run on one machine (byte for byte)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import tiny_weights
from tests.upscaler import video_clips as clips
from upscaler.cli import cli
from upscaler.cluster.connect import check_address, local_workers
from upscaler.errors import InputError, UpscaleError
from upscaler.pipeline import StageError
from upscaler.video.cuts import plan_cuts
from upscaler.video.encode import EncodeSettings
from upscaler.video.job import LocalParts
from upscaler.video.plan import plan_video_job
from upscaler.video.resume.journal import Journal, read_journal, write_journal


def nearest(rgb: np.ndarray) -> np.ndarray:
    return rgb.repeat(2, axis=0).repeat(2, axis=1)


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def video_args(source: Path, out: Path, weights: Path, *more: str) -> list[str]:
    return ["video", source, out, "--model", weights, "--part-frames", "8", "--progress", "none", *more]


# ------------------------------------------------------------------------------------- no cluster


def test_the_cuts_are_the_parts_a_run_on_one_machine_makes(tmp_path: Path) -> None:
    source = clips.write_clip(tmp_path / "clip.mkv", frames=45, options={"qp": "0", "g": "6"}, audio="aac")
    plan = plan_video_job(
        source, tmp_path / "out.mkv", scale=2, model_key={"k": 1}, part_frames=8,
        settings=EncodeSettings(codec="ffv1"), start=0.1,
    )  # fmt: skip
    plan.work_dir.mkdir()
    journal = Journal(plan.fingerprint)
    LocalParts(nearest)(plan, journal, lambda event: None, lambda note: None)
    cuts = plan_cuts(plan)
    assert [(c.file, c.first_pts, c.last_pts, c.frames) for c in cuts] == [
        (p.file, p.first_pts, p.last_pts, p.frames) for p in journal.parts
    ]
    # From 0.1 s (42 of the 45 frames), keyframes every 6, parts of 8 frames or more.
    assert len(cuts) == 4 and sum(c.frames for c in cuts) == 42 and all(c.frames >= 8 for c in cuts[:-1])
    assert [c.after_pts for c in cuts] == [None] + [c.last_pts for c in cuts[:-1]]
    assert (plan.work_dir / "cuts.json").exists()  # kept for the next run with this fingerprint


@pytest.mark.parametrize(
    "address", ["local", "local:3", "tcp://10.0.0.5:8786", "scheduler:8786", "[::1]:8786"]
)
def test_cluster_addresses_are_accepted(address: str) -> None:
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["local:0", "10.0.0.5", "http://x", "", "local:two"])
def test_a_bad_cluster_address_is_refused_in_one_line(address: str) -> None:
    with pytest.raises(UpscaleError, match="--cluster"):
        check_address(address)


def test_local_means_one_worker_unless_told() -> None:
    assert local_workers("local:3") == 3
    assert local_workers("local") == 1
    assert local_workers("tcp://h:1") is None


def test_errors_travel_between_processes_with_their_hint() -> None:
    error = pickle.loads(pickle.dumps(InputError("cannot see x", hint="share it")))
    assert type(error) is InputError and error.message == "cannot see x" and error.hint == "share it"
    stage = pickle.loads(pickle.dumps(StageError("upscale", 3, InputError("bad", hint="h"))))
    assert str(stage) == "upscale failed at frame 3: bad" and stage.hint == "h"


def test_without_distributed_the_flag_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    source = clips.cfr_clip(tmp_path, frames=4)
    for args in (
        ["video", source, tmp_path / "o.mp4", "--cluster", "local:2"],
        ["images", tmp_path, "--cluster", "local:2"],
    ):
        result = CliRunner().invoke(cli, [str(arg) for arg in args])
        assert result.exit_code == 1
        assert "Error: --cluster needs Dask's distributed package" in result.output
        assert 'pip install "upscaler[cluster]"' in result.output
        assert "Traceback" not in result.output


def test_cluster_flags_without_cluster_are_a_usage_error(tmp_path: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=4)
    result = CliRunner().invoke(cli, ["video", str(source), str(tmp_path / "o.mp4"), "--send-input"])
    assert result.exit_code == 2 and "go with --cluster" in result.output


# ------------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes on 127.0.0.1, one thread each, no dashboard; the tests connect by address."""
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=0,
        silence_logs=logging.ERROR,
    ) as local:
        yield local


def test_a_video_made_on_the_cluster_is_the_one_made_on_one_machine(tmp_path: Path, cluster) -> None:
    weights = tiny_weights(tmp_path, "compact")
    source = clips.cfr_clip(tmp_path, frames=40)  # keyframes about every 8 frames
    run_cli(*video_args(source, tmp_path / "one.mp4", weights))
    output = run_cli(
        *video_args(source, tmp_path / "many.mp4", weights, "--cluster", cluster.scheduler_address),
    )
    assert "on the cluster" in output and "(2 workers)" in output
    assert (tmp_path / "many.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()
    assert not (tmp_path / ".many.mp4.upscale-parts").exists()

    # The input sent through the cluster instead of read from the shared path; progress as JSON lines.
    runner = CliRunner()
    args = video_args(source, tmp_path / "sent.mp4", weights, "--cluster", cluster.scheduler_address)
    args[args.index("none")] = "json"
    result = runner.invoke(cli, [str(arg) for arg in [*args, "--send-input"]])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sent.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    import json

    events = [json.loads(line) for line in lines]
    progress = [event for event in events if event["event"] == "progress"]
    assert progress[-1]["frames"] == 40 and progress[-1]["total"] == 40
    assert [event["frames"] for event in progress] == sorted(event["frames"] for event in progress)
    assert events[-1]["event"] == "done" and events[-1]["parts"] == progress[-1]["parts_done"] >= 4


def test_a_run_stopped_on_the_cluster_resumes_on_one_machine_and_back(tmp_path: Path, cluster) -> None:
    from distributed import Client

    from upscaler.cluster.video import ClusterParts
    from upscaler.cluster.worker import ModelSpec
    from upscaler.models import load_model
    from upscaler.options import BackendOptions, TileOptions
    from upscaler.video.events import Progress
    from upscaler.video.job import run_parts_job
    from upscaler.video.plan import run_key

    weights = tiny_weights(tmp_path, "compact")
    source = clips.cfr_clip(tmp_path, frames=40)
    clean = tmp_path / "clean.mp4"
    run_cli(*video_args(source, clean, weights, "--backend", "torch"))
    out = tmp_path / "out.mp4"
    loaded = load_model(str(weights))
    options, tiles = BackendOptions(), TileOptions(memory_budget=1024**3)
    plan = plan_video_job(
        source, out, scale=loaded.info.scale, part_frames=8,
        model_key=run_key(loaded.digest, "torch", options, tiles),
    )  # fmt: skip

    class Stop(Exception):
        pass

    def stop_after_two(event) -> None:
        if isinstance(event, Progress) and event.parts_done >= 2:
            raise Stop

    spec = ModelSpec(str(weights), loaded.digest, "torch", options, tiles)
    with Client(cluster.scheduler_address) as client, pytest.raises(Stop):
        run_parts_job(plan, ClusterParts(client, spec), events=stop_after_two)
    journal = read_journal(plan.journal_path)
    assert len(journal.parts) + len(journal.ahead) >= 2 and not out.exists()

    # One machine goes on from the parts the cluster finished in order, and makes the same file.
    output = run_cli(*video_args(source, out, weights, "--backend", "torch"))
    assert f"resuming: {len(journal.parts)} part(s)" in output or not journal.parts
    assert out.read_bytes() == clean.read_bytes()

    # And the other way: parts finished on one machine, the rest on the cluster (with one ahead).
    out.unlink()
    plan.work_dir.mkdir()
    journal = Journal(plan.fingerprint)
    LocalParts(_Upscaler(loaded))(plan, journal, lambda event: None, lambda note: None)
    journal.ahead = [journal.parts[3]]
    journal.parts = journal.parts[:2]
    (plan.work_dir / journal.parts[1].file).unlink()  # a lost part is made again
    write_journal(plan.journal_path, journal)
    output = run_cli(
        *video_args(source, out, weights, "--backend", "torch", "--cluster", cluster.scheduler_address)
    )
    assert "resuming: 1 part(s)" in output and "resuming: 1 more part(s)" in output
    assert out.read_bytes() == clean.read_bytes()


class _Upscaler:
    """A model opened here, as `upscale video --backend torch` opens it."""

    def __init__(self, loaded, options=None) -> None:
        from upscaler.options import BackendOptions, TileOptions
        from upscaler.upscaling import open_upscaler

        options = options or BackendOptions()
        self.context = open_upscaler(loaded, "torch", options, TileOptions(memory_budget=1024**3))
        self.upscaler = self.context.__enter__()

    def upscale_stream(self, frames, finish=None):
        return self.upscaler.upscale_stream(frames, finish)


def test_a_worker_that_cannot_see_the_input_is_one_line(tmp_path: Path, cluster) -> None:
    from distributed import Client

    from upscaler.cluster.worker import InputFile, _input_path

    with Client(cluster.scheduler_address) as client:
        future = client.submit(
            _input_path, InputFile(str(tmp_path / "elsewhere.mp4"), 1234), None, pure=False
        )
        with pytest.raises(InputError) as raised:
            future.result()
    assert raised.value.message == f"a worker cannot see {tmp_path / 'elsewhere.mp4'}"
    assert "--send-input" in raised.value.hint


def test_images_made_on_the_cluster_are_the_ones_made_on_one_machine(tmp_path: Path, cluster) -> None:
    weights = tiny_weights(tmp_path, "compact")
    pictures = tmp_path / "in"
    (pictures / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(pictures / "a.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    cv2.imwrite(str(pictures / "sub" / "b.png"), rng.integers(0, 65536, (16, 16, 4), dtype=np.uint16))
    cv2.imwrite(str(pictures / "c.jpg"), rng.integers(0, 256, (18, 10), dtype=np.uint8))
    (pictures / "broken.png").write_bytes(b"not a png")
    common = ["images", pictures, "--model", weights, "--no-progress"]
    one = CliRunner().invoke(cli, [str(arg) for arg in [*common, "-o", tmp_path / "one"]])
    many = CliRunner().invoke(
        cli, [str(arg) for arg in [*common, "-o", tmp_path / "many", "--cluster", cluster.scheduler_address]]
    )
    assert one.exit_code == many.exit_code == 1  # broken.png fails in both, the others are written
    assert "3 written, 0 skipped, 1 failed" in one.output and "3 written, 0 skipped, 1 failed" in many.output
    written = sorted(path.relative_to(tmp_path / "one") for path in (tmp_path / "one").rglob("*.*"))
    assert len(written) == 3
    for name in written:
        assert (tmp_path / "many" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    again = CliRunner().invoke(
        cli, [str(arg) for arg in [*common, "-o", tmp_path / "many", "--cluster", cluster.scheduler_address]]
    )
    assert "0 written, 3 skipped, 1 failed" in again.output


# ------------------------------------------------------------------------------------- slow ones


def _worker_pid(client, address: str) -> int:
    import os

    return client.run(os.getpid, workers=[address])[address]


@pytest.mark.slow
def test_a_worker_killed_mid_part_is_survived_with_the_same_output(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    import logging
    import os
    import signal

    from upscaler.cluster.video import ClusterParts
    from upscaler.cluster.worker import ModelSpec
    from upscaler.models import load_model
    from upscaler.options import BackendOptions, TileOptions
    from upscaler.video.events import Progress
    from upscaler.video.job import run_parts_job, run_video_job
    from upscaler.video.plan import run_key

    # The bundled compact model on 160x120: a part of 8 frames takes seconds, so the kill lands inside one.
    source = clips.write_clip(tmp_path / "clip.mp4", frames=32, width=160, height=120, options={"g": "8"})
    loaded = load_model("compact")
    options, tiles = BackendOptions(threads=1), TileOptions(memory_budget=1024**3)
    key = run_key(loaded.digest, "torch", options, tiles)

    def plan_for(out: Path):
        return plan_video_job(source, out, scale=4, part_frames=8, model_key=key)

    one = plan_for(tmp_path / "one.mp4")
    run_video_job(one, _Upscaler(loaded, options))
    killed: list[int] = []
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
            memory_limit=0, silence_logs=logging.ERROR,
        ) as local,
        distributed.Client(local) as client,
    ):  # fmt: skip

        def kill_one_mid_part(event) -> None:
            if killed or not isinstance(event, Progress) or event.frames <= 8 * event.parts_done:
                return
            busy = [address for address, keys in client.processing().items() if keys]
            pid = _worker_pid(client, busy[0])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        spec = ModelSpec("compact", loaded.digest, "torch", options, tiles)
        report = run_parts_job(
            plan_for(tmp_path / "many.mp4"), ClusterParts(client, spec), events=kill_one_mid_part
        )
    assert killed, "no worker reported a part under way"
    assert report.frames == 32
    assert (tmp_path / "many.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()


def _dask(*args: str, **popen) -> subprocess.Popen:
    dask = Path(sys.executable).with_name("dask")
    return subprocess.Popen([str(dask), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


@pytest.mark.slow
def test_the_dask_command_line_scheduler_and_workers_run_a_job(tmp_path: Path) -> None:
    pytest.importorskip("distributed")

    weights = tiny_weights(tmp_path, "compact")
    source = clips.cfr_clip(tmp_path, frames=24)
    info = tmp_path / "scheduler.json"
    processes = [
        _dask(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)
        )
    ]
    try:
        for _ in range(2):
            processes.append(
                _dask("worker", "--scheduler-file", str(info), "--host", "127.0.0.1", "--nthreads", "1",
                      "--no-dashboard", "--resources", "GPU=1")
            )  # fmt: skip
        from distributed import Client

        # The client waits for the scheduler's file, then for both workers to join.
        with Client(scheduler_file=str(info), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        run_cli(*video_args(source, tmp_path / "one.mp4", weights))
        output = run_cli(
            *video_args(source, tmp_path / "many.mp4", weights, "--cluster", address, "--gpus-per-task", "1")
        )
        assert "on the cluster tcp://127.0.0.1:" in output
        assert (tmp_path / "many.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (Debian package strace)")
def test_a_cluster_run_connects_to_nothing_but_loopback(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from tests.test_network import RUNNER, outside_calls

    weights = tiny_weights(tmp_path, "compact")
    source = clips.cfr_clip(tmp_path, frames=16)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    cv2.imwrite(str(pictures / "a.png"), np.zeros((16, 16, 3), np.uint8))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    for name, args in {
        "video": video_args(source, tmp_path / "out.mp4", weights, "--cluster", "local:2"),
        "images": ["images", pictures, "-o", tmp_path / "big", "--model", weights, "--cluster", "local:2"],
    }.items():
        log = tmp_path / f"{name}.strace"
        command = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log)]
        command += [sys.executable, "-c", RUNNER, "3", *[str(arg) for arg in args]]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        trace = log.read_text()
        assert "127.0.0.1" in trace  # the driver did talk to its scheduler, over loopback
        assert outside_calls(trace) == [], name


def test_a_plain_run_imports_nothing_of_dask(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "compact")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    code = (
        "import sys\nfrom upscaler.cli import cli\n"
        f"args = ['images', {str(tmp_path / 'a.png')!r}, '--model', {str(weights)!r}]\n"
        "cli.main(args, standalone_mode=False)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('distributed', 'dask')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "a_x4.png").exists()
