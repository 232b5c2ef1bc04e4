"""The staged runner: order, failures named by stage and frame, bounded memory, interruption."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from upscaler.errors import InputError, OutputError, UpscaleError
from upscaler.pipeline import End, Failure, Frame, Pipe, StageError, Stopped, run_pipeline


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
