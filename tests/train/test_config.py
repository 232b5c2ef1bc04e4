"""Recipes: the papers' numbers, overrides in order, one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.recipes.config import ConfigError, check, merge, nested, parse_assignment, resolve, to_toml
from train.recipes.files import load_table, parse_toml, read_config_file, recipe_names, recipe_text
from upscaler.models.vgg import CAFFE_GAIN

RECIPES = ["compact-gan", "compact-psnr", "esrgan", "realvideo", "rrdb-psnr", "srgan", "srresnet"]


def test_bundled_recipes_are_all_there_and_valid() -> None:
    assert recipe_names() == RECIPES
    for name in RECIPES:
        recipe = resolve(load_table(name))
        assert recipe.name == name
        assert recipe.scale == 4


def test_srresnet_and_srgan_follow_the_paper() -> None:
    srresnet = resolve(load_table("srresnet"))
    assert srresnet.model.arch == "srresnet" and srresnet.model.config["batch_norm"] is True
    assert (srresnet.losses.pixel, srresnet.losses.uses_gan, srresnet.losses.uses_vgg) == (
        "mse",
        False,
        False,
    )
    assert srresnet.optim_g.lr == 1e-4 and srresnet.optim_g.betas[0] == 0.9
    assert (srresnet.data.patch_size, srresnet.data.batch_size) == (96, 16)

    srgan = resolve(load_table("srgan"))
    assert srgan.train.pretrained.endswith("srresnet.safetensors")
    assert (srgan.losses.perceptual_layer, srgan.losses.perceptual_before_activation) == ("conv5_4", False)
    # the paper's 1/12.75 on Caffe's VGG19, whose features the network multiplies by CAFFE_GAIN
    assert srgan.losses.perceptual_feature_scale * CAFFE_GAIN == pytest.approx(1 / 12.75)
    assert srgan.losses.perceptual_criterion == "mse" and srgan.losses.pixel_weight == 0
    assert (srgan.losses.gan, srgan.losses.gan_weight) == ("vanilla", 1e-3)
    assert srgan.discriminator.arch == "srgan"
    # 1e-4, then 1e-5
    assert srgan.optim_g.lr == 1e-4 and srgan.scheduler.kind == "multistep" and srgan.scheduler.gamma == 0.1


def test_rrdb_and_esrgan_follow_the_paper() -> None:
    psnr = resolve(load_table("rrdb-psnr"))
    assert psnr.model.arch == "rrdbnet" and psnr.model.config["num_block"] == 23
    assert (psnr.losses.pixel, psnr.optim_g.lr, psnr.scheduler.kind) == ("l1", 2e-4, "multistep")
    assert psnr.scheduler.milestones == (200000, 400000, 600000, 800000) and psnr.scheduler.gamma == 0.5

    esrgan = resolve(load_table("esrgan"))
    assert esrgan.train.pretrained.endswith("rrdb-psnr.safetensors")
    assert (esrgan.losses.perceptual_layer, esrgan.losses.perceptual_before_activation) == ("conv5_4", True)
    assert (esrgan.losses.perceptual_criterion, esrgan.losses.perceptual_weight) == ("l1", 1.0)
    assert (esrgan.losses.gan, esrgan.losses.gan_weight) == ("ragan", 5e-3)
    assert (esrgan.losses.pixel, esrgan.losses.pixel_weight) == ("l1", 1e-2)
    assert esrgan.discriminator.arch == "vgg_style" and esrgan.train.ema_decay == 0.999
    assert esrgan.optim_g.lr == esrgan.optim_d.lr == 1e-4 and esrgan.scheduler.gamma == 0.5


def test_compact_recipes_use_the_same_losses() -> None:
    gan, esrgan = resolve(load_table("compact-gan")), resolve(load_table("esrgan"))
    assert gan.model.arch == "compact"
    assert gan.losses == esrgan.losses
    assert resolve(load_table("compact-psnr")).scheduler.kind == "cosine"


def test_toml_round_trip_keeps_every_value() -> None:
    for name in RECIPES:
        recipe = resolve(load_table(name))
        assert check(parse_toml(to_toml(recipe.to_dict()), name)) == recipe


def test_overrides_apply_in_order(tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text("[optim_g]\nlr = 3e-4\n[data]\nbatch_size = 8\n")
    recipe = resolve(
        load_table("rrdb-psnr"),
        [read_config_file(config), nested(*parse_assignment("data.batch_size=4")), nested("train.seed", 7)],
    )
    assert recipe.optim_g.lr == 3e-4  # from the file
    assert recipe.data.batch_size == 4  # --set wins over the file
    assert recipe.train.seed == 7
    assert recipe.optim_g.betas == (0.9, 0.999)  # untouched keys stay


def test_parse_assignment_reads_toml_values() -> None:
    assert parse_assignment("optim_g.lr=2e-4") == ("optim_g.lr", 2e-4)
    assert parse_assignment("optim_g.betas = [0.9, 0.99]") == ("optim_g.betas", [0.9, 0.99])
    assert parse_assignment("data.flip=false") == ("data.flip", False)
    assert parse_assignment("train.device=cuda:1") == ("train.device", "cuda:1")
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignment("optim_g.lr")


def test_merge_replaces_leaves_and_merges_tables() -> None:
    assert merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": [2]}) == {
        "a": {"b": 3, "c": 2},
        "d": [2],
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"data": {"pach_size": 96}}, "unknown key data.pach_size; known in \\[data\\]"),
        ({"optim_g": {"lr": "fast"}}, 'optim_g.lr: must be a number \\(got "fast"\\)'),
        ({"optim_g": {"lr": -1.0}}, "optim_g.lr: must be positive"),
        ({"optim_g": {"betas": [0.9]}}, "optim_g.betas: must be a list of 2 values"),
        ({"data": {"patch_size": 30}}, "data.patch_size: must be a multiple of 4"),
        ({"data": {"flip": 1}}, "data.flip: must be true or false"),
        ({"train": {"iterations": 0}}, "train.iterations: must be positive"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay: must be in \\[0, 1\\)"),
        ({"train": {"precision": "fp8"}}, "train.precision: must be one of fp32, bf16, fp16"),
        ({"scheduler": {"kind": "step"}}, "scheduler.kind: must be one of"),
        ({"scheduler": {"milestones": [5, 3]}}, "scheduler.milestones: must be increasing"),
        ({"losses": {"pixel": "l3"}}, "losses.pixel: must be one of l1, mse"),
        ({"losses": {"perceptual_layer": "relu9"}}, "losses.perceptual_layer: must be one of"),
        ({"losses": {"gan_weight": 1e-3}}, "\\[discriminator\\]: missing"),
        ({"model": {"arch": "unet"}}, "model.arch: must be one of"),
        # an unknown config key read as Python's "__init__() got an unexpected keyword argument"
        (
            {"model": {"config": {"num_blocks": 3}}},
            "^model.config.num_blocks: unknown key for rrdbnet; known: num_in_ch, num_out_ch, scale, "
            "num_feat, num_block, num_grow_ch, unshuffle, plus$",
        ),
        ({"model": {"config": 3}}, "^model.config: must be a table \\(got 3\\)$"),
        ({"data": 3}, "^data: must be a table \\(\\[data\\]; got 3\\)$"),
        ({"optimiser": {}}, "unknown key optimiser"),
        ({"data": {"lq": "somewhere"}}, "data.lq and data.gt"),
        # non-finite numbers: an infinite lr trained to NaN weights, a NaN loss weight crashed the loop
        ({"optim_g": {"lr": float("inf")}}, "optim_g.lr: must be a finite number \\(got inf\\)"),
        ({"losses": {"pixel_weight": float("nan")}}, "losses.pixel_weight: must be a finite number"),
        ({"data": {"cache_gib": float("nan")}}, "data.cache_gib: must be a finite number"),
        # model configs that build but cannot run failed at the first iteration with an internal error
        ({"model": {"config": {"num_feat": 0}}}, "model.config.num_feat: must be positive \\(got 0\\)"),
        ({"model": {"config": {"num_block": -1}}}, "model.config.num_block: must be zero or more"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        resolve(load_table("rrdb-psnr"), [override])
    assert "\n" not in caught.value.message


def test_a_table_laid_over_a_value_names_the_value_not_the_tables_keys() -> None:
    # `--set data=3 --data DIR`: the flag's table replaced the 3, and the error was `data.patch_size: missing`
    with pytest.raises(ConfigError, match="^data: must be a table \\(\\[data\\]; got 3\\)$"):
        resolve(load_table("compact-psnr"), [nested("data", 3), nested("data.hr", ["x"])])
    with pytest.raises(ConfigError, match="^model.config: must be a table"):
        merge({"model": {"config": "big"}}, {"model": {"config": {"num_feat": 8}}})
    assert merge({"a": 1}, {"a": [2]}) == {"a": [2]}  # values still replace values


def test_summary_comes_from_the_resolved_configuration() -> None:
    # The recipe's description says "16 convs" whatever --set model.config.num_conv says
    assert resolve(load_table("compact-psnr")).summary == "compact (64 ch, 16 convs) x4 on L1"
    changed = resolve(load_table("compact-psnr"), [nested("model.config.num_conv", 2)])
    assert "16 convs" in changed.description
    assert changed.summary == "compact (64 ch, 2 convs) x4 on L1"
    assert resolve(load_table("esrgan")).summary == (
        "rrdbnet (64 ch, 23 blocks, 32 grow ch) x4 on L1 + perceptual conv5_4 + RaGAN"
    )
    assert resolve(load_table("srresnet"), [nested("model.config.scale", 2)]).summary == (
        "srresnet (64 ch, 16 blocks, batch norm) x2 on MSE"
    )
    # keys the recipe leaves out are shown with the architecture's defaults
    table = load_table("compact-psnr")
    del table["model"]["config"]["num_conv"]
    assert "16 convs" in check(table).summary


def test_missing_key_is_named() -> None:
    table = load_table("srresnet")
    del table["train"]["seed"]
    with pytest.raises(ConfigError, match="train.seed: missing"):
        check(table)


def test_whole_numbers_written_as_floats_count_as_integers() -> None:
    assert resolve(load_table("srresnet"), [{"train": {"iterations": 1e6}}]).train.iterations == 1000000


def test_recipe_files_and_names() -> None:
    assert recipe_text("esrgan").startswith("# ESRGAN")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; known: compact-gan"):
        recipe_text("nope")
    with pytest.raises(ConfigError, match="cannot read recipe"):
        recipe_text("missing/recipe.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_toml("a = ", "bad.toml")
