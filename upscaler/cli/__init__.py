"""The `upscale` command line: parse, build options, call the library, report errors.

Each command lives in its own module of this package and is imported only when it is run or listed;
heavy modules (torch, av, cv2) are imported inside the commands so that `upscale --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import traceback

import click

from upscaler import __version__
from upscaler.errors import UpscaleError

# Command name -> "module:attribute". The order here is the order of `upscale --help`.
COMMANDS = {
    "video": "upscaler.cli.video:video",
    "images": "upscaler.cli.images:images",
    "eval": "upscaler.cli.eval:eval_command",
    "degrade-set": "upscaler.cli.degrade:degrade_set",
    "train": "upscaler.cli.train:train",
    "models": "upscaler.cli.info:models",
    "backends": "upscaler.cli.info:backends",
    "weights": "upscaler.cli.weights:weights",
    "export-onnx": "upscaler.cli.export:export_onnx",
    "build-engine": "upscaler.cli.export:build_engine",
    "bench": "upscaler.cli.bench:bench",
}


class UpscaleGroup(click.Group):
    """Turns `UpscaleError` into `Error: ...` / `Hint: ...` and exit 1; `--debug` shows the traceback.

    Commands are loaded from `COMMANDS` on first use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context):
        if not _debug(ctx):
            # OpenCV logs its own lines (`[ WARN:0@...] imdecode_...`) about a file we already report as
            # one `failed:` or `Error:` line; read when cv2 is first imported, so set before any command.
            os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except UpscaleError as exc:
            if _debug(ctx):
                traceback.print_exc()
            click.echo(f"Error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception as exc:
            if _debug(ctx):
                traceback.print_exc()
            from upscaler.system.files import is_disk_full

            if is_disk_full(exc):  # not a bug: say what happened
                click.echo(f"Error: no space left on the device: {exc}", err=True)
                click.echo("Hint: free some space, or write to another disk", err=True)
                ctx.exit(1)
            click.echo(f"Error: internal error: {type(exc).__name__}: {exc}", err=True)
            if not _debug(ctx):
                click.echo("Hint: run again with --debug for the traceback, and please report it", err=True)
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug"))


@click.group(cls=UpscaleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="upscale")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def cli(debug: bool) -> None:
    """Super-resolve videos and folders of images with GAN generators."""


def main() -> None:
    cli(prog_name="upscale")
