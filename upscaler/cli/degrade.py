"""`upscale degrade-set`: a benchmark set's HR images through one fixed, seeded real-world degradation."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="degrade-set")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
def degrade_set(source: Path, destination: Path) -> None:
    """Write DESTINATION/HR and DESTINATION/LR_x4 from the HR images of SOURCE (a folder of images, or a
    set folder with HR/), for `upscale eval --data DESTINATION`.

    The LR is what real footage looks like, not a clean downscale: a Gaussian blur (sigma 1.2), MATLAB
    bicubic x4, colour noise (sigma 3 levels) and H.264 (libx264, CRF 28, preset medium) as one key
    frame. Seeded by each image's name: anyone who runs this gets the same files.

    \b
    Example:
      upscale degrade-set ../shared/data/eval/Set14 degraded/Set14
      upscale eval --data degraded/Set14 --model realvideo
    """
    from train.degradations.benchmark import BenchmarkDegradation, make_degraded_set
    from upscaler.errors import InputError

    if not source.is_dir():
        raise InputError(f"SOURCE: no such folder: {source}")
    settings = BenchmarkDegradation()
    names = make_degraded_set(source, destination, settings)
    click.echo(f"Wrote {len(names)} HR/LR_x{settings.scale} pairs to {destination} ({settings.describe()}).")
