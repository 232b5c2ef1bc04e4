"""What a run writes for people to read: CSV rows, TensorBoard scalars, and two PNGs.

`train.csv` has a row per logged iteration (the losses and learning rate), `val.csv` a row per
validation; TensorBoard events go to `RUN_DIR/tensorboard` when the `tensorboard` package is installed.
`samples.png` puts bicubic | SR | HR side by side for a few validation images; `curves.png` plots the
losses (log scale) and the validation PSNR, drawn with OpenCV so that no plotting library is needed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from upscaler.quality.metrics import to_uint8
from upscaler.system.files import write_bytes_atomically

_COLOURS = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233)]


class CsvLog:
    """Rows of named numbers appended to a CSV file, with a header; on resume, later rows are dropped."""

    def __init__(self, path: Path, columns: Sequence[str], resume_at: int | None = None) -> None:
        self.path = Path(path)
        self.columns = ["iteration", *columns]
        kept: list[dict[str, str]] = []
        if resume_at is not None and self.path.is_file():
            with self.path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row["iteration"]) <= resume_at]
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, iteration: int, values: Mapping[str, float]) -> None:
        with self.path.open("a", newline="") as handle:
            row = {"iteration": iteration, **{key: f"{value:.6g}" for key, value in values.items()}}
            csv.DictWriter(handle, self.columns, extrasaction="ignore").writerow(row)


class TensorBoardLog:
    """Scalars to TensorBoard when it is installed; does nothing otherwise."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self.writer = None
        else:
            self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    @property
    def available(self) -> bool:
        return self.writer is not None

    def write(self, iteration: int, values: Mapping[str, float], prefix: str) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An 8-bit RGB image as PNG, replacing `path` only once it is complete."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"cannot encode {path.name}")
    write_bytes_atomically(path, data.tobytes())


def sample_grid(triples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], crop: int = 192) -> np.ndarray:
    """Rows of bicubic | SR | HR (float RGB in [0, 1]), each a centre crop of at most `crop` pixels."""
    side = min(crop, max(max(images[0].shape[:2]) for images in triples))
    gap = 4
    rows = []
    for images in triples:
        height, width = images[0].shape[:2]
        ch, cw = min(side, height), min(side, width)
        top, left = (height - ch) // 2, (width - cw) // 2
        tiles = [to_uint8(image[top : top + ch, left : left + cw]) for image in images]
        tiles = [
            np.pad(tile, ((0, side - ch), (0, side - cw), (0, 0)), constant_values=255) for tile in tiles
        ]
        white = np.full((side, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], white, tiles[1], white, tiles[2]], axis=1))
    width = rows[0].shape[1]
    parts = [np.full((20, width, 3), 255, np.uint8)]
    for row in rows:
        parts += [row, np.full((gap, width, 3), 255, np.uint8)]
    grid = np.concatenate(parts[:-1], axis=0)
    for index, label in enumerate(("bicubic", "SR", "HR")):
        position = (index * (side + gap) + 2, 14)
        cv2.putText(grid, label, position, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return grid


def _panel(
    size: tuple[int, int], series: Mapping[str, Sequence[tuple[int, float]]], title: str, log_scale: bool
) -> np.ndarray:
    """One line chart: a white canvas, axes, min/max labels, a legend."""
    width, height = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 10, 28, 30
    cv2.putText(canvas, title, (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    points = {
        name: [(x, y) for x, y in values if math.isfinite(y) and (y > 0 or not log_scale)]
        for name, values in series.items()
    }
    points = {name: values for name, values in points.items() if values}
    if not points:
        return canvas
    xs = [x for values in points.values() for x, _ in values]
    ys = [math.log10(y) if log_scale else y for values in points.values() for _, y in values]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    span_x, span_y = width - left - right, height - top - bottom
    for index, (name, values) in enumerate(points.items()):
        colour = _COLOURS[index % len(_COLOURS)][::-1]
        line = np.array(
            [
                (
                    left + (x - x0) / (x1 - x0) * span_x,
                    height - bottom - ((math.log10(y) if log_scale else y) - y0) / (y1 - y0) * span_y,
                )
                for x, y in values
            ],
            np.int32,
        )
        cv2.polylines(canvas, [line.reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
        if len(line) == 1:
            cv2.circle(canvas, tuple(int(v) for v in line[0]), 2, colour, -1)
        cv2.putText(
            canvas,
            name,
            (width - right - 150, top + 16 + 16 * index),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
        )

    def label(value: float) -> str:
        return f"{10**value:.3g}" if log_scale else f"{value:.4g}"

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, label(y1), (4, top + 10), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, label(y0), (4, height - bottom), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, str(x0), (left, height - 10), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, str(x1), (width - right - 60, height - 10), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def curves_image(
    losses: Mapping[str, Sequence[tuple[int, float]]],
    psnr: Sequence[tuple[int, float]],
    bicubic_psnr: float | None,
) -> np.ndarray:
    """Losses (log scale) above validation PSNR, against the iteration."""
    top = _panel((800, 300), losses, "training losses (log scale) vs iteration", log_scale=True)
    psnr_series: dict[str, Sequence[tuple[int, float]]] = {"PSNR Y (dB)": psnr}
    if bicubic_psnr is not None and psnr:
        psnr_series["bicubic"] = [(psnr[0][0], bicubic_psnr), (psnr[-1][0], bicubic_psnr)]
    bottom = _panel((800, 300), psnr_series, "validation PSNR vs iteration", log_scale=False)
    return np.concatenate([top, bottom], axis=0)
