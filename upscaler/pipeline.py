"""A staged runner: decode -> infer -> encode, with decode and encode on their own threads.

    result = run_pipeline(decode_frames(...), upscale_frame, write_parts)

The three stages are plain Python you can test without threads: `decode` is any iterable (usually a
generator), `infer` a function of one item, run in the calling thread (so a model session never changes
thread), and `encode` a function that consumes an iterator of inferred items and returns a result. The
runner joins them with bounded queues, so memory holds at most `queue_size` items between two stages
whatever the length of the input.

Queue items are typed: `Frame` (a value and its frame number), `End`, and `Failure` (the stage, the frame
number and the exception); never `None`. A failure in any stage stops the others and is raised in the
calling thread as a `StageError` naming the stage and the frame, with the original exception as its
`__cause__`. A `KeyboardInterrupt` in the calling thread stops both threads (every queue wait gives up
within `POLL_SECONDS` once the job is stopped) and is raised as it is.

When the job is stopped early the iterator handed to `encode` raises `Stopped` rather than ending, so an
encoder that is half-way through a file never mistakes a stop for the end of the input.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from upscaler.errors import UpscaleError

T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")

# How often a thread blocked on a queue looks whether the job was stopped.
POLL_SECONDS = 0.05
# How long the calling thread waits for a worker to leave once the job is stopped. A worker notices the
# stop within POLL_SECONDS unless it is inside one long decode or encode call.
_JOIN_SECONDS = 30.0


@dataclass(frozen=True)
class Frame(Generic[T]):
    """One item on its way through the stages; `number` counts from `first_frame` in input order."""

    number: int
    value: T


@dataclass(frozen=True)
class End:
    """No more items will come."""


@dataclass(frozen=True)
class Failure:
    """A stage failed: which one, at which frame (None: after the last one) and why."""

    stage: str
    frame: int | None
    error: BaseException


class Stopped(Exception):
    """Raised inside a worker stage when the job was stopped from elsewhere; it is never reported."""


class StageError(UpscaleError):
    """A stage of a pipeline failed; `stage` and `frame` say where, `__cause__` holds the original."""

    def __init__(self, stage: str, frame: int | None, error: BaseException) -> None:
        where = f"at frame {frame}" if frame is not None else "after the last frame"
        if isinstance(error, UpscaleError):
            message, hint = error.message, error.hint
        else:
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            hint = "run again with --debug for the traceback, and please report it"
        super().__init__(f"{stage} failed {where}: {message}", hint=hint)
        self.stage = stage
        self.frame = frame
        self.error = error


@dataclass(frozen=True)
class StageNames:
    """The names failures report; a video job keeps the defaults."""

    decode: str = "decode"
    infer: str = "infer"
    encode: str = "encode"


class Pipe:
    """A bounded queue between two threads whose waits give up once the job is stopped."""

    def __init__(self, stop: threading.Event, size: int) -> None:
        if size < 1:
            raise ValueError(f"queue size must be at least 1, got {size}")
        self._queue: queue.Queue[Frame | End | Failure] = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: Frame | End | Failure) -> bool:
        """Wait for room and put `item`; False when the job stopped first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Frame | End | Failure:
        """Wait for the next item; raises Stopped once the job is stopped."""
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
        raise Stopped

    def qsize(self) -> int:
        return self._queue.qsize()


def run_pipeline(
    decode: Iterable[T],
    infer: Callable[[T], U],
    encode: Callable[[Iterator[U]], R],
    *,
    queue_size: int = 2,
    first_frame: int = 0,
    names: StageNames = StageNames(),
) -> R:
    """Run `decode` on a thread, `infer` on each item in this thread, `encode` on a thread; return its result.

    Items keep their order. Raises StageError for a failure in any stage (after stopping the other two),
    or KeyboardInterrupt as it came.
    """
    stop = threading.Event()
    decoded: Pipe = Pipe(stop, queue_size)
    inferred: Pipe = Pipe(stop, queue_size)
    encode_outcome: list[Failure | R] = []

    def decode_thread() -> None:
        number = first_frame
        iterator = iter(decode)
        try:
            while not stop.is_set():
                try:
                    value = next(iterator)
                except StopIteration:
                    decoded.put(End())
                    return
                if not decoded.put(Frame(number, value)):
                    return
                number += 1
        except BaseException as error:  # handed to the calling thread, which raises it
            decoded.put(Failure(names.decode, number, error))
        finally:
            # A generator left early releases what it holds (an open container) here, on its own thread.
            close = getattr(iterator, "close", None)
            if close is not None:
                # The decoder's own clean-up failing must not hide why the job stopped.
                with contextlib.suppress(Exception):
                    close()

    current: list[int | None] = [None]

    def inferred_values() -> Iterator[U]:
        while True:
            item = inferred.get()
            if isinstance(item, End):
                current[0] = None
                return
            if isinstance(item, Frame):
                current[0] = item.number
                yield item.value

    def encode_thread() -> None:
        try:
            result = encode(inferred_values())
        except Stopped:
            return
        except BaseException as error:  # raised by the calling thread once it notices the stop
            encode_outcome.append(Failure(names.encode, current[0], error))
        else:
            encode_outcome.append(result)
        finally:
            # Whatever happened, nothing more will be taken from the queue: release the other stages.
            stop.set()

    decoder = threading.Thread(target=decode_thread, name=f"pipeline-{names.decode}", daemon=True)
    encoder = threading.Thread(target=encode_thread, name=f"pipeline-{names.encode}", daemon=True)
    decoder.start()
    encoder.start()
    try:
        while True:
            try:
                item = decoded.get()
            except Stopped:
                break  # the encoder failed; its failure is raised below
            if isinstance(item, Failure):
                raise StageError(item.stage, item.frame, item.error) from item.error
            if isinstance(item, End):
                inferred.put(End())
                break
            try:
                value = infer(item.value)
            except Exception as error:
                raise StageError(names.infer, item.number, error) from error
            if not inferred.put(Frame(item.number, value)):
                break
        # Only here, on the way out without an exception, is the encoder let finish what is queued.
        _wait(encoder, stop)
    finally:
        stop.set()
        decoder.join(_JOIN_SECONDS)
        encoder.join(_JOIN_SECONDS)
    if not encode_outcome:
        raise RuntimeError("the encode stage stopped without a result")  # a bug in this module
    outcome = encode_outcome[0]
    if isinstance(outcome, Failure):
        raise StageError(outcome.stage, outcome.frame, outcome.error) from outcome.error
    return outcome


def _wait(thread: threading.Thread, stop: threading.Event) -> None:
    # Short joins keep the calling thread responsive to Ctrl-C and notice a failed encoder at once.
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        if stop.is_set():
            thread.join(_JOIN_SECONDS)
            return
