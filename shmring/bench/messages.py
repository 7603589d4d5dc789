"""The messages every measurement sends, and how their receivers check them.

Every message carries its sequence number (little-endian uint64) in its first
8 bytes and, from 16 bytes up, in its last 8 bytes too; every consumer checks
both on every message, so a lost, duplicated, reordered, truncated or torn
message fails the run (``main`` returns 1).  See docs/bench.md.

Also here: whole-message reads and writes on raw pipe file descriptors, for
the os.pipe transports.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .results import BenchError

_STAMP = struct.Struct("<Q")
# The stamp and raw-fd calls, typed to take numpy arrays: typeshed wants a
# Buffer there, and numpy's stubs declare ndarray one only on Python >= 3.12.
pack_into: Callable[[Any, int, int], None] = _STAMP.pack_into
unpack_from: Callable[..., tuple[int]] = _STAMP.unpack_from
os_write: Callable[[int, Any], int] = os.write
os_readv: Callable[[int, Any], int] = os.readv


def message(size: int) -> npt.NDArray[np.uint8]:
    """A message buffer: a payload pattern, stamps written per send."""
    return np.resize(np.arange(251, dtype=np.uint8), size)


def tail_offset(size: int) -> int:
    """Offset of the second stamp; 0 (no second stamp) below 16 bytes."""
    return size - 8 if size >= 16 else 0


def corrupt(seq: int, item: Any, tail: int) -> BenchError:
    """The error for message ``seq`` arriving as ``item`` with a wrong stamp."""
    head = unpack_from(item)[0]
    last = unpack_from(item, tail)[0]
    return BenchError(f"message {seq} arrived with stamps {head} (first 8 bytes) and {last} (last 8 bytes)")


def write_rest(fd: int, buf: Any, done: int) -> None:
    """Finish a partial ``os.write`` of ``buf``."""
    view = memoryview(buf).cast("B")
    while done < len(view):
        done += os.write(fd, view[done:])


def read_rest(fd: int, buf: Any, done: int) -> bool:
    """Finish a partial read into ``buf``; False on end of file before any
    byte of the message (a clean end of stream), BenchError after some."""
    if done == 0:
        return False
    view = memoryview(buf).cast("B")
    while done < len(view):
        n = os.readv(fd, [view[done:]])
        if n == 0:
            raise BenchError(f"os.pipe: end of file after {done} of {len(view)} bytes of a message")
        done += n
    return True


def read_exact(fd: int, buf: Any) -> None:
    """Read one whole message into ``buf``; BenchError on end of file."""
    if not read_rest(fd, buf, os_readv(fd, [buf])):
        raise BenchError("os.pipe: end of file where a message was expected")


def close_fd(fd: int) -> int:
    """Close ``fd`` unless already closed (-1); returns -1."""
    if fd >= 0:
        os.close(fd)
    return -1
