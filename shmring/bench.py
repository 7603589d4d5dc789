"""``shmring bench``: what a Ring costs next to the standard ways of moving
numpy arrays between two processes.

Every measurement runs between processes forked from this one
(multiprocessing start method "fork"); none of them runs threads of its own
besides what the transport under test starts.  The sections of the report:

* **Copy floor.**  ``np.copyto`` into a preallocated array, one core, per
  item size: what one memcpy of an item costs here, the bound any copying
  transport is measured against.
* **Throughput.**  One producer process sends uint8 arrays of shape
  ``(size,)`` to one consumer process for a fixed time; messages/s and GB/s
  (10**9 bytes/s) are what the consumer received from the producer's first
  timed send to the end of the stream.  Rows: Ring ``put``/``get``, Ring
  ``put_many``/``get_many`` and Ring ``reserve``/``borrow`` (zero-copy: the
  producer writes only the stamps into the slot, so its GB/s is nominal,
  frames/s x size), then the peers ``multiprocessing.Queue``,
  ``multiprocessing.Pipe`` and a raw ``os.pipe``.  Each Ring row shows how
  many times faster it is than each peer; copying Ring rows of 1 MiB or more
  show their bandwidth as a percentage of the copy floor.
* **Ping-pong.**  A sends a 64-byte array, B echoes it back, A times each
  round trip; median and 99th percentile in microseconds.
* **Idle CPU.**  The CPU time a consumer spends blocked in ``ring.get()`` for
  a while, with a live producer that sends nothing: it should sleep, not spin.

The report ends with the CPU that other processes took during each section:
on a small machine, more than a few percent shows in the numbers.

Every message carries its sequence number (little-endian uint64) in its first
8 bytes and, from 16 bytes up, in its last 8 bytes too; every consumer checks
both on every message, so a lost, duplicated, reordered, truncated or torn
message fails the run (``main`` returns 1).  See docs/bench.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import struct
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext
from multiprocessing.synchronize import Barrier, Event
from typing import Any, ClassVar, Final, TextIO

import numpy as np
import numpy.typing as npt

from . import __version__
from .ring import Ring

__all__ = ["BenchError", "main", "run"]

START_METHOD: Final = "fork"
KiB = 1024
MiB = 1024 * KiB
DEFAULT_SIZES = (8, 64, KiB, 64 * KiB, MiB, 16 * MiB)
QUICK_SIZES = (8, 64 * KiB, MiB)
MAX_SIZE = 64 * MiB

# Ring capacity (and mp.Queue maxsize): about RING_BYTES of slots, 4..4096.
# 8 MiB keeps the slots of a 1 MiB ring in a typical L3 (measured here: a
# 64 MiB ring of 1 MiB slots streams through DRAM at a third of the speed).
RING_BYTES = 8 * MiB
MIN_CAPACITY, MAX_CAPACITY = 4, 4096
# The cold copy floor cycles destinations over this many bytes (beyond L3).
COLD_BYTES = 128 * MiB
# put_many/get_many batches: at most MAX_BATCH items and about BATCH_BYTES
# (16 MiB batches measured slower here: they no longer pipeline through the cache).
MAX_BATCH = 1024
BATCH_BYTES = 4 * MiB
# The producer reads the clock once per CHUNK_BYTES sent (at least once per message).
CHUNK_BYTES = 16 * KiB
# Ring copying rows of at least this size show their share of the copy floor.
FLOOR_PERCENT_FROM = MiB
PING_BYTES = 64
# os.pipe rows ask the kernel for this pipe buffer (Linux's default
# unprivileged maximum, /proc/sys/fs/pipe-max-size); 64 KiB otherwise.
OS_PIPE_BUFFER = MiB
# A child that is silent for this long past its expected run is killed.
CHILD_GRACE_S = 60.0

_STAMP = struct.Struct("<Q")
# The stamp and raw-fd calls, typed to take numpy arrays: typeshed wants a
# Buffer there, and numpy's stubs declare ndarray one only on Python >= 3.12.
_pack_into: Callable[[Any, int, int], None] = _STAMP.pack_into
_unpack_from: Callable[..., tuple[int]] = _STAMP.unpack_from
_write: Callable[[int, Any], int] = os.write
_readv: Callable[[int, Any], int] = os.readv


class BenchError(RuntimeError):
    """A measurement failed: corrupt or lost data, a dead or stuck child."""


# -- settings and results ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures and for how long."""

    sizes: tuple[int, ...]
    cell_seconds: float  # producer's sending time per throughput cell
    copy_seconds: float  # timing loop per np.copyto size
    round_trips: int  # timed ping-pong round trips per transport
    warmup_round_trips: int
    idle_seconds: float


DEFAULT = Settings(DEFAULT_SIZES, 0.5, 0.25, 5000, 500, 2.0)
QUICK = Settings(QUICK_SIZES, 0.05, 0.02, 300, 50, 0.5)


@dataclasses.dataclass(frozen=True)
class CopyFloor:
    """``np.copyto(dst, src)`` of one item, single core, dst preallocated:
    hot (one destination, cached) and cold (destinations beyond the caches)."""

    size: int
    copies_per_s: float
    gb_per_s: float
    cold_gb_per_s: float | None  # None below FLOOR_PERCENT_FROM: small items are call-bound


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One cell: ``messages`` items of ``size`` bytes in ``seconds``, from
    the producer's first timed send until the consumer saw the end of the
    stream.  For zero-copy rows ``gb_per_s`` is nominal (frames/s x size)."""

    size: int
    transport: str
    ring: bool  # a Ring row (else a peer)
    zero_copy: bool
    capacity: int  # ring slots, or mp.Queue maxsize
    batch: int  # items per put_many/get_many call (1: one item per call)
    messages: int
    seconds: float
    msgs_per_s: float
    gb_per_s: float


@dataclasses.dataclass(frozen=True)
class PingPong:
    """Round trips of a 64-byte array: A sends, B echoes, A times."""

    transport: str
    round_trips: int
    median_us: float
    p99_us: float
    min_us: float


@dataclasses.dataclass(frozen=True)
class IdleCpu:
    """CPU time of a consumer blocked in ``ring.get()`` (producer alive, idle)."""

    wall_s: float
    cpu_s: float  # user + system time of the consumer process
    cpu_percent: float
    wakeups: int  # voluntary context switches while blocked


@dataclasses.dataclass
class Report:
    """Everything one run measured; ``--json`` writes it as is."""

    meta: dict[str, Any]
    copy_floor: list[CopyFloor] = dataclasses.field(default_factory=list)
    throughput: list[Throughput] = dataclasses.field(default_factory=list)
    pingpong: list[PingPong] = dataclasses.field(default_factory=list)
    idle: IdleCpu | None = None


# -- messages --------------------------------------------------------------------------


def _message(size: int) -> npt.NDArray[np.uint8]:
    """A message buffer: a payload pattern, stamps written per send."""
    return np.resize(np.arange(251, dtype=np.uint8), size)


def _tail(size: int) -> int:
    """Offset of the second stamp; 0 (no second stamp) below 16 bytes."""
    return size - 8 if size >= 16 else 0


def _corrupt(seq: int, item: Any, tail: int) -> BenchError:
    head = _unpack_from(item)[0]
    last = _unpack_from(item, tail)[0]
    return BenchError(f"message {seq} arrived with stamps {head} (first 8 bytes) and {last} (last 8 bytes)")


def _write_rest(fd: int, buf: Any, done: int) -> None:
    """Finish a partial ``os.write`` of ``buf``."""
    view = memoryview(buf).cast("B")
    while done < len(view):
        done += os.write(fd, view[done:])


def _read_rest(fd: int, buf: Any, done: int) -> bool:
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


def _read_exact(fd: int, buf: Any) -> None:
    if not _read_rest(fd, buf, _readv(fd, [buf])):
        raise BenchError("os.pipe: end of file where a message was expected")


# -- child processes -------------------------------------------------------------------


def _child(job: Callable[[], object], conn: Connection[Any, Any]) -> None:
    """Body of every child: run ``job``, send back ("ok", value) or ("error", text)."""
    try:
        value = job()
    except BenchError as exc:  # a failed check: its message says it all
        conn.send(("error", str(exc)))
        raise SystemExit(1) from None
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails loudly
        conn.send(("error", "".join(traceback.format_exception(exc)).rstrip()))
        raise SystemExit(1) from None
    conn.send(("ok", value))


def _run_children(
    ctx: ForkContext,
    jobs: Sequence[tuple[str, Callable[[], object]]],
    timeout: float,
    after_start: Callable[[], None] | None = None,
) -> list[Any]:
    """Fork one child per (label, job), run ``after_start`` here, and return
    each job's value.  Any failure kills the other children and raises
    BenchError, as does a child silent for ``timeout`` seconds."""
    procs, conns = [], []
    ok = False
    try:
        for label, job in jobs:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(job, writer), name=f"shmring-bench {label}", daemon=True)
            proc.start()
            writer.close()
            procs.append(proc)
            conns.append(reader)
        if after_start is not None:
            after_start()
        values: list[Any] = [None] * len(jobs)
        pending = set(range(len(jobs)))
        deadline = time.monotonic() + timeout
        while pending:
            ready = wait([conns[i] for i in pending], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                stuck = ", ".join(jobs[i][0] for i in sorted(pending))
                raise BenchError(f"timed out after {timeout:.0f} s waiting for: {stuck}")
            for i in [i for i in sorted(pending) if conns[i] in ready]:
                try:
                    status, value = conns[i].recv()
                except EOFError:
                    procs[i].join(1.0)
                    raise BenchError(f"{jobs[i][0]} died (exit code {procs[i].exitcode})") from None
                if status != "ok":
                    raise BenchError(f"{jobs[i][0]}: {value}")
                values[i] = value
                pending.discard(i)
        ok = True
        return values
    finally:
        for proc in procs:
            if ok:
                proc.join(10.0)
            if proc.is_alive():
                proc.kill()
            proc.join()
        for conn in conns:
            conn.close()


# -- throughput transports ---------------------------------------------------------------


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
    ring: ClassVar[bool] = False
    zero_copy: ClassVar[bool] = False
    batched: ClassVar[bool] = False

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        self.cell = cell
        self.tail = _tail(cell.size)

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
        self.msg = _message(self.cell.size)

    def send(self, first: int, count: int) -> None:
        put, msg, tail, pack = self.shm.put, self.msg, self.tail, _pack_into
        for seq in range(first, first + count):
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            put(msg)

    def end(self) -> None:
        self.shm.close()

    def receive(self, first: int, count: int) -> int:
        get, tail, unpack = self.shm.get, self.tail, _unpack_from
        seq = first
        try:
            for seq in range(first, first + count):
                item = get()
                if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                    raise _corrupt(seq, item, tail)
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
        self.items = np.stack([_message(self.cell.size)] * self.cell.batch)
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
                raise _corrupt(first + got + bad, items[bad], self.tail)
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
        reserve, tail, pack = self.shm.reserve, self.tail, _pack_into
        for seq in range(first, first + count):
            with reserve() as slot:
                pack(slot, 0, seq)
                if tail:
                    pack(slot, tail, seq)

    def receive(self, first: int, count: int) -> int:
        borrow, tail, unpack = self.shm.borrow, self.tail, _unpack_from
        seq = first
        try:
            for seq in range(first, first + count):
                with borrow() as item:
                    if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                        raise _corrupt(seq, item, tail)
        except EOFError:
            return seq - first
        return count


class MpQueue(Transport):
    """``multiprocessing.Queue(maxsize=capacity)``: ``put(array)`` /
    ``get()``.  put() pickles in a feeder thread after it returns, so the
    producer rotates ``capacity + 1`` arrays: an array is stamped again only
    once the queue's bound proves its previous message was received."""

    label = "mp.Queue"

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.queue = ctx.Queue(maxsize=cell.capacity)

    def in_producer(self) -> None:
        self.pool = [_message(self.cell.size) for _ in range(self.cell.capacity + 1)]

    def send(self, first: int, count: int) -> None:
        put, pool, tail, pack = self.queue.put, self.pool, self.tail, _pack_into
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
        get, tail, unpack = self.queue.get, self.tail, _unpack_from
        for seq in range(first, first + count):
            item = get()
            if item is None:
                return seq - first
            if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                raise _corrupt(seq, item, tail)
        return count

    def close(self) -> None:
        self.queue.close()


class MpPipe(Transport):
    """``multiprocessing.Pipe()``: ``send_bytes(array)`` (no pickling) /
    ``np.frombuffer(recv_bytes(), np.uint8)``, so the consumer holds an array
    as it would from ``ring.get()``.  An empty message ends the stream."""

    label = "mp.Pipe"

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.reader, self.writer = ctx.Pipe()  # the default: duplex, a socketpair

    def in_producer(self) -> None:
        self.reader.close()
        self.msg = _message(self.cell.size)

    def in_consumer(self) -> None:
        self.writer.close()

    def in_parent(self) -> None:
        self.close()

    def send(self, first: int, count: int) -> None:
        send_bytes: Callable[[Any], None] = self.writer.send_bytes  # takes arrays (see _pack_into)
        msg, tail, pack = self.msg, self.tail, _pack_into
        for seq in range(first, first + count):
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            send_bytes(msg)

    def end(self) -> None:
        self.writer.send_bytes(b"")

    def receive(self, first: int, count: int) -> int:
        recv_bytes, tail, unpack, frombuffer = self.reader.recv_bytes, self.tail, _unpack_from, np.frombuffer
        for seq in range(first, first + count):
            data = recv_bytes()
            if not data:
                return seq - first
            item = frombuffer(data, np.uint8)
            if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                raise _corrupt(seq, item, tail)
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

    def __init__(self, ctx: ForkContext, cell: Cell) -> None:
        super().__init__(ctx, cell)
        self.rfd, self.wfd = os.pipe()
        _grow_pipe(self.wfd)

    def in_producer(self) -> None:
        self.rfd = _close_fd(self.rfd)
        self.msg = _message(self.cell.size)

    def in_consumer(self) -> None:
        self.wfd = _close_fd(self.wfd)

    def in_parent(self) -> None:
        self.close()

    def send(self, first: int, count: int) -> None:
        write, fd, msg, size, tail, pack = _write, self.wfd, self.msg, self.cell.size, self.tail, _pack_into
        for seq in range(first, first + count):
            pack(msg, 0, seq)
            if tail:
                pack(msg, tail, seq)
            n = write(fd, msg)
            if n != size:
                _write_rest(fd, msg, n)

    def end(self) -> None:
        self.wfd = _close_fd(self.wfd)

    def receive(self, first: int, count: int) -> int:
        readv, fd, size, tail, unpack = _readv, self.rfd, self.cell.size, self.tail, _unpack_from
        item = np.empty(size, np.uint8)
        bufs = [item]
        for seq in range(first, first + count):
            n = readv(fd, bufs)
            if n != size and not _read_rest(fd, item, n):
                return seq - first
            if unpack(item)[0] != seq or (tail and unpack(item, tail)[0] != seq):
                raise _corrupt(seq, item, tail)
        return count

    def close(self) -> None:
        self.rfd = _close_fd(self.rfd)
        self.wfd = _close_fd(self.wfd)


def _close_fd(fd: int) -> int:
    """Close ``fd`` unless already closed (-1); returns -1."""
    if fd >= 0:
        os.close(fd)
    return -1


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, OS_PIPE_BUFFER)
    except (AttributeError, OSError):
        pass  # not Linux, or above this user's limit: keep the default


RING_TRANSPORTS: tuple[type[Transport], ...] = (RingCopy, RingBatch, RingZeroCopy)
PEER_TRANSPORTS: tuple[type[Transport], ...] = (MpQueue, MpPipe, OsPipe)


def _produce(transport: Transport, barrier: Barrier) -> tuple[int, int]:
    """Producer child: warm up, then send for ``cell.seconds``.
    Returns (clock at the first timed send in ns, messages timed)."""
    cell = transport.cell
    transport.in_producer()
    transport.send(0, cell.warmup)
    barrier.wait(CHILD_GRACE_S)
    t0 = time.monotonic_ns()
    deadline = t0 + int(cell.seconds * 1e9)
    seq = cell.warmup
    while time.monotonic_ns() < deadline:
        transport.send(seq, cell.chunk)
        seq += cell.chunk
    transport.end()
    return t0, seq - cell.warmup


def _consume(transport: Transport, barrier: Barrier) -> tuple[int, int]:
    """Consumer child: take the warm-up, then everything up to the end of the
    stream.  Returns (clock at the end of the stream in ns, messages timed)."""
    cell = transport.cell
    transport.in_consumer()
    got = transport.receive(0, cell.warmup)
    if got != cell.warmup:
        raise BenchError(f"the stream ended after {got} of {cell.warmup} warm-up messages")
    barrier.wait(CHILD_GRACE_S)
    got = transport.receive(cell.warmup, sys.maxsize)
    return time.monotonic_ns(), got


def measure_throughput(ctx: ForkContext, kind: type[Transport], size: int, seconds: float) -> Throughput:
    """Run one throughput cell in a fresh producer and consumer process."""
    cell = Cell.for_size(size, seconds, kind.batched)
    transport = kind(ctx, cell)
    try:
        barrier = ctx.Barrier(2)
        (t0, sent), (t1, received) = _run_children(
            ctx,
            [
                (f"{_fmt_size(size)} {kind.label} producer", lambda: _produce(transport, barrier)),
                (f"{_fmt_size(size)} {kind.label} consumer", lambda: _consume(transport, barrier)),
            ],
            timeout=seconds + CHILD_GRACE_S,
            after_start=transport.in_parent,
        )
    finally:
        transport.close()
    if received != sent:
        raise BenchError(f"{kind.label}, {_fmt_size(size)}: producer sent {sent} messages, consumer got {received}")
    elapsed = (t1 - t0) / 1e9
    return Throughput(
        size=size,
        transport=kind.label,
        ring=kind.ring,
        zero_copy=kind.zero_copy,
        capacity=cell.capacity,
        batch=cell.batch,
        messages=received,
        seconds=elapsed,
        msgs_per_s=received / elapsed,
        gb_per_s=received * size / elapsed / 1e9,
    )


# -- ping-pong ---------------------------------------------------------------------------


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
    if _unpack_from(reply)[0] != i:
        raise _corrupt(i, reply, _tail(PING_BYTES))


class _PutGetPing(Ping):
    """Two queue-like channels, ``forth`` and ``back``; B does
    ``back.put(forth.get())``."""

    forth: Any
    back: Any

    def pinger(self, rounds: int) -> npt.NDArray[np.int64]:
        put, get, clock, pack = self.forth.put, self.back.get, time.perf_counter_ns, _pack_into
        # mp.Queue.put() pickles later, in a feeder thread; reusing msg is safe
        # only because its echo, which comes after the pickling, is awaited.
        msg, lat = _message(PING_BYTES), np.empty(rounds, np.int64)
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
        send: Callable[[Any], None] = self.a.send_bytes  # takes arrays (see _pack_into)
        recv, clock, pack = self.a.recv_bytes, time.perf_counter_ns, _pack_into
        msg, lat = _message(PING_BYTES), np.empty(rounds, np.int64)
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
        self.forth_r, self.back_w = _close_fd(self.forth_r), _close_fd(self.back_w)
        write, readv, clock, pack = _write, _readv, time.perf_counter_ns, _pack_into
        wfd, rfd = self.forth_w, self.back_r
        msg, reply, lat = _message(PING_BYTES), np.empty(PING_BYTES, np.uint8), np.empty(rounds, np.int64)
        bufs = [reply]
        for i in range(rounds):
            pack(msg, 0, i)
            t = clock()
            n = write(wfd, msg)
            if n != PING_BYTES:
                _write_rest(wfd, msg, n)
            n = readv(rfd, bufs)
            if n != PING_BYTES and not _read_rest(rfd, reply, n):
                raise BenchError("os.pipe ping-pong: echo side closed")
            lat[i] = clock() - t
            _check_echo(i, reply)
        return lat

    def echoer(self, rounds: int) -> None:
        self.forth_w, self.back_r = _close_fd(self.forth_w), _close_fd(self.back_r)
        buf = np.empty(PING_BYTES, np.uint8)
        for _ in range(rounds):
            _read_exact(self.forth_r, buf)
            n = _write(self.back_w, buf)
            if n != PING_BYTES:
                _write_rest(self.back_w, buf, n)

    def in_parent(self) -> None:
        self.close()

    def close(self) -> None:
        self.forth_r, self.forth_w = _close_fd(self.forth_r), _close_fd(self.forth_w)
        self.back_r, self.back_w = _close_fd(self.back_r), _close_fd(self.back_w)


PINGS: tuple[type[Ping], ...] = (RingPing, QueuePing, PipePing, OsPipePing)


def measure_pingpong(ctx: ForkContext, kind: type[Ping], timed: int, warmup: int) -> PingPong:
    """``warmup + timed`` round trips between two fresh processes; the
    statistics cover the last ``timed``."""
    link = kind(ctx)
    rounds = warmup + timed
    try:
        lat, _ = _run_children(
            ctx,
            [(f"{kind.label} ping", lambda: link.pinger(rounds)), (f"{kind.label} echo", lambda: link.echoer(rounds))],
            timeout=CHILD_GRACE_S,
            after_start=link.in_parent,
        )
    finally:
        link.close()
    us = np.asarray(lat[warmup:], dtype=np.float64) / 1e3
    return PingPong(
        transport=kind.label,
        round_trips=timed,
        median_us=float(np.median(us)),
        p99_us=float(np.percentile(us, 99)),
        min_us=float(us.min()),
    )


# -- copy floor and idle CPU ------------------------------------------------------------


def _best_copy_rate(
    src: npt.NDArray[np.uint8], dsts: list[npt.NDArray[np.uint8]], seconds: float, rounds: int
) -> float:
    """Copies/s of ``np.copyto(dst, src)`` cycling over ``dsts``: the best of
    ``rounds`` timing loops that together take about ``seconds``."""
    size = src.nbytes
    for dst in dsts:
        np.copyto(dst, src)  # fault everything in before timing
    reps = max(1, CHUNK_BYTES // size)
    best = 0.0
    for _ in range(rounds):
        copies = 0
        t0 = time.perf_counter()
        end = t0 + seconds / rounds
        while True:
            for _ in range(reps):
                np.copyto(dsts[copies % len(dsts)], src)
                copies += 1
            t1 = time.perf_counter()
            if t1 >= end:
                break
        best = max(best, copies / (t1 - t0))
    if not all(np.array_equal(dst, src) for dst in dsts):
        raise BenchError(f"np.copyto of {_fmt_size(size)} copied wrong bytes")
    return best


def measure_copy_floor(size: int, seconds: float, rounds: int = 5) -> CopyFloor:
    """``np.copyto`` of a ``size``-byte uint8 array, in this process, best of
    ``rounds`` (a floor is what the machine can do, not its average).

    *Hot*: always into the same preallocated array, which stays in cache for
    sizes that fit.  *Cold*: into destinations cycled over COLD_BYTES, more
    than this machine's caches hold, as a ring's slots are when the ring is
    larger than the cache."""
    src = _message(size)
    hot = _best_copy_rate(src, [np.zeros(size, np.uint8)], seconds, rounds)
    if size < FLOOR_PERCENT_FROM:
        return CopyFloor(size, hot, hot * size / 1e9, None)
    cold_dsts = [np.zeros(size, np.uint8) for _ in range(max(2, COLD_BYTES // size))]
    cold = _best_copy_rate(src, cold_dsts, seconds, rounds)
    return CopyFloor(size, hot, hot * size / 1e9, cold * size / 1e9)


def _idle_consumer(ring: Ring, ready: Event) -> IdleCpu:
    ring.get()  # the producer's first item: both sides are registered now
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    ready.set()
    ring.get()  # blocks until the parent puts again
    after, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ring.close()
    return IdleCpu(t1 - t0, cpu, 100.0 * cpu / (t1 - t0), after.ru_nvcsw - before.ru_nvcsw)


def measure_idle(ctx: ForkContext, seconds: float) -> IdleCpu:
    """A consumer blocked in ``ring.get()`` for ``seconds`` while this process
    is a live producer that sends nothing; its CPU use from getrusage."""
    ring = Ring(capacity=4, shape=(8,), dtype=np.uint8)
    ready = ctx.Event()

    def producer() -> None:
        if not ready.wait(CHILD_GRACE_S):
            raise BenchError("idle consumer never became ready")
        time.sleep(seconds)
        ring.put(np.zeros(8, np.uint8))

    try:
        ring.put(np.zeros(8, np.uint8))  # registers this process as the producer
        (idle,) = _run_children(
            ctx, [("idle consumer", lambda: _idle_consumer(ring, ready))], CHILD_GRACE_S + seconds, producer
        )
    finally:
        ring.close()
    assert isinstance(idle, IdleCpu)
    return idle


# -- report --------------------------------------------------------------------------------


def _fmt_size(size: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _fmt_rate(value: float) -> str:
    """Messages per second with a k/M suffix, 3 significant digits."""
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{_sig(value / scale)} {suffix}"
    return f"{_sig(value)}  "


def _sig(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _fmt_gb(value: float) -> str:
    return f"{value:.2g}" if value < 0.01 else _sig(value)


def _fmt_ratio(ratio: float) -> str:
    return f"x{ratio:.0f}" if ratio >= 10 else f"x{ratio:.1f}" if ratio >= 1 else f"x{ratio:.2f}"


class _OtherLoad:
    """How much CPU processes outside this benchmark take from a point on:
    machine-wide busy time (from /proc/stat, steal included) minus this
    process's and its reaped children's, as a percentage of all CPUs."""

    def __init__(self) -> None:
        self.machine, self.ours = self._now()
        self.wall = time.monotonic()

    @staticmethod
    def _now() -> tuple[float, float]:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
            # user nice system idle iowait irq softirq steal: all but idle and iowait
            machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            machine = math.nan
        t = os.times()
        return machine, t.user + t.system + t.children_user + t.children_system

    def percent(self) -> float | None:
        """Since construction; None where /proc/stat cannot be read."""
        machine, ours = self._now()
        if math.isnan(machine):
            return None
        cpus = os.cpu_count() or 1
        return max(
            0.0, 100.0 * ((machine - self.machine) - (ours - self.ours)) / (cpus * (time.monotonic() - self.wall))
        )


def _meta(settings: Settings) -> dict[str, Any]:
    return {
        "shmring": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "start_method": START_METHOD,
        "cell_seconds": settings.cell_seconds,
        "sizes": list(settings.sizes),
        "round_trips": settings.round_trips,
    }


def _print_header(out: TextIO) -> None:
    lines = [
        f"shmring bench {__version__}: 1 producer process -> 1 consumer process "
        f'(multiprocessing start method "{START_METHOD}")',
        f"Python {platform.python_version()}, numpy {np.__version__}, {platform.system()} {platform.release()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs.  GB/s = 10^9 bytes/s.",
        "Items are uint8 arrays of shape (size,); each carries its sequence number in its first and last 8 bytes,",
        "checked by the consumer on every message.",
        "Peers:  mp.Queue  multiprocessing.Queue(maxsize=capacity): put(array) / get()",
        "        mp.Pipe   multiprocessing.Pipe() (duplex, a socketpair): send_bytes(array) / "
        "np.frombuffer(recv_bytes())",
        f"        os.pipe   os.pipe() with a {_fmt_size(OS_PIPE_BUFFER)} buffer: os.write of each whole message / "
        "os.readv into a preallocated array",
        "",
    ]
    print("\n".join(lines), file=out)


def _print_copy_floor(rows: Sequence[CopyFloor], out: TextIO) -> None:
    print(
        "Copy floor: np.copyto into preallocated arrays, one core (best of 5 rounds); hot = one cached "
        f"destination, cold = destinations cycled over {_fmt_size(COLD_BYTES)}",
        file=out,
    )
    print(f"  {'size':>8}  {'copies/s':>10}  {'hot GB/s':>8}  {'cold GB/s':>9}", file=out)
    for row in rows:
        print(
            f"  {_fmt_size(row.size):>8}  {_fmt_rate(row.copies_per_s):>10}  {_fmt_gb(row.gb_per_s):>8}  "
            f"{'-' if row.cold_gb_per_s is None else _fmt_gb(row.cold_gb_per_s):>9}",
            file=out,
        )
    print(file=out)


def _throughput_heading(settings: Settings, out: TextIO) -> None:
    print(
        f"Throughput: each cell sends for {settings.cell_seconds:g} s after a warm-up of one pass over the "
        "ring; capacity = ring slots = mp.Queue maxsize",
        file=out,
    )
    print(
        f"  {'size':>8}  {'transport':<24} {'cap':>5} {'batch':>5}  {'msgs/s':>9}  {'GB/s':>8}   "
        "Ring vs peers (msgs/s ratio)",
        file=out,
    )


def _print_size_block(rows: Sequence[Throughput], floor: CopyFloor | None, out: TextIO) -> None:
    peers = [r for r in rows if not r.ring]
    for row in rows:
        gb = f"{_fmt_gb(row.gb_per_s):>8}"
        notes = ""
        if row.ring:
            notes = ", ".join(f"{_fmt_ratio(row.msgs_per_s / p.msgs_per_s)} {p.transport}" for p in peers)
            if not row.zero_copy and floor is not None and floor.cold_gb_per_s is not None:
                notes += (
                    f"; {100 * row.gb_per_s / floor.gb_per_s:.0f}% of hot np.copyto, "
                    f"{100 * row.gb_per_s / floor.cold_gb_per_s:.0f}% of cold"
                )
        label = row.transport + (" *" if row.zero_copy else "")
        print(
            f"  {_fmt_size(row.size):>8}  {label:<24} {row.capacity:>5} {row.batch:>5}  "
            f"{_fmt_rate(row.msgs_per_s):>9}  {gb}{'*' if row.zero_copy else ' '}  {notes}",
            file=out,
        )


def _print_pingpong(rows: Sequence[PingPong], out: TextIO) -> None:
    print(file=out)
    print(f"Ping-pong: {PING_BYTES}-byte array, A sends, B echoes, A times each round trip", file=out)
    print(f"  {'transport':<10} {'median us':>10} {'p99 us':>9} {'min us':>8} {'trips':>7}   ring vs peer", file=out)
    ring = next((r for r in rows if r.transport == RingPing.label), None)
    for row in rows:
        note = (
            "" if ring is None or row is ring else f"ring {_fmt_ratio(row.median_us / ring.median_us)} faster (median)"
        )
        print(
            f"  {row.transport:<10} {row.median_us:10.1f} {row.p99_us:9.1f} {row.min_us:8.1f} {row.round_trips:7d}   "
            f"{note}",
            file=out,
        )


def _print_idle(idle: IdleCpu, out: TextIO) -> None:
    print(file=out)
    print(
        f"Idle CPU: consumer blocked in ring.get() for {idle.wall_s:.2f} s, producer alive and idle: "
        f"{idle.cpu_s * 1e3:.1f} ms CPU (user+sys) = {idle.cpu_percent:.2f}% of one core, "
        f"{idle.wakeups} voluntary context switches",
        file=out,
    )


def _print_other_load(other: dict[str, float | None], out: TextIO) -> None:
    known = {section: pct for section, pct in other.items() if pct is not None}
    if not known:
        return
    print(file=out)
    print(
        "CPU taken by other processes (% of all CPUs): "
        + ", ".join(f"{section} {pct:.0f}%" for section, pct in known.items())
        + ("; results are noisy when this is more than a few percent" if max(known.values()) >= 3 else ""),
        file=out,
    )


# -- entry points ------------------------------------------------------------------------------


def run(settings: Settings, out: TextIO | None = None) -> Report:
    """Measure everything ``settings`` asks for, printing to ``out`` (default
    sys.stdout) as it goes."""
    out = sys.stdout if out is None else out
    ctx = multiprocessing.get_context(START_METHOD)
    report = Report(meta=_meta(settings))
    other: dict[str, float | None] = {}
    load = _OtherLoad()
    _print_header(out)

    report.copy_floor = [measure_copy_floor(size, settings.copy_seconds) for size in settings.sizes]
    _print_copy_floor(report.copy_floor, out)

    _throughput_heading(settings, out)
    for size, floor in zip(settings.sizes, report.copy_floor, strict=True):
        rows = [measure_throughput(ctx, kind, size, settings.cell_seconds) for kind in RING_TRANSPORTS]
        rows += [measure_throughput(ctx, kind, size, settings.cell_seconds) for kind in PEER_TRANSPORTS]
        report.throughput += rows
        _print_size_block(rows, floor, out)
        out.flush()
    print(
        "  * zero-copy: the producer writes only the stamps into the slot; GB/s is nominal (frames/s x size)", file=out
    )
    other["throughput"], load = load.percent(), _OtherLoad()

    report.pingpong = [measure_pingpong(ctx, kind, settings.round_trips, settings.warmup_round_trips) for kind in PINGS]
    _print_pingpong(report.pingpong, out)
    other["ping-pong"], load = load.percent(), _OtherLoad()

    report.idle = measure_idle(ctx, settings.idle_seconds)
    _print_idle(report.idle, out)
    other["idle"] = load.percent()

    report.meta["other_cpu_percent"] = other
    _print_other_load(other, out)
    return report


def parse_size(text: str) -> int:
    """'8', '64B', '1K', '1KiB', '16M', '16MiB' -> bytes (K and M are 1024-based)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([kKmM])(?:i?[bB])?|[bB])?\s*", text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 8, 64B, 1K, 64KiB, 16M)")
    size = int(match.group(1)) * {None: 1, "k": KiB, "m": MiB}[match.group(2) and match.group(2).lower()]
    if size < 8 or size % 8 or size > MAX_SIZE:
        raise ValueError(f"sizes must be multiples of 8 bytes from 8 B to {_fmt_size(MAX_SIZE)}, not {text!r}")
    return size


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_size(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmring bench",
        description="Throughput, latency, copy floor and idle CPU of shmring.Ring against "
        "multiprocessing.Queue, multiprocessing.Pipe and os.pipe, between two processes.",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run of a few seconds (for tests)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="comma-separated item sizes in bytes, K or M (1024-based), multiples of 8; "
        "default 8,64,1K,64K,1M,16M (--quick: 8,64K,1M)",
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="sending time per throughput cell")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``shmring bench [--quick] [--sizes LIST] [--duration S] [--json PATH]``;
    returns the exit status: 0, 1 when a measurement failed, 2 for bad usage."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    settings = QUICK if args.quick else DEFAULT
    if args.sizes is not None:
        settings = dataclasses.replace(settings, sizes=args.sizes)
    if args.duration is not None:
        if not 0 < args.duration <= 60:
            parser.print_usage(sys.stderr)
            print("shmring bench: --duration must be in (0, 60] seconds", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, cell_seconds=args.duration)
    if args.json is not None and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
        print(f"shmring bench: cannot write --json {args.json!r}", file=sys.stderr)
        return 2
    try:
        report = run(settings)
    except BenchError as exc:
        sys.stdout.flush()
        print(f"\nshmring bench: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(report), f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
