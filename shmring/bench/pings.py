"""The links of the ping-pong section: two processes, A sends a
``PING_BYTES``-byte array, B echoes it back, A times each round trip.

A link is a ``Ping`` subclass listed in ``PINGS``; the report compares the
others against ``RingPing``.  ``measurements.measure_pingpong`` runs each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from multiprocessing.context import ForkContext
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..ring import Ring
from .config import PING_BYTES
from .messages import (
    close_fd,
    corrupt,
    message,
    os_readv,
    os_write,
    pack_into,
    read_exact,
    read_rest,
    tail_offset,
    unpack_from,
    write_rest,
)
from .results import BenchError


class Ping:
    """A two-way link for ping-pong: ``pinger`` runs in A, ``echoer`` in B."""

    label: ClassVar[str]

    def __init__(self, ctx: ForkContext) -> None:
        pass

    def pinger(self, rounds: int) -> npt.NDArray[np.int64]:
        """Send, wait for the echo, check it; returns each round trip in ns."""
        raise NotImplementedError

    def echoer(self, rounds: int) -> None:
        """Send back each of ``rounds`` messages."""
        raise NotImplementedError

    def in_parent(self) -> None:
        """Drop what the parent does not use."""

    def close(self) -> None:
        """Release what the parent holds."""


def _check_echo(i: int, reply: Any) -> None:
    if unpack_from(reply)[0] != i:
        raise corrupt(i, reply, tail_offset(PING_BYTES))


class _PutGetPing(Ping):
    """Two queue-like channels, ``forth`` and ``back``; B does
    ``back.put(forth.get())``."""

    forth: Any
    back: Any

    def pinger(self, rounds: int) -> npt.NDArray[np.int64]:
        put, get, clock, pack = self.forth.put, self.back.get, time.perf_counter_ns, pack_into
        # mp.Queue.put() pickles later, in a feeder thread; reusing msg is safe
        # only because its echo, which comes after the pickling, is awaited.
        msg, lat = message(PING_BYTES), np.empty(rounds, np.int64)
        for i in range(rounds):
            pack(msg, 0, i)
            t = clock()
            put(msg)
            reply = get()
            lat[i] = clock() - t
            _check_echo(i, reply)
        return lat

    def echoer(self, rounds: int) -> None:
        put, get = self.back.put, self.forth.get
        for _ in range(rounds):
            put(get())

    def close(self) -> None:
        self.forth.close()
        self.back.close()


class RingPing(_PutGetPing):
    """Two rings (blocking get)."""

    label = "ring"

    def __init__(self, ctx: ForkContext) -> None:
        self.forth = Ring(capacity=4, shape=(PING_BYTES,), dtype=np.uint8)
        try:
            self.back = Ring(capacity=4, shape=(PING_BYTES,), dtype=np.uint8)
        except BaseException:
            self.forth.close()
            raise


class QueuePing(_PutGetPing):
    """Two ``multiprocessing.Queue``s."""

    label = "mp.Queue"

    def __init__(self, ctx: ForkContext) -> None:
        self.forth, self.back = ctx.Queue(), ctx.Queue()


class PipePing(Ping):
    """One duplex ``multiprocessing.Pipe``; ``send_bytes``/``recv_bytes``,
    A turns each echo into an array with ``np.frombuffer``."""

    label = "mp.Pipe"

    def __init__(self, ctx: ForkContext) -> None:
        self.a, self.b = ctx.Pipe(duplex=True)

    def pinger(self, rounds: int) -> npt.NDArray[np.int64]:
        self.b.close()
        send: Callable[[Any], None] = self.a.send_bytes  # takes arrays (see pack_into)
        recv, clock, pack = self.a.recv_bytes, time.perf_counter_ns, pack_into
        msg, lat = message(PING_BYTES), np.empty(rounds, np.int64)
        for i in range(rounds):
            pack(msg, 0, i)
            t = clock()
            send(msg)
            reply = np.frombuffer(recv(), np.uint8)
            lat[i] = clock() - t
            _check_echo(i, reply)
        return lat

    def echoer(self, rounds: int) -> None:
        self.a.close()
        send, recv = self.b.send_bytes, self.b.recv_bytes
        for _ in range(rounds):
            send(recv())

    def in_parent(self) -> None:
        self.close()

    def close(self) -> None:
        self.a.close()
        self.b.close()


class OsPipePing(Ping):
    """Two ``os.pipe``s; whole-message writes, ``os.readv`` into a
    preallocated array until the message is complete."""

    label = "os.pipe"

    def __init__(self, ctx: ForkContext) -> None:
        self.forth_r, self.forth_w = os.pipe()
        self.back_r, self.back_w = os.pipe()

    def pinger(self, rounds: int) -> npt.NDArray[np.int64]:
        self.forth_r, self.back_w = close_fd(self.forth_r), close_fd(self.back_w)
        write, readv, clock, pack = os_write, os_readv, time.perf_counter_ns, pack_into
        wfd, rfd = self.forth_w, self.back_r
        msg, reply, lat = message(PING_BYTES), np.empty(PING_BYTES, np.uint8), np.empty(rounds, np.int64)
        bufs = [reply]
        for i in range(rounds):
            pack(msg, 0, i)
            t = clock()
            n = write(wfd, msg)
            if n != PING_BYTES:
                write_rest(wfd, msg, n)
            n = readv(rfd, bufs)
            if n != PING_BYTES and not read_rest(rfd, reply, n):
                raise BenchError("os.pipe ping-pong: echo side closed")
            lat[i] = clock() - t
            _check_echo(i, reply)
        return lat

    def echoer(self, rounds: int) -> None:
        self.forth_w, self.back_r = close_fd(self.forth_w), close_fd(self.back_r)
        buf = np.empty(PING_BYTES, np.uint8)
        for _ in range(rounds):
            read_exact(self.forth_r, buf)
            n = os_write(self.back_w, buf)
            if n != PING_BYTES:
                write_rest(self.back_w, buf, n)

    def in_parent(self) -> None:
        self.close()

    def close(self) -> None:
        self.forth_r, self.forth_w = close_fd(self.forth_r), close_fd(self.forth_w)
        self.back_r, self.back_w = close_fd(self.back_r), close_fd(self.back_w)


PINGS: tuple[type[Ping], ...] = (RingPing, QueuePing, PipePing, OsPipePing)
