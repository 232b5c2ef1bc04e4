"""`upscale models` and `upscale backends`: what can run here."""

from __future__ import annotations

import click

from upscaler.cli.options import print_table


@click.command()
def models() -> None:
    """List the registered models, their scale, size, weights and measured quality."""
    from upscaler.models import list_models

    rows = [("id", "arch", "scale", "params", "weights", "quality", "description")]
    for entry in list_models():
        rows.append(
            (
                entry.id,
                entry.arch,
                f"x{entry.scale}",
                _millions(entry.parameters),
                "bundled" if entry.weights_present else "not bundled yet",
                entry.quality or "-",
                entry.description,
            )
        )
    print_table(rows)
    click.echo("\nAny weights file of these architectures also works: --model path/to/weights.safetensors")


@click.command()
def backends() -> None:
    """List the inference backends, whether each can run here, and why not."""
    from upscaler.backend import discover_backends

    rows = [("backend", "status", "description")]
    for status in sorted(discover_backends().values(), key=lambda s: s.name):
        state = "available" if status.available else f"unavailable: {status.problem}"
        rows.append((status.name, state, status.description))
    print_table(rows)


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"
