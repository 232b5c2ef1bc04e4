"""Where a video job's parts will be cut, known before any part is made: the frames' timestamps and
keyframe flags, found by decoding once without turning any frame into RGB.

A cluster (`upscaler.cluster.video`) makes the parts side by side, each from its own range; cut by the
same rule as a run on one machine (`part_is_full`), they are the very parts that run would make, so the
two can resume each other. The cuts are kept in the work folder, for the fingerprint they were made for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from upscaler.errors import InputError
from upscaler.system.files import write_bytes_atomically
from upscaler.video.decode import frame_stamps
from upscaler.video.plan import VideoPlan
from upscaler.video.resume.parts import part_is_full, part_name

CUTS_NAME = "cuts.json"


@dataclass(frozen=True)
class Cut:
    """One part to make: its number and file name, the pts its first and last frames carry, how many
    frames it holds, and the last pts of the part before it (None for the first), after which its
    decoding starts, as a resumed run's does."""

    index: int
    file: str
    after_pts: int | None
    first_pts: int
    last_pts: int
    frames: int


def plan_cuts(plan: VideoPlan, problems: list[str] | None = None) -> list[Cut]:
    """The parts of `plan`, in order. Decodes the video once (no RGB), unless the work folder keeps the
    cuts made for this fingerprint. Lines about a video that stops early go to `problems`."""
    if not plan.source.has_timestamps:
        raise InputError(
            f"{plan.source.path.name}: its frames carry no timestamps, so it cannot be cut into parts "
            "made apart",
            hint="run it without --cluster",
        )
    path = plan.work_dir / CUTS_NAME
    kept = _read_cuts(path, plan.fingerprint)
    if kept is not None:
        cuts, lines = kept
    else:
        lines = []
        cuts = _cut(plan, lines)
        data = {"fingerprint": plan.fingerprint, "problems": lines, "cuts": [asdict(cut) for cut in cuts]}
        write_bytes_atomically(path, (json.dumps(data) + "\n").encode(), durable=True)
    if problems is not None:
        problems.extend(lines)
    return cuts


def _cut(plan: VideoPlan, problems: list[str]) -> list[Cut]:
    cuts: list[Cut] = []
    count = first = last = 0
    previous_last: int | None = None

    def close() -> None:
        nonlocal previous_last
        cuts.append(Cut(len(cuts), part_name(plan, len(cuts)), previous_last, first, last, count))
        previous_last = last

    stamps = frame_stamps(
        plan.source,
        start=plan.start,
        duration=plan.duration,
        deinterlace=plan.deinterlace,
        problems=problems,
    )
    for pts, key_frame in stamps:
        if count and key_frame and part_is_full(plan, count, first, last):
            close()
            count = 0
        if count == 0:
            first = pts
        count += 1
        last = pts
    if count:
        close()
    return cuts


def _read_cuts(path: Path, fingerprint: str) -> tuple[list[Cut], list[str]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["fingerprint"] != fingerprint:
            return None
        return [Cut(**cut) for cut in data["cuts"]], [str(line) for line in data["problems"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
