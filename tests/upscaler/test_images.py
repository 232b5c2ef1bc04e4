"""Reading and writing images: formats, depth, alpha, grayscale, EXIF orientation, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

from tests.conftest import SHARED_DATA
from upscaler.errors import InputError, OutputError
from upscaler.image import formats as images
from upscaler.image.formats import SUPPORTED_SUFFIXES, EncodeOptions, read_image, write_image
from upscaler.picture import Picture

EDGE_CASES = SHARED_DATA / "images" / "edge-cases"
needs_edge_cases = pytest.mark.skipif(
    not EDGE_CASES.is_dir(), reason=f"real test images not present at {EDGE_CASES}"
)

LOSSLESS = [".png", ".tif", ".tiff", ".bmp"]
LOSSY = [".jpg", ".jpeg", ".webp"]


def smooth_bgr(height: int = 24, width: int = 32, dtype: type = np.uint8) -> np.ndarray:
    """A gradient image (lossy codecs keep gradients close, unlike noise)."""
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [x / (width - 1), y / (height - 1), (x + y) / (width + height - 2)]
    return np.round(np.dstack(planes) * top).astype(dtype)


def noise(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, size=shape, dtype=dtype)


def raw(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# ----------------------------------------------------------------------------------------- reading


def test_read_rgb_png_converts_bgr_to_rgb_in_unit_range(tmp_path: Path) -> None:
    bgr = noise((5, 7, 3))
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    picture = read_image(tmp_path / "a.png")
    assert picture.rgb.dtype == np.float32 and picture.rgb.shape == (5, 7, 3)
    assert picture.depth == 8 and picture.alpha is None and not picture.grayscale
    np.testing.assert_array_equal(np.round(picture.rgb * 255).astype(np.uint8), bgr[:, :, ::-1])


def test_read_gray_replicates_to_three_channels(tmp_path: Path) -> None:
    gray = noise((6, 4))
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    picture = read_image(tmp_path / "g.png")
    assert picture.grayscale and picture.alpha is None
    for channel in range(3):
        np.testing.assert_array_equal(np.round(picture.rgb[:, :, channel] * 255), gray)


def test_read_16bit_rgba(tmp_path: Path) -> None:
    bgra = noise((5, 6, 4), np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    picture = read_image(tmp_path / "a.png")
    assert picture.depth == 16
    np.testing.assert_array_equal(np.round(picture.rgb * 65535), bgra[:, :, 2::-1])
    assert picture.alpha is not None
    np.testing.assert_array_equal(np.round(picture.alpha * 65535), bgra[:, :, 3])


def test_read_float_tiff_is_clipped_and_16bit(tmp_path: Path) -> None:
    values = np.linspace(-0.5, 1.5, 5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    values[0, 0, 0] = np.nan
    assert cv2.imwrite(str(tmp_path / "f.tif"), values)
    picture = read_image(tmp_path / "f.tif")
    assert picture.depth == 16
    assert picture.rgb.min() == 0.0 and picture.rgb.max() == 1.0 and np.isfinite(picture.rgb).all()


def test_read_non_ascii_path(tmp_path: Path) -> None:
    path = tmp_path / "bildér 画像.png"
    ok, buffer = cv2.imencode(".png", noise((3, 3, 3)))
    buffer.tofile(path)
    assert read_image(path).rgb.shape == (3, 3, 3)


@pytest.mark.parametrize(
    "content",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["empty", "text", "png-signature-only"],
)
def test_read_corrupt_file_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read .*bad.png"):
        read_image(path)


def test_read_truncated_png_is_an_input_error(tmp_path: Path) -> None:
    ok, buffer = cv2.imencode(".png", noise((64, 64, 3)))
    (tmp_path / "cut.png").write_bytes(buffer.tobytes()[: buffer.size // 2])
    with pytest.raises(InputError):
        read_image(tmp_path / "cut.png")


def test_read_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------ orientation


def _with_orientation(image: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    stored = Image.fromarray(noise((5, 8, 3), seed=orientation))
    path = tmp_path / "o.png"
    _with_orientation(stored, path, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    picture = read_image(path)
    np.testing.assert_array_equal(np.round(picture.rgb * 255).astype(np.uint8), expected)


def test_exif_orientation_6_in_jpeg_rotates(tmp_path: Path) -> None:
    path = tmp_path / "r.jpg"
    _with_orientation(Image.fromarray(smooth_bgr(20, 40)), path, 6)
    assert raw(path).shape[:2] == (20, 40)  # OpenCV's IMREAD_UNCHANGED leaves it as stored
    assert read_image(path).rgb.shape[:2] == (40, 20)


def test_png_exif_after_image_data_is_found(tmp_path: Path) -> None:
    """eXIf may follow IDAT; it must be found without Pillow decoding the pixels."""
    path = tmp_path / "late.png"
    _with_orientation(Image.fromarray(noise((4, 9, 3))), path, 8)
    data = path.read_bytes()
    start = data.index(b"eXIf") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    exif_chunk = data[start : start + 12 + length]
    without = data.replace(exif_chunk, b"")
    iend = without.index(b"IEND") - 4
    path.write_bytes(without[:iend] + exif_chunk + without[iend:])
    assert read_image(path).rgb.shape[:2] == (9, 4)


# ----------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", LOSSLESS)
def test_round_trip_lossless_is_exact(tmp_path: Path, suffix: str) -> None:
    bgr = noise((7, 9, 3))
    cv2.imwrite(str(tmp_path / "in.png"), bgr)
    write_image(tmp_path / f"out{suffix}", read_image(tmp_path / "in.png"))
    np.testing.assert_array_equal(raw(tmp_path / f"out{suffix}"), bgr)


@pytest.mark.parametrize("suffix", LOSSY)
def test_round_trip_lossy_is_close(tmp_path: Path, suffix: str) -> None:
    bgr = smooth_bgr()
    cv2.imwrite(str(tmp_path / "in.png"), bgr)
    write_image(tmp_path / f"out{suffix}", read_image(tmp_path / "in.png"))
    back = raw(tmp_path / f"out{suffix}")
    assert back.shape == bgr.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - bgr.astype(int)).mean() < 3


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgba_survives_exactly(tmp_path: Path, suffix: str) -> None:
    bgra = noise((6, 5, 4), np.uint16, seed=3)
    cv2.imwrite(str(tmp_path / f"in{suffix}"), bgra)
    write_image(tmp_path / f"out{suffix}", read_image(tmp_path / f"in{suffix}"))
    back = raw(tmp_path / f"out{suffix}")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, bgra)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.uint16, hnp.array_shapes(min_dims=3, max_dims=3, max_side=6).map(lambda s: (s[0], s[1], 3)))
)
def test_16bit_png_write_read_of_arbitrary_values(
    tmp_path_factory: pytest.TempPathFactory, values: np.ndarray
) -> None:
    folder = tmp_path_factory.mktemp("h")
    picture = Picture(rgb=(values / 65535).astype(np.float32), depth=16)
    write_image(folder / "v.png", picture)
    back = read_image(folder / "v.png")
    np.testing.assert_array_equal(np.round(back.rgb * 65535).astype(np.uint16), values)
    write_image(folder / "again.png", back)
    np.testing.assert_array_equal(raw(folder / "again.png")[:, :, ::-1], values)


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp"])
def test_16bit_to_8bit_formats_rounds_once(tmp_path: Path, suffix: str) -> None:
    picture = Picture(rgb=np.full((8, 8, 3), 100.6 / 255, dtype=np.float32), depth=16)
    write_image(tmp_path / f"o{suffix}", picture)
    back = raw(tmp_path / f"o{suffix}")
    assert back.dtype == np.uint8
    assert abs(int(np.median(back)) - 101) <= (0 if suffix == ".bmp" else 1)


def test_write_rounds_instead_of_truncating(tmp_path: Path) -> None:
    picture = Picture(rgb=np.full((2, 2, 3), 100.6 / 255, dtype=np.float32))
    write_image(tmp_path / "r.png", picture)
    assert (raw(tmp_path / "r.png") == 101).all()


def test_write_clips_out_of_range(tmp_path: Path) -> None:
    rgb = np.array([[[-0.5, 1.5, 0.5]]], dtype=np.float32)
    write_image(tmp_path / "c.png", Picture(rgb=rgb))
    assert raw(tmp_path / "c.png").tolist() == [[[128, 255, 0]]]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_rgba_stays_rgba(tmp_path: Path, suffix: str) -> None:
    bgra = noise((6, 6, 4))
    bgra[:, :, 3] = np.arange(36).reshape(6, 6) * 7
    cv2.imwrite(str(tmp_path / "in.png"), bgra)
    write_image(tmp_path / f"out{suffix}", read_image(tmp_path / "in.png"))
    back = read_image(tmp_path / f"out{suffix}")
    assert back.alpha is not None
    np.testing.assert_array_equal(np.round(back.alpha * 255), bgra[:, :, 3])


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_dropped_where_format_has_none(tmp_path: Path, suffix: str) -> None:
    picture = Picture(rgb=np.full((4, 4, 3), 0.5, dtype=np.float32), alpha=np.zeros((4, 4), dtype=np.float32))
    write_image(tmp_path / f"o{suffix}", picture)
    assert raw(tmp_path / f"o{suffix}").shape == (4, 4, 3)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_gray_stays_one_channel(tmp_path: Path, suffix: str) -> None:
    gray = smooth_bgr()[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    write_image(tmp_path / f"o{suffix}", read_image(tmp_path / "g.png"))
    back = raw(tmp_path / f"o{suffix}")
    assert back.shape == gray.shape
    if suffix != ".jpg":
        np.testing.assert_array_equal(back, gray)
    assert read_image(tmp_path / f"o{suffix}").grayscale


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_alpha_png_is_two_channels_and_exact(tmp_path: Path, dtype: type) -> None:
    top = np.iinfo(dtype).max
    gray, alpha = noise((7, 5), dtype, seed=1), noise((7, 5), dtype, seed=2)
    picture = Picture(
        rgb=np.repeat((gray / top).astype(np.float32)[:, :, None], 3, axis=2),
        alpha=(alpha / top).astype(np.float32),
        depth=16 if dtype == np.uint16 else 8,
        grayscale=True,
    )
    write_image(tmp_path / "la.png", picture)
    assert (tmp_path / "la.png").read_bytes()[25] == 4  # PNG colour type 4: gray + alpha
    if dtype == np.uint8:
        with Image.open(tmp_path / "la.png") as image:
            assert image.mode == "LA"
    again = read_image(tmp_path / "la.png")
    assert again.alpha is not None
    np.testing.assert_array_equal(np.round(again.alpha * top), alpha)
    np.testing.assert_array_equal(np.round(again.rgb[:, :, 0] * top), gray)
    assert again.grayscale and again.depth == picture.depth


def test_gray_alpha_png_from_another_encoder_reads_as_gray(tmp_path: Path) -> None:
    la = np.dstack([noise((4, 3), seed=4), noise((4, 3), seed=5)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    picture = read_image(tmp_path / "la.png")
    assert picture.grayscale and picture.alpha is not None
    np.testing.assert_array_equal(np.round(picture.alpha * 255), la[:, :, 1])


def test_gray_alpha_for_formats_without_two_channels(tmp_path: Path) -> None:
    picture = Picture(
        rgb=np.full((3, 3, 3), 0.25, dtype=np.float32),
        alpha=np.full((3, 3), 0.5, dtype=np.float32),
        grayscale=True,
    )
    write_image(tmp_path / "o.tif", picture)
    assert raw(tmp_path / "o.tif").shape == (3, 3, 4)
    write_image(tmp_path / "o.jpg", picture)
    assert raw(tmp_path / "o.jpg").shape == (3, 3)


def test_quality_options_are_used(tmp_path: Path) -> None:
    picture = read_image(_written(tmp_path, noise((64, 64, 3))))
    write_image(tmp_path / "hi.jpg", picture, EncodeOptions(jpeg_quality=95))
    write_image(tmp_path / "lo.jpg", picture, EncodeOptions(jpeg_quality=10))
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size


def test_bad_encode_option_is_an_error() -> None:
    with pytest.raises(OutputError, match="jpeg_quality"):
        EncodeOptions(jpeg_quality=101)


def test_every_supported_suffix_writes(tmp_path: Path) -> None:
    picture = Picture(rgb=np.full((3, 4, 3), 0.5, dtype=np.float32))
    for suffix in SUPPORTED_SUFFIXES:
        write_image(tmp_path / f"o{suffix.upper()}", picture)
        assert read_image(tmp_path / f"o{suffix.upper()}").rgb.shape == (3, 4, 3)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_written_file_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_image(tmp_path / "m.png", Picture(rgb=np.zeros((2, 2, 3), dtype=np.float32)))
    finally:
        os.umask(old)
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o644


def _written(folder: Path, bgr: np.ndarray) -> Path:
    cv2.imwrite(str(folder / "src.png"), bgr)
    return folder / "src.png"


# ----------------------------------------------------------------------------------- atomic writes


def test_unknown_format_lists_known_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"unknown image format '\.gif'; known: png, jpg"):
        write_image(tmp_path / "o.gif", Picture(rgb=np.zeros((2, 2, 3), dtype=np.float32)))
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_leaves_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "o.png"
    target.write_bytes(b"old")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images.os, "replace", refuse)
    with pytest.raises(OutputError, match="cannot write .*o.png: Permission denied"):
        write_image(target, Picture(rgb=np.zeros((2, 2, 3), dtype=np.float32)))
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_interrupted_write_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(images.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "o.png", Picture(rgb=np.zeros((2, 2, 3), dtype=np.float32)))
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        write_image(tmp_path / "no" / "o.png", Picture(rgb=np.zeros((2, 2, 3), dtype=np.float32)))


def test_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "o.png"
    target.write_bytes(b"old")
    write_image(target, Picture(rgb=np.ones((2, 2, 3), dtype=np.float32)))
    assert (raw(target) == 255).all()
    assert leftovers(tmp_path) == []


def test_picture_checks_its_arrays() -> None:
    with pytest.raises(ValueError, match="float32"):
        Picture(rgb=np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        Picture(rgb=np.zeros((2, 2, 3), dtype=np.float32), alpha=np.zeros((3, 3), dtype=np.float32))


# ------------------------------------------------------------------------------ real edge cases


@needs_edge_cases
def test_real_16bit_rgba_reads_as_16bit() -> None:
    picture = read_image(EDGE_CASES / "tree_alpha_16bit.png")
    assert picture.depth == 16 and picture.alpha is not None
    stored = raw(EDGE_CASES / "tree_alpha_16bit.png")
    np.testing.assert_array_equal(np.round(picture.alpha * 65535), stored[:, :, 3])


@needs_edge_cases
@pytest.mark.parametrize("name", ["00017_gray.png", "wolf_gray.jpg"])
def test_real_gray_reads_as_gray(name: str) -> None:
    picture = read_image(EDGE_CASES / name)
    assert picture.grayscale and picture.alpha is None and picture.depth == 8


@needs_edge_cases
def test_real_rgba_keeps_alpha(tmp_path: Path) -> None:
    picture = read_image(EDGE_CASES / "children-alpha.png")
    assert picture.alpha is not None and picture.alpha.min() < 1.0
    write_image(tmp_path / "c.png", picture)
    np.testing.assert_array_equal(raw(tmp_path / "c.png"), raw(EDGE_CASES / "children-alpha.png"))
