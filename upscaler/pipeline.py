"""A staged runner: decode -> infer -> encode, with decode and encode on their own threads.

    result = run_pipeline(decode_frames(...), upscale_frame, write_parts)

The three stages are plain Python you can test without threads: `decode` is any iterable (usually a
generator), `infer` a function of one item, run in the calling thread (so a model session never changes
thread), and `encode` a function that consumes an iterator of inferred items and returns a result. An
infer stage that batches items together is an `InferStream`: a generator function from the items to their
results, one each and in order, which may hold a few items until a batch is full. The runner joins the
stages with bounded queues, so memory holds at most `queue_size` items between two stages (plus what a
batching infer stage holds) whatever the length of the input.

Queue items are typed: `Frame` (a value and its frame number), `End`, and `Failure` (the stage, the frame
number and the exception); never `None`. A failure in any stage stops the others and is raised in the
calling thread as a `StageError` naming the stage and the frame, with the original exception as its
`__cause__`; an `InferStream` fails at the oldest frame it holds (for a batch of tiles of several frames,
the first of them). A `KeyboardInterrupt` in the calling thread stops both threads (every queue wait gives up
within `POLL_SECONDS` once the job is stopped) and is raised as it is.

When the job is stopped early the iterator handed to `encode` raises `Stopped` rather than ending, so an
encoder that is half-way through a file never mistakes a stop for the end of the input.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
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


@dataclass(frozen=True)
class InferStream(Generic[T, U]):
    """An infer stage that may hold items back to batch them.

    `run` takes the items in order and yields exactly one result per item, in the same order; at the
    end of its input it yields the results of whatever it still holds.
    """

    run: Callable[[Iterator[T]], Iterator[U]]


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
    infer: Callable[[T], U] | InferStream[T, U],
    encode: Callable[[Iterator[U]], R],
    *,
    queue_size: int | tuple[int, int] = 2,
    first_frame: int = 0,
    names: StageNames = StageNames(),
) -> R:
    """Run `decode` on a thread, `infer` on the items in this thread, `encode` on a thread; return its result.

    queue_size: the depth of both queues, or (decode -> infer, infer -> encode) depths. Items keep their
    order. Raises StageError for a failure in any stage (after stopping the other two), or
    KeyboardInterrupt as it came.
    """
    decoded_size, inferred_size = (queue_size, queue_size) if isinstance(queue_size, int) else queue_size
    stop = threading.Event()
    decoded: Pipe = Pipe(stop, decoded_size)
    inferred: Pipe = Pipe(stop, inferred_size)
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

    # The numbers of the frames the infer stage has taken and not yet given back, oldest first.
    held: deque[int] = deque()
    decode_failure: list[Failure] = []

    def taken() -> Iterator[T]:
        # Ends at the end of the input, and also at a decode failure: the infer stage then gives back
        # what it holds, as it would at the end, and the failure is raised after those frames went on.
        while True:
            item = decoded.get()  # raises Stopped once the job is stopped
            if isinstance(item, Failure):
                decode_failure.append(item)
                return
            if isinstance(item, End):
                return
            held.append(item.number)
            yield item.value

    run = infer.run if isinstance(infer, InferStream) else _one_at_a_time(infer)
    decoder = threading.Thread(target=decode_thread, name=f"pipeline-{names.decode}", daemon=True)
    encoder = threading.Thread(target=encode_thread, name=f"pipeline-{names.encode}", daemon=True)
    decoder.start()
    encoder.start()
    results = run(taken())
    try:
        while True:
            try:
                value = next(results)
            except StopIteration:
                break
            except Stopped:
                break  # the encoder failed; its failure is raised below
            except Exception as error:
                raise StageError(names.infer, held[0] if held else None, error) from error
            if not held:
                raise RuntimeError("the infer stage gave back more items than it took")  # a bug
            if not inferred.put(Frame(held.popleft(), value)):
                break
        if not stop.is_set():
            if decode_failure:
                failure = decode_failure[0]
                raise StageError(failure.stage, failure.frame, failure.error) from failure.error
            if held:
                raise RuntimeError(f"the infer stage dropped frame {held[0]}")  # a bug, never hidden
            inferred.put(End())
        # Only here, on the way out without an exception, is the encoder let finish what is queued.
        _wait(encoder, stop)
    finally:
        stop.set()
        # A batching stage left early lets go of the frames it holds.
        close = getattr(results, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        decoder.join(_JOIN_SECONDS)
        encoder.join(_JOIN_SECONDS)
    if not encode_outcome:
        raise RuntimeError("the encode stage stopped without a result")  # a bug in this module
    outcome = encode_outcome[0]
    if isinstance(outcome, Failure):
        raise StageError(outcome.stage, outcome.frame, outcome.error) from outcome.error
    return outcome


def _one_at_a_time(infer: Callable[[T], U]) -> Callable[[Iterator[T]], Iterator[U]]:
    def run(values: Iterator[T]) -> Iterator[U]:
        for value in values:
            yield infer(value)

    return run


def _wait(thread: threading.Thread, stop: threading.Event) -> None:
    # Short joins keep the calling thread responsive to Ctrl-C and notice a failed encoder at once.
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        if stop.is_set():
            thread.join(_JOIN_SECONDS)
            return
