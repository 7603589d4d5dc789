"""Queue: variable-size messages, a drop-in for ``multiprocessing.Queue``.

Messages are framed records in a ring of 64-byte slots, claimed and
published by the C core (``_queue.c``) with the claim and crash-survival
machinery of the multi-producer Ring.  What travels:

* ``bytes``, ``bytearray`` and ``memoryview`` as they are (a memoryview
  comes back as bytes);
* an ``ndarray`` (no Python objects in it) as its dtype and shape and its raw
  bytes;
* anything else pickled with protocol 5, its out-of-band buffers (numpy
  arrays nested anywhere in it) written straight into the ring after the
  pickle stream: one copy in, one copy out, never through a pickle string.

``get()`` returns an equal object whose arrays are private and writable;
``with q.borrow() as obj:`` gives arrays that are read-only views into the
ring, valid until the block ends.
"""

from __future__ import annotations

import contextlib
import functools
import math
import pickle
import queue
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar

import numpy as np
import posix_ipc

from . import _core, _semaphore
from . import _layout as L
from ._channel import Channel
from ._channel import deadline as _deadline
from ._channel import positive_int as _positive_int
from ._endpoints import CONSUMER, PRODUCER
from ._region import Region
from .errors import ClosedError, LayoutError

__all__ = ["Queue"]

SYNCS = ("lockfree", "semaphore")
DEFAULT_CAPACITY = 1 << 24

# Record kinds (the core knows PAD = 0 and BYTES = 1).
KIND_BYTES = 1
KIND_BYTEARRAY = 2
KIND_NDARRAY = 3
KIND_PICKLE = 4

_ALIGN = 16
_HEADER = 16

T = TypeVar("T")
Entry = Any  # what the core hands back: bytes, or (kind, buffer, parts)


def _attach(name: str, backend: str, ticket: int = 0) -> Queue:
    """Unpickle a handle (see Ring's _attach)."""
    q = Queue.attach(name, backend=backend)
    if ticket:
        q._table.received(ticket)
    return q


# -- what travels ------------------------------------------------------------------------
_dtype_bytes: dict[np.dtype[Any], bytes] = {}
_dtype_of: dict[bytes, np.dtype[Any]] = {}


def _array_meta(arr: np.ndarray[Any, Any]) -> bytes:
    """An array's dtype and shape as bytes: ndim, the dims, the pickled dtype
    (pickled once per dtype: it covers structured, big-endian, datetime...)."""
    dt = _dtype_bytes.get(arr.dtype)
    if dt is None:
        dt = _dtype_bytes.setdefault(arr.dtype, pickle.dumps(arr.dtype, protocol=5))
    return struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape) + dt


def _read_meta(meta: Any) -> tuple[np.dtype[Any], tuple[int, ...]]:
    (ndim,) = struct.unpack_from("<I", meta, 0)
    shape = struct.unpack_from(f"<{ndim}q", meta, 4)
    raw = bytes(meta[4 + 8 * ndim :])
    dt = _dtype_of.get(raw)
    if dt is None:
        dt = pickle.loads(raw)
        if not isinstance(dt, np.dtype):
            raise TypeError("a queue record's array header holds no dtype")
        _dtype_of[raw] = dt
    return dt, tuple(shape)


def encode(obj: Any) -> tuple[int, Any]:
    """(kind, one buffer or a tuple of buffers) for the core's _q_put.

    Pickling errors are raised here, before anything is written."""
    t = type(obj)
    if t is bytes:
        return KIND_BYTES, obj
    if t is bytearray:
        return KIND_BYTEARRAY, obj
    if t is memoryview:
        return KIND_BYTES, obj if obj.c_contiguous else obj.tobytes()
    if t is np.ndarray and not obj.dtype.hasobject:
        arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
        return KIND_NDARRAY, (_array_meta(arr), arr.reshape(-1).view(np.uint8))
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    try:
        raws = [b.raw() for b in buffers]
    except (BufferError, ValueError):  # a non-contiguous out-of-band buffer: send it in-band
        return KIND_PICKLE, pickle.dumps(obj, protocol=5)
    return KIND_PICKLE, (stream, *raws) if raws else stream


def payload_len(parts: Any) -> int:
    """Bytes of a record's payload (mirrors q_payload_len in _queue.c)."""
    if not isinstance(parts, tuple):
        return memoryview(parts).nbytes
    n = len(parts)
    off = -(-8 * n // _ALIGN) * _ALIGN if n > 1 else 0
    for part in parts[:-1]:
        off = -(-(off + memoryview(part).nbytes) // _ALIGN) * _ALIGN
    return off + memoryview(parts[-1]).nbytes if n else 0


def decode(entry: Entry) -> Any:
    """The object of a record that the core copied out: bytes, or (kind,
    payload, parts) with ``parts`` None for a one-part payload, else the
    (offset, length) pairs of the parts in it."""
    if type(entry) is bytes:
        return entry
    kind, buf, parts = entry
    if parts is None:
        if kind == KIND_PICKLE:
            return pickle.loads(buf)
        if kind == KIND_BYTEARRAY:
            return buf
        return decode_parts(kind, [memoryview(buf)])
    return decode_parts(kind, split(memoryview(buf), 0, parts))


def split(view: memoryview, base: int, parts: tuple[int, ...]) -> list[memoryview]:
    """The parts of a payload at ``base`` in ``view``."""
    return [view[base + parts[i] : base + parts[i] + parts[i + 1]] for i in range(0, len(parts), 2)]


def decode_parts(kind: int, pieces: list[memoryview]) -> Any:
    """The object of a record from its parts: views of a private copy (get),
    or read-only views of the ring itself (borrow)."""
    if kind == KIND_BYTES:
        return bytes(pieces[0])
    if kind == KIND_BYTEARRAY:
        return bytearray(pieces[0])
    if kind == KIND_NDARRAY:
        dt, shape = _read_meta(pieces[0])
        if not dt.itemsize:
            return np.empty(shape, dt)
        return np.frombuffer(pieces[1], dt, math.prod(shape)).reshape(shape)
    if kind == KIND_PICKLE:
        return pickle.loads(pieces[0], buffers=pieces[1:])
    raise LayoutError(f"a queue record of unknown kind {kind}")


class _Signals:
    """sync="semaphore": where blocked producers and consumers sleep, two
    posix_ipc semaphores named after the queue's semaphore id.  They are
    wake-up hints, the records the truth: every put posts "full" and every
    get posts "free", each taking one post of the other kind back, so the
    counts stay near the number of messages; a side about to sleep nudges
    the other (posts if none is pending): a producer for what its put_many
    put so far, a consumer for the pads and remains its get freed on the way
    to nothing (without that nudge the stress harness saw a producer and a
    consumer wait 0.1 s on each other at every wrap).  A post lost with a
    dead process costs one bounded wait."""

    def __init__(self, sem_id: int, create: bool, mode: int) -> None:
        free, full = _semaphore.names(sem_id, ("free", "full"))
        flags = posix_ipc.O_CREX if create else posix_ipc.O_CREAT
        self.free = posix_ipc.Semaphore(free, flags, mode, 0)
        try:
            self.full = posix_ipc.Semaphore(full, flags, mode, 0)
        except BaseException:
            self.free.close()
            raise

    @staticmethod
    def post(sem: posix_ipc.Semaphore) -> None:
        sem.release()

    @staticmethod
    def nudge(sem: posix_ipc.Semaphore) -> None:
        """Post only if no post is pending: a wake-up for a sleeper that has
        none coming, which adds at most one post however often it is called."""
        if sem.value == 0:
            sem.release()

    @staticmethod
    def drain(sem: posix_ipc.Semaphore) -> None:
        """Take one post back if there is one (no wait)."""
        with contextlib.suppress(posix_ipc.BusyError):
            sem.acquire(0)

    @staticmethod
    def wait(sem: posix_ipc.Semaphore, timeout: float) -> None:
        with contextlib.suppress(posix_ipc.BusyError):
            sem.acquire(timeout)

    def close(self) -> None:
        self.free.close()
        self.full.close()


class Queue(Channel):
    """A queue of messages (bytes, arrays, any picklable object) shared
    between processes; any number of producers and consumers.

    ``Queue(maxsize)`` creates one, as ``multiprocessing.Queue(maxsize)``
    does (``maxsize`` counts messages, 0 for no limit; ``capacity`` bounds
    the bytes).  ``Queue.attach(name)`` opens an existing one; a handle also
    passes to child processes as an argument, under fork, spawn and
    forkserver.  An untimed ``get()`` raises EOFError once every producer
    that ever put has closed or died and the queue is drained; an untimed
    ``put()`` on a full queue raises BrokenPipeError once every consumer is
    gone.  Otherwise it behaves as multiprocessing's Queue.
    """

    _data_ro: np.ndarray[Any, Any] | None = None  # read-only view of the data area
    _view: memoryview | None = None  # the same as a memoryview: borrow() slices it
    _signals: _Signals | None = None
    _maxsize: int = 0

    def __init__(
        self,
        maxsize: int = 0,
        *,
        name: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        sync: str = "lockfree",
        backend: str = "shm",
        mode: int = 0o600,
        replace_abandoned: bool = False,
    ) -> None:
        """Create a queue of ``capacity`` bytes (rounded up to 64) in a new
        region named ``name`` (a fresh name when None; a path for
        ``backend="file"``; no name for ``backend="anon"``).  ``maxsize``
        limits the messages in it (0 or less: no limit but the bytes)."""
        if isinstance(maxsize, bool) or not isinstance(maxsize, (int, np.integer)):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        maxsize = max(int(maxsize), 0)
        geo = _geometry(capacity, sync)
        self._create(name, geo, backend, mode, replace_abandoned, maxsize)

    @classmethod
    def attach(cls, name: str, *, backend: str = "shm", timeout: float = 0) -> Queue:
        """Open an existing queue by name, waiting up to ``timeout`` seconds
        for it to appear; FileNotFoundError when it does not."""
        q: Queue = cls._attach_as(name, backend, timeout, L.KIND_QUEUE, _check_supported)
        return q

    def _make_semaphores(self, mapping: Any, sem_id: int, geo: L.Geometry, create: bool, mode: int) -> _Signals:
        return _Signals(sem_id, create, mode)

    def _opened(self, region: Region, geo: L.Geometry, sems: _Signals | None) -> None:
        assert region.mapping is not None
        maxsize = L.header_info(region.mapping)["maxsize"]
        fast = geo.sync == L.SYNC_LOCKFREE
        self._q_bind(
            L.QUEUE_ADMITTED_OFF, L.QUEUE_ROOM_OFF, geo.record_offset, maxsize, fast, L.QUEUE_IN_OFF, L.QUEUE_OUT_OFF
        )
        self._maxsize = maxsize
        self._signals = sems
        data = np.frombuffer(region.mapping, np.uint8, geo.capacity * geo.slot_size, geo.data_offset)
        data.flags.writeable = False
        self._data_ro = data
        self._view = data.data

    # -- what it is ------------------------------------------------------------------------
    @property
    def maxsize(self) -> int:
        """Messages the queue admits at once (0: no limit but its bytes)."""
        return self._maxsize

    @property
    def capacity(self) -> int:
        """Bytes of the ring the messages live in (each takes its size
        rounded up to 64, plus 16, plus 8 per part for several parts)."""
        return self._geo.capacity * self._geo.slot_size

    def __repr__(self) -> str:
        if not hasattr(self, "_geo"):
            return "<shmring.Queue (unopened)>"
        state = "closed" if self._closed else f"{self.qsize()} messages"
        return f"<shmring.Queue {self.name!r} {self.backend} {self.sync} {state} capacity={self.capacity}>"

    # -- sizes (OSError on a closed handle, as multiprocessing's) ----------------------------
    def qsize(self) -> int:
        """Messages put and not yet taken: exact while no call is under way
        (a walk over the queue's records, so no crash can leave it wrong)."""
        self._check_open()
        return self._q_count()[0]

    def empty(self) -> bool:
        """True if no message is ready (a snapshot)."""
        self._check_open()
        return self._q_count(1)[0] == 0

    def full(self) -> bool:
        """True if ``maxsize`` messages are in (a snapshot; never true
        without a maxsize: whether the bytes suffice depends on the message)."""
        self._check_open()
        if not self._maxsize or self._q_count()[1] < self._maxsize:
            return False
        return not self._heal_admissions() or self._q_count()[1] >= self._maxsize

    def _closed_error(self) -> Exception:
        return ClosedError(f"Queue {self.name!r} is closed")

    # -- producing --------------------------------------------------------------------------
    # put/put_nowait/get/get_nowait are the core's (one call for bytes and
    # for objects without arrays in the lock-free flavour); everything else
    # comes back here, to _put_slow/_get_slow/_decode.
    put = _core.SpscRing._q_put_obj  # type: ignore[assignment]  # not the Ring's put (same C type)
    put_nowait = _core.SpscRing._q_put_nowait_obj  # type: ignore[assignment]
    get = _core.SpscRing._q_get_obj
    get_nowait = _core.SpscRing._q_get_nowait_obj

    def _put_slow(self, obj: Any, block: bool, timeout: float | None) -> None:
        """put() beyond the core's fast path: encode, register, wait."""
        if self._closed:
            raise self._closed_error()
        kind, parts = encode(obj)
        if not self._role & PRODUCER:
            self._become(PRODUCER)
        if not self._q_put(kind, parts):
            self._put_wait(lambda: self._q_put(kind, parts), payload_len(parts), block, timeout)
        if self._signals is not None:
            self._after_put()

    def _put_wait(self, op: Callable[[], bool], nbytes: int, block: bool, timeout: float | None) -> None:
        """Wait for room and retry ``op`` until it succeeds (see put)."""
        deadline = _deadline(timeout)
        untimed = block and timeout is None
        while True:
            if untimed and self._peers_gone(CONSUMER):
                raise BrokenPipeError("the queue is full and every consumer has closed or died")
            if self._unstick(PRODUCER) or self._heal_admissions():
                if op():
                    return
                continue
            if self._signals is not None:
                # Wake consumers for what a put_many put so far (it posts
                # once at its end): they make the room we wait for.
                self._signals.nudge(self._signals.full)
            if not block or not self._sleep(lambda t: self._await_room(nbytes, t), deadline):
                raise queue.Full
            if op():
                return

    def _heal_admissions(self, force: bool = False) -> bool:
        """With a maxsize, a producer killed between its admission and its
        message's publication leaves an admission nothing will give back.
        When admission is refused (or ``force``), count what is really
        admitted and lower the word to that with a CAS on the value read
        first, so any admission or take meanwhile makes it fail.  Really
        admitted: live producers between admission and publication (read
        before the walk: one admitted before our read is marked, claimed or
        published by then), messages in the queue (the walk), and live
        consumers with a claim (read after the walk: one whose claim the walk
        missed announced it first, and gives its admission back before it
        withdraws the announcement).  Counting one twice only heals less.
        True if it healed."""
        if not self._maxsize or self._region is None or self._region.mapping is None:
            return False
        mapping = self._region.mapping
        seen = _core.load64(mapping, L.QUEUE_ADMITTED_OFF)  # acquire: a producer's mark before its admission
        admitted = L.admitted_count(seen)
        if not (force or admitted >= self._maxsize):
            return False
        really = self._table.live_busy(PRODUCER)
        really += self._q_count()[0]
        really += self._table.live_busy(CONSUMER)
        if really >= admitted:
            return False
        version = (seen // L.ADMIT_VERSION + 1) % L.ADMIT_VERSION  # every change is a new version (_queue.h, q_admit)
        healed = version * L.ADMIT_VERSION + really
        return _core.cas64(mapping, L.QUEUE_ADMITTED_OFF, seen, healed) == seen

    def _await_room(self, nbytes: int, timeout: float) -> None:
        if self._signals is None:
            self._q_wait_room(nbytes, timeout)
        else:
            self._signals.wait(self._signals.free, timeout)

    def put_many(self, objs: Iterable[Any], block: bool = True, timeout: float | None = None) -> int:
        """Put ``objs`` in order; returns how many went in: all, unless the
        timeout expired (or, untimed, every consumer left) part-way; none at
        all raises queue.Full (BrokenPipeError).  Every object is
        encoded before the first goes in, so a pickling error puts nothing."""
        if self._closed:
            raise self._closed_error()
        items = list(objs)
        encoded: list[tuple[int, Any] | None] = [None if type(o) is bytes else encode(o) for o in items]
        if not items:
            return 0
        if not self._role & PRODUCER:
            self._become(PRODUCER)
        deadline = _deadline(timeout)
        done = 0
        try:
            while done < len(items):
                done += self._q_put_bytes_many(items, done)
                if done == len(items):
                    break
                enc = encoded[done]
                kind, parts = (KIND_BYTES, items[done]) if enc is None else enc
                if not self._q_put(kind, parts):
                    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                    self._put_wait(functools.partial(self._q_put, kind, parts), payload_len(parts), block, left)
                done += 1
        except (queue.Full, BrokenPipeError):  # part-way: say how many went in (as Ring.put_many)
            if not done:
                raise
        if self._signals is not None:
            self._after_put()
        return done

    # -- consuming --------------------------------------------------------------------------
    def _get_slow(self, block: bool, timeout: float | None) -> Any:
        """get() beyond the core's fast path: register, wait, decode."""
        if self._closed:
            raise self._closed_error()
        if not self._role & CONSUMER:
            self._become(CONSUMER)
        entry: Entry = self._q_get()
        if entry is None:
            entry = self._get_wait(self._q_get, block, timeout)
        if self._signals is not None:
            self._after_get()
        return entry if type(entry) is bytes else decode(entry)

    @staticmethod
    def _decode(entry: Entry) -> Any:
        return decode(entry)

    def get_many(self, max_items: int = 1 << 30, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Remove 1..max_items messages (as many as are ready) and return
        them in order; waits, and raises, as get() does."""
        if self._closed:
            raise self._closed_error()
        max_items = _positive_int(max_items, "max_items")
        if not self._role & CONSUMER:
            self._become(CONSUMER)
        entries: list[Entry] | None = self._q_get_many(max_items)
        if entries is None:
            entries = self._get_wait(lambda: self._q_get_many(max_items), block, timeout)
        if self._signals is not None:
            self._after_get()
        return [e if type(e) is bytes else decode(e) for e in entries]

    def borrow(self, block: bool = True, timeout: float | None = None) -> contextlib.AbstractContextManager[Any]:
        """``with q.borrow() as obj:`` takes the oldest message with its
        arrays as read-only views into the queue (no copy), freed when the
        block ends; the views must not be used after it.  Waits and raises
        as get() does."""
        if timeout is not None:
            _deadline(timeout)  # refuse a bad timeout now
        return _Loan(self, block, timeout)

    def __iter__(self) -> Iterator[Any]:
        """``for obj in q:`` gets until EOFError, then stops."""
        while True:
            try:
                yield self.get()
            except EOFError:
                return

    def _get_wait(self, op: Callable[[], T | None], block: bool, timeout: float | None) -> T:
        """Wait for a message and retry ``op`` until it returns one."""
        deadline = _deadline(timeout)
        untimed = block and timeout is None
        while True:
            gone = self._peers_gone(PRODUCER)
            if self._unstick(CONSUMER, urgent=gone):
                got = op()
                if got is not None:
                    return got
                continue
            if gone and untimed:
                head, tail = self._indices()
                if head == tail:
                    raise EOFError("every producer of this queue has closed or died, and it is drained")
                got = op()  # what the dead left: records, or remains to skip
                if got is not None:
                    return got
                continue
            if self._signals is not None:
                # Our get may have freed pads or a dead producer's remains on
                # the way to nothing: that is room a producer may wait for.
                self._signals.nudge(self._signals.free)
            if not block or not self._sleep(self._await_items, deadline):
                raise queue.Empty
            got = op()
            if got is not None:
                return got

    def _await_items(self, timeout: float) -> None:
        if self._signals is None:
            self._wait_readable(timeout)
        else:
            self._signals.wait(self._signals.full, timeout)

    def _after_put(self) -> None:
        """Semaphore flavour: wake a consumer; take back a stale "free" post."""
        s = self._signals
        assert s is not None
        s.post(s.full)
        s.drain(s.free)

    def _after_get(self) -> None:
        """Semaphore flavour: wake a producer, take back a stale "full" post,
        and pass a wake-up on to the next sleeping consumer while messages
        remain (a put_many posts once)."""
        s = self._signals
        assert s is not None
        s.post(s.free)
        s.drain(s.full)
        if self._q_count(1)[0]:
            s.nudge(s.full)

    def _lend(self, block: bool, timeout: float | None) -> Any:
        """borrow()'s enter: claim the next record, the object over views."""
        if self._closed:
            raise self._closed_error()
        if not self._role & CONSUMER:
            self._become(CONSUMER)
        got = self._q_peek()
        if got is None:
            got = self._get_wait(self._q_peek, block, timeout)
        kind, offset, length, parts = got
        view = self._view
        assert view is not None
        try:
            if kind == KIND_BYTES:
                return bytes(view[offset : offset + length])
            return decode_parts(kind, split(view, offset, parts))
        except BaseException:
            self._end_loan()
            raise

    def _end_loan(self) -> None:
        if not self._views & CONSUMER:
            return  # a fork child leaving its parent's block, or close() settled it
        if not self._closed:
            self._q_end_loan()
        self._views = self._views & ~CONSUMER
        if self._signals is not None:
            self._after_get()

    # -- multiprocessing.Queue's other methods ---------------------------------------------
    def join_thread(self) -> None:
        """No-op: there is no feeder thread (multiprocessing compatibility)."""

    def cancel_join_thread(self) -> None:
        """No-op: there is no feeder thread (multiprocessing compatibility)."""

    # -- lifetime -----------------------------------------------------------------------------
    def _drop_views(self) -> None:
        self._data_ro = self._view = None

    def _close_extras(self) -> None:
        if self._signals is not None:
            self._signals.close()

    def _broken_pipe(self) -> NoReturn:
        raise BrokenPipeError("every consumer of this queue has closed or died")

    def __enter__(self) -> Queue:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by name (see Ring.__reduce__)."""
        self._check_open()
        self._refuse_anon_pickle("Queue")
        return (_attach, (self.name, self.backend, self._table.send()))


class _Loan:
    """``with q.borrow() as obj``: claim on enter, free on exit."""

    __slots__ = ("_block", "_q", "_timeout")

    def __init__(self, q: Queue, block: bool, timeout: float | None) -> None:
        self._q, self._block, self._timeout = q, block, timeout

    def __enter__(self) -> Any:
        return self._q._lend(self._block, self._timeout)

    def __exit__(self, *exc: object) -> None:
        self._q._end_loan()


def _check_supported(geo: L.Geometry) -> None:
    if geo.sync not in (L.SYNC_LOCKFREE, L.SYNC_SEMAPHORE):
        raise NotImplementedError(f"this shmring does not know sync flavour {geo.sync}")
    if geo.slot_size != L.QUEUE_SLOT:
        raise LayoutError(f"a queue's slots are {L.QUEUE_SLOT} bytes, not {geo.slot_size}")


def _geometry(capacity: Any, sync: str) -> L.Geometry:
    capacity = _positive_int(capacity, "capacity")
    if sync not in SYNCS:
        raise ValueError(f"sync must be one of {SYNCS}, not {sync!r}")
    slots = max(-(-capacity // L.QUEUE_SLOT), 1)
    if slots > (1 << 40):
        raise ValueError(f"a queue of {capacity} bytes is too large")
    return L.Geometry(
        kind=L.KIND_QUEUE,
        capacity=slots,
        shape=(L.QUEUE_SLOT,),
        dtype=np.dtype(np.uint8),
        flags=L.FLAG_MULTI_PRODUCER | L.FLAG_MULTI_CONSUMER,
        sync=L.SYNC_SEMAPHORE if sync == "semaphore" else L.SYNC_LOCKFREE,
    )
