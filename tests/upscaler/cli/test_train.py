"""`upscale train`: help, recipes printed, flags over the recipe, an end-to-end run and its resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.train.fixtures import make_images
from train.recipes.config import check
from train.recipes.files import read_config_file
from upscaler.cli import cli
from upscaler.models import load_model

TINY = [
    *("--set", "model.config.num_feat=8", "--set", "model.config.num_conv=2"),
    *("--workers", "0", "--threads", "1", "--no-progress"),
]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_help_names_the_recipes() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    for text in ("--recipe", "esrgan", "compact-psnr", "--resume", "--set", "--print-recipe", "torchrun"):
        assert text in result.output


def test_print_recipe_prints_the_bundled_toml() -> None:
    result = CliRunner().invoke(cli, ["train", "--print-recipe", "esrgan"])
    assert result.exit_code == 0
    assert result.output.startswith("# ESRGAN") and "gan_weight = 5e-3" in result.output


def test_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["train"])
    assert result.exit_code == 2 and "--recipe" in result.output
    result = runner.invoke(cli, ["train", "--recipe", "compact-psnr"])
    assert result.exit_code == 2 and "no training data" in result.output
    result = runner.invoke(
        cli, ["train", "--recipe", "compact-psnr", "--data", "x", "--set", "data.patch_size=30"]
    )
    assert result.exit_code == 1
    assert "Error: data.patch_size: must be a multiple of 4 for compact x4 (got 30)" in result.output
    result = runner.invoke(cli, ["train", "--recipe", "nope", "--data", "x"])
    assert result.exit_code == 1 and "unknown recipe 'nope'" in result.output
    # an unknown model.config key read as Python's "__init__() got an unexpected keyword argument"
    result = runner.invoke(
        cli, ["train", "--recipe", "compact-psnr", "--data", "x", "--set", "model.config.x=1"]
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: model.config.x: unknown key for compact; "
        "known: num_in_ch, num_out_ch, num_feat, num_conv, upscale, act_type\n"
    )
    # --data laid its table over the 3, and the error was `data.patch_size: missing`
    result = runner.invoke(cli, ["train", "--recipe", "compact-psnr", "--data", "x", "--set", "data=3"])
    assert result.exit_code == 1 and result.output == "Error: data: must be a table ([data]; got 3)\n"


def test_without_a_terminal_progress_is_a_line_every_log_every(tmp_path: Path) -> None:
    # CliRunner's stderr is not a TTY, as a log file or CI is not: tqdm's carriage-return updates
    # flooded such logs; there the run says where it is every train.log_every iterations instead
    data = make_images(tmp_path / "hr", count=2, size=40)
    args = ["train", "--recipe", "compact-psnr", "--data", str(data), "--out", str(tmp_path / "run")]
    flags = ["--iterations", "4", "--patch-size", "32", "--batch-size", "2", "--set", "train.log_every=2"]
    result = CliRunner().invoke(cli, [*args, *flags, *TINY[:4], "--workers", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("iteration ")]
    assert [line.split(":")[0] for line in progress] == ["iteration 2/4", "iteration 4/4"]
    assert all("pixel" in line and "it/s, ETA" in line for line in progress)
    quiet = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "quiet"), *flags, *TINY])
    assert quiet.exit_code == 0, quiet.output
    assert "it/s" not in quiet.stderr


def test_train_end_to_end_then_extend_with_resume(tmp_path: Path, monkeypatch) -> None:
    data = make_images(tmp_path / "hr", count=3, size=40)
    run = tmp_path / "run"
    config = tmp_path / "mine.toml"
    config.write_text("[train]\nlog_every = 2\nval_every = 2\n[data]\nbatch_size = 3\n")
    args = ["train", "--recipe", "compact-psnr", "--data", str(data), "--val", str(data), "--out", str(run)]
    flags = ["--iterations", "4", "--patch-size", "32", "--batch-size", "2", "--lr", "1e-3", "--seed", "3"]
    started = [*args, "--config", str(config), *flags, *TINY]
    monkeypatch.setattr(sys, "argv", ["upscale", *started])
    result = CliRunner().invoke(cli, started)
    assert result.exit_code == 0, result.output
    # what runs is said from the resolved config: the recipe's description says 16 convs
    assert "Training compact-psnr: compact (8 ch, 2 convs) x4 on L1." in result.output
    assert f"Wrote {run / 'compact-psnr.safetensors'} (validation PSNR" in result.output

    saved = check(read_config_file(run / "config.toml"))
    assert (saved.train.iterations, saved.data.patch_size, saved.optim_g.lr, saved.train.seed) == (
        4,
        32,
        1e-3,
        3,
    )
    assert saved.data.batch_size == 2  # the flag wins over --config
    assert saved.train.log_every == 2  # --config wins over the recipe
    assert saved.model.config["num_feat"] == 8  # --set
    assert saved.data.hr == (str(data.resolve()),)

    card = json.loads((run / "compact-psnr.json").read_text())
    assert card["iterations"] == 4 and card["command"].startswith("upscale train --recipe compact-psnr")
    assert card["commands"] == [card["command"]]
    assert card["description"] == "compact (8 ch, 2 convs) x4 on L1"
    assert load_model(run / "compact-psnr.safetensors").info.arch == "compact"

    again = CliRunner().invoke(cli, [*args, *TINY])
    assert again.exit_code == 1 and "already holds a run" in again.output

    resume = ["train", "--out", str(run), "--resume", "--iterations", "6", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["upscale", *resume])
    resumed = CliRunner().invoke(cli, resume)
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming" in resumed.output and "iteration 4" in resumed.output
    resumed_card = json.loads((run / "compact-psnr.json").read_text())
    assert resumed_card["iterations"] == 6
    # the resume is added to the commands; `command` is still the one that started the run
    assert resumed_card["command"] == card["command"]
    assert resumed_card["commands"] == [
        card["command"],
        f"upscale train --out {run} --resume --iterations 6 --no-progress",
    ]

    # A checkpoint is a model too: `--model runs/x/checkpoints/iter_N.pt` loads the generator it holds
    # (the EMA when the run keeps one), the very weights the run ended with.
    last = sorted((run / "checkpoints").glob("iter_*.pt"))[-1]
    from_checkpoint = load_model(last).module.state_dict()
    final = load_model(run / "compact-psnr.safetensors").module.state_dict()
    assert from_checkpoint.keys() == final.keys()
    assert all(from_checkpoint[key].equal(final[key]) for key in final)


def test_gan_recipe_without_vgg_weights_says_where_to_put_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = CliRunner().invoke(
        cli, ["train", "--recipe", "esrgan", "--data", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "needs ImageNet VGG19 weights" in result.output and "--vgg-weights" in result.output


@pytest.mark.parametrize("damage", ["truncated", "layout", "code"])
def test_a_bad_vgg_file_stops_the_run_with_one_line(tmp_path: Path, damage: str) -> None:
    import os
    import pickle

    from tests.upscaler.models.test_vgg import write_keras_file

    if damage == "truncated":
        whole = write_keras_file(tmp_path / "whole.h5").read_bytes()
        path = tmp_path / "vgg.h5"
        path.write_bytes(whole[: len(whole) // 3])
    elif damage == "layout":
        path = write_keras_file(tmp_path / "vgg.h5", skip="block2_conv1")
    else:

        class RunsCode:
            def __reduce__(self):
                return (os.mkdir, (str(tmp_path / "ran"),))

        path = tmp_path / "vgg.pth"
        path.write_bytes(pickle.dumps({"features.0.weight": RunsCode()}, protocol=4))
    result = CliRunner().invoke(
        cli,
        ["train", "--recipe", "esrgan", "--data", str(tmp_path), "--vgg-weights", str(path), "--no-progress"],
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("Hint: ")
    assert "upscale weights install vgg19" in lines[1] and "Traceback" not in result.output
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("scale", [2, 1])
def test_the_card_says_what_upscale_eval_says_on_the_same_set(tmp_path: Path, scale: int) -> None:
    # RRDBNet x2/x1 takes inputs in multiples of 2/4: validation used to crop the set to that multiple
    # of HR pixels where `upscale eval` pads the input, so card and eval disagreed (in bicubic too).
    # At x1 bicubic is exact: its PSNR is infinite, which the card wrote as `Infinity` (not JSON).
    import cv2

    data = make_images(tmp_path / "hr", count=2, size=40)
    val = tmp_path / "val"
    val.mkdir()
    for index, image in enumerate(sorted(data.iterdir())):
        cv2.imwrite(str(val / f"{index}.png"), cv2.imread(str(image))[:38, :34])  # not multiples of 4
    run = tmp_path / "run"
    tiny_rrdb = [
        *("--set", "model.config.num_feat=8", "--set", "model.config.num_block=1"),
        *("--set", "model.config.num_grow_ch=4", "--set", f"model.config.scale={scale}"),
    ]
    flags = ["--iterations", "2", "--patch-size", "32", "--batch-size", "2", *TINY[4:], *tiny_rrdb]
    args = ["train", "--recipe", "rrdb-psnr", "--data", str(data), "--val", str(val), "--out", str(run)]
    result = CliRunner().invoke(cli, [*args, *flags])
    assert result.exit_code == 0, result.output
    card = json.loads((run / "rrdb-psnr.json").read_text(), parse_constant=pytest.fail)
    measured = CliRunner().invoke(
        cli, ["eval", "--model", str(run / "rrdb-psnr.safetensors"), "--data", str(val), "--json"]
    )
    assert measured.exit_code == 0, measured.output
    mean = json.loads(measured.stdout)["mean"]
    assert card["validation"]["psnr_y"] == pytest.approx(mean["psnr"], abs=1e-4)
    assert card["validation"]["ssim_y"] == pytest.approx(mean["ssim"], abs=1e-5)
    if scale == 1:
        assert card["validation"]["bicubic_psnr_y"] is None and mean["bicubic_psnr"] is None
    else:
        assert card["validation"]["bicubic_psnr_y"] == pytest.approx(mean["bicubic_psnr"], abs=1e-4)


def test_resume_refuses_a_recipe_other_than_the_runs(tmp_path: Path) -> None:
    # `--resume --recipe esrgan --out RUN` continued RUN's compact-psnr run and ignored the recipe
    data = make_images(tmp_path / "hr", count=2, size=40)
    run = tmp_path / "run"
    args = ["train", "--recipe", "compact-psnr", "--data", str(data), "--out", str(run)]
    result = CliRunner().invoke(cli, [*args, "--iterations", "1", "--patch-size", "32", *TINY])
    assert result.exit_code == 0, result.output
    other = CliRunner().invoke(cli, ["train", "--resume", "--recipe", "esrgan", "--out", str(run)])
    assert other.exit_code == 2
    assert "a compact-psnr run, not esrgan; leave out --recipe" in other.output


def test_resume_refuses_a_checkpoint_with_code_in_one_line(tmp_path: Path) -> None:
    import os

    data = make_images(tmp_path / "hr", count=2, size=40)
    run = tmp_path / "run"
    args = ["train", "--recipe", "compact-psnr", "--data", str(data), "--out", str(run)]
    result = CliRunner().invoke(cli, [*args, "--iterations", "1", "--patch-size", "32", *TINY])
    assert result.exit_code == 0, result.output
    checkpoint = next((run / "checkpoints").glob("*.pt"))
    state = torch.load(checkpoint, weights_only=True)
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    state["hook"] = RunsCode()
    torch.save(state, checkpoint)
    refused = CliRunner().invoke(cli, ["train", "--resume", "--out", str(run), "--iterations", "2"])
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"Error: checkpoint {checkpoint.name}: refusing to load")
    assert "posix.mkdir" in lines[0] or "os.mkdir" in lines[0]
    assert "weights_only" not in refused.output and not marker.exists()
