"""`upscale video`: upscale one video, keeping its audio, subtitles, timing and colour."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path

import click

from upscaler.cli.options import (
    VIDEO_MODEL,
    BackgroundLoad,
    ModelRun,
    check_cluster,
    cluster_model,
    cluster_options,
    encoder_option,
    model_options,
    outscale_option,
    resolve_model_run,
)
from upscaler.errors import OutputError

_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


class Seconds(click.ParamType):
    """Seconds (`90`, `12.5`) or a clock time (`1:30`, `0:01:30.5`); 0 or more, or more than 0 when
    `positive`, else a usage error."""

    name = "SECONDS|[H:]M:S"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = str(value).strip()
        clock = _CLOCK.match(text)
        seconds = None
        try:
            if clock:
                hours, minutes, rest = clock.groups()
                seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(rest)
            else:
                seconds = float(text)
        except ValueError:
            pass
        if seconds is None or not math.isfinite(seconds):
            self.fail(f"expected seconds (12.5) or a time ([H:]M:S), got {value!r}", param, ctx)
        if self.positive and not seconds > 0:
            self.fail(f"must be more than 0 seconds (got {value})", param, ctx)
        if seconds < 0:
            self.fail(f"must be 0 or more seconds (got {value})", param, ctx)
        return seconds


@click.command()
@click.argument("source", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("destination", metavar="OUTPUT", type=click.Path(path_type=Path))
@model_options(default=VIDEO_MODEL)
@outscale_option
@click.option(
    "--codec",
    help="Video encoder, e.g. libx264, libx265, libvpx-vp9, ffv1 (default: by the output's container).",
)
@click.option(
    "--crf",
    type=click.IntRange(min=0),
    help="Constant quality, lower is better (default: 18 for libx264, 20 for libx265, 30 for VP9 and AV1).",
)
@click.option("--preset", help="Encoder speed preset, e.g. slow, medium (the default), veryfast.")
@click.option("--pix-fmt", help="Output pixel format (default: from the codec and the source's bit depth).")
@encoder_option("An option for the encoder, KEY=VALUE (repeatable), e.g. tune=film or x264-params=aq-mode=3.")
@click.option("--start", type=Seconds(), help="Start this far into the video (seconds or [H:]M:S).")
@click.option(
    "--duration",
    type=Seconds(positive=True),
    help="Upscale only this long (seconds or [H:]M:S); for previews.",
)
@click.option("--no-audio", is_flag=True, help="Leave the audio streams out.")
@click.option("--deinterlace", is_flag=True, help="Deinterlace interlaced video first (FFmpeg's bwdif).")
@click.option(
    "--stabilize",
    is_flag=True,
    help="Keep the output where the input did not change since the last keyframe: GAN models' texture "
    "stops shimmering on still parts of the picture (see README, 'Flicker').",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output (never the input).")
@click.option(
    "--resume/--restart",
    default=True,
    show_default=True,
    help="Go on from the finished parts of an earlier run with the same settings, or start again.",
)
@click.option(
    "--part-frames",
    type=click.IntRange(min=1),
    default=250,
    show_default=True,
    help="Frames per resumable part (a part ends at the first keyframe after that many).",
)
@cluster_options
@click.option(
    "--send-input",
    is_flag=True,
    help="With --cluster: send INPUT to the workers through the cluster (up to 2 GiB) instead of reading "
    "it from storage they share.",
)
@click.option(
    "--progress",
    type=click.Choice(["bar", "json", "none"]),
    default="bar",
    show_default=True,
    help="A progress bar on stderr, one JSON line per update on stdout, or nothing.",
)
def video(
    source,
    destination,
    run: ModelRun,
    outscale,
    codec,
    crf,
    preset,
    pix_fmt,
    encoder_options,
    start,
    duration,
    no_audio,
    deinterlace,
    stabilize,
    overwrite,
    resume,
    part_frames,
    cluster,
    gpus_per_task,
    send_input,
    progress,
) -> None:
    """Upscale the video INPUT into OUTPUT (its container comes from the extension).

    Audio and subtitles are copied (or converted when OUTPUT's container cannot hold them), every frame
    keeps its timestamp, colour tags and rotation are kept. Work is saved in parts beside OUTPUT: if the
    run stops, the same command goes on where it stopped.

    \b
    Examples:
      upscale video in.mp4 out.mp4 --model esrgan --crf 18
      upscale video film.mkv film-x4.mkv --cluster tcp://10.0.0.5:8786
    """
    from upscaler.api import open_with
    from upscaler.video.encode import EncodeSettings
    from upscaler.video.job import run_video_job
    from upscaler.video.plan import plan_video_job, run_key
    from upscaler.video.probe import check_input_path
    from upscaler.video.resume.lock import hold_output

    # SVT-AV1 prints a banner of a dozen lines on every encoder it opens (each part opens one); its
    # svtav1-params have no log level, only this variable: errors only, unless the user set it.
    os.environ.setdefault("SVT_LOG", "1")
    # What can be refused without the model is refused before it loads (torch takes seconds to import).
    check_input_path(source)
    if (gpus_per_task is not None or send_input) and cluster is None:
        raise click.UsageError("--gpus-per-task and --send-input go with --cluster")
    check_cluster(cluster)
    loading = BackgroundLoad(run.model)
    from upscaler.video.probe import probe_video

    with _ffmpeg_log_shown(_debug()):
        info = probe_video(source)
    loaded = loading.result()
    # --backend auto and --precision auto decided here, so the journal records what really runs; on one
    # machine, auto measures the backends on frames of this size (upscaler.selection).
    if cluster is None:
        run = resolve_model_run(run, loaded, (info.height, info.width), info.frame_count)
    else:
        run = resolve_model_run(run, loaded)
    backend_name = run.backend
    model_key = run_key(loaded.digest, backend_name, run.backend_options, run.tile_options)
    settings = EncodeSettings(
        codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, options=tuple(encoder_options)
    )
    with _ffmpeg_log_shown(_debug()):
        plan = plan_video_job(
            source,
            destination,
            scale=loaded.info.scale,
            model_key=model_key,
            settings=settings,
            outscale=outscale,
            start=start,
            duration=duration,
            audio=not no_audio,
            deinterlace=deinterlace,
            stabilize=stabilize,
            overwrite=overwrite,
            part_frames=part_frames,
            info=info,
        )
    show = _Display(progress)
    sizes = f"{info.width}x{info.height} -> {plan.width}x{plan.height}"
    what = f"{info.path.name} {sizes}, {plan.encoding.describe()}"
    try:
        if cluster is not None:
            from upscaler.cluster.connect import open_cluster, workers_phrase
            from upscaler.cluster.video import ClusterParts
            from upscaler.video.job import run_parts_job

            spec = cluster_model(run, loaded.digest, cluster)
            with hold_output(plan.destination), open_cluster(cluster) as client:
                model = f"model {loaded.name} ({loaded.info.arch}, x{loaded.info.scale})"
                click.echo(
                    f"{model} on backend {run.backend} in {run.backend_options.precision.value}{_why(run)}, "
                    f"on the cluster {cluster} ({workers_phrase(client)}); {what}",
                    err=True,
                )
                parts = ClusterParts(client, spec, send_input=send_input, gpus_per_task=gpus_per_task)
                report = run_parts_job(plan, parts, resume=resume, events=show)
        else:
            # Another run writing the same output stops here, before the model is loaded onto the device.
            with (
                hold_output(plan.destination),
                open_with(loaded, run.backend, run.backend_options, run.tile_options) as model,
            ):
                click.echo(f"{model.upscaler.description}{_why(run)}; {what}", err=True)
                report = run_video_job(plan, model.upscaler, resume=resume, events=show)
    except KeyboardInterrupt:
        show.close()
        kept = f"; finished parts are kept in {plan.work_dir}, run the same command to resume"
        click.echo(f"Interrupted{kept if plan.journal_path.exists() else ''}.", err=True)
        sys.exit(130)
    finally:
        show.close()
    rate = report.frames - report.resumed_frames
    speed = f", {rate / report.seconds:.2f} fps" if report.seconds > 0 and rate else ""
    resumed = f" ({report.resumed_frames} resumed)" if report.resumed_frames else ""
    click.echo(
        f"wrote {report.destination}: {report.frames} frames{resumed}, {report.width}x{report.height}, "
        f"{report.seconds:.1f} s{speed}",
        err=True,
    )
    if progress == "json":
        _json_line(
            {
                "event": "done",
                "output": str(report.destination),
                "frames": report.frames,
                "parts": report.parts,
                "resumed_frames": report.resumed_frames,
                "width": report.width,
                "height": report.height,
                "seconds": round(report.seconds, 3),
                "warnings": report.warnings,
            }
        )


def _why(run: ModelRun) -> str:
    return f" ({'; '.join(run.reasons)})" if run.reasons else ""


def _debug() -> bool:
    return bool(click.get_current_context().find_root().params.get("debug"))


@contextlib.contextmanager
def _ffmpeg_log_shown(show: bool):
    """With --debug, FFmpeg's errors and warnings (and what encoder libraries print while their options are
    checked) reach stderr during planning; otherwise they stay out of the way of our one-line errors. Only
    around planning: PyAV's Python log callback and the encoding threads do not always mix."""
    if not show:
        yield
        return
    import av.logging

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        yield
    finally:
        av.logging.set_level(previous)


class _Display:
    """Shows the job's events: notes and warnings on stderr, progress as a bar or JSON lines."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar = None

    def __call__(self, event) -> None:
        from upscaler.video.events import Note

        if isinstance(event, Note):
            line = f"Warning: {event.message}" if event.warning else event.message
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                click.echo(line, err=True)
            return
        if self.mode == "json":
            _json_line(
                {
                    "event": "progress",
                    "frames": event.frames,
                    "total": event.total,
                    "fps": None if event.fps is None else round(event.fps, 3),
                    "eta": None if event.eta is None else round(event.eta, 1),
                    "part": event.part,
                    "parts_done": event.parts_done,
                    "resumed": event.resumed,
                    "elapsed": round(event.elapsed, 3),
                }
            )
        elif self.mode == "bar":
            self._bar_update(event)

    def _bar_update(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            # tqdm shows frames, fps and, once it knows a total, the ETA; without one, count and rate.
            # Frames finished by an earlier run count as done but not into the rate.
            self.bar = tqdm(
                total=event.total, initial=event.resumed, unit="frame", file=sys.stderr, dynamic_ncols=True
            )
        if event.total is not None and self.bar.total != max(event.total, event.frames):
            self.bar.total = max(event.total, event.frames)
        if event.frames > self.bar.n:
            self.bar.update(event.frames - self.bar.n)
        self.bar.set_postfix_str(f"part {event.part}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _json_line(data: dict) -> None:
    try:
        click.echo(json.dumps(data))
    except BrokenPipeError:
        # The reader went away (`| head`, a closed GUI): stop the job with a line that says so, and point
        # stdout at /dev/null so that Python's own flush at exit does not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise OutputError(
            "--progress json: the reader of the progress lines went away (broken pipe)"
        ) from None
