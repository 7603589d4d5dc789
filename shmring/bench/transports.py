"""The transports of the throughput section: each moves ``cell.size``-byte
messages from one producer process to one consumer process.

A transport is a ``Transport`` subclass listed in ``RING_TRANSPORTS`` (our
rows, compared against every peer) or ``PEER_TRANSPORTS`` (the standard ways
of moving arrays; the report's header lists each with its ``about``).  Its
cell is timed and checked by ``measurements.measure_throughput``; the report
prints its rows without knowing it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Callable
from multiprocessing.context import ForkContext
from typing import Any, ClassVar

import numpy as np

from ..ring import Ring
from .config import (
    BATCH_BYTES,
    CHUNK_BYTES,
    MAX_BATCH,
    MAX_CAPACITY,
    MIN_CAPACITY,
    OS_PIPE_BUFFER,
    RING_BYTES,
    fmt_size,
)
from .messages import (
    close_fd,
    corrupt,
    message,
    os_readv,
    os_write,
    pack_into,
    read_rest,
    tail_offset,
    unpack_from,
    write_rest,
)
from .results import BenchError


@dataclasses.dataclass(frozen=True)
class Cell:
    """Geometry of one throughput cell."""

    size: int
    capacity: int
    batch: int
    chunk: int  # messages between clock reads (a multiple of batch)
    seconds: float

    @property
    def warmup(self) -> int:
        """Messages sent before the clock starts: one pass over every slot."""
        return self.capacity

    @classmethod
    def for_size(cls, size: int, seconds: float, batched: bool) -> Cell:
        capacity = min(MAX_CAPACITY, max(MIN_CAPACITY, RING_BYTES // size))
        batch = min(MAX_BATCH, max(1, BATCH_BYTES // size)) if batched else 1
        chunk = max(batch, (CHUNK_BYTES // size) // batch * batch)
        return cls(size, capacity, batch, chunk, seconds)


class Transport:
    """Moves ``cell.size``-byte messages from a producer to a consumer process.

    Built in the parent before the fork.  ``in_producer``/``send``/``end``
    run in the producer, ``in_consumer``/``receive`` in the consumer,
    ``in_parent`` in the parent once both have started, and ``close`` in the
    parent at the end (always safe to call).
    """

    label: ClassVar[str]
    about: ClassVar[str] = ""  # a peer's line in the report's header: what it is, how it sends / receives
    ring: ClassVar[bool] = False
    zero_copy: ClassVar[bool] = False
    batched: ClassVar[bool] = False

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        self.cell = cell
        self.tail = tail_offset(cell.size)

    def in_producer(self) -> None:
        """Drop what the producer does not use."""

    def in_consumer(self) -> None:
        """Drop what the consumer does not use."""

    def in_parent(self) -> None:
        """Drop what the parent does not use."""

    def send(self, first: int, count: int) -> None:
        """Send messages ``first .. first+count-1``."""
        raise NotImplementedError

    def end(self) -> None:
        """Tell the consumer that the stream has ended."""
        raise NotImplementedError

    def receive(self, first: int, count: int) -> int:
        """Receive and check up to ``count`` messages starting at ``first``;
        returns how many arrived before the end of the stream."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the parent holds."""


class RingCopy(Transport):
    """``ring.put(item)`` / ``ring.get()``, one item per call."""

    label = "ring put/get"
    ring = True

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.shm = Ring(capacity=cell.capacity, shape=(cell.size,), dtype=np.uint8)

    def in_producer(self) -> None:
        self.msg = message(self.cell.size)

    def send(self, first: int, count: int) -> None:
        put, msg, tail, pack = self.shm.put, self.msg, self.tail, pack_into
        for seq in range(first, first + count):
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            put(msg)

    def end(self) -> None:
        self.shm.close()

    def receive(self, first: int, count: int) -> int:
        get, tail, unpack = self.shm.get, self.tail, unpack_from
        seq = first
        try:
            for seq in range(first, first + count):
                item = get()
                if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                    raise corrupt(seq, item, tail)
        except EOFError:
            return seq - first
        return count

    def close(self) -> None:
        self.shm.close()


class RingBatch(RingCopy):
    """``ring.put_many(items)`` / ``ring.get_many(batch)``."""

    label = "ring put_many/get_many"
    batched = True

    def in_producer(self) -> None:
        self.items = np.stack([message(self.cell.size)] * self.cell.batch)
        self.words = self.items.view(np.uint64)
        self.offsets = np.arange(self.cell.batch, dtype=np.uint64)

    def send(self, first: int, count: int) -> None:
        put_many, items, words, offsets = self.shm.put_many, self.items, self.words, self.offsets
        stop = first + count
        for start in range(first, stop, self.cell.batch):
            n = min(self.cell.batch, stop - start)
            np.add(offsets[:n], start, out=words[:n, 0])
            words[:n, -1] = words[:n, 0]
            if put_many(items[:n]) != n:
                raise BenchError("put_many stopped part-way")

    def receive(self, first: int, count: int) -> int:
        get_many, batch = self.shm.get_many, self.cell.batch
        offsets = np.arange(batch, dtype=np.uint64)
        got = 0
        while got < count:
            try:
                items = get_many(min(batch, count - got))
            except EOFError:
                break
            words = items.view(np.uint64)
            expect = offsets[: len(items)] + (first + got)
            if not (np.array_equal(words[:, 0], expect) and np.array_equal(words[:, -1], expect)):
                bad = int(np.flatnonzero((words[:, 0] != expect) | (words[:, -1] != expect))[0])
                raise corrupt(first + got + bad, items[bad], self.tail)
            got += len(items)
        return got


class RingZeroCopy(RingCopy):
    """``with ring.reserve() as slot`` / ``with ring.borrow() as item``: the
    producer writes only the stamps into the slot, the consumer reads them
    in place; no payload byte is copied."""

    label = "ring reserve/borrow"
    zero_copy = True

    def in_producer(self) -> None:
        pass

    def send(self, first: int, count: int) -> None:
        reserve, tail, pack = self.shm.reserve, self.tail, pack_into
        for seq in range(first, first + count):
            with reserve() as slot:
                pack(slot, 0, seq)
                if tail:
                    pack(slot, tail, seq)

    def receive(self, first: int, count: int) -> int:
        borrow, tail, unpack = self.shm.borrow, self.tail, unpack_from
        seq = first
        try:
            for seq in range(first, first + count):
                with borrow() as item:
                    if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                        raise corrupt(seq, item, tail)
        except EOFError:
            return seq - first
        return count


class MpQueue(Transport):
    """``multiprocessing.Queue(maxsize=capacity)``: ``put(array)`` /
    ``get()``.  put() pickles in a feeder thread after it returns, so the
    producer rotates ``capacity + 1`` arrays: an array is stamped again only
    once the queue's bound proves its previous message was received."""

    label = "mp.Queue"
    about = "multiprocessing.Queue(maxsize=capacity): put(array) / get()"

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.queue = ctx.Queue(maxsize=cell.capacity)

    def in_producer(self) -> None:
        self.pool = [message(self.cell.size) for _ in range(self.cell.capacity + 1)]

    def send(self, first: int, count: int) -> None:
        put, pool, tail, pack = self.queue.put, self.pool, self.tail, pack_into
        n = len(pool)
        for seq in range(first, first + count):
            msg = pool[seq % n]
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            put(msg)

    def end(self) -> None:
        self.queue.put(None)

    def receive(self, first: int, count: int) -> int:
        get, tail, unpack = self.queue.get, self.tail, unpack_from
        for seq in range(first, first + count):
            item = get()
            if item is None:
                return seq - first
            if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                raise corrupt(seq, item, tail)
        return count

    def close(self) -> None:
        self.queue.close()


class MpPipe(Transport):
    """``multiprocessing.Pipe()``: ``send_bytes(array)`` (no pickling) /
    ``np.frombuffer(recv_bytes(), np.uint8)``, so the consumer holds an array
    as it would from ``ring.get()``.  An empty message ends the stream."""

    label = "mp.Pipe"
    about = "multiprocessing.Pipe() (duplex, a socketpair): send_bytes(array) / np.frombuffer(recv_bytes())"

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.reader, self.writer = ctx.Pipe()  # the default: duplex, a socketpair

    def in_producer(self) -> None:
        self.reader.close()
        self.msg = message(self.cell.size)

    def in_consumer(self) -> None:
        self.writer.close()

    def in_parent(self) -> None:
        self.close()

    def send(self, first: int, count: int) -> None:
        send_bytes: Callable[[Any], None] = self.writer.send_bytes  # takes arrays (see pack_into)
        msg, tail, pack = self.msg, self.tail, pack_into
        for seq in range(first, first + count):
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            send_bytes(msg)

    def end(self) -> None:
        self.writer.send_bytes(b"")

    def receive(self, first: int, count: int) -> int:
        recv_bytes, tail, unpack, frombuffer = self.reader.recv_bytes, self.tail, unpack_from, np.frombuffer
        for seq in range(first, first + count):
            data = recv_bytes()
            if not data:
                return seq - first
            item = frombuffer(data, np.uint8)
            if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                raise corrupt(seq, item, tail)
        return count

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class OsPipe(Transport):
    """A raw ``os.pipe()`` (buffer raised to OS_PIPE_BUFFER where allowed):
    one ``os.write`` of each whole message (finished if partial), and
    ``os.readv`` into a preallocated array until the message is complete.
    Closing the write end ends the stream."""

    label = "os.pipe"
    about = (
        f"os.pipe() with a {fmt_size(OS_PIPE_BUFFER)} buffer: os.write of each whole message / "
        "os.readv into a preallocated array"
    )

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.rfd, self.wfd = os.pipe()
        _grow_pipe(self.wfd)

    def in_producer(self) -> None:
        self.rfd = close_fd(self.rfd)
        self.msg = message(self.cell.size)

    def in_consumer(self) -> None:
        self.wfd = close_fd(self.wfd)

    def in_parent(self) -> None:
        self.close()

    def send(self, first: int, count: int) -> None:
        write, fd, msg, size, tail, pack = os_write, self.wfd, self.msg, self.cell.size, self.tail, pack_into
        for seq in range(first, first + count):
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            n = write(fd, msg)
            if n != size:
                write_rest(fd, msg, n)

    def end(self) -> None:
        self.wfd = close_fd(self.wfd)

    def receive(self, first: int, count: int) -> int:
        readv, fd, size, tail, unpack = os_readv, self.rfd, self.cell.size, self.tail, unpack_from
        item = np.empty(size, np.uint8)
        bufs = [item]
        for seq in range(first, first + count):
            n = readv(fd, bufs)
            if n != size and not read_rest(fd, item, n):
                return seq - first
            if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                raise corrupt(seq, item, tail)
        return count

    def close(self) -> None:
        self.rfd = close_fd(self.rfd)
        self.wfd = close_fd(self.wfd)


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, OS_PIPE_BUFFER)
    except (AttributeError, OSError):
        pass  # not Linux, or above this user's limit: keep the default


RING_TRANSPORTS: tuple[type[Transport], ...] = (RingCopy, RingBatch, RingZeroCopy)
PEER_TRANSPORTS: tuple[type[Transport], ...] = (MpQueue, MpPipe, OsPipe)
