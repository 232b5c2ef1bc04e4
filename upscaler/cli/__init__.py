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


# Other tools' spellings that users type by habit, and ours: refused with a pointer instead of click's
# "No such option: -c" (it reads -crf as the short options -c -r -f).
FOREIGN_SPELLINGS = {
    "-crf": "--crf N",
    "-preset": "--preset NAME",
    "-c:v": "--codec NAME",
    "-vcodec": "--codec NAME",
    "-codec:v": "--codec NAME",
    "-pix_fmt": "--pix-fmt NAME",
    "-an": "--no-audio",
    "-y": "--overwrite",
    "-ss": "--start TIME",
    "-i": "the input as the first argument: upscale video INPUT OUTPUT",
    "-vf": "--outscale S (or --deinterlace); filters are not taken",
    "--fp32": "--precision fp32 (the default)",
    "--half": "--precision fp16 (or bf16 on a CPU)",
    "--ext": "--format NAME",
    "--face_enhance": "nothing: upscale has no face enhancement",
    "--tile": "--tile-size N (or -t N)",
}


def foreign_spelling(args: list[str]) -> click.UsageError | None:
    """A usage error naming our option for the first foreign spelling in `args`, or None."""
    for token in args:
        if token == "--":
            break
        ours = FOREIGN_SPELLINGS.get(token)
        if ours is not None:
            return click.UsageError(f"no such option {token}; upscale spells it {ours}")
    return None


class UpscaleGroup(click.Group):
    """Turns `UpscaleError` into `Error: ...` / `Hint: ...` and exit 1; `--debug` shows the traceback.

    Commands are loaded from `COMMANDS` on first use.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        problem = foreign_spelling(args)
        if problem is not None:
            problem.ctx = ctx
            raise problem
        return super().parse_args(ctx, args)

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
