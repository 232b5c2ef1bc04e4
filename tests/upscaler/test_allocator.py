"""Keeping freed memory in the process: mallopt on glibc, nothing elsewhere or when the user opted out."""

from __future__ import annotations

import sys

import pytest

from upscaler.system import allocator


class FakeLibc:
    """Stands for ctypes.CDLL(None): its `mallopt` records calls and takes argtypes like a C function."""

    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer
        libc = self

        class Mallopt:
            def __call__(self, param: int, value: int) -> int:
                libc.calls.append((param, value))
                return libc.answer

        self.mallopt = Mallopt()


@pytest.fixture
def libc(monkeypatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(allocator, "glibc_version", lambda: "2.36")
    return fake


def test_glibc_gets_no_trimming_and_mmap_only_above_32_mib(libc: FakeLibc) -> None:
    said = allocator.keep_freed_memory({})
    assert libc.calls == [(allocator.M_TRIM_THRESHOLD, 2**31 - 1), (allocator.M_MMAP_THRESHOLD, 32 * 1024**2)]
    assert libc.calls[0][0] == -1 and libc.calls[1][0] == -3  # glibc's <malloc.h> numbers
    assert "keeps freed memory" in said


@pytest.mark.parametrize(
    "environ",
    [
        {"UPSCALER_MALLOC": "system"},
        {"UPSCALER_MALLOC": "SYSTEM "},
        {"MALLOC_ARENA_MAX_": "2"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"},
    ],
)
def test_the_users_own_choice_is_left_alone(libc: FakeLibc, environ: dict[str, str]) -> None:
    assert "left as it is" in allocator.keep_freed_memory(environ)
    assert libc.calls == []


def test_other_c_libraries_are_left_alone(monkeypatch, libc: FakeLibc) -> None:
    monkeypatch.setattr(allocator, "glibc_version", lambda: None)
    assert allocator.keep_freed_memory({}) == "malloc left as it is (not glibc)"
    assert libc.calls == []


def test_a_refused_setting_or_missing_mallopt_never_raises(monkeypatch, libc: FakeLibc) -> None:
    libc.answer = 0
    assert "partly" in allocator.keep_freed_memory({})

    def no_libc(name):
        raise OSError("no C library here")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    assert "not found" in allocator.keep_freed_memory({})


def test_glibc_version_is_none_off_linux(monkeypatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.glibc_version() is None


@pytest.mark.skipif(allocator.glibc_version() is None, reason="not a glibc system")
def test_the_real_mallopt_accepts_the_settings() -> None:
    # What the commands do on this machine: the real glibc takes both settings.
    assert "keeps freed memory" in allocator.keep_freed_memory({})
