"""The C core's primitives: bounds checks, atomics, futex wait/wake."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import shmring
from shmring import _core


@pytest.fixture
def buf() -> bytearray:
    return bytearray(64)


@pytest.mark.parametrize("off", [-8, 61, 64, 1 << 40])
def test_out_of_bounds_offsets_raise_layout_error(buf: bytearray, off: int) -> None:
    with pytest.raises(shmring.LayoutError):
        _core.load64(buf, off)
    with pytest.raises(shmring.LayoutError):
        _core.store64(buf, off, 1)
    with pytest.raises(shmring.LayoutError):
        _core.cas64(buf, off, 0, 1)
    with pytest.raises(shmring.LayoutError):
        _core.fetch_add64(buf, off, 1)
    with pytest.raises(shmring.LayoutError):
        _core.futex_wait(buf, off, 0, 0.0)


def test_misaligned_offsets_raise_layout_error(buf: bytearray) -> None:
    with pytest.raises(shmring.LayoutError, match="aligned"):
        _core.load64(buf, 4)
    with pytest.raises(shmring.LayoutError, match="aligned"):
        _core.load32(buf, 2)


def test_read_only_buffers_are_refused() -> None:
    with pytest.raises(BufferError, match="not writable"):
        _core.store64(bytes(16), 0, 1)


def test_atomics_do_what_they_say(buf: bytearray) -> None:
    _core.store64(buf, 8, 2**64 - 1)
    assert _core.load64(buf, 8) == 2**64 - 1
    assert _core.fetch_add64(buf, 8, 1) == 2**64 - 1  # wraps
    assert _core.load64(buf, 8) == 0
    assert _core.cas64(buf, 8, 0, 5) == 0 and _core.load64(buf, 8) == 5
    assert _core.cas64(buf, 8, 0, 9) == 5 and _core.load64(buf, 8) == 5  # failed CAS reports what it saw
    _core.store32(buf, 16, 7)
    assert _core.fetch_add32(buf, 16, -1) == 7 and _core.load32(buf, 16) == 6
    assert _core.cas32(buf, 16, 6, 1) == 6 and _core.load32(buf, 16) == 1
    with pytest.raises(OverflowError):
        _core.store32(buf, 16, 2**32)


def test_futex_wait_times_out_and_returns_at_once_on_a_changed_word(buf: bytearray) -> None:
    assert _core.futex_wait(buf, 0, 0, 0.01) is False
    assert _core.futex_wait(buf, 0, 1, None) is True  # word is 0, not 1: no sleep
    with pytest.raises(ValueError):
        _core.futex_wait(buf, 0, 0, -1.0)


def test_futex_wake_wakes_a_sleeping_thread() -> None:
    arr = np.zeros(2, dtype=np.uint32)
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(_core.futex_wait(arr, 0, 0, 10.0)))
    t.start()
    deadline = time.monotonic() + 5
    while t.is_alive() and time.monotonic() < deadline:
        _core.store32(arr, 0, 1)
        _core.futex_wake(arr, 0, 1)
        t.join(0.01)
    assert woke == [True]


def test_test_hooks_are_off_by_default() -> None:
    assert _core._test_config() == {"broken": "", "delay_permille": 0, "delay_max_us": 0}
