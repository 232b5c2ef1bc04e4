"""The `upscale images` job with a fake model: finding, planning, per-file failures, threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from upscaler.errors import InputError, OutOfMemory, OutputError
from upscaler.image import job as image_job
from upscaler.image.folder import ImageTask, OutputPlan, find_images, plan_outputs, scale_suffix
from upscaler.image.formats import read_image
from upscaler.image.job import JobReport, run_image_job
from upscaler.picture import Picture, upscale_picture

EDGE_CASES = SHARED_DATA / "images" / "edge-cases"


def nearest4(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(pixels, 4, axis=0), 4, axis=1)


def noise(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, size=shape, dtype=dtype)


def make(path: Path, pixels: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = noise((6, 5, 3)) if pixels is None else pixels
    ok, buffer = cv2.imencode(path.suffix, pixels)
    assert ok
    buffer.tofile(path)
    return path


def raw(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


def job(
    inputs: list[Path],
    upscale: Callable[[np.ndarray], np.ndarray] = nearest4,
    *,
    glob: str | None = None,
    recursive: bool = True,
    outscale: float | None = None,
    **plan: object,
) -> JobReport:
    found = find_images(inputs, glob=glob, recursive=recursive)
    plan.setdefault("suffix", scale_suffix(outscale or 4))
    return run_image_job(plan_outputs(found, **plan), upscale, scale=4, outscale=outscale)


def run_guarded(action: Callable[[], object], timeout: float = 30) -> BaseException | None:
    """Run `action` in a thread; fail the test if it hangs, return what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as error:
            raised.append(error)

    before = set(threading.enumerate())
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the job hung"
    alive = [t.name for t in threading.enumerate() if t not in before and t is not thread and t.is_alive()]
    assert alive == [], f"job threads still running: {alive}"
    return raised[0] if raised else None


# ------------------------------------------------------------------------------------------ sizes


def test_outputs_are_four_times_the_size(tmp_path: Path) -> None:
    make(tmp_path / "a.png", noise((6, 5, 3)))
    make(tmp_path / "b.jpg", noise((7, 3, 3)))
    make(tmp_path / "g.png", noise((4, 9)))
    report = job([tmp_path], output_dir=tmp_path / "out")
    assert report.failed == [] and report.skipped == []
    assert sorted(p.name for p in report.written) == ["a_x4.png", "b_x4.jpg", "g_x4.png"]
    assert raw(tmp_path / "out" / "a_x4.png").shape == (24, 20, 3)
    assert raw(tmp_path / "out" / "b_x4.jpg").shape == (28, 12, 3)
    assert raw(tmp_path / "out" / "g_x4.png").shape == (16, 36)


@pytest.mark.parametrize(("outscale", "expected"), [(2, (12, 10)), (2.5, (15, 13)), (6, (36, 30))])
def test_outscale_resizes_the_model_output(tmp_path: Path, outscale: float, expected: tuple) -> None:
    make(tmp_path / "a.png", noise((6, 5, 3)))
    report = job([tmp_path / "a.png"], outscale=outscale)
    assert raw(report.written[0]).shape[:2] == expected
    assert report.written[0].name == f"a_x{outscale:g}.png"


def test_16bit_stays_16bit_without_rounding(tmp_path: Path) -> None:
    pixels = noise((5, 4, 4), np.uint16, seed=7)
    make(tmp_path / "deep.png", pixels)
    report = job([tmp_path])
    out = raw(report.written[0])
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, nearest4(pixels))


def test_gray_stays_gray_and_alpha_is_kept(tmp_path: Path) -> None:
    gray = noise((5, 6), seed=1)
    bgra = noise((5, 6, 4), seed=2)
    make(tmp_path / "g.png", gray)
    make(tmp_path / "t.png", bgra)
    job([tmp_path])
    np.testing.assert_array_equal(raw(tmp_path / "g_x4.png"), nearest4(gray))
    np.testing.assert_array_equal(raw(tmp_path / "t_x4.png"), nearest4(bgra))


def test_opaque_alpha_skips_the_model(tmp_path: Path) -> None:
    calls: list[tuple[int, ...]] = []

    def counting(pixels: np.ndarray) -> np.ndarray:
        calls.append(pixels.shape)
        return nearest4(pixels)

    bgra = noise((3, 4, 4))
    bgra[:, :, 3] = 255
    make(tmp_path / "opaque.png", bgra)
    job([tmp_path], counting)
    assert len(calls) == 1
    assert (raw(tmp_path / "opaque_x4.png")[:, :, 3] == 255).all()

    bgra[0, 0, 3] = 0
    make(tmp_path / "clear.png", bgra)
    calls.clear()
    job([tmp_path / "clear.png"], counting)
    assert len(calls) == 2


def test_upscale_picture_resizes_alpha_with_colour() -> None:
    picture = Picture(
        rgb=np.full((4, 6, 3), 0.5, dtype=np.float32),
        alpha=np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6),
        depth=16,
        grayscale=True,
    )
    out = upscale_picture(picture, nearest4, scale=4, outscale=2)
    assert out.rgb.shape == (8, 12, 3) and out.alpha is not None and out.alpha.shape == (8, 12)
    assert out.depth == 16 and out.grayscale


def test_upscale_breaking_its_contract_is_a_bug() -> None:
    picture = Picture(rgb=np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="expected"):
        upscale_picture(picture, lambda a: a, scale=4)


# -------------------------------------------------------------------------------- finding files


def test_recursive_folders_keep_their_structure(tmp_path: Path) -> None:
    src = tmp_path / "in"
    make(src / "a.png")
    make(src / "sub" / "b.png")
    make(src / "sub" / "deeper" / "c.jpg")
    report = job([src], output_dir=tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(report.written) == sorted(
        [out / "a_x4.png", out / "sub" / "b_x4.png", out / "sub" / "deeper" / "c_x4.jpg"]
    )
    assert all(p.is_file() for p in report.written)


def test_without_recursion_only_the_top_folder(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    make(tmp_path / "sub" / "b.png")
    found = find_images([tmp_path], recursive=False)
    assert [file.name for file, _ in found] == ["a.png"]


def test_glob_narrows_by_name_or_relative_path(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    make(tmp_path / "b.JPG")
    make(tmp_path / "sub" / "c.jpg")
    make(tmp_path / "sub" / "d.png")
    assert sorted(f.name for f, _ in find_images([tmp_path], glob="*.jpg")) == ["b.JPG", "c.jpg"]
    assert sorted(f.name for f, _ in find_images([tmp_path], glob="sub/*")) == ["c.jpg", "d.png"]
    with pytest.raises(InputError, match=r"no images matching '\*\.webp'"):
        find_images([tmp_path], glob="*.webp")


def test_hidden_unsupported_and_excluded_files_are_passed_over(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    make(tmp_path / ".hidden.png")
    make(tmp_path / ".cache" / "b.png")
    make(tmp_path / "out" / "a_x4.png")
    (tmp_path / "notes.txt").write_text("hi")
    found = find_images([tmp_path], exclude=[tmp_path / "out"])
    assert [file.name for file, _ in found] == ["a.png"]
    # The output folder given as the input itself is still read.
    assert [f.name for f, _ in find_images([tmp_path / "out"], exclude=[tmp_path / "out"])] == ["a_x4.png"]


def test_files_and_folders_mix_without_duplicates(tmp_path: Path) -> None:
    a = make(tmp_path / "a.png")
    make(tmp_path / "b.png")
    found = find_images([a, tmp_path, a])
    assert [(file.name, root) for file, root in found] == [("a.png", tmp_path), ("b.png", tmp_path)]


def test_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope: no such file or folder"):
        find_images([tmp_path / "nope"])


def test_empty_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images found") as caught:
        find_images([tmp_path])
    assert caught.value.hint and ".png" in caught.value.hint


# ----------------------------------------------------------------------------------------- planning


def test_suffix_and_format_conversion(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    make(tmp_path / "b.bmp")
    report = job([tmp_path], suffix="-big", fmt="JPG", output_dir=tmp_path / "o")
    assert sorted(p.name for p in report.written) == ["a-big.jpg", "b-big.jpg"]
    assert raw(tmp_path / "o" / "a-big.jpg").shape == (24, 20, 3)


def test_unknown_format_is_refused_up_front(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    with pytest.raises(OutputError, match="unknown image format 'gif'; known: png"):
        plan_outputs(find_images([tmp_path]), suffix="_x4", fmt="gif")


def test_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    (tmp_path / "a_x4.png").write_bytes(b"keep me")
    report = job([tmp_path / "a.png"])
    assert report.written == []
    assert [(p.name, "already exists" in m) for p, m in report.failed] == [("a.png", True)]
    assert (tmp_path / "a_x4.png").read_bytes() == b"keep me"

    report = job([tmp_path / "a.png"], overwrite=True)
    assert report.written == [tmp_path / "a_x4.png"]
    assert raw(tmp_path / "a_x4.png").shape == (24, 20, 3)


def test_skip_existing(tmp_path: Path) -> None:
    make(tmp_path / "in" / "a.png")
    make(tmp_path / "in" / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_x4.png").write_bytes(b"done before")
    report = job([tmp_path / "in"], output_dir=tmp_path / "out", skip_existing=True, overwrite=True)
    assert report.skipped == [tmp_path / "in" / "a.png"]
    assert report.written == [tmp_path / "out" / "b_x4.png"]
    assert (tmp_path / "out" / "a_x4.png").read_bytes() == b"done before"


def test_an_input_is_never_overwritten(tmp_path: Path) -> None:
    a = make(tmp_path / "a.png")
    before = a.read_bytes()
    report = job([a], suffix="", overwrite=True)
    assert report.written == []
    assert "is an input" in report.failed[0][1]
    assert a.read_bytes() == before


def test_an_output_that_is_another_input_is_refused(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    second = make(tmp_path / "a_x4.png")
    before = second.read_bytes()
    report = job([tmp_path], overwrite=True)
    assert [p.name for p, _ in report.failed] == ["a.png"]
    assert [p.name for p in report.written] == ["a_x4_x4.png"]
    assert second.read_bytes() == before


def test_two_inputs_with_one_output_is_an_error_for_the_second(tmp_path: Path) -> None:
    make(tmp_path / "a.jpg")
    make(tmp_path / "a.png")
    report = job([tmp_path], fmt="png")
    assert [p.name for p in report.written] == ["a_x4.png"]
    assert [(p.name, "also the output of" in m) for p, m in report.failed] == [("a.png", True)]


def test_plan_without_output_format_for_unknown_suffix(tmp_path: Path) -> None:
    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a")
    plan = plan_outputs(find_images([gif]), suffix="_x4")
    assert plan.tasks == [] and "choose an output format" in plan.refused[0][1]


# ----------------------------------------------------------------------------------------- failures


def test_corrupt_file_fails_alone(tmp_path: Path) -> None:
    make(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    make(tmp_path / "c.jpg")
    report = job([tmp_path])
    assert sorted(p.name for p in report.written) == ["a_x4.png", "c_x4.jpg"]
    assert [(p.name, m.startswith("cannot read")) for p, m in report.failed] == [("b.png", True)]
    assert not (tmp_path / "b_x4.png").exists()


def test_upscale_error_fails_only_that_file(tmp_path: Path) -> None:
    make(tmp_path / "a.png", noise((6, 5, 3)))
    make(tmp_path / "big.png", noise((9, 9, 3)))
    make(tmp_path / "c.png", noise((6, 5, 3)))

    def fussy(pixels: np.ndarray) -> np.ndarray:
        if pixels.shape[0] == 9:
            raise OutOfMemory("out of memory on a 9x9 tile")
        return nearest4(pixels)

    report = job([tmp_path], fussy)
    assert sorted(p.name for p in report.written) == ["a_x4.png", "c_x4.png"]
    ((path, message),) = report.failed
    assert path.name == "big.png" and message == f"cannot upscale {path}: out of memory on a 9x9 tile"


def test_write_error_fails_only_that_file(tmp_path: Path) -> None:
    make(tmp_path / "in" / "a.png")
    make(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where a folder should be")
    report = job([tmp_path / "in"], output_dir=tmp_path / "out")
    assert report.written == [tmp_path / "out" / "a_x4.png"]
    assert [(p.name, "cannot create folder" in m) for p, m in report.failed] == [("b.png", True)]


@pytest.mark.parametrize("where", ["model", "reader", "writer"])
def test_a_bug_stops_every_thread_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    for index in range(8):
        make(tmp_path / f"{index}.png")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"bug in the {where}")

    upscale = broken if where == "model" else nearest4
    if where == "reader":
        monkeypatch.setattr(image_job, "read_image", broken)
    if where == "writer":
        monkeypatch.setattr(image_job, "write_image", broken)
    raised = run_guarded(lambda: job([tmp_path], upscale))
    assert isinstance(raised, RuntimeError) and str(raised) == f"bug in the {where}"
    assert not any(p.name.endswith((".part", "_x4.png")) for p in tmp_path.iterdir())


def test_keyboard_interrupt_in_the_model_propagates(tmp_path: Path) -> None:
    for index in range(4):
        make(tmp_path / f"{index}.png")
    seen: list[int] = []

    def interrupted(pixels: np.ndarray) -> np.ndarray:
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return nearest4(pixels)

    raised = run_guarded(lambda: job([tmp_path], interrupted))
    assert isinstance(raised, KeyboardInterrupt)
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())


@pytest.mark.parametrize("where", ["writer", "interrupt"])
def test_a_stop_downstream_stops_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    for index in range(16):
        make(tmp_path / f"{index:02}.png")
    reads: list[Path] = []

    def counting_read(path: Path) -> Picture:
        reads.append(path)
        return read_image(path)

    def interrupted(pixels: np.ndarray) -> np.ndarray:
        raise KeyboardInterrupt

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in the writer")

    monkeypatch.setattr(image_job, "read_image", counting_read)
    if where == "writer":
        monkeypatch.setattr(image_job, "write_image", broken)
    raised = run_guarded(lambda: job([tmp_path], interrupted if where == "interrupt" else nearest4))
    assert isinstance(raised, KeyboardInterrupt if where == "interrupt" else RuntimeError)
    # Bounded queues: the reader is at most a few files ahead of the stage that stopped.
    assert len(reads) < 16
    assert not any(p.name.endswith((".part", "_x4.png")) for p in tmp_path.iterdir())


def test_the_model_runs_in_the_calling_thread(tmp_path: Path) -> None:
    for index in range(3):
        make(tmp_path / f"{index}.png")
    threads: set[threading.Thread] = set()

    def recording(pixels: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread())
        return nearest4(pixels)

    report = job([tmp_path], recording)
    assert len(report.written) == 3
    assert threads == {threading.current_thread()}


def test_bad_outscale_is_an_input_error(tmp_path: Path) -> None:
    plan = OutputPlan(tasks=[ImageTask(tmp_path / "a.png", tmp_path / "b.png")])
    with pytest.raises(InputError, match="outscale"):
        run_image_job(plan, nearest4, scale=4, outscale=0)


def test_empty_plan_reports_what_the_plan_left_out(tmp_path: Path) -> None:
    plan = OutputPlan(skipped=[tmp_path / "s.png"], refused=[(tmp_path / "r.png", "why")])
    report = run_image_job(plan, nearest4, scale=4)
    assert report == JobReport(written=[], skipped=[tmp_path / "s.png"], failed=[(tmp_path / "r.png", "why")])


def test_progress_goes_to_stderr_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path / "a.png")
    found = find_images([tmp_path])
    run_image_job(plan_outputs(found, suffix="_x4"), nearest4, scale=4, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "1/1" in captured.err

    make(tmp_path / "b.png")
    run_image_job(plan_outputs(find_images([tmp_path / "b.png"]), suffix="_x4"), nearest4, scale=4)
    assert capsys.readouterr() == ("", "")


def test_progress_counts_files_that_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    plan = plan_outputs(find_images([tmp_path]), suffix="_x4")
    report = run_image_job(plan, nearest4, scale=4, progress=True)
    assert len(report.written) == 1 and len(report.failed) == 1
    err = capsys.readouterr().err
    assert "2/2" in err and "failed=1" in err


# ------------------------------------------------------------------------------------ real images


@pytest.mark.skipif(not EDGE_CASES.is_dir(), reason=f"real test images not present at {EDGE_CASES}")
def test_real_edge_cases(tmp_path: Path) -> None:
    report = job([EDGE_CASES], output_dir=tmp_path)
    names = sorted(p.name for p in EDGE_CASES.iterdir())
    assert report.failed == [] and len(report.written) == len(names)
    for source in EDGE_CASES.iterdir():
        stored = raw(source)
        out = raw(tmp_path / f"{source.stem}_x4{source.suffix}")
        assert out.shape[:2] == (stored.shape[0] * 4, stored.shape[1] * 4), source.name
        assert out.ndim == stored.ndim and out.dtype == stored.dtype, source.name

    tree = raw(tmp_path / "tree_alpha_16bit_x4.png")
    assert tree.dtype == np.uint16 and tree.shape[2] == 4
    np.testing.assert_array_equal(tree, nearest4(raw(EDGE_CASES / "tree_alpha_16bit.png")))
    assert raw(tmp_path / "00017_gray_x4.png").ndim == 2
    assert raw(tmp_path / "wolf_gray_x4.jpg").ndim == 2
    children = raw(tmp_path / "children-alpha_x4.png")
    assert children.shape[2] == 4
    expected_alpha = nearest4(raw(EDGE_CASES / "children-alpha.png"))[:, :, 3]
    np.testing.assert_array_equal(children[:, :, 3], expected_alpha)


# ------------------------------------------------------------------------------- resuming a folder


def test_a_rerun_finishes_the_job_without_redoing_or_overwrite(tmp_path: Path) -> None:
    for index in range(4):
        make(tmp_path / "in" / f"{index}.png")
    make(tmp_path / "in" / "photo.jpg")
    first = job([tmp_path / "in"], output_dir=tmp_path / "out", job="k1")
    assert len(first.written) == 5
    # a kill after two images: the others' outputs are gone, as if never written
    for name in ("2_x4.png", "3_x4.png", "photo_x4.jpg"):
        (tmp_path / "out" / name).unlink()
    calls: list[int] = []

    def counting(pixels: np.ndarray) -> np.ndarray:
        calls.append(1)
        return nearest4(pixels)

    second = job([tmp_path / "in"], counting, output_dir=tmp_path / "out", job="k1")
    assert len(second.written) == 3 and len(second.done) == 2 and not second.failed
    assert len(calls) == 3

    # other settings: the earlier outputs are refused with the reason, never silently kept
    other = job([tmp_path / "in"], output_dir=tmp_path / "out", job="k2")
    assert len(other.failed) == 5 and not other.written
    assert all("made by an earlier run with other settings" in why for _, why in other.failed)


def test_outputs_carry_their_mark_and_are_never_inputs(tmp_path: Path) -> None:
    from upscaler.image.formats import read_mark

    make(tmp_path / "a.png")
    make(tmp_path / "b.jpg")
    job([tmp_path], job="k1")
    assert read_mark(tmp_path / "a_x4.png").startswith("k1-")
    assert read_mark(tmp_path / "b_x4.jpg").startswith("k1-")
    assert read_mark(tmp_path / "a.png") is None
    assert raw(tmp_path / "a_x4.png").shape == (24, 20, 3)  # the mark leaves the pixels readable
    # twice without -o: the first run's outputs are not upscaled again (no a_x4_x4.png)
    again = job([tmp_path], job="k1")
    assert not again.written and len(again.done) == 2 and not again.failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x4.png", "b.jpg", "b_x4.jpg"]
    # named on purpose, an output is an input like any other file
    named = find_images([tmp_path / "a_x4.png"])
    assert [file.name for file, _ in named] == ["a_x4.png"]


def test_temporaries_a_killed_run_left_are_removed(tmp_path: Path) -> None:
    import os
    import time

    make(tmp_path / "in" / "a.png")
    make(tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    job([tmp_path / "in"], output_dir=out, job="k1")
    (out / "b_x4.png").unlink()
    stale = [out / ".a_x4.png.0a1b2c3d.part", out / ".b_x4.png.deadbeef.part"]
    for path in stale:
        path.write_bytes(b"half")
        os.utime(path, (time.time() - 60, time.time() - 60))
    foreign = out / ".notes.txt.0a1b2c3d.part"
    foreign.write_bytes(b"not ours")
    report = job([tmp_path / "in"], output_dir=out, job="k1")
    assert len(report.written) == 1 and len(report.done) == 1
    assert not any(path.exists() for path in stale) and foreign.exists()
