"""Two processes under torchrun on the CPU (gloo): one run, one checkpoint, rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.fixtures import make_images, tiny_recipe
from train.distributed import Distributed, from_environment
from train.loop import train
from train.records.checkpoint import list_checkpoints, load_checkpoint

UPSCALE = Path(sys.executable).parent / "upscale"


def test_place_comes_from_torchrun_environment(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment() == Distributed() and from_environment().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    place = from_environment()
    assert (place.rank, place.world_size, place.enabled, place.is_main) == (2, 4, True, False)


needs_script = pytest.mark.skipif(
    not UPSCALE.exists(), reason=f"needs the installed `upscale` script at {UPSCALE}"
)
TINY_G = ["--set", "model.config.num_feat=8", "--set", "model.config.num_block=1"]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--no-python", str(UPSCALE), "train", *args,
        "--iterations", "2", "--patch-size", "32", "--workers", "0", "--no-progress",
        "--set", "train.checkpoint_every=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Its own process group, killed whole on a timeout: torchrun's workers would otherwise outlive it.
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = child.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    result = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@needs_script
def test_two_cpu_processes_train_like_one_with_their_batches_together(tmp_path: Path) -> None:
    data = make_images(tmp_path / "hr", count=4, size=32)
    run = tmp_path / "ddp"
    result = _torchrun(
        ["--recipe", "compact-psnr", "--data", str(data), "--val", str(data), "--out", str(run),
         "--batch-size", "2", "--set", "model.config.num_feat=8", "--set", "model.config.num_conv=2"]
    )  # fmt: skip
    # one checkpoint, one card, one voice: rank 1 writes and prints nothing of its own
    assert [path.name for path in list_checkpoints(run)] == ["iter_00000002.pt"]
    assert json.loads((run / "compact-psnr.json").read_text())["processes"] == 2
    assert result.stderr.count("training images") == 1

    # Two processes with 2 patches each see the very samples one process with 4 sees, and DDP averages
    # the gradients, so the weights agree up to the order of float additions.
    single = tiny_recipe("compact-psnr", data, data={"batch_size": 4})
    train(single, tmp_path / "single")
    ddp = load_checkpoint(run / "checkpoints" / "iter_00000002.pt")
    one = load_checkpoint(tmp_path / "single" / "checkpoints" / "iter_00000002.pt")
    assert ddp["sampler"]["world_size"] == 2
    torch.testing.assert_close(ddp["net_g"], one["net_g"], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@needs_script
def test_two_cpu_processes_train_a_gan(tmp_path: Path) -> None:
    data = make_images(tmp_path / "hr", count=4, size=32)
    run = tmp_path / "run"
    _torchrun(
        ["--recipe", "srgan", "--data", str(data), "--out", str(run), "--batch-size", "2", "--pretrained", "",
         *TINY_G, "--set", "discriminator.num_feat=8", "--set", "losses.perceptual_weight=0"]
    )  # fmt: skip
    checkpoint = load_checkpoint(run / "checkpoints" / "iter_00000002.pt")
    assert checkpoint["net_d"] is not None and checkpoint["optim_d"] is not None
    assert json.loads((run / "srgan.json").read_text())["processes"] == 2


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("bogus", "train.device: must be auto, cpu, cuda, cuda:N or mps \\(got 'bogus'\\)"),
        ("xla", "train.device: must be auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_a_device_torch_cannot_use_is_a_config_error(requested: str, message: str) -> None:
    # these were internal errors with torch's own wording
    from train.distributed import device_for
    from train.recipes.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        device_for(Distributed(), requested)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so() -> None:
    from train.distributed import device_for
    from train.recipes.config import ConfigError

    for requested in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"train.device: {requested} asked for, but .* no CUDA GPU"):
            device_for(Distributed(), requested)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_plain_cuda_gets_an_index() -> None:
    # torch.cuda.set_device(torch.device("cuda")) raises: `--device cuda` failed on every GPU machine
    from train.distributed import device_for

    device = device_for(Distributed(), "cuda")
    assert device.type == "cuda" and device.index is not None
