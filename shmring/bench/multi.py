"""The transports of the many-producers section: P producer processes and
C consumer processes share one queue of ``size``-byte messages.

A transport is a ``MultiTransport`` subclass listed in ``MULTI_RING_TRANSPORTS``
(Ring rows, compared with every peer of the same size and topology) or
``MULTI_PEER_TRANSPORTS`` (the peers available here: ``multiprocessing.Queue``
always, ``faster_fifo.Queue`` when ``import faster_fifo`` works).  Its cells
are timed and checked by ``measurements.measure_many``; the report prints its
rows without knowing it.

Every message carries a *tag*, ``producer << 56 | seq``, as a little-endian
uint64 in its first 8 bytes and, from 16 bytes up, its last 8 bytes.  Two
sequence numbers are reserved: ``MARK`` (end of warm-up) and ``END`` (end of
stream).  Each producer sends its messages then C of each; each consumer
stops after P of them.  Since every producer's messages reach the queue
before its own markers, by the time all P x C markers are taken every
message before them has been taken too: no transport needs an end-of-stream
signal of its own, and none needs to know the markers.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from multiprocessing.context import ForkContext
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .config import CHUNK_BYTES, MAX_CAPACITY, MIN_CAPACITY, RING_BYTES
from .messages import message, pack_into, tail_offset, unpack_from
from .results import BenchError

PRODUCER_SHIFT = 56
SEQ_MASK = (1 << PRODUCER_SHIFT) - 1
MARK = SEQ_MASK - 1  # a producer's warm-up is over
END = SEQ_MASK  # a producer's stream is over


def tag(producer: int, seq: int) -> int:
    """The stamp of message ``seq`` of ``producer``."""
    return producer << PRODUCER_SHIFT | seq


def fmt_tag(value: int) -> str:
    """A stamp as the error messages write it: producer 1 message 42."""
    return f"producer {value >> PRODUCER_SHIFT} message {value & SEQ_MASK}"


@dataclasses.dataclass(frozen=True)
class Topology:
    """Geometry of one many-producers cell."""

    size: int
    producers: int
    consumers: int
    capacity: int  # messages the queue holds (Ring slots, mp.Queue maxsize)
    seconds: float  # each producer's sending time

    @property
    def warmup(self) -> int:
        """Messages each producer sends before the clock starts: together, one pass over the queue."""
        return max(1, self.capacity // self.producers)

    @property
    def chunk(self) -> int:
        """Messages a producer sends between clock reads."""
        return max(1, CHUNK_BYTES // self.size)

    @classmethod
    def for_size(cls, size: int, producers: int, consumers: int, seconds: float) -> Topology:
        """The same capacity as the single-pair rows at this size."""
        capacity = min(MAX_CAPACITY, max(MIN_CAPACITY, RING_BYTES // size))
        return cls(size, producers, consumers, capacity, seconds)


class MultiTransport:
    """Moves ``topo.size``-byte messages from P producer processes to C
    consumer processes through one shared queue.

    Built in the parent before the fork, so every child inherits it.  In a
    producer child, ``in_producer(p)`` runs once, then ``send`` for each run
    of messages (the tagging is done here: ``send`` stamps and puts).  In a
    consumer child, ``in_consumer()`` runs once, then ``receive`` until the
    consumer has seen its markers.  ``in_parent`` runs in the parent once
    every child has started, ``close`` in the parent at the end (always safe).

    A transport is its queue, ``self.queue``: by default producers call
    ``self.queue.put(msg)``, consumers ``self.queue.get()`` and the parent
    ``self.queue.close()`` at the end.  ``put`` must have copied the message
    when it returns (a transport that copies later, like mp.Queue's feeder
    thread, overrides ``send``); ``get`` must return the message as a uint8
    array (or any buffer) of ``size`` bytes.  The stamps, the markers, the
    checks and the timing are the same for every transport.

    What a Ring transport (``RingLockfreeMulti``, ``RingSemaphoreMulti``
    below) has to implement is therefore one class added to
    ``MULTI_RING_TRANSPORTS``::

        class RingLockfreeMulti(MultiTransport):
            label = "ring lock-free"
            ring = True

            def __init__(self, ctx: ForkContext, topo: Topology) -> None:
                super().__init__(ctx, topo)
                self.queue = Ring(capacity=topo.capacity, shape=(topo.size,), dtype=np.uint8,
                                  multi_producer=True, ...)  # the lock-free or the semaphore mode

    with ``in_producer``/``in_consumer`` overridden only if its processes
    must attach or register first (call ``super()``'s: it binds put/get).
    """

    label: ClassVar[str]
    about: ClassVar[str] = ""  # a peer's line in the report's header
    ring: ClassVar[bool] = False

    queue: Any  # set by the subclass's __init__: what put/get/close are called on
    put: Callable[[Any], object]
    get: Callable[[], Any]

    def __init__(self, ctx: ForkContext, topo: Topology) -> None:
        self.topo = topo
        self.tail = tail_offset(topo.size)

    @classmethod
    def available(cls) -> bool:
        """Whether this transport can run here (an optional package may be missing)."""
        return True

    def in_producer(self, producer: int) -> None:
        """Prepare producer ``producer`` (0 .. P-1)."""
        self.base = producer << PRODUCER_SHIFT
        self.msg = message(self.topo.size)
        self.put = self.queue.put

    def in_consumer(self) -> None:
        """Prepare a consumer."""
        self.get = self.queue.get

    def in_parent(self) -> None:
        """Drop what the parent does not use."""

    def send(self, first: int, count: int) -> None:
        """Send this producer's messages ``first .. first+count-1``."""
        put, msg, tail, pack, base = self.put, self.msg, self.tail, pack_into, self.base
        for seq in range(first, first + count):
            pack(msg, 0, base | seq)
            if tail:
                pack(msg, tail, base | seq)
            put(msg)

    def receive(self, last: list[int], marker: int, taken: list[int]) -> None:
        """Take messages until ``len(last)`` (= P) markers ``marker`` have
        arrived, appending every other message's tag to ``taken``.  ``last[p]``
        is the last sequence number taken from producer p (-1 before any);
        each message must come after it (BenchError otherwise)."""
        get, tail, unpack, append = self.get, self.tail, unpack_from, taken.append
        producers = len(last)
        markers = 0
        while True:
            item = get()
            value = unpack(item)[0]
            if tail and unpack(item, tail)[0] != value:
                raise BenchError(
                    f"{fmt_tag(value)} arrived with stamps {value:#x} (first 8 bytes) and "
                    f"{unpack(item, tail)[0]:#x} (last 8 bytes)"
                )
            producer, seq = value >> PRODUCER_SHIFT, value & SEQ_MASK
            if producer >= producers:
                raise BenchError(f"a message arrived with stamp {value:#x}: no producer {producer}")
            if seq >= MARK:
                if seq != marker:
                    raise BenchError(f"{fmt_tag(value)}: an unexpected marker")
                markers += 1
                if markers == producers:
                    return
                continue
            if seq <= last[producer]:
                raise BenchError(
                    f"producer {producer} message {seq} arrived after its message {last[producer]} "
                    "(lost, duplicated or reordered)"
                )
            last[producer] = seq
            append(value)

    def close(self) -> None:
        """Release what the parent holds."""
        self.queue.close()


class MpQueueMulti(MultiTransport):
    """``multiprocessing.Queue(maxsize=capacity)``: ``put(array)`` /
    ``get()``, every producer and consumer on the one queue.  put() pickles in
    a feeder thread after it returns, so each producer rotates ``capacity + 1``
    arrays: once put has returned ``capacity + 1`` times since a message, the
    queue's bound proves that message (the earliest of them) was taken."""

    label = "mp.Queue"
    about = "multiprocessing.Queue(maxsize=capacity): put(array) / get()"

    def __init__(self, ctx: ForkContext, topo: Topology) -> None:
        super().__init__(ctx, topo)
        self.queue = ctx.Queue(maxsize=topo.capacity)

    def in_producer(self, producer: int) -> None:
        super().in_producer(producer)
        # In put order, not by sequence number: markers are sent out of sequence.
        self.next_msg = itertools.cycle([message(self.topo.size) for _ in range(self.topo.capacity + 1)]).__next__

    def send(self, first: int, count: int) -> None:
        put, next_msg, tail, pack, base = self.put, self.next_msg, self.tail, pack_into, self.base
        for seq in range(first, first + count):
            msg = next_msg()
            pack(msg, 0, base | seq)
            if tail:
                pack(msg, tail, base | seq)
            put(msg)


def _array_of(data: Any) -> npt.NDArray[np.uint8]:
    """faster-fifo's ``loads``: a fresh array from a view of its receive buffer."""
    return np.frombuffer(data, np.uint8).copy()


class FasterFifoMulti(MultiTransport):
    """``faster_fifo.Queue`` (the optional extra ``shmring[bench]``), sized to
    hold ``capacity`` messages (``capacity x (size + 8)`` bytes: each message
    is its bytes after an 8-byte length), one message per ``put``/``get``.

    Its serializer is swapped for raw bytes, ``dumps=ndarray.tobytes`` and
    ``loads`` = a fresh ``np.frombuffer(...).copy()``, so the consumer holds
    an array as it would from ``ring.get()``, as the mp.Pipe rows do:
    faster-fifo's own default pickles (about 3x slower per message here) and
    its ``put_many``/``get_many`` batch, which the Ring's ``put``/``get`` rows
    do not.  ``put`` copies into the shared buffer before it returns."""

    label = "faster-fifo"
    about = "faster_fifo.Queue(capacity x (size+8) bytes), raw bytes: put(array.tobytes()) / np.frombuffer(get())"

    def __init__(self, ctx: ForkContext, topo: Topology) -> None:
        super().__init__(ctx, topo)
        import faster_fifo  # type: ignore[import-not-found,unused-ignore]  # optional: see available()

        self.queue = faster_fifo.Queue(
            max_size_bytes=topo.capacity * (topo.size + 8), loads=_array_of, dumps=np.ndarray.tobytes
        )

    @classmethod
    def available(cls) -> bool:
        try:
            import faster_fifo  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            return False
        return True

    def in_producer(self, producer: int) -> None:
        super().in_producer(producer)
        put = self.queue.put
        self.put = lambda msg: put(msg, True, _BLOCK_S)  # the default timeout is 10 s

    def in_consumer(self) -> None:
        get = self.queue.get
        self.get = lambda: get(True, _BLOCK_S)


_BLOCK_S = 3600.0  # faster-fifo's blocking calls time out (10 s by default); the children's own limit is CHILD_GRACE_S


class RingLockfreeMulti(MultiTransport):
    """``Ring(capacity, shape=(size,), dtype=uint8, multi_producer=True,
    multi_consumer=True)``, lock-free: ``put(array)`` / ``get()``, one
    message per call, every producer and consumer on the one ring (anon: the
    children inherit it)."""

    label = "ring lock-free"
    ring = True
    sync: ClassVar[str] = "lockfree"

    def __init__(self, ctx: ForkContext, topo: Topology) -> None:
        super().__init__(ctx, topo)
        from ..ring import Ring

        self.queue = Ring(
            capacity=topo.capacity,
            shape=(topo.size,),
            dtype=np.uint8,
            multi_producer=True,
            multi_consumer=True,
            sync=self.sync,
            backend="anon",
        )


class RingSemaphoreMulti(RingLockfreeMulti):
    """The same ring in the semaphore flavour (``sync="semaphore"``): each
    side serialised by its lock, sleeping on posix_ipc semaphores."""

    label = "ring semaphore"
    sync = "semaphore"


MULTI_RING_TRANSPORTS: tuple[type[MultiTransport], ...] = (RingLockfreeMulti, RingSemaphoreMulti)
MULTI_PEER_TRANSPORTS: tuple[type[MultiTransport], ...] = (MpQueueMulti, FasterFifoMulti)


def multi_transports() -> list[type[MultiTransport]]:
    """The transports this machine can run: every Ring row, then every available peer."""
    return [kind for kind in MULTI_RING_TRANSPORTS + MULTI_PEER_TRANSPORTS if kind.available()]
