"""`upscale models` and `upscale backends`: what can run here."""

from __future__ import annotations

import click

from upscaler.cli.options import print_table

# As printed in the SRGAN paper (Ledig et al. 2017, table 2; see ../shared/data/MANIFEST.md). Its
# PSNR is ours (Y, 4-pixel border) but its SSIM is computed another way: its bicubic SSIM is 0.8211
# on Set5 where BasicSR's definition, used here, gives 0.8113.
PUBLISHED = (
    ("SRResNet (SRGAN paper)", {"Set5": (32.05, 0.9019), "Set14": (28.49, 0.8184)}),
    ("SRGAN (SRGAN paper)", {"Set5": (29.40, 0.8472), "Set14": (26.02, 0.7397)}),
)
SETS = ("Set5", "Set14")


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the model ids, their size, whether their weights are bundled, and their measured quality;
    `upscale models pull NAME` downloads a published model.

    \b
    Example:
      upscale models
    """
    if ctx.invoked_subcommand is not None:
        return
    from upscaler.models import list_models

    entries = list_models()
    rows = [("id", "arch", "scale", "params", "weights", "PSNR (Y)", "description")]
    for entry in entries:
        card = entry.card if entry.weights_present else None
        if card is not None:
            weights = f"bundled ({card.get('weights_dtype', 'fp32')})"
        elif entry.weights_present:
            weights = "bundled"
        elif entry.unbundled:
            weights = f"not bundled ({entry.unbundled})"
        else:
            weights = "missing: reinstall"
        rows.append(
            (
                entry.id,
                entry.arch,
                f"x{entry.scale}",
                _millions(entry.parameters),
                weights,
                entry.quality or "-",
                entry.description,
            )
        )
    print_table(rows)

    measured = [(entry.id, entry.card) for entry in entries if entry.weights_present and entry.card]
    measured = [(name, card["evaluation"]) for name, card in measured if card.get("evaluation")]
    if measured:
        click.echo(
            "\nupscale eval, x4: PSNR (dB) / SSIM on Y of BT.601, 4-pixel border, SR rounded to 8 bits; "
            "LPIPS v0.1 (AlexNet; lower is better) on RGB"
        )
        rows = [("model", *(f"{name} PSNR / SSIM / LPIPS" for name in SETS))]
        first = measured[0][1]
        rows.append(("bicubic", *(_pair(first, name, "bicubic_") for name in SETS)))
        rows.extend((name, *(_pair(figures, s, "") for s in SETS)) for name, figures in measured)
        rows.extend(
            (paper, *(f"{published[s][0]:.2f} / {published[s][1]:.4f} / -" for s in SETS))
            for paper, published in PUBLISHED
        )
        print_table(rows)
        click.echo(
            "The papers' rows are as printed: their SSIM is computed differently (their bicubic is 0.8211)."
        )
    from upscaler.models.zoo import ZOO, pulled_path

    click.echo(
        "\nPublished models (upscale models pull NAME fetches one, checks its sha256; then --model NAME):"
    )
    rows = [("name", "arch", "scale", "here", "licence", "description")]
    for entry in ZOO:
        here = "pulled" if pulled_path(entry) is not None else "-"
        rows.append((entry.name, entry.arch, f"x{entry.scale}", here, entry.licence, entry.description))
    print_table(rows)
    click.echo("\nAny weights file of these architectures also works: --model path/to/weights.safetensors")


@models.command()
@click.argument("name")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds without data before the download counts as stalled.",
)
def pull(name: str, timeout: float) -> None:
    """Download the published model NAME (see `upscale models`), resuming a partial download, and check
    its sha256 before it is kept. The only command besides `weights install` that uses the network.

    \b
    Example:
      upscale models pull realesr-general-x4v3
    """
    import sys

    from tqdm import tqdm

    from upscaler.errors import ModelError
    from upscaler.models.zoo import ZOO, find_published
    from upscaler.models.zoo import pull as fetch

    entry = find_published(name)
    if entry is None:
        raise ModelError(f"no published model named {name!r}; known: {', '.join(e.name for e in ZOO)}")
    bar = tqdm(unit="B", unit_scale=True, file=sys.stderr, desc=entry.name, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total or None
        bar.update(done - bar.n)

    try:
        path = fetch(entry, timeout=timeout, progress=progress)
    finally:
        bar.close()
    click.echo(f"{entry.name}: {path} (sha256 checked); use it with --model {entry.name}")


def _pair(evaluation: dict, name: str, prefix: str) -> str:
    figures = evaluation.get(name)
    if figures is None:
        return "-"
    lpips = figures.get(prefix + "lpips")
    shown = f"{lpips:.4f}" if lpips is not None else "-"
    return f"{figures[prefix + 'psnr_y']:.2f} / {figures[prefix + 'ssim_y']:.4f} / {shown}"


@click.command()
def backends() -> None:
    """List the inference backends, whether each can run here, and why not.

    \b
    Example:
      upscale backends
    """
    from upscaler.backend import discover_backends

    rows = [("backend", "status", "description")]
    for status in sorted(discover_backends().values(), key=lambda s: s.name):
        state = "available" if status.available else f"unavailable: {status.problem}"
        rows.append((status.name, state, status.description))
    print_table(rows)


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"
