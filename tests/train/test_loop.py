"""The training loop end to end: it learns, it resumes exactly, every recipe ships a loadable model."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import cv2
import pytest
import torch

from tests.train.fixtures import make_images, random_vgg, tiny_recipe
from train.loop import train
from train.recipes.config import ConfigError
from train.records.checkpoint import list_checkpoints, load_checkpoint
from upscaler.errors import InputError, ModelError, OutputError
from upscaler.models import load_model

RECIPES = ["srresnet", "srgan", "rrdb-psnr", "esrgan", "compact-psnr", "compact-gan"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("data") / "hr", count=4, size=32)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_tiny_model_overfits_a_handful_of_patches(images: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(
        "srresnet",
        images,
        val=images,
        model={"config": {"num_feat": 16, "num_block": 1}},
        data={"batch_size": 4, "flip": False, "rotate": False},
        train={"iterations": 150, "val_every": 150, "checkpoint_every": 150},
        optim_g={"lr": 2e-3},
    )
    result = train(recipe, tmp_path / "run")
    losses = [float(row["pixel"]) for row in _rows(tmp_path / "run" / "train.csv")]
    assert len(losses) == 150
    assert losses[0] / (sum(losses[-10:]) / 10) >= 10
    card = json.loads(result.card.read_text())
    assert result.psnr == pytest.approx(card["validation"]["psnr_y"], abs=1e-4)
    assert card["validation"]["psnr_y"] > card["validation"]["bicubic_psnr_y"] + 1


def _states(run: Path, iteration: int) -> dict:
    checkpoint = load_checkpoint(run / "checkpoints" / f"iter_{iteration:08d}.pt")
    return {key: checkpoint[key] for key in ("net_g", "net_d", "net_g_ema", "optim_g", "optim_d", "sched_g")}


def test_resume_continues_exactly(images: Path, tmp_path: Path) -> None:
    # SRGAN with an EMA and a milestone inside the run: G with batch norm, D, both optimisers, the EMA and
    # the schedule all carry across the checkpoint.
    def recipe(iterations: int, workers: int):
        return tiny_recipe(
            "srgan",
            images,
            train={"iterations": iterations, "checkpoint_every": 3, "val_every": 100, "ema_decay": 0.9},
            scheduler={"milestones": [4], "gamma": 0.5},
            data={"workers": workers},
        )

    torch.manual_seed(0)
    vgg = random_vgg(recipe(6, 0))
    train(recipe(6, 0), tmp_path / "once", vgg=vgg)
    first = train(recipe(3, 0), tmp_path / "twice", vgg=vgg)
    assert first.iteration == 3
    # The continuation loads its data in a worker process: the data order owes nothing to the loader.
    second = train(recipe(6, 1), tmp_path / "twice", vgg=vgg, resume=True)
    assert second.iteration == 6

    once, twice = _states(tmp_path / "once", 6), _states(tmp_path / "twice", 6)
    torch.testing.assert_close(twice, once, rtol=0, atol=0)
    assert twice["optim_g"]["param_groups"][0]["lr"] == pytest.approx(0.5 * recipe(6, 0).optim_g.lr)
    # the logs were continued, not restarted
    assert [int(row["iteration"]) for row in _rows(tmp_path / "twice" / "train.csv")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_runs_and_writes_a_loadable_model(name: str, images: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(name, images, val=images)
    torch.manual_seed(0)
    result = train(recipe, tmp_path / "run", vgg=random_vgg(recipe))

    assert not result.interrupted and result.iteration == 2
    assert result.weights == tmp_path / "run" / f"{name}.safetensors"
    loaded = load_model(result.weights)
    assert loaded.info.arch == recipe.model.arch and loaded.info.scale == 4
    with torch.no_grad():
        out = loaded.module(torch.rand(1, 3, 8, 8))
    assert out.shape == (1, 3, 32, 32)

    card = json.loads(result.card.read_text())
    assert card["recipe"] == name and card["arch"] == recipe.model.arch
    assert card["config"] == recipe.model.config and card["iterations"] == 2
    assert card["training_config"] == json.loads(json.dumps(recipe.to_dict()))
    assert len(card["data"]["digest_sha256"]) == 64 and card["data"]["images"] >= 2
    assert card["validation"]["psnr_y"] > 0 and 0 < card["validation"]["ssim_y"] <= 1
    assert card["generator"] == ("EMA of the generator" if recipe.train.ema_decay else "the generator")
    assert card["description"] == recipe.summary  # from the resolved config, not the recipe's prose

    run = tmp_path / "run"
    for png in ("samples.png", "curves.png"):
        assert cv2.imread(str(run / png)) is not None
    losses = _rows(run / "train.csv")
    assert [row["iteration"] for row in losses] == ["1", "2"]
    if recipe.losses.uses_gan:
        assert {"gan", "d", "perceptual"} <= set(losses[0])
    assert (run / "config.toml").is_file() and len(list_checkpoints(run)) == 1


def test_srresnet_keeps_batch_norm_in_its_file_and_loads_folded(images: Path, tmp_path: Path) -> None:
    result = train(tiny_recipe("srresnet", images), tmp_path / "run")
    loaded = load_model(result.weights)
    assert loaded.info.config["batch_norm"] is False  # folded on load
    from upscaler.models import read_weights

    state, metadata = read_weights(result.weights)
    assert any(key.startswith("bn_body") for key in state)  # the file keeps what srgan starts from
    assert json.loads(metadata["config"])["batch_norm"] is True


def test_srgan_starts_from_an_srresnet_result(images: Path, tmp_path: Path) -> None:
    psnr = train(tiny_recipe("srresnet", images), tmp_path / "psnr")
    recipe = tiny_recipe("srgan", images, train={"pretrained": str(psnr.weights)})
    assert train(recipe, tmp_path / "gan", vgg=random_vgg(recipe)).weights is not None

    compact = train(tiny_recipe("compact-psnr", images), tmp_path / "compact")
    wrong = tiny_recipe("srgan", images, train={"pretrained": str(compact.weights)})
    with pytest.raises(ModelError, match="does not fit the recipe's generator"):
        train(wrong, tmp_path / "wrong", vgg=random_vgg(wrong))
    assert not (tmp_path / "wrong").exists()  # found before the run folder is made and the data read
    missing = tiny_recipe("srgan", images, train={"pretrained": str(tmp_path / "none.safetensors")})
    with pytest.raises(InputError, match="train.pretrained: no such weights file"):
        train(missing, tmp_path / "missing", vgg=random_vgg(missing))


def test_a_gan_stage_starts_from_a_bundled_model_id(images: Path, tmp_path: Path, monkeypatch) -> None:
    from upscaler.models import catalog

    psnr = train(tiny_recipe("compact-psnr", images), tmp_path / "psnr")
    bundled = tmp_path / "weights"
    bundled.mkdir()
    (bundled / "compact.safetensors").write_bytes(psnr.weights.read_bytes())
    monkeypatch.setattr(catalog, "WEIGHTS_DIR", bundled)
    recipe = tiny_recipe("compact-gan", images, train={"pretrained": "compact"})
    assert train(recipe, tmp_path / "gan", vgg=random_vgg(recipe)).weights is not None


def test_pretrained_weights_of_another_width_name_the_flags_that_fit(images: Path, tmp_path: Path) -> None:
    psnr = train(tiny_recipe("rrdb-psnr", images), tmp_path / "psnr")
    recipe = tiny_recipe(
        "esrgan", images, model={"config": {"num_feat": 16}}, train={"pretrained": str(psnr.weights)}
    )
    with pytest.raises(
        ConfigError, match="is a rrdbnet with num_feat 8; the recipe's generator differs"
    ) as caught:
        train(recipe, tmp_path / "gan", vgg=random_vgg(recipe))
    assert caught.value.hint == "add --set model.config.num_feat=8"
    assert not (tmp_path / "gan").exists()


def test_a_recipe_that_needs_vgg_stops_before_reading_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    recipe = tiny_recipe("esrgan", tmp_path / "no-such-folder")
    with pytest.raises(ModelError, match="needs ImageNet VGG19 weights") as caught:
        train(recipe, tmp_path / "run")
    assert "vgg19-dcbb9e9d.pth" in caught.value.hint and "--vgg-weights" in caught.value.hint
    assert not (tmp_path / "run").exists()


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(images: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("compact-psnr", images, val=images, train={"iterations": 8, "checkpoint_every": 100})

    def press_ctrl_c(line: str) -> None:
        if line.startswith("iteration 2:"):
            signal.raise_signal(signal.SIGINT)

    # Whatever the handler was (a job started in the background has SIGINT ignored), it is put back.
    before = signal.getsignal(signal.SIGINT)
    result = train(recipe, tmp_path / "run", report=press_ctrl_c)
    assert result.interrupted and result.iteration == 2
    assert result.weights is None and result.checkpoint.name == "iter_00000002.pt"
    assert signal.getsignal(signal.SIGINT) is before
    resumed = train(recipe, tmp_path / "run", resume=True)
    assert resumed.iteration == 8 and resumed.weights is not None


def test_the_card_lists_the_command_that_started_the_run_and_each_resume(
    images: Path, tmp_path: Path
) -> None:
    # The card of a resumed run said only `upscale train --out RUN --resume`: how it began was lost
    run = tmp_path / "run"
    card = run / "compact-psnr.json"

    def recipe(iterations: int):
        return tiny_recipe("compact-psnr", images, train={"iterations": iterations, "checkpoint_every": 1})

    train(recipe(1), run, command="upscale train --recipe compact-psnr")
    assert json.loads(card.read_text())["commands"] == ["upscale train --recipe compact-psnr"]
    card.unlink()  # as after a Ctrl-C: no card, the checkpoint remembers
    train(recipe(2), run, resume=True, command="upscale train --resume --iterations 2")
    written = json.loads(card.read_text())
    assert written["command"] == "upscale train --recipe compact-psnr"  # still the start, for old readers
    assert written["commands"] == [
        "upscale train --recipe compact-psnr",
        "upscale train --resume --iterations 2",
    ]

    # a checkpoint from before checkpoints kept the commands: the earlier card still has them
    newest = run / "checkpoints" / "iter_00000002.pt"
    old = load_checkpoint(newest)
    del old["commands"]
    torch.save(old, newest)
    train(recipe(3), run, resume=True, command="upscale train --resume --iterations 3")
    assert json.loads(card.read_text())["commands"] == [
        "upscale train --recipe compact-psnr",
        "upscale train --resume --iterations 2",
        "upscale train --resume --iterations 3",
    ]


def test_progress_lines_for_a_log_file(images: Path, tmp_path: Path) -> None:
    # without a terminal a tqdm bar piles carriage-return updates into the log: a line per log_every
    recipe = tiny_recipe("compact-psnr", images, train={"iterations": 4, "log_every": 2})
    lines: list[str] = []
    train(recipe, tmp_path / "run", report=lines.append, progress="lines")
    progress = [line for line in lines if line.startswith("iteration ")]
    assert [line.split(":")[0] for line in progress] == ["iteration 2/4", "iteration 4/4"]
    assert all(" pixel " in line and ", lr " in line and " it/s, ETA " in line for line in progress)
    assert progress[-1].endswith("ETA 0:00:00")
    assert f"Training compact-psnr: {recipe.summary}." in lines
    with pytest.raises(ValueError, match="progress must be one of bar, lines, none"):
        train(recipe, tmp_path / "other", progress="dots")


def test_checkpoints_keep_the_newest_and_refuse_to_overwrite_a_run(images: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(
        "compact-psnr", images, train={"iterations": 4, "checkpoint_every": 1, "keep_checkpoints": 2}
    )
    train(recipe, tmp_path / "run")
    assert [path.name for path in list_checkpoints(tmp_path / "run")] == [
        "iter_00000003.pt",
        "iter_00000004.pt",
    ]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temporary files left
    with pytest.raises(OutputError, match="already holds a run"):
        train(recipe, tmp_path / "run")
    with pytest.raises(InputError, match="no checkpoint"):
        train(recipe, tmp_path / "fresh", resume=True)


def test_a_crop_the_discriminator_cannot_take_stops_before_reading_data(tmp_path: Path) -> None:
    recipe = tiny_recipe("esrgan", tmp_path / "no-such-folder", data={"patch_size": 96})
    with pytest.raises(ConfigError, match="discriminator: VGGStyleDiscriminator: input_size must be"):
        train(recipe, tmp_path / "run", vgg=random_vgg(recipe))


def test_resume_with_fewer_iterations_than_done_is_refused(images: Path, tmp_path: Path) -> None:
    # it used to "finish" silently: a card saying 4 iterations beside a configuration saying 2
    recipe = tiny_recipe("compact-psnr", images, train={"iterations": 4, "checkpoint_every": 2})
    train(recipe, tmp_path / "run")
    fewer = tiny_recipe("compact-psnr", images, train={"iterations": 2, "checkpoint_every": 2})
    with pytest.raises(ConfigError, match="train.iterations: 2 is fewer than the 4 iterations") as caught:
        train(fewer, tmp_path / "run", resume=True)
    assert "--iterations" in caught.value.hint


def test_resuming_a_finished_run_does_not_measure_it_twice(images: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("compact-psnr", images, val=images, train={"iterations": 2})
    first = train(recipe, tmp_path / "run")
    again = train(recipe, tmp_path / "run", resume=True)
    assert again.psnr == first.psnr and again.weights is not None
    assert [row["iteration"] for row in _rows(tmp_path / "run" / "val.csv")] == ["2"]


@pytest.mark.parametrize(("key", "flag"), [("val", "--val"), ("hr", "--data")])
def test_a_missing_folder_stops_before_the_run_folder_is_made(
    key: str, flag: str, images: Path, tmp_path: Path
) -> None:
    # a missing --val was found only after every training image had been decoded
    missing = str(tmp_path / "nowhere")
    recipe = tiny_recipe("compact-psnr", images, data={key: [missing] if key == "hr" else missing})
    with pytest.raises(InputError, match=f"data.{key} \\({flag}\\): no such folder: .*nowhere"):
        train(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_image_that_fails_to_decode_in_a_worker_is_one_line(tmp_path: Path) -> None:
    # Decoded at each use (cache_gib 0) in a worker process: the InputError came back from the
    # DataLoader with the worker's whole traceback in its message.
    folder = make_images(tmp_path / "hr", count=2, size=32)
    cv2.imwrite(str(folder / "broken.bmp"), cv2.imread(str(folder / "img0.png")))
    data = (folder / "broken.bmp").read_bytes()
    (folder / "broken.bmp").write_bytes(data[: len(data) // 3])  # the header reads, the pixels do not
    recipe = tiny_recipe(
        "compact-psnr",
        folder,
        data={"cache_gib": 0.0, "workers": 1, "batch_size": 3},
        train={"iterations": 4},
    )
    with pytest.raises(InputError, match="^training data: cannot read .*broken.bmp") as caught:
        train(recipe, tmp_path / "run")
    assert "\n" not in caught.value.message and "Traceback" not in caught.value.message
    assert "replace or remove" in caught.value.hint


def test_checkpoints_get_the_mode_of_any_new_file(images: Path, tmp_path: Path) -> None:
    # torch.save went to a mkstemp temporary (0o600): checkpoints were private to their owner
    import os

    previous = os.umask(0o022)
    try:
        train(tiny_recipe("compact-psnr", images), tmp_path / "run")
    finally:
        os.umask(previous)
    for path in list_checkpoints(tmp_path / "run"):
        assert path.stat().st_mode & 0o777 == 0o644


def test_a_run_folder_that_cannot_be_made_is_an_output_error(images: Path, tmp_path: Path) -> None:
    # --out naming a file was an internal error (FileExistsError)
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputError, match="cannot make the run folder .*afile \\(--out\\): it is a file"):
        train(tiny_recipe("compact-psnr", images), tmp_path / "afile")


def test_a_cosine_period_that_is_not_the_run_is_pointed_out(images: Path, tmp_path: Path) -> None:
    # --iterations does not move scheduler.period: compact-psnr's 400000 on a shorter run never anneals,
    # and on a longer one the learning rate climbs back up (CosineAnnealingLR is periodic)
    lines: list[str] = []
    train(tiny_recipe("compact-psnr", images), tmp_path / "short", report=lines.append)
    assert any("scheduler.period is 400000 iterations but the run has 2" in line for line in lines)
    assert any("--set scheduler.period=2" in line for line in lines)
    lines.clear()
    train(
        tiny_recipe("compact-psnr", images, scheduler={"period": 2}), tmp_path / "exact", report=lines.append
    )
    assert not any("scheduler.period" in line for line in lines)
