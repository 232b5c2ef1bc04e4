"""`upscale video` end to end through click's test runner, with a tiny model built in code."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import shared_data, tiny_weights
from tests.upscaler import video_checks as check
from tests.upscaler import video_clips as clips
from tests.upscaler.test_video_job import held_by_another_process
from upscaler.cli import cli


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"), "compact")


def test_help_names_the_options() -> None:
    result = run("video", "--help")
    assert result.exit_code == 0
    for flag in (
        "INPUT OUTPUT",
        "--model",
        "--codec",
        "--crf",
        "--preset",
        "--pix-fmt",
        "--encoder-option",
        "--outscale",
        "--start",
        "--duration",
        "--no-audio",
        "--deinterlace",
        "--overwrite",
        "--resume / --restart",
        "--progress",
    ):
        assert flag in result.output


def test_video_is_the_first_command() -> None:
    result = run("--help")
    commands = result.output.split("Commands:")[1].split()
    assert commands[0] == "video"


def test_end_to_end_with_json_progress(tmp_path: Path, weights: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=12)
    out = tmp_path / "out.mp4"
    result = run("video", source, out, "--model", weights, "--progress", "json", "--crf", "30")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["event"] == "done" and lines[-1]["frames"] == 12
    assert (lines[-1]["width"], lines[-1]["height"]) == (256, 192)
    progress = [line for line in lines if line["event"] == "progress"]
    assert progress and progress[-1]["frames"] == 12 and progress[-1]["total"] == 12
    decoded = check.decode(out)
    assert (decoded.width, decoded.height) == (256, 192) and len(decoded.times) == 12
    assert check.packet_hashes(out, "audio") == check.packet_hashes(source, "audio")
    assert "wrote" in result.stderr


def test_no_audio_window_and_encoder_options(tmp_path: Path, weights: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=24)
    out = tmp_path / "out.mkv"
    result = run(
        "video", source, out, "-m", weights, "--no-audio", "--start", "0:00.25", "--duration", "0.5",
        "--codec", "libx264", "--preset", "ultrafast", "--encoder-option", "qp=0", "--progress", "none",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [kind for kind, _, _ in check.streams(out)] == ["video"]
    assert len(check.decode(out).times) == 12


def test_an_existing_output_needs_overwrite(tmp_path: Path, weights: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=4, audio=False)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = run("video", source, out, "-m", weights, "--progress", "none")
    assert result.exit_code == 1
    assert error_lines(result.output) == [f"Error: {out}: already exists"]
    assert "Hint: --overwrite replaces it" in result.output
    assert out.read_bytes() == b"precious"
    result = run("video", source, out, "-m", weights, "--progress", "none", "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(check.decode(out).times) == 4


def test_an_interrupted_run_resumes_by_default(tmp_path: Path, weights: Path, monkeypatch) -> None:
    from upscaler.upscaling import Upscaler

    source = clips.cfr_clip(tmp_path, frames=24, audio=False)
    out = tmp_path / "out.mkv"
    args = (
        "video",
        source,
        out,
        "-m",
        weights,
        "--progress",
        "none",
        "--part-frames",
        "8",
        "--codec",
        "ffv1",
    )
    upscale_stream = Upscaler.upscale_stream

    def interrupted(self, frames, finish=None):
        for count, done in enumerate(upscale_stream(self, frames, finish), start=1):
            if count == 13:
                raise KeyboardInterrupt
            yield done

    monkeypatch.setattr(Upscaler, "upscale_stream", interrupted)
    result = run(*args)
    assert result.exit_code == 130
    assert f"Interrupted; finished parts are kept in {tmp_path / '.out.mkv.upscale-parts'}" in result.output
    assert not out.exists()
    monkeypatch.undo()

    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "resuming: 1 part(s), 8 frame(s) already done (--restart starts again)" in result.output
    assert "24 frames (8 resumed)" in result.output
    clean = tmp_path / "clean.mkv"
    assert run(*args[:2], clean, *args[3:]).exit_code == 0
    assert check.decode(out).hashes == check.decode(clean).hashes


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda folder: clips.audio_only_clip(folder), "no video stream"),
        (lambda folder: _corrupt(folder), "corrupt.mkv"),
    ],
    ids=["no-video-stream", "corrupt"],
)
def test_bad_input_is_one_error_line(tmp_path: Path, weights: Path, make, expected: str) -> None:
    source = make(tmp_path)
    out = tmp_path / "out.mp4"
    result = run("video", source, out, "-m", weights, "--progress", "none")
    assert result.exit_code == 1, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and expected in lines[0]
    assert not out.exists()


def _corrupt(folder: Path) -> Path:
    path = folder / "corrupt.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 4)
    return path


def test_a_codec_the_container_cannot_hold_is_one_error_line(tmp_path: Path, weights: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=4, audio=False)
    out = tmp_path / "out.webm"
    result = run("video", source, out, "-m", weights, "--codec", "libx264", "--progress", "none")
    assert result.exit_code == 1
    assert error_lines(result.output) == ["Error: out.webm: a webm file cannot hold libx264 video"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfr.mp4"]


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    assert run("video", "a.mp4", "b.mp4", "--start", "soon").exit_code == 2
    assert run("video", "a.mp4", "b.mp4", "--encoder-option", "novalue").exit_code == 2
    assert run("video", "a.mp4", "b.mp4", "--progress", "loud").exit_code == 2


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--start", "-1", "must be 0 or more seconds"),
        ("--duration", "0", "must be more than 0 seconds"),
        ("--duration", "-0:05", "expected seconds"),
        ("--duration", "inf", "expected seconds"),  # once a decode failure 'to report'
        ("--start", "nan", "expected seconds"),
    ],
)
def test_windows_out_of_range_are_usage_errors(option: str, value: str, message: str) -> None:
    result = run("video", "a.mp4", "b.mp4", option, value)
    assert result.exit_code == 2 and message in result.output


# ------------------------------------------------------------------------ every clip of the shared data

FAST = ("--preset", "ultrafast")
SHARED_CLIPS = {
    # name: (options, output suffix); short windows and --outscale keep the default suite fast.
    "realshort.mp4": ((*FAST, "--outscale", "1"), ".mp4"),
    "test.avi": ((*FAST, "--duration", "0.5"), ".mp4"),
    "fixture-mjpeg.mov": ((*FAST, "--duration", "0.3", "--outscale", "1"), ".mov"),
    "fixture.3gp": ((*FAST, "--duration", "0.3"), ".mp4"),
    "fixture.flv": ((*FAST, "--duration", "0.3"), ".mkv"),
    "iphone_rotated.mov": ((*FAST, "--duration", "0.3", "--outscale", "1"), ".mov"),
    "pigs_in_a_polka.gif": ((*FAST, "--duration", "0.5"), ".mp4"),
    "fixture2.mkv": ((*FAST, "--outscale", "0.5"), ".mkv"),
    "big_buck_bunny_432_433.webm": (("--duration", "0.25", "--encoder-option", "deadline=realtime"), ".webm"),
    "no_duration.webm": ((*FAST, "--duration", "0.5"), ".mkv"),
    "smpte-2997.mp4": ((*FAST, "--duration", "0.2"), ".mp4"),
    "fixture-raw.mts": ((*FAST, "--duration", "0.2", "--deinterlace"), ".mkv"),
}
# Large frames or every frame of a long file: `make test-slow`.
SLOW = {
    "smpte-2997.mp4",
    "fixture-raw.mts",
    "big_buck_bunny_432_433.webm",
    "no_duration.webm",
    "fixture2.mkv",
}


def shared_params() -> list:
    return [
        pytest.param(name, options, suffix, marks=[pytest.mark.slow] if name in SLOW else [], id=name)
        for name, (options, suffix) in SHARED_CLIPS.items()
    ]


def option(options: tuple[str, ...], name: str) -> Fraction | None:
    return Fraction(options[options.index(name) + 1]) if name in options else None


@pytest.mark.parametrize("name, options, suffix", shared_params())
def test_every_shared_clip(
    tmp_path: Path, weights: Path, name: str, options: tuple[str, ...], suffix: str
) -> None:
    source = shared_data("video", name)
    out = tmp_path / f"out{suffix}"
    result = run("video", source, out, "-m", weights, "--progress", "none", *options)
    assert result.exit_code == 0, result.output

    before, after = check.decode(source), check.decode(out)
    factor = option(options, "--outscale") or 4
    assert (after.width, after.height) == (int(before.width * factor), int(before.height * factor))
    assert after.rotation == before.rotation
    duration = option(options, "--duration")
    wanted = [t for t in before.times if duration is None or t - before.start < duration]
    assert check.same_times(check.relative_times(after.times), check.relative_times(wanted))
    kinds = [kind for kind, _, _ in check.streams(source)]
    assert [kind for kind, _, _ in check.streams(out)] == ["video"] + [k for k in kinds if k != "video"]
    if name == "realshort.mp4":
        assert check.packet_hashes(out, "audio") == check.packet_hashes(source, "audio")
    if name == "fixture2.mkv":
        assert "Warning: fixture2.mkv: decoding stopped after 37 frames" in result.output


def test_the_corrupt_shared_clip_is_one_error_line(tmp_path: Path, weights: Path) -> None:
    source = shared_data("video", "fixture-corrupt.mkv")
    out = tmp_path / "out.mkv"
    result = run("video", source, out, "-m", weights, "--progress", "none")
    assert result.exit_code == 1
    lines = error_lines(result.output)
    assert len(lines) == 1 and "fixture-corrupt.mkv" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_closed_json_reader_is_one_clear_error(monkeypatch) -> None:
    # `upscale video ... --progress json | head -1` once ended in "BrokenPipeError ... please report it".
    from upscaler.cli import video as command
    from upscaler.errors import OutputError

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(command.click, "echo", closed)
    with pytest.raises(OutputError, match="reader of the progress lines went away"):
        command._json_line({"event": "progress"})


def test_a_second_run_for_the_same_output_is_one_error_line(tmp_path: Path, weights: Path) -> None:
    source = clips.cfr_clip(tmp_path, frames=8)
    out = tmp_path / "out.mkv"
    with held_by_another_process(out) as holder:
        result = run("video", source, out, "--model", weights)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {out} is being written by another upscale video (pid {holder.pid})"
    ]
    assert not out.exists() and not (tmp_path / ".out.mkv.upscale-parts").exists()


@pytest.mark.parametrize("debug", [False, True])
def test_a_refused_encoder_option_is_our_one_line_only(
    tmp_path: Path, weights: Path, capfd: pytest.CaptureFixture[str], debug: bool
) -> None:
    source = clips.cfr_clip(tmp_path, frames=4)
    capfd.readouterr()
    result = CliRunner().invoke(
        cli,
        [*(["--debug"] if debug else []), "video", str(source), str(tmp_path / "out.mp4"), "-m", str(weights)]
        + ["--encoder-option", "tune=bogus"],
    )
    assert result.exit_code == 1
    line = "Error: --encoder-option tune=bogus: libx264 refused it: invalid tune 'bogus'"
    printed = capfd.readouterr().err  # what x264 writes to stderr itself, past click
    if debug:
        # The library's own line is shown as it is, so ours does not repeat it.
        assert "Error: --encoder-option tune=bogus: libx264 refused it" in result.output.splitlines()
        assert "x264 [error]: invalid tune 'bogus'" in printed
    else:
        assert result.output.splitlines() == [line] and printed == ""
