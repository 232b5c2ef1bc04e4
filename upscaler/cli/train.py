"""`upscale train`: train a generator from a recipe, resumably, on one process or under torchrun."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

RECIPES = "srresnet, srgan, rrdb-psnr, esrgan, compact-psnr, compact-gan"


@click.command()
@click.option(
    "--recipe",
    "-r",
    metavar="NAME|FILE",
    help=f"A bundled recipe ({RECIPES}) or a recipe .toml file.",
)
@click.option(
    "--data",
    "hr_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A folder of HR images, searched recursively (repeatable); LR is made by bicubic downscaling.",
)
@click.option("--lq", type=click.Path(path_type=Path), help="A folder of LR images paired with --gt by name.")
@click.option("--gt", type=click.Path(path_type=Path), help="The HR partners of --lq.")
@click.option(
    "--val",
    type=click.Path(path_type=Path),
    help="Validation images: a folder of HR images, or a set folder with HR/ and LR_x<scale>/.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="A TOML file laid over the recipe (any of its tables and keys).",
)
@click.option(
    "--out",
    "run_dir",
    type=click.Path(path_type=Path),
    help="Run folder for checkpoints, logs and the model (default: runs/<recipe>).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint.")
@click.option("--iterations", type=click.IntRange(min=1), help="Total iterations (train.iterations).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Patches per batch and process (data.batch_size)."
)
@click.option(
    "--patch-size", type=click.IntRange(min=1), help="HR side of a training crop (data.patch_size)."
)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate of G, and of D in GAN recipes."
)
@click.option(
    "--vgg-weights",
    type=click.Path(),
    help="torchvision's ImageNet VGG19 weights (vgg19-dcbb9e9d.pth) for perceptual losses.",
)
@click.option(
    "--pretrained",
    type=click.Path(),
    help="Start the generator from these weights ('' for random initialisation).",
)
@click.option("--device", help="auto, cpu, cuda or cuda:N (train.device).")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    help="fp32, or bf16/fp16 autocast (fp16 with a gradient scaler; CUDA only).",
)
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial weights and the data order.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for training (default: torch's).")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader worker processes (data.workers).")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any recipe key, e.g. --set optim_g.betas=[0.9,0.99] (repeatable).",
)
@click.option(
    "--print-recipe", metavar="NAME", help="Print a bundled recipe's TOML (to copy and edit) and exit."
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bar (without a terminal: no progress line every train.log_every iterations).",
)
def train(
    recipe,
    hr_dirs,
    lq,
    gt,
    val,
    config_file,
    run_dir,
    resume,
    iterations,
    batch_size,
    patch_size,
    lr,
    vgg_weights,
    pretrained,
    device,
    precision,
    seed,
    threads,
    workers,
    assignments,
    print_recipe,
    no_progress,
) -> None:
    """Train a super-resolution generator from a recipe.

    Every number lives in the recipe (see --print-recipe); a --config file, --set KEY=VALUE and the
    flags below override it, in that order. The run folder gets config.toml, checkpoints, train.csv,
    val.csv, samples.png, curves.png and, at the end, <recipe>.safetensors with its card <recipe>.json,
    which --model FILE loads in every command. Ctrl-C saves a checkpoint; --resume continues it exactly.

    Under `torchrun --nproc-per-node N upscale train ...` each process takes its share of every
    batch (DistributedDataParallel; gloo on CPU, NCCL on CUDA).

    \b
    Example:
      upscale train --recipe esrgan --data HR_FOLDER --val Set5 --pretrained rrdb-psnr
    """
    from train.recipes.config import ConfigError, merge, nested, parse_assignment, resolve
    from train.recipes.files import load_table, read_config_file, recipe_text

    if print_recipe:
        click.echo(recipe_text(print_recipe), nl=False)
        return
    if not recipe and not resume:
        raise click.UsageError("pass --recipe NAME|FILE (or --resume with --out RUN_DIR)")

    if resume:
        if run_dir is None:
            if not recipe:
                raise click.UsageError("--resume needs --out RUN_DIR (or --recipe NAME for runs/NAME)")
            run_dir = Path("runs") / str(load_table(recipe).get("name", "run"))
        saved = run_dir / "config.toml"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} does not exist", hint="start the run without --resume")
        table = read_config_file(saved)
        if recipe and load_table(recipe).get("name") != table.get("name"):
            raise click.UsageError(
                f"--resume continues {run_dir}, a {table.get('name')} run, not {recipe}; "
                "leave out --recipe (the run's config.toml says what it is)"
            )
    else:
        table = load_table(recipe)
        if run_dir is None:
            run_dir = Path("runs") / str(table.get("name", "run"))

    overrides = []
    if config_file is not None:
        overrides.append(read_config_file(config_file))
    for text in assignments:
        overrides.append(nested(*parse_assignment(text)))
    flags: dict = {}
    if hr_dirs:
        flags = merge(flags, nested("data.hr", [str(path.resolve()) for path in hr_dirs]))
    for key, value in (("data.lq", lq), ("data.gt", gt), ("data.val", val)):
        if value is not None:
            flags = merge(flags, nested(key, str(value.resolve())))
    for key, value in (
        ("train.iterations", iterations),
        ("data.batch_size", batch_size),
        ("data.patch_size", patch_size),
        ("train.device", device),
        ("train.precision", precision),
        ("train.seed", seed),
        ("data.workers", workers),
        ("losses.vgg_weights", vgg_weights),
        ("train.pretrained", pretrained),
        ("optim_g.lr", lr),
    ):
        if value is not None:
            flags = merge(flags, nested(key, value))
    if lr is not None and any("optim_d" in layer for layer in (table, *overrides)):
        flags = merge(flags, nested("optim_d.lr", lr))
    overrides.append(flags)
    config = resolve(table, overrides)
    if not config.data.hr and not config.data.gt:
        raise click.UsageError("no training data: pass --data HR_FOLDER (repeatable) or --lq DIR --gt DIR")

    import torch
    from tqdm import tqdm

    from train.loop import train as run_training

    if threads is not None:
        torch.set_num_threads(threads)

    def report(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    result = run_training(
        config,
        run_dir,
        resume=resume,
        report=report,
        # a bar's carriage-return updates pile up in a log file: there, a line every log_every
        progress="none" if no_progress else "bar" if sys.stderr.isatty() else "lines",
        command=" ".join(shlex.quote(arg) for arg in ["upscale", *sys.argv[1:]]),
    )
    if result.interrupted:
        click.echo(
            f"Interrupted at iteration {result.iteration}; checkpoint {result.checkpoint}; "
            f"continue with: upscale train --out {shlex.quote(str(run_dir))} --resume",
            err=True,
        )
        click.get_current_context().exit(130)
    if result.weights is not None:
        score = (
            f" (validation PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f})"
            if result.psnr is not None
            else ""
        )
        click.echo(f"Wrote {result.weights}{score} and its card {result.card.name}")
