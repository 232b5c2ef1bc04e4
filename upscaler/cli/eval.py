"""`upscale eval`: PSNR / SSIM of a model on a benchmark set, beside bicubic."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from upscaler.cli.options import ModelRun, model_options, print_table, resolve_model_run


@click.command(name="eval")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="A folder of HR images, or one with HR/ and LR_x<scale>/ side by side (as Set5, Set14).",
)
@click.option(
    "--scale",
    type=click.IntRange(min=1),
    help="The scale to measure (default: the model's; 4 with --bicubic-only). Must match the model.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--bicubic-only", is_flag=True, help="Measure bicubic upscaling alone; no model is loaded.")
@click.option("--no-progress", is_flag=True, help="No progress bar (images done, the one being measured).")
@model_options
def eval_command(
    data,
    scale,
    as_json,
    bicubic_only,
    no_progress,
    run: ModelRun,
) -> None:
    """Measure a model's PSNR and SSIM on a benchmark set, beside bicubic.

    As the SR literature measures: Y channel of BT.601, SR rounded to 8 bits, `scale` pixels of border
    cropped, bicubic as MATLAB's. Without LR_x<scale>/ files, LR is made from HR with that bicubic.
    """
    from upscaler.errors import InputError
    from upscaler.evaluation import check_eval_folder, evaluate_pairs, load_eval_set
    from upscaler.models import load_model
    from upscaler.upscaling import open_upscaler

    if bicubic_only and click.get_current_context().get_parameter_source("model").name != "DEFAULT":
        raise click.UsageError("--bicubic-only measures no model; leave out --model")
    check_eval_folder(data)
    bar = _Bar(enabled=not no_progress)
    try:
        if bicubic_only:
            evaluation = load_eval_set(data, scale or 4)
            report = evaluate_pairs(
                None, _arrays(evaluation), evaluation.scale, _names(evaluation), progress=bar
            )
            described = "bicubic only"
        else:
            loaded = load_model(run.model)
            run = resolve_model_run(run, loaded.info.arch)
            with open_upscaler(loaded, run.backend, run.backend_options, run.tile_options) as upscaler:
                if scale is not None and scale != upscaler.scale:
                    raise InputError(
                        f"--scale: {scale} does not match model '{upscaler.model_name}', "
                        f"which upscales x{upscaler.scale}"
                    )
                evaluation = load_eval_set(data, upscaler.scale)
                described = upscaler.description
                report = evaluate_pairs(
                    upscaler.upscale,
                    _arrays(evaluation),
                    evaluation.scale,
                    _names(evaluation),
                    progress=bar,
                )
    finally:
        bar.close()
    click.echo(
        f"{described}; {len(evaluation.pairs)} image(s) in {data}; LR: {evaluation.lr_source}; "
        f"Y of BT.601, border {report.border}",
        err=True,
    )
    if as_json:
        document = report.to_dict()
        document["data"] = str(data)
        document["lr_source"] = evaluation.lr_source
        document["model"] = None if bicubic_only else run.model
        click.echo(json.dumps(document, indent=2, allow_nan=False))
        return
    header = ("image", "bicubic psnr", "bicubic ssim")
    if not bicubic_only:
        header = ("image", "psnr", "ssim", "bicubic psnr", "bicubic ssim")
    rows = [header]
    for image in report.images:
        rows.append(
            _row(image.name, image.psnr, image.ssim, image.bicubic_psnr, image.bicubic_ssim, bicubic_only)
        )
    rows.append(
        _row(
            "mean",
            report.mean_psnr,
            report.mean_ssim,
            report.mean_bicubic_psnr,
            report.mean_bicubic_ssim,
            bicubic_only,
        )
    )
    print_table(rows)


class _Bar:
    """A tqdm bar on stderr fed by evaluate_pairs' progress events: images done, and the one under way
    (a big model on a CPU takes minutes an image, so the name says which one it is working on)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, unit="image", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix_str(event.name or "", refresh=False)
        self.bar.update(event.done - self.bar.n)
        self.bar.refresh()  # one event an image: show the name of the image under way at once

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _arrays(evaluation) -> list:
    return [(pair.lr, pair.hr) for pair in evaluation.pairs]


def _names(evaluation) -> list[str]:
    return [pair.name for pair in evaluation.pairs]


def _row(name, psnr, ssim, bicubic_psnr, bicubic_ssim, bicubic_only: bool) -> tuple[str, ...]:
    measured = (_db(bicubic_psnr), _ratio(bicubic_ssim))
    return (name, *measured) if bicubic_only else (name, _db(psnr), _ratio(ssim), *measured)


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
