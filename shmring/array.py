"""Array: one named numpy array in shared memory, with the synchronisation
that sharing state needs: a lock that survives its holder's death, seqlock
snapshots that a concurrent writer never tears, and atomic operations on
integer elements.

The region has the same header, lifetime rules (handles in flight, the last
handle out unlinks, ``replace_abandoned``, ``attach(timeout=)``) and ``gc``
as a Ring's; its kind is Array, so attaching one as a Ring (or the reverse)
raises LayoutError.  The data starts on a page boundary (4096).
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import posix_ipc

from . import _core, _lifetime, _naming, _semaphore, _stats
from . import _layout as L
from ._endpoints import HOLDER, Endpoint, EndpointTable, process_start_time, word_alive
from ._handle import SharedHandle
from ._lock import LIVENESS_INTERVAL_S, FutexPark, Lock, Park, SemaphorePark, identity
from ._region import Region
from ._stats import Statistics
from .errors import ShmringError

__all__ = ["Array"]

SYNCS = ("lockfree", "semaphore")
# numpy dtype -> the core's element kind for load/store/add/compare_exchange
_ELEMENT_KINDS = {np.dtype(np.int32): 0, np.dtype(np.int64): 1, np.dtype(np.uint32): 2, np.dtype(np.uint64): 3}


def _attach(name: str, backend: str, ticket: int = 0) -> Array:
    """Unpickle a handle (see Ring's _attach)."""
    array = Array.attach(name, backend=backend)
    if ticket:
        array._table.received(ticket)
    return array


class Array(SharedHandle):
    """A numpy array of ``shape`` and ``dtype`` shared between processes.

    ``Array(...)`` creates a region (named ``name``, or a fresh name when
    None) and ``Array.attach(name)`` opens one.  ``.array`` is a writable
    view of the shared memory; ``with a.lock():`` excludes other processes;
    ``with a.write() as view:`` writes so that ``a.read()`` never returns a
    torn copy; ``load``/``store``/``add``/``compare_exchange`` are atomic on
    integer elements."""

    _holder_slot: int | None = None
    _holding: bool = False  # this handle holds the lock (it is not reentrant)
    _sem: Any = None  # sync="semaphore": the lock's posix_ipc semaphore
    _sems_busy: int = 0  # calls of this handle waiting on it (close() waits for them)
    _fast_size: int = 0
    _kind: int | None = None
    _fast_kind: int = 0
    _buf: Any = None  # the mapping, for the hot paths (None once closed)
    _futex: bool = False

    def __init__(
        self,
        name: str | None = None,
        *,
        shape: int | tuple[int, ...],
        dtype: npt.DTypeLike = np.float64,
        fill: Any = None,
        backend: str = "shm",
        sync: str = "lockfree",
        mode: int = 0o600,
        replace_abandoned: bool = False,
    ) -> None:
        """Create an Array of ``shape`` and ``dtype``, zeroed or set to
        ``fill`` (anything numpy broadcasts to the shape under the ``safe``
        casting rule)."""
        geo = _geometry(shape, dtype, sync)
        init = None if fill is None else _fill(fill, geo)
        region = _naming.create(name, geo.total_size, backend, mode, L.KIND_ARRAY, replace_abandoned)
        sem_id = _semaphore.new_id() if geo.sync == L.SYNC_SEMAPHORE else 0
        sem = None
        try:
            assert region.mapping is not None
            holder = EndpointTable(region.mapping).register(HOLDER)
            if init is not None:
                np.frombuffer(region.mapping, geo.dtype, math.prod(geo.shape), L.DATA_OFFSET)[:] = init.reshape(-1)
            if sem_id:
                sem = _open_lock_semaphore(sem_id, create=True, mode=mode)
            header = L.encode_header(geo, time.time_ns(), os.getpid(), process_start_time(os.getpid()), sem_id)
            region.publish_header(header)
            if sem_id and region.name is None:
                _semaphore.unlink(sem_id)  # anon: fork children inherit it open
            self._open(region, geo, holder, sem)
        except BaseException:
            if sem is not None:
                sem.close()
                _semaphore.unlink(sem_id)
            region.close()
            region.unlink()
            raise

    @classmethod
    def attach(cls, name: str, *, backend: str = "shm", timeout: float = 0) -> Array:
        """Open an existing Array by name (a path for ``backend="file"``),
        waiting up to ``timeout`` seconds for it to appear."""
        array: Array = cls._attach_as(name, backend, timeout, L.KIND_ARRAY)
        return array

    def _open(self, region: Region, geo: L.Geometry, holder: int, sem: Any = None) -> None:
        m = region.mapping
        assert m is not None
        self._table = EndpointTable(m)
        try:
            if geo.sync == L.SYNC_SEMAPHORE and sem is None:
                sem = _open_lock_semaphore(L.header_info(m)["sem_id"], create=False)
        except BaseException:
            self._table.unregister(holder)
            raise
        self._region, self._geo, self._holder_slot, self._sem = region, geo, holder, sem
        park: Park = (
            SemaphorePark(sem, self._take)
            if sem is not None
            else FutexPark(m, L.ARRAY_LOCK_WAKE_OFF, L.ARRAY_LOCK_WAITERS_OFF)
        )
        self._lock = Lock(m, L.ARRAY_LOCK_OFF, park)
        self._futex = isinstance(park, FutexPark)  # the lock's release is one core call
        self._held = _Held(self, None)
        self._array: np.ndarray[Any, Any] | None = np.frombuffer(
            m, geo.dtype, math.prod(geo.shape), L.DATA_OFFSET
        ).reshape(geo.shape)
        self._kind = _ELEMENT_KINDS.get(geo.dtype)
        # The element operations' fast path: an int index below _fast_size (0
        # while closed, or for a dtype they refuse, which sends every call
        # to _element and its errors).
        self._buf, self._itemsize = m, geo.dtype.itemsize
        self._fast_size = math.prod(geo.shape) if self._kind is not None else 0
        self._fast_kind = self._kind or 0
        self._closed = False
        _lifetime.track(self)

    # -- what it is ------------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The shared memory as a writable ndarray (no synchronisation: see
        lock(), write(), read() and the element operations)."""
        self._check_open()
        assert self._array is not None
        return self._array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        if copy:
            return np.array(self.array, dtype=dtype, copy=True)
        return self.array if dtype is None else self.array.astype(dtype, copy=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array."""
        return self._geo.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """dtype of the array."""
        return self._geo.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of data (shape x itemsize)."""
        return self._geo.slot_size

    @property
    def holder_died(self) -> bool:
        """True if this handle's last lock() or write() took the lock over
        from a holder that died inside (the data may need repair)."""
        return self._lock.holder_died if not self._closed else False

    def __repr__(self) -> str:
        if not hasattr(self, "_geo"):
            return "<shmring.Array (unopened)>"
        state = "closed" if self._closed else self.backend
        return f"<shmring.Array {self.name!r} {state} shape={self.shape} dtype={self.dtype}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("array is closed")

    # -- the lock ----------------------------------------------------------------------------
    def lock(self, timeout: float | None = None) -> contextlib.AbstractContextManager[bool]:
        """``with a.lock() as holder_died:`` holds the Array's cross-process
        lock (not reentrant).  ``holder_died`` is True if the previous holder
        died inside, so the data may need repair.  A dead holder's lock is
        taken within about LIVENESS_INTERVAL_S.  TimeoutError after
        ``timeout`` seconds; Ctrl-C interrupts the wait."""
        return self._held if timeout is None else _Held(self, timeout)

    def _unlock(self) -> None:
        self._holding = False
        if not self._closed:
            self._lock.release()

    def _acquire(self, timeout: float | None) -> None:
        if self._closed or self._holding:
            self._check_open()
            raise RuntimeError("this handle already holds the lock (it is not reentrant)")
        if timeout is None:
            deadline = None
        elif timeout >= 0:
            deadline = time.monotonic() + timeout
        else:
            raise ValueError("'timeout' must be a non-negative number or None")
        if not self._lock.acquire(deadline):
            raise TimeoutError(f"the lock of {self.name!r} was not free within {timeout} s")
        self._holding = True

    def _take(self, sem: Any, timeout: float) -> bool:
        """One wake-up from the semaphore flavour's park (close() waits for us)."""
        self._sems_busy += 1
        try:
            sem.acquire(timeout)
            return True
        except (posix_ipc.BusyError, posix_ipc.SignalError):
            return False
        finally:
            self._sems_busy -= 1

    # -- seqlock -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self, timeout: float | None = None) -> Iterator[np.ndarray[Any, Any]]:
        """``with a.write() as view:`` holds the lock and marks the data as
        being written, so readers never take a torn copy; they see the old
        data or the new, whole.  The write counts as done when the block
        ends, normally or not."""
        self._acquire(timeout)
        try:
            assert self._region is not None and self._region.mapping is not None
            odd = _core.seq_begin(self._region.mapping, L.ARRAY_SEQ_OFF)
            try:
                yield self.array
            finally:
                _core.seq_end(self._region.mapping, L.ARRAY_SEQ_OFF, odd)
        finally:
            self._unlock()

    def read(self, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """A consistent copy of the data (into ``out`` if given): never torn
        by a concurrent write(), never blocking the writer; retries with a
        bounded backoff while a write is under way.  ShmringError if the
        last writer died part-way (until the next write() repairs it)."""
        self._check_open()
        m = self._region.mapping if self._region is not None else None
        assert m is not None
        if out is None:
            out = np.empty(self.shape, self.dtype)
        elif not isinstance(out, np.ndarray) or out.shape != self.shape or out.dtype != self.dtype:
            raise ValueError(f"out must be an ndarray of shape {self.shape} and dtype {self.dtype}")
        elif not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be C-contiguous and writable")
        raw = out.reshape(-1).view(np.uint8)
        pause, tries, next_look = 1e-6, 0, time.monotonic() + LIVENESS_INTERVAL_S
        while True:
            if _core.seq_read(m, L.ARRAY_SEQ_OFF, L.DATA_OFFSET, raw.data) >= 0:
                return out
            tries += 1
            if tries < 16:
                continue  # a writer on another core is usually done within microseconds
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + LIVENESS_INTERVAL_S
                self._check_writer_alive()

    def _check_writer_alive(self) -> None:
        assert self._region is not None and self._region.mapping is not None
        m = self._region.mapping
        seq = _core.load64(m, L.ARRAY_SEQ_OFF)
        if seq % 2 == 0:
            return  # the write ended meanwhile
        holder = self._lock.holder()
        if holder != 0 and word_alive(holder):
            return  # a live holder: its write is under way, or it will write over a dead one's
        # No live holder: the writer that made the sequence odd is gone --
        # unless that write ended, and a new one began, between our loads.
        if _core.load64(m, L.ARRAY_SEQ_OFF) == seq:
            raise ShmringError(
                f"the last write() to {self.name!r} died part-way: the data may be torn; "
                "the next write() (which sees holder_died) repairs it"
            )

    # -- atomic elements --------------------------------------------------------------------
    def _element(self, index: Any) -> tuple[int, int]:
        """(byte offset in the region, element kind) of ``index``: an int
        (a flat, C-order index) or a tuple of per-axis indices; negative
        indices count from the end, as in numpy."""
        self._check_open()
        if self._kind is None:
            raise TypeError(f"atomic operations take int32, int64, uint32 or uint64 Arrays, not {self.dtype}")
        shape = self.shape
        if isinstance(index, tuple):
            if len(index) != len(shape):
                raise IndexError(f"index {index} has {len(index)} axes; the array has {len(shape)}")
            flat = 0
            for axis, (i, n) in enumerate(zip(index, shape, strict=True)):
                i = operator.index(i)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                flat = flat * n + (i % n)
        else:
            size = math.prod(shape)
            flat = operator.index(index)
            if not -size <= flat < size:
                raise IndexError(f"index {flat} is out of bounds for an array of {size} elements")
            flat %= size
        return L.DATA_OFFSET + flat * self.dtype.itemsize, self._kind

    def _mapping(self) -> Any:
        assert self._region is not None
        return self._region.mapping

    # The common call -- an int index in range on an open integer Array --
    # is one test and one core call; anything else takes _element().
    def load(self, index: Any) -> int:
        """The element at ``index`` (sequentially consistent)."""
        if type(index) is int and 0 <= index < self._fast_size:
            return _core.elem_load(self._buf, L.DATA_OFFSET + index * self._itemsize, self._fast_kind)
        off, kind = self._element(index)
        return _core.elem_load(self._mapping(), off, kind)

    def store(self, index: Any, value: int) -> None:
        """Set the element at ``index``; OverflowError if ``value`` does not fit."""
        if type(index) is int and 0 <= index < self._fast_size:
            _core.elem_store(self._buf, L.DATA_OFFSET + index * self._itemsize, self._fast_kind, operator.index(value))
            return
        off, kind = self._element(index)
        _core.elem_store(self._mapping(), off, kind, operator.index(value))

    def add(self, index: Any, value: int) -> int:
        """Add ``value`` to the element at ``index`` (wrapping, as numpy
        does); returns the old value."""
        if type(index) is int and 0 <= index < self._fast_size:
            return _core.elem_add(
                self._buf, L.DATA_OFFSET + index * self._itemsize, self._fast_kind, operator.index(value)
            )
        off, kind = self._element(index)
        return _core.elem_add(self._mapping(), off, kind, operator.index(value))

    def compare_exchange(self, index: Any, expected: int, new: int) -> tuple[bool, int]:
        """Set the element to ``new`` if it equals ``expected``; returns
        (success, the value observed)."""
        off, kind = self._element(index)
        return _core.elem_cas(self._mapping(), off, kind, operator.index(expected), operator.index(new))

    # -- lifetime ---------------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        """The handles attached, as the header records them."""
        self._check_open()
        return self._table.entries()

    def statistics(self) -> Statistics:
        """Writes since creation, a write under way, the handles attached and
        locks taken from dead holders: a snapshot (see ``shmring.Statistics``)."""
        self._check_open()
        assert self._region is not None and self._region.mapping is not None
        return _stats.collect(self._region.mapping, self._geo)

    def close(self) -> None:
        """Unmap; the last handle out (open or in flight, in any process)
        unlinks a shm Array's name.  A lock this handle holds is released.
        Safe to call twice."""
        if self._closed or self._region is None:
            return
        self._closed = True
        self._fast_size = 0
        self._buf = None
        _lifetime.untrack(self)
        region = self._region
        try:
            if self._holding:
                self._holding = False
                self._lock.release()
            if self._holder_slot is not None:
                self._table.unregister(self._holder_slot)
                self._holder_slot = None
                _naming.leave(region, self._table)
        finally:
            self._array = None
            if self._sem is not None:
                while self._sems_busy:  # another thread is parked on it: it wakes within 0.1 s
                    time.sleep(0.0005)
                self._sem.close()
            region.close()

    def _after_fork_in_child(self) -> None:
        self._holder_slot = None
        self._holding = False  # a lock the parent held is the parent's
        self._sems_busy = 0
        if self._region is not None:
            self._region.creator_pid = 0

    def __enter__(self) -> Array:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by name (pending until unpickled, as a Ring's handle)."""
        self._check_open()
        self._refuse_anon_pickle("Array")
        return (_attach, (self.name, self.backend, self._table.send()))


class _Held:
    """``with a.lock() as holder_died:`` (a class, not a generator: this is
    the lock's hot path)."""

    __slots__ = ("_array", "_timeout")

    def __init__(self, array: Array, timeout: float | None) -> None:
        self._array, self._timeout = array, timeout

    def __enter__(self) -> bool:
        a = self._array
        buf = a._buf
        # The uncontended lock is one CAS (Lock.acquire's first step).
        if buf is not None and not a._holding and _core.cas64(buf, L.ARRAY_LOCK_OFF, 0, identity()) == 0:
            a._holding = True
            a._lock.holder_died = False
            return False
        a._acquire(self._timeout)
        return a._lock.holder_died

    def __exit__(self, *exc: object) -> None:
        a = self._array
        buf = a._buf
        if buf is not None and a._futex and a._holding:
            a._holding = False
            _core.lock_release(buf, L.ARRAY_LOCK_OFF, L.ARRAY_LOCK_WAKE_OFF, L.ARRAY_LOCK_WAITERS_OFF)
            return
        a._unlock()


def _fill(fill: Any, geo: L.Geometry) -> np.ndarray[Any, Any]:
    """``fill`` broadcast to the Array: arrays cast under numpy's ``safe``
    rule (TypeError otherwise), Python values by value (OverflowError if
    they do not fit), a shape that does not broadcast is a ValueError."""
    if isinstance(fill, (np.ndarray, np.generic)):
        if not np.can_cast(fill.dtype, geo.dtype, "safe"):
            raise TypeError(f"fill of dtype {fill.dtype} does not cast safely to {geo.dtype}")
        values = np.asarray(fill).astype(geo.dtype)
    else:
        values = np.asarray(fill, dtype=geo.dtype)
    return np.broadcast_to(values, geo.shape)


def _open_lock_semaphore(sem_id: int, create: bool, mode: int = 0o600) -> Any:
    (name,) = _semaphore.names(sem_id, ("lock",))
    return posix_ipc.Semaphore(name, posix_ipc.O_CREX if create else posix_ipc.O_CREAT, mode, 0)


def _geometry(shape: Any, dtype: Any, sync: str) -> L.Geometry:
    shape = L.check_shape(shape)
    if sync not in SYNCS:
        raise ValueError(f"sync must be one of {SYNCS}, not {sync!r}")
    geo = L.Geometry(
        kind=L.KIND_ARRAY,
        capacity=1,
        shape=shape,
        dtype=L.check_dtype(dtype),
        sync=L.SYNC_SEMAPHORE if sync == "semaphore" else L.SYNC_LOCKFREE,
    )
    if geo.slot_size == 0:
        raise ValueError(f"an Array of shape {shape} and dtype {geo.dtype} has no bytes")
    if geo.total_size > (1 << 46):
        raise ValueError(f"an Array of {geo.slot_size} bytes is too large")
    return geo
