"""The staged runner: order, failures named by stage and frame, bounded memory, interruption."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.pipeline import (
    End,
    Failure,
    Frame,
    InferStream,
    Pipe,
    StageError,
    Stopped,
    run_pipeline,
)


class Source:
    """A decode stage that counts what it produced and notices being closed early."""

    def __init__(self, count: int | None, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.produced = 0
        self.closed = False

    def __iter__(self) -> Iterator[int]:
        try:
            index = 0
            while self.count is None or index < self.count:
                if index == self.fail_at:
                    raise InputError("cannot decode", hint="a hint")
                self.produced += 1
                yield index
                index += 1
        finally:
            self.closed = True


def collect(values: Iterator[int]) -> list[int]:
    return list(values)


def test_items_keep_their_order() -> None:
    result = run_pipeline(iter(range(50)), lambda value: value * 10, collect, queue_size=1)
    assert result == [value * 10 for value in range(50)]


def test_an_empty_input_reaches_the_encoder_as_an_end() -> None:
    assert run_pipeline(iter(()), lambda value: value, collect) == []


def test_a_decode_failure_names_the_stage_and_frame_and_stops_the_encoder() -> None:
    source = Source(100, fail_at=7)
    seen: list[int] = []
    finished = threading.Event()

    def encode(values: Iterator[int]) -> None:
        for value in values:
            seen.append(value)
        finished.set()  # would mean the failure looked like the end of the input

    with pytest.raises(StageError) as caught:
        run_pipeline(source, lambda value: value, encode)
    error = caught.value
    assert (error.stage, error.frame) == ("decode", 7)
    assert str(error) == "decode failed at frame 7: cannot decode"
    assert error.hint == "a hint"
    assert isinstance(error.__cause__, InputError)
    assert isinstance(error, UpscaleError)
    assert not finished.is_set()
    assert seen == list(range(len(seen))) and len(seen) <= 7


def test_an_infer_failure_names_the_frame_and_stops_decoding() -> None:
    source = Source(None)  # endless: only a stop ends it

    def infer(value: int) -> int:
        if value == 5:
            raise ValueError("bad pixels")
        return value

    with pytest.raises(StageError) as caught:
        run_pipeline(source, infer, collect, first_frame=100)
    assert (caught.value.stage, caught.value.frame) == ("infer", 105)
    assert str(caught.value) == "infer failed at frame 105: ValueError: bad pixels"
    assert "--debug" in caught.value.hint
    assert isinstance(caught.value.__cause__, ValueError)
    assert source.closed


def test_an_encode_failure_names_the_frame_and_stops_the_other_stages() -> None:
    source = Source(None)
    inferred: list[int] = []

    def infer(value: int) -> int:
        inferred.append(value)
        return value

    def encode(values: Iterator[int]) -> None:
        for value in values:
            if value == 3:
                raise OSError("disk full")

    with pytest.raises(StageError) as caught:
        run_pipeline(source, infer, encode, queue_size=2)
    assert (caught.value.stage, caught.value.frame) == ("encode", 3)
    assert "disk full" in str(caught.value)
    assert source.closed
    # Nothing runs on after the failure beyond what the two queues and the stages in hand can hold.
    assert len(inferred) <= 3 + 2 + 2


def test_an_encode_failure_after_the_last_frame_says_so() -> None:
    def encode(values: Iterator[int]) -> None:
        list(values)
        raise OutputError("flush failed")

    with pytest.raises(StageError) as caught:
        run_pipeline(iter(range(3)), lambda value: value, encode)
    assert caught.value.frame is None
    assert str(caught.value) == "encode failed after the last frame: flush failed"


def test_memory_is_bounded_by_the_queues() -> None:
    source = Source(60)
    lead: list[int] = []
    consumed = [0]
    release = threading.Event()

    def encode(values: Iterator[int]) -> int:
        for _ in values:
            # A slow encoder: the decoder must wait for it instead of reading ahead.
            release.wait(0.002)
            consumed[0] += 1
            lead.append(source.produced - consumed[0])
        return consumed[0]

    assert run_pipeline(source, lambda value: value, encode, queue_size=2) == 60
    # Produced but not yet encoded: two queues, the item in `infer`, the one the decoder holds.
    assert max(lead) <= 2 + 2 + 2


def test_keyboard_interrupt_stops_every_thread() -> None:
    source = Source(None)
    stopped_encoder = threading.Event()

    def infer(value: int) -> int:
        if value == 4:
            raise KeyboardInterrupt
        return value

    def encode(values: Iterator[int]) -> None:
        try:
            for _ in values:
                pass
        except Stopped:
            stopped_encoder.set()
            raise

    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(source, infer, encode)
    assert source.closed
    assert stopped_encoder.is_set()
    assert not [thread for thread in threading.enumerate() if thread not in before and thread.is_alive()]


def test_a_stopped_pipe_gives_up_waiting() -> None:
    stop = threading.Event()
    pipe = Pipe(stop, 1)
    assert pipe.put(Frame(0, "a"))
    stop.set()
    assert not pipe.put(End())
    with pytest.raises(Stopped):
        pipe.get()


def test_queue_items_are_typed() -> None:
    stop = threading.Event()
    pipe = Pipe(stop, 3)
    failure = Failure("decode", 2, ValueError("x"))
    for item in (Frame(0, "a"), failure, End()):
        assert pipe.put(item)
    assert pipe.get() == Frame(0, "a")
    assert pipe.get() is failure
    assert isinstance(pipe.get(), End)


# ------------------------------------------------------------------------ a batching infer stage


def in_batches(size: int, fail_at: int | None = None) -> InferStream:
    """An infer stage that holds `size` items and gives them back together (times 10), as a model
    batching frames does; it fails on the batch holding `fail_at`."""

    def run(values: Iterator[int]) -> Iterator[int]:
        batch: list[int] = []
        for value in values:
            batch.append(value)
            if len(batch) == size:
                if fail_at in batch:
                    raise ValueError("out of luck")
                yield from (item * 10 for item in batch)
                batch = []
        yield from (item * 10 for item in batch)  # the end: the partial batch

    return InferStream(run)


@pytest.mark.parametrize(("count", "size"), [(0, 3), (1, 3), (7, 3), (9, 3), (10, 4), (5, 1)])
def test_a_batching_infer_stage_keeps_every_item_in_order(count: int, size: int) -> None:
    result = run_pipeline(iter(range(count)), in_batches(size), collect, queue_size=(2, 1))
    assert result == [value * 10 for value in range(count)]


def test_a_batching_infer_stage_keeps_frame_numbers() -> None:
    def encode(values: Iterator[int]) -> None:
        for value in values:
            if value == 60:
                raise OSError("disk full")

    with pytest.raises(StageError) as caught:
        run_pipeline(iter(range(20)), in_batches(4), encode, first_frame=100)
    # The value 60 came from the item numbered 106: numbers travel with the values, not with batches.
    assert (caught.value.stage, caught.value.frame) == ("encode", 106)


def test_a_failing_batch_is_reported_at_the_first_frame_it_holds() -> None:
    source = Source(None)
    with pytest.raises(StageError) as caught:
        run_pipeline(source, in_batches(4, fail_at=10), collect, first_frame=100)
    # Items 8..11 were in the failing batch; 0..7 went on to the encoder before it.
    assert (caught.value.stage, caught.value.frame) == ("infer", 108)
    assert str(caught.value) == "infer failed at frame 108: ValueError: out of luck"
    assert source.closed


def test_a_decode_failure_lets_the_frames_held_for_a_batch_go_on_first() -> None:
    seen: list[int] = []

    def encode(values: Iterator[int]) -> None:
        seen.extend(values)

    with pytest.raises(StageError) as caught:
        run_pipeline(Source(100, fail_at=6), in_batches(4), encode)
    assert (caught.value.stage, caught.value.frame) == ("decode", 6)
    # Frames 4 and 5 were waiting for a batch; like every frame before a failure, they were upscaled.
    assert seen == [value * 10 for value in range(len(seen))] and len(seen) <= 6


def test_an_infer_stage_that_drops_a_frame_is_a_bug_not_a_shorter_output() -> None:
    def drops_the_last(values: Iterator[int]) -> Iterator[int]:
        items = list(values)
        yield from items[:-1]

    with pytest.raises(RuntimeError, match="dropped frame 4"):
        run_pipeline(iter(range(5)), InferStream(drops_the_last), collect)


def test_memory_is_bounded_by_the_queues_and_the_batch() -> None:
    source = Source(60)
    lead: list[int] = []

    def encode(values: Iterator[int]) -> int:
        count = 0
        for _ in values:
            count += 1
            lead.append(source.produced - count)
        return count

    assert run_pipeline(source, in_batches(4), encode, queue_size=(2, 3)) == 60
    # Produced but not yet encoded: both queues, a batch in `infer`, the one the decoder holds.
    assert max(lead) <= 2 + 3 + 4 + 1


def test_queue_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        run_pipeline(iter(range(3)), lambda value: value, collect, queue_size=(2, 0))
