"""Run logs: CSV rows that survive a resume, and the two PNGs drawn without a plotting library."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from train.records.logs import CsvLog, TensorBoardLog, curves_image, sample_grid, write_png


def test_csv_on_resume_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "train.csv", ["pixel", "lr"])
    for iteration in (1, 2, 3, 4):
        log.write(iteration, {"pixel": 1.0 / iteration, "lr": 1e-4})
    CsvLog(tmp_path / "train.csv", ["pixel", "lr"], resume_at=2).write(3, {"pixel": 0.5, "lr": 1e-4})
    with (tmp_path / "train.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["iteration"], row["pixel"]) for row in rows] == [("1", "1"), ("2", "0.5"), ("3", "0.5")]


def test_sample_grid_puts_bicubic_sr_hr_side_by_side() -> None:
    rng = np.random.default_rng(0)
    triples = [tuple(rng.random((40, 60, 3)).astype(np.float32) for _ in range(3)) for _ in range(2)]
    grid = sample_grid(triples, crop=32)
    # a 20-pixel label strip, two rows of 32 with a 4-pixel gap; three tiles of 32 with two gaps
    assert grid.shape == (20 + 32 + 4 + 32, 3 * 32 + 2 * 4, 3) and grid.dtype == np.uint8
    top, left = (40 - 32) // 2, (60 - 32) // 2
    expected_sr = np.round(np.clip(triples[0][1][top : top + 32, left : left + 32], 0, 1) * 255)
    assert np.array_equal(grid[20 : 20 + 32, 36:68], expected_sr.astype(np.uint8))


def test_curves_png_is_written_and_readable(tmp_path: Path) -> None:
    losses = {"pixel": [(10, 0.1), (20, 0.05), (30, 0.01)], "gan": [(10, 0.7), (20, 0.0), (30, 0.6)]}
    image = curves_image(losses, [(10, 25.0), (30, 27.5)], bicubic_psnr=26.0)
    write_png(tmp_path / "curves.png", image)
    read = cv2.imread(str(tmp_path / "curves.png"))
    assert read.shape == (600, 800, 3)
    assert (read < 128).any()  # something was drawn
    assert not list(tmp_path.glob(".*"))


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    board = TensorBoardLog(tmp_path / "tb")
    board.write(1, {"pixel": 0.5}, "train")  # a no-op without tensorboard, events with it
    board.close()
    assert board.available == (tmp_path / "tb").is_dir()
