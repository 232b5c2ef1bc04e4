"""`upscale eval`: PSNR / SSIM of a model on a benchmark set, beside bicubic."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from upscaler.cli.options import ModelRun, model_options, print_table


@click.command(name="eval")
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    help="A folder of HR images, or one with HR/ and LR_x<scale>/ side by side (as Set5, Set14).",
)
@click.option(
    "--video",
    type=click.Path(path_type=Path),
    help="A high-resolution clip as ground truth: its frames are downscaled (bicubic), upscaled and "
    "scored per frame, with TecoGAN's temporal measures tOF and tLP (flicker; lower is better).",
)
@click.option(
    "--stabilize",
    is_flag=True,
    help="With --video: measure the model as `upscale video --stabilize` runs it (still parts kept still).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=2),
    default=30,
    show_default=True,
    help="With --video: how many frames from the start to measure.",
)
@click.option(
    "--scale",
    type=click.IntRange(min=1),
    help="The scale to measure (default: the model's; 4 with --bicubic-only). Must match the model.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--bicubic-only", is_flag=True, help="Measure bicubic upscaling alone; no model is loaded.")
@click.option("--no-progress", is_flag=True, help="No progress bar (images done, the one being measured).")
@click.option(
    "--lpips/--no-lpips",
    "lpips",
    default=None,
    help="Measure LPIPS (v0.1, AlexNet) beside PSNR/SSIM. Default: when its weights are installed "
    "(upscale weights install lpips).",
)
@model_options(precision="fp32")
def eval_command(
    data,
    video,
    stabilize,
    frames,
    scale,
    as_json,
    bicubic_only,
    no_progress,
    lpips,
    run: ModelRun,
) -> None:
    """Measure a model's PSNR, SSIM and LPIPS on a benchmark set, beside bicubic.

    As the SR literature measures: Y channel of BT.601, SR rounded to 8 bits, `scale` pixels of border
    cropped, bicubic as MATLAB's. Without LR_x<scale>/ files, LR is made from HR with that bicubic.
    LPIPS (lower is better) on the whole 8-bit RGB image, where its weights are installed.

    \b
    Example:
      upscale eval --model esrgan --data ../shared/data/eval/Set5
    """
    from upscaler.errors import InputError
    from upscaler.quality.evaluation import check_eval_folder, evaluate_pairs, load_eval_set

    if bicubic_only and click.get_current_context().get_parameter_source("model").name != "DEFAULT":
        raise click.UsageError("--bicubic-only measures no model; leave out --model")
    if (data is None) == (video is None):
        raise click.UsageError("give one of --data FOLDER (images) or --video CLIP")
    if stabilize and (video is None or bicubic_only):
        raise click.UsageError("--stabilize measures a model on a clip: give --video and --model")
    if video is not None:
        _eval_video(video, frames, stabilize, scale, as_json, bicubic_only, no_progress, lpips, run)
        return
    check_eval_folder(data)
    perceptual, lpips_note = _perceptual(lpips)
    bar = _Bar(enabled=not no_progress)
    try:
        if bicubic_only:
            evaluation = load_eval_set(data, scale or 4)
            report = evaluate_pairs(
                None,
                _arrays(evaluation),
                evaluation.scale,
                _names(evaluation),
                progress=bar,
                perceptual=perceptual,
            )
            described = "bicubic only"
        else:
            with _open(run) as model:
                upscaler = model.upscaler
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
                    perceptual=perceptual,
                )
    finally:
        bar.close()
    click.echo(
        f"{described}; {len(evaluation.pairs)} image(s) in {data}; LR: {evaluation.lr_source}; "
        f"Y of BT.601, border {report.border}",
        err=True,
    )
    if lpips_note:
        click.echo(lpips_note, err=True)
    if as_json:
        document = report.to_dict()
        document["data"] = str(data)
        document["lr_source"] = evaluation.lr_source
        document["model"] = None if bicubic_only else run.model
        click.echo(json.dumps(document, indent=2, allow_nan=False))
        return
    columns = [("psnr", _db), ("ssim", _ratio)] + ([("lpips", _ratio)] if perceptual is not None else [])
    shown = [(f"bicubic_{name}", form) for name, form in columns]
    if not bicubic_only:
        shown = columns + shown
    rows = [("image", *(name.replace("_", " ") for name, _form in shown))]
    for image in report.images:
        rows.append((image.name, *(form(getattr(image, name)) for name, form in shown)))
    rows.append(("mean", *(form(getattr(report, f"mean_{name}")) for name, form in shown)))
    print_table(rows)


def _eval_video(video, frames, stabilize, scale, as_json, bicubic_only, no_progress, lpips, run) -> None:
    from contextlib import nullcontext

    from upscaler.errors import InputError
    from upscaler.quality.temporal import evaluate_clip, read_frames

    if not video.is_file():
        raise InputError(f"--video: no such file: {video}")
    perceptual, lpips_note = _perceptual(lpips)
    bar = _Bar(enabled=not no_progress)
    if bicubic_only:
        context, described = nullcontext(None), "bicubic only"
    else:
        context = _open(run)
    try:
        with context as model:
            upscaler = None if model is None else model.upscaler
            factor = scale or 4 if upscaler is None else upscaler.scale
            if upscaler is not None:
                described = upscaler.description
                if scale is not None and scale != upscaler.scale:
                    raise InputError(
                        f"--scale: {scale} does not match model '{upscaler.model_name}' (x{upscaler.scale})"
                    )
            upscale = None if upscaler is None else upscaler.upscale
            if stabilize:
                from upscaler.video.stabilize import Stabilizer

                stabilizer, model = Stabilizer(), upscale
                upscale = lambda lr: stabilizer.apply(lr, model(lr))  # noqa: E731 - frames come in order
                described += ", --stabilize"
            report = evaluate_clip(
                upscale,
                read_frames(video, frames),
                factor,
                perceptual=perceptual,
                progress=bar,
                total=frames,
            )
    finally:
        bar.close()
    click.echo(
        f"{described}; {report.frames} frames of {video} ({report.size[0]} x {report.size[1]}), "
        f"LR by bicubic x{report.scale}; PSNR on Y of BT.601, border {report.scale}; "
        "tOF in pixels (DIS flow)",
        err=True,
    )
    if lpips_note:
        click.echo(lpips_note + "; tLP needs it too", err=True)
    document = report.to_dict()
    if as_json:
        document |= {
            "video": str(video),
            "model": None if bicubic_only else run.model,
            "stabilize": stabilize,
        }
        click.echo(json.dumps(document, indent=2, allow_nan=False))
        return
    rows = [("", "psnr", "lpips", "tOF", "tLP")]
    for label, prefix in (() if bicubic_only else (("model", ""),)) + (("bicubic", "bicubic_"),):
        rows.append(
            (
                label,
                _db(document[f"{prefix}psnr"]),
                _ratio(document[f"{prefix}lpips"]),
                _ratio(document[f"{prefix}tof"]),
                _ratio(document[f"{prefix}tlp"]),
            )
        )
    print_table(rows)


def _open(run: ModelRun):
    from upscaler.api import open_with

    report = lambda line: click.echo(line, err=True)  # noqa: E731
    return open_with(run.model, run.backend, run.backend_options, run.tile_options, report)


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


def _perceptual(wanted: bool | None):
    """(LPIPS distance or None, a note for stderr or None) for --lpips / --no-lpips / neither."""
    if wanted is False:
        return None, None
    from upscaler.models.lpips import load_lpips, lpips_path

    if wanted is None and not lpips_path().is_file():
        return None, "LPIPS: not measured (its weights are not installed: upscale weights install lpips)"
    return load_lpips().distance, None


def _arrays(evaluation) -> list:
    return [(pair.lr, pair.hr) for pair in evaluation.pairs]


def _names(evaluation) -> list[str]:
    return [pair.name for pair in evaluation.pairs]


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
