"""TensorBoard scalars, when the optional `tensorboard` package is installed (the dev extra has it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.records.logs import TensorBoardLog

pytest.importorskip("tensorboard", reason="tensorboard is optional: pip install 'upscaler[train]'")


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_scalars_arrive_under_their_prefix(tmp_path: Path) -> None:
    board = TensorBoardLog(tmp_path)
    assert board.available
    board.write(1, {"l_pix": 0.5, "lr": 2e-4}, "train")
    board.write(2, {"l_pix": 0.25}, "train")
    board.write(2, {"psnr": 30.5}, "val")
    board.close()
    scalars = read_scalars(tmp_path)
    assert scalars["train/l_pix"] == [(1, 0.5), (2, 0.25)]
    assert scalars["val/psnr"] == [(2, 30.5)]
    assert scalars["train/lr"][0][0] == 1 and scalars["train/lr"][0][1] == pytest.approx(2e-4)


def test_a_resumed_run_drops_the_steps_it_redoes(tmp_path: Path) -> None:
    first = TensorBoardLog(tmp_path)
    for step in (1, 2, 3, 4):
        first.write(step, {"l_pix": float(step)}, "train")
    first.close()
    # Resumed from a checkpoint at iteration 2: steps 3 and 4 are written again and must not double.
    resumed = TensorBoardLog(tmp_path, purge_step=3)
    for step in (3, 4):
        resumed.write(step, {"l_pix": 10.0 * step}, "train")
    resumed.close()
    assert read_scalars(tmp_path)["train/l_pix"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
