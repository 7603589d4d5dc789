"""The measurements of the Queue section: Python objects, not byte arrays.

Each cell sends one kind of payload -- 64 B of bytes, a small dict, a 1 MiB
float64 array, a dict of four 1 MiB arrays -- from P producer processes to C
consumer processes through one queue, for a fixed time, with each queue's
own put and get:

* ``shmring.Queue`` (default capacity, 16 MiB), ``get()``, and ``borrow()``
  (the consumer reads one element of each array in the block: no copy);
* ``multiprocessing.Queue`` (pickles in a feeder thread, through a pipe),
  with a ``maxsize`` of as many payloads as 16 MiB holds (4..4096);
* ``faster_fifo.Queue`` when installed (pickles, through its own shared
  buffer; 64 MiB of it), with its default serializer;
* batches: ``put_many``/``get_many`` of 64 B bytes, for shmring and faster-fifo.

Producers send for ``seconds`` after a common start, then one end marker
(``None``) per consumer; consumers count what they get until they have seen
one marker per producer.  msgs/s is every message sent over the time from
the start until the last consumer is done; every message must have arrived
(``BenchError`` otherwise), and each consumer checks the type of what it got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing.context import ForkContext
from typing import Any, ClassVar

import numpy as np

from ..queue import Queue
from .children import run_children
from .config import CHILD_GRACE_S, MiB
from .results import BenchError, ObjectsCell

ARRAY_ELEMS = MiB // 8
BATCH = 256
FFIFO_BYTES = 64 * MiB
QUEUE_BYTES = 16 * MiB  # shmring.Queue's default capacity


def _payloads() -> dict[str, tuple[Any, int]]:
    """name -> (object, bytes of data in it)."""
    arr = np.ones(ARRAY_ELEMS)
    return {
        "64 B bytes": (b"x" * 64, 64),
        "small dict": ({"id": 7, "name": "frame", "ok": True, "xy": [1.5, 2.5]}, 0),
        "1 MiB array": (arr, MiB),
        "dict of 4 x 1 MiB": ({f"cam{i}": arr + i for i in range(4)}, 4 * MiB),
    }


PAYLOADS = tuple(_payloads())


class ObjectTransport:
    """A queue of objects: ``make`` in the parent before the fork; ``send``
    puts a list of objects, ``receive`` returns a list of one or more."""

    label: ClassVar[str]
    shmring: ClassVar[bool] = False
    batched: ClassVar[bool] = False  # only for the batch row

    def __init__(self, ctx: ForkContext, nbytes: int) -> None:
        self.queue: Any = None

    @classmethod
    def available(cls) -> bool:
        return True

    def send(self, objs: list[Any]) -> None:
        for obj in objs:
            self.queue.put(obj)

    def receive(self) -> list[Any]:
        return [self.queue.get()]

    def close(self) -> None:
        self.queue.close()


class QueueGet(ObjectTransport):
    label = "Queue get"
    shmring = True

    def __init__(self, ctx: ForkContext, nbytes: int) -> None:
        super().__init__(ctx, nbytes)
        self.queue = Queue(backend="anon")


class QueueBorrow(QueueGet):
    label = "Queue borrow"

    def receive(self) -> list[Any]:
        with self.queue.borrow() as obj:
            _touch(obj)
            return [None if obj is None else True]


class QueueSemaphoreGet(QueueGet):
    label = "Queue sem. get"

    def __init__(self, ctx: ForkContext, nbytes: int) -> None:
        ObjectTransport.__init__(self, ctx, nbytes)
        self.queue = Queue(backend="anon", sync="semaphore")


class QueueBatches(QueueGet):
    label = "Queue put/get_many"
    batched = True

    def send(self, objs: list[Any]) -> None:
        self.queue.put_many(objs)

    def receive(self) -> list[Any]:
        got: list[Any] = self.queue.get_many(BATCH)
        return got


class MpQueue(ObjectTransport):
    label = "mp.Queue"

    def __init__(self, ctx: ForkContext, nbytes: int) -> None:
        super().__init__(ctx, nbytes)
        # Bounded as shmring's 16 MiB is: unbounded, put() only appends to
        # the feeder thread's list, which then takes minutes to drain.
        self.queue = ctx.Queue(max(4, min(4096, QUEUE_BYTES // max(nbytes, 4096))))

    def close(self) -> None:
        self.queue.close()
        self.queue.join_thread()


class FasterFifo(ObjectTransport):
    label = "faster-fifo"

    def __init__(self, ctx: ForkContext, nbytes: int) -> None:
        super().__init__(ctx, nbytes)
        import faster_fifo  # type: ignore[import-not-found,unused-ignore]  # optional: see available()

        self.queue = faster_fifo.Queue(max_size_bytes=FFIFO_BYTES)

    @classmethod
    def available(cls) -> bool:
        try:
            import faster_fifo  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            return False
        return True

    def receive(self) -> list[Any]:
        return [self.queue.get(timeout=CHILD_GRACE_S)]


class FasterFifoBatches(FasterFifo):
    label = "faster-fifo put/get_many"
    batched = True

    def send(self, objs: list[Any]) -> None:
        self.queue.put_many(objs, timeout=CHILD_GRACE_S)

    def receive(self) -> list[Any]:
        return list(self.queue.get_many(timeout=CHILD_GRACE_S, max_messages_to_get=BATCH))


TRANSPORTS: tuple[type[ObjectTransport], ...] = (QueueGet, QueueBorrow, QueueSemaphoreGet, MpQueue, FasterFifo)
BATCH_TRANSPORTS: tuple[type[ObjectTransport], ...] = (QueueBatches, FasterFifoBatches)


def _touch(obj: Any) -> None:
    """Read one element of each array of a borrowed object (the bytes stay in the queue)."""
    if isinstance(obj, np.ndarray):
        obj.flat[0]
    elif isinstance(obj, dict):
        for value in obj.values():
            _touch(value)


def measure_objects(
    ctx: ForkContext, kind: type[ObjectTransport], payload: str, producers: int, consumers: int, seconds: float
) -> ObjectsCell:
    """One cell: ``producers`` x ``consumers`` processes move ``payload``
    objects through one ``kind`` queue for ``seconds``."""
    obj, nbytes = _payloads()[payload]
    chunk = BATCH if nbytes < 64 * 1024 else 2
    transport = kind(ctx, nbytes)
    start = ctx.Event()
    t0 = [0.0]
    expected = type(obj) if kind is not QueueBorrow else bool

    def produce() -> int:
        batch = [obj] * chunk
        if not start.wait(CHILD_GRACE_S):
            raise BenchError("the start signal never came")
        end = time.perf_counter() + seconds
        sent = 0
        while time.perf_counter() < end:
            transport.send(batch)
            sent += chunk
        transport.send([None] * consumers)
        return sent

    def consume() -> tuple[int, float]:
        # Each producer ends with one stop (None) per consumer, and each
        # consumer takes one stop per producer.  A batch may hold more stops
        # than its consumer needs: the surplus goes back for the others.
        # A shmring queue may also say EOF first: every producer gone and
        # the queue drained while the surplus was on its way back.
        got = ends = 0
        while ends < producers:
            try:
                batch = transport.receive()
            except EOFError:
                break
            for item in batch:
                if item is None:
                    ends += 1
                elif type(item) is not expected:
                    raise BenchError(f"{kind.label}: got a {type(item).__name__}, sent a {type(obj).__name__}")
                else:
                    got += 1
        if ends > producers:
            transport.send([None] * (ends - producers))
        return got, time.perf_counter()

    def go() -> None:
        t0[0] = time.perf_counter()
        start.set()

    jobs: list[tuple[str, Callable[[], object]]] = [(f"producer {p}", produce) for p in range(producers)]
    jobs += [(f"consumer {c}", consume) for c in range(consumers)]
    try:
        results = run_children(ctx, jobs, CHILD_GRACE_S + seconds, go)
    finally:
        transport.close()
    sent = sum(results[:producers])
    got = sum(n for n, _ in results[producers:])
    if got != sent:
        raise BenchError(f"{kind.label} {payload}: {sent} messages sent, {got} received")
    elapsed = max(t for _, t in results[producers:]) - t0[0]
    return ObjectsCell(
        payload=payload,
        transport=kind.label,
        shmring=kind.shmring,
        producers=producers,
        consumers=consumers,
        messages=sent,
        seconds=elapsed,
        msgs_per_s=sent / elapsed,
        gb_per_s=sent * nbytes / elapsed / 1e9,
    )
