"""The journal of a video job's work folder: the finished parts, each with its size and sha256.

A part counts as done only once it is on the disk (fsync) and recorded in the journal, itself written
durably; on resume every part is checked against its record, and one that is missing, cut or changed is
made again with every later part.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from upscaler.errors import OutputError
from upscaler.system.files import write_bytes_atomically

# 2: parts carry their size and sha256, checked on resume (1 had neither: such a journal is discarded).
JOURNAL_VERSION = 2
JOURNAL_NAME = "journal.json"


# ------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PartRecord:
    """A finished part: its file name in the work folder, its frame count, its first and last pts, and
    the size and sha256 it had when it was flushed to disk (checked before a resume trusts it)."""

    file: str
    frames: int
    first_pts: int
    last_pts: int
    size: int = 0
    sha256: str = ""


@dataclass
class Journal:
    """What the work folder holds: the fingerprint it was made for and the finished parts, in order.

    ahead: parts a cluster finished past the first part still missing (`upscaler.cluster.video`); a run
    on one machine, which makes parts in order, makes them again."""

    fingerprint: str
    parts: list[PartRecord] = field(default_factory=list)
    complete: bool = False
    ahead: list[PartRecord] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(part.frames for part in self.parts)


# ------------------------------------------------------------------------------------------- journal


def read_journal(path: Path) -> Journal | None:
    """The journal at `path`, or None when there is none or it cannot be understood."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != JOURNAL_VERSION:
            return None
        return Journal(
            fingerprint=str(data["fingerprint"]),
            parts=[_record(part) for part in data["parts"]],
            complete=bool(data["complete"]),
            ahead=[_record(part) for part in data.get("ahead", [])],
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _record(part: dict) -> PartRecord:
    return PartRecord(
        file=str(part["file"]),
        frames=int(part["frames"]),
        first_pts=int(part["first_pts"]),
        last_pts=int(part["last_pts"]),
        size=int(part["size"]),
        sha256=str(part["sha256"]),
    )


def write_journal(path: Path, journal: Journal) -> None:
    """Write `journal` so that a crash leaves the old or the new one, never half of one, and the new one
    is on the disk (not only in the OS's cache) when this returns."""
    data = {
        "version": JOURNAL_VERSION,
        "fingerprint": journal.fingerprint,
        "complete": journal.complete,
        "parts": [asdict(part) for part in journal.parts],
    }
    if journal.ahead:
        data["ahead"] = [asdict(part) for part in journal.ahead]
    write_bytes_atomically(path, (json.dumps(data, indent=1) + "\n").encode(), durable=True)


def seal_part(path: Path) -> tuple[int, str]:
    """Flush a finished part file to the disk; its size and sha256, which the journal records."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputError(f"cannot finish {path}: {error.strerror or error}") from None
    return size, digest.hexdigest()


def part_problem(path: Path, part: PartRecord) -> str | None:
    """Why the part file at `path` is not what the journal recorded (missing, cut, changed), or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return "is missing"
    if size != part.size:
        return f"holds {size} bytes where {part.size} were written"
    if seal_part(path)[1] != part.sha256:
        return "has changed since it was written (its sha256 differs)"
    return None
