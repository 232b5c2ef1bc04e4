"""train.ship: a finished run becomes bundled weights whose card holds `upscale eval`'s figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.train.fixtures import make_images, tiny_recipe
from train.loop import train
from train.ship import ship
from upscaler.models import load_model


@pytest.fixture(autouse=True, scope="module")
def lpips_installed(tmp_path_factory: pytest.TempPathFactory):
    """Random LPIPS weights where `upscale eval --lpips` (run by ship) looks for them."""
    import os

    from safetensors.torch import save_file

    from tests.upscaler.models.test_lpips import random_state
    from upscaler.models.lpips import LPIPS_FILE

    folder = tmp_path_factory.mktemp("lpips")
    save_file(random_state(), str(folder / LPIPS_FILE))
    saved = os.environ.get("UPSCALER_WEIGHTS_DIR")
    os.environ["UPSCALER_WEIGHTS_DIR"] = str(folder)
    yield folder
    os.environ["UPSCALER_WEIGHTS_DIR"] = saved or ""


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ship")
    images = make_images(root / "hr", count=3, size=48)
    sets = [
        make_images(root / "SetA", count=2, size=40, seed=1),
        make_images(root / "SetB", count=1, size=44, seed=2),
    ]
    recipe = tiny_recipe("compact-psnr", images, train={"iterations": 4, "checkpoint_every": 4})
    train(recipe, root / "run")
    weights = ship(root / "run", "tiny", sets, root / "weights")
    return weights, json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))


def test_the_card_holds_both_sets_and_how_they_were_measured(shipped) -> None:
    weights, card = shipped
    assert card["id"] == "tiny" and card["weights"] == "tiny.safetensors"
    assert set(card["evaluation"]) == {"SetA", "SetB"}
    for name, figures in card["evaluation"].items():
        assert figures["command"].startswith("upscale eval --model tiny --data ")
        assert figures["command"].endswith(name)
        assert 0 < figures["ssim_y"] <= 1 and figures["psnr_y"] > 10
        assert figures["images"] == {"SetA": 2, "SetB": 1}[name]
        assert figures["lpips"] > 0 and figures["bicubic_lpips"] > 0
    assert card["fp16_check"]["shipped"] == card["weights_dtype"]
    assert card["iterations"] == 4  # the training card is kept underneath
    # no machine paths: data folders are named, not placed
    assert card["data"]["hr"] == ["ship0/hr"] and card["shipped_from"] == "run"
    assert "/tmp" not in json.dumps(card)


def test_shipped_weights_load_and_match_their_card(shipped) -> None:
    import hashlib

    weights, card = shipped
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    with safe_open(str(weights), "pt") as handle:
        dtypes = {handle.get_tensor(key).dtype for key in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    expected = torch.float16 if card["weights_dtype"] == "fp16" else torch.float32
    assert dtypes == {expected}
    model = load_model(weights)
    assert model.info.arch == "compact" and model.info.scale == 4
    assert all(parameter.dtype == torch.float32 for parameter in model.module.parameters())


def test_fp16_ships_only_when_no_printed_figure_moves(shipped) -> None:
    _, card = shipped
    check = card["fp16_check"]
    moved = max(abs(check["fp16"][name]["psnr_y"] - check["fp32"][name]["psnr_y"]) for name in check["fp32"])
    assert (card["weights_dtype"] == "fp16") == (
        moved <= 0.005
        and all(
            abs(check["fp16"][n]["ssim_y"] - check["fp32"][n]["ssim_y"]) <= 0.00005 for n in check["fp32"]
        )
    )


def test_earlier_stages_go_into_the_card(tmp_path: Path) -> None:
    images = make_images(tmp_path / "hr", count=3, size=48)
    sets = [make_images(tmp_path / "SetA", count=1, size=40, seed=1)]
    first = tiny_recipe("compact-psnr", images, train={"iterations": 4, "checkpoint_every": 2})
    train(first, tmp_path / "first")
    stopped = tmp_path / "first" / "checkpoints" / "iter_00000004.pt"
    assert stopped.is_file()
    train(tiny_recipe("compact-psnr", images, train={"iterations": 2}), tmp_path / "last")
    weights = ship(
        tmp_path / "last", "staged", sets, tmp_path / "weights", before=(tmp_path / "first", stopped)
    )
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    assert [stage["iterations"] for stage in card["stages"]] == [4, 4, 2]
    assert card["iterations_total"] == 10
    assert card["stages"][1]["stopped_at_checkpoint"] is True
    assert card["stages"][-1]["from"] == "last"
    assert card["wall_time_total_s"] == pytest.approx(
        sum(stage["wall_time_s"] for stage in card["stages"]), abs=0.2
    )
    with pytest.raises(SystemExit, match="not a run folder nor a readable checkpoint"):
        ship(
            tmp_path / "last", "staged", sets, tmp_path / "weights", before=(tmp_path / "hr" / "nothing.pt",)
        )
