"""Ring: a bounded FIFO of fixed-shape numpy items in shared memory.

The per-item methods (``put``, ``get`` and their ``_nowait`` forms) are C
methods of :class:`shmring._core.SpscRing`; they handle the common case in
one call and fall back to ``_put_slow`` / ``_get_slow`` here for everything
else: converting items, registering as producer or consumer, waiting,
noticing dead peers and raising.  The ordering argument is in docs/design.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from . import _convert, _semaphore
from . import _layout as L
from ._channel import Channel
from ._channel import deadline as _deadline
from ._channel import positive_int as _positive_int
from ._endpoints import CONSUMER, PRODUCER
from ._lock import identity
from ._region import Region

__all__ = ["Ring"]

SYNCS = ("lockfree", "semaphore")

T = TypeVar("T")

# Test-only: a deliberately broken semaphore flavour (producers give their
# side lock back before the copy) that the stress harness must catch.
_BROKEN_UNLOCK_EARLY = os.environ.get("SHMRING_BROKEN") == "unlock_early"


def _attach(name: str, backend: str, ticket: int = 0) -> Ring:
    """Unpickle a handle: attach by name, then retire the sender's pending
    entry (only now: our own holder entry keeps the name alive from here)."""
    ring = Ring.attach(name, backend=backend)
    if ticket:
        ring._table.received(ticket)
    return ring


class Ring(Channel):
    """A ring of ``capacity`` slots, each one numpy array of ``shape`` and
    ``dtype``, shared between processes.

    ``Ring(...)`` creates a region (named ``name``, or a fresh name when None)
    and ``Ring.attach(name)`` opens an existing one.  A handle becomes the
    producer on its first put and the consumer on its first get; ``get``
    raises ``EOFError`` once every producer has closed or died and the ring
    is drained, ``put`` raises ``BrokenPipeError`` once every consumer has.
    """

    _geo: L.Geometry
    _items: np.ndarray[Any, Any] | None = None  # writable (capacity, *shape) view of every slot
    _items_ro: np.ndarray[Any, Any] | None = None  # the same, read-only
    _sem: _semaphore.Semaphores | None = None  # sync="semaphore": the ring's semaphores and side locks
    _sem_held: frozenset[int] = frozenset()  # roles whose side lock an open reserve()/borrow() holds
    _permits: dict[int, bool]  # sync="semaphore": role -> we hold a permit taken while waiting

    def __init__(
        self,
        name: str | None = None,
        *,
        capacity: int,
        shape: int | tuple[int, ...] = (),
        dtype: npt.DTypeLike = np.uint8,
        multi_producer: bool = False,
        multi_consumer: bool = False,
        sync: str = "lockfree",
        backend: str = "shm",
        mode: int = 0o600,
        replace_abandoned: bool = False,
    ) -> None:
        """Create a ring: ``capacity`` slots of ``shape``/``dtype`` items in
        a new region named ``name`` (a fresh name when None; a path for
        ``backend="file"``; no name for ``backend="anon"``).

        An existing name raises FileExistsError, which says whether the
        region is abandoned; ``replace_abandoned=True`` replaces an abandoned
        one (and still refuses one that a live process uses)."""
        geo = _geometry(capacity, shape, dtype, multi_producer, multi_consumer, sync)
        self._create(name, geo, backend, mode, replace_abandoned)

    @classmethod
    def attach(cls, name: str, *, backend: str = "shm", timeout: float = 0) -> Ring:
        """Open an existing ring by name (a path for ``backend="file"``),
        waiting up to ``timeout`` seconds for a creator that has not made it
        yet; FileNotFoundError when it does not appear in time."""
        ring: Ring = cls._attach_as(name, backend, timeout, L.KIND_RING, _check_supported)
        return ring

    def _make_semaphores(
        self, mapping: Any, sem_id: int, geo: L.Geometry, create: bool, mode: int
    ) -> _semaphore.Semaphores:
        return _semaphore.Semaphores(mapping, sem_id, geo.capacity, create=create, mode=mode)

    def _opened(self, region: Region, geo: L.Geometry, sems: _semaphore.Semaphores | None) -> None:
        if sems is not None:
            free, full, plock, clock = _semaphore.names(sems.sem_id)
            self._sem_bind(
                free,
                full,
                plock,
                clock,
                (L.PRODUCER_LOCK_OFF, L.CONSUMER_LOCK_OFF),
                (geo.multi_producer, geo.multi_consumer),
            )
        self._sem = sems
        self._permits = {PRODUCER: False, CONSUMER: False}
        count = geo.capacity * math.prod(geo.shape)
        assert region.mapping is not None
        self._items = np.frombuffer(region.mapping, geo.dtype, count, geo.data_offset).reshape(geo.capacity, *geo.shape)
        self._items_ro = self._items.view()
        self._items_ro.flags.writeable = False

    # -- geometry ----------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._geo.capacity

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item."""
        return self._geo.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """dtype of the items."""
        return self._geo.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of item data the ring holds when full (capacity x item size)."""
        return self._geo.capacity * self._geo.slot_size

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.qsize()}/{self.capacity}"
        return (
            f"<shmring.Ring {self.name!r} {self.backend} {state} shape={self.shape} dtype={self.dtype}>"
            if hasattr(self, "_geo")
            else "<shmring.Ring (unopened)>"
        )

    # -- sizes ---------------------------------------------------------------------
    def qsize(self) -> int:
        """Items published and not yet consumed (a snapshot); LayoutError if
        the header's indices are impossible."""
        self._check_open()
        return self._qsize()

    def empty(self) -> bool:
        """True if no item is ready (a snapshot)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """True if every slot holds an item (a snapshot)."""
        return self.qsize() >= self.capacity

    # -- conversion ------------------------------------------------------------------
    def _coerce(self, item: Any, batch: bool, casting: str) -> np.ndarray[Any, Any]:
        """Item(s) as a C-contiguous array of the ring's dtype (see _convert)."""
        return _convert.coerce(item, self._geo.dtype, self._geo.shape, batch=batch, casting=casting)

    # -- roles and liveness ----------------------------------------------------------
    def _broken_pipe(self) -> NoReturn:
        raise BrokenPipeError("every consumer of this ring has closed or died")

    # -- hooks of Channel -------------------------------------------------------------
    def _registered(self, role: int) -> None:
        if self._sem is not None:
            # The core's put/get fast path (roles set next) takes the
            # semaphore flavour's permits and side locks under this identity.
            self._sem_identity(identity())

    def _settle_views(self) -> None:
        if self._geo.multi and self._views & PRODUCER:
            self._count(L.HOLES_OFF)  # the open reserve()'s slot becomes a hole
        super()._settle_views()
        for role in self._sem_held:
            self._side_unlock(role)  # the semaphore flavour's block held its side lock
        self._sem_held = frozenset()

    def _drop_views(self) -> None:
        self._items = self._items_ro = None

    def _close_extras(self) -> None:
        if self._sem is not None:
            while self._sem.busy:  # another thread is waiting on a semaphore: it wakes within 0.1 s
                time.sleep(0.0005)
            self._sem.close()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._sem_held = frozenset()  # the parent's blocks, and their locks, are the parent's
        self._permits = {PRODUCER: False, CONSUMER: False}
        if self._sem is not None:
            self._sem.busy = 0

    # -- producing ----------------------------------------------------------------------
    def _put_slow(self, item: Any, block: bool, timeout: float | None, casting: str = "safe") -> None:
        self._check_open()
        arr = self._coerce(item, False, casting)
        self._become(PRODUCER)
        deadline = _deadline(timeout)
        while True:
            if self._peers_gone(CONSUMER):
                self._broken_pipe()
            if self._put_once(arr, block, deadline):
                return
            if self._unstick(PRODUCER):
                continue
            if not block or not self._sleep(self._await_room, deadline):
                raise queue.Full

    def put_many(self, items: Any, block: bool = True, timeout: float | None = None, *, casting: str = "safe") -> int:
        """Put ``items`` (an ``(n, *shape)`` array, or any iterable of items)
        in order; returns how many went in: all of them, unless the timeout
        expired part-way.  Raises ``queue.Full`` if none could go in."""
        self._check_open()
        deadline = _deadline(timeout)
        arr = self._coerce(items, True, casting)
        n = len(arr)
        if n == 0:
            return 0
        self._become(PRODUCER)
        done = 0
        while True:
            if self._peers_gone(CONSUMER):
                if done:
                    return done
                self._broken_pipe()
            done += self._put_many_once(arr, done, block, deadline)
            if done == n:
                return n
            if self._unstick(PRODUCER):
                continue
            if not block or not self._sleep(self._await_room, deadline):
                if done:
                    return done
                raise queue.Full

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[np.ndarray[Any, Any]]:
        """Write the next slot in place: ``with ring.reserve() as slot:``
        gives a writable view of it.

        The slot is published when the block exits normally and dropped if it
        raises.  The view must not be used after the block.  ``block=False``
        or an expired ``timeout`` raises ``queue.Full`` when the ring is full.
        For tiny items put() is cheaper: reserve/borrow pay for a context
        manager and a view per item.
        """
        _deadline(timeout)  # refuse a bad timeout before any fast path
        return _Reservation(self, block, timeout)

    def _claim_slot(self, block: bool, timeout: float | None) -> np.ndarray[Any, Any]:
        """Wait for a free slot and open a view on it (reserve's __enter__)."""
        if not self._role & PRODUCER:  # first use, or closed
            self._check_open()
            self._become(PRODUCER)
        if self._peers_gone(CONSUMER):
            self._broken_pipe()
        deadline = _deadline(timeout)
        index = self._claim_once(block, deadline)  # on success, the view counts as open (the core marks it)
        if index < 0:
            while True:
                if self._peers_gone(CONSUMER):
                    self._broken_pipe()
                index = self._claim_once(block, deadline)
                if index >= 0:
                    break
                if self._unstick(PRODUCER):
                    continue
                if not block or not self._sleep(self._await_room, deadline):
                    raise queue.Full
        assert self._items is not None
        slot: np.ndarray[Any, Any] = self._items[index, ...]  # [..., ] keeps 0-d slots views
        return slot

    # -- consuming ----------------------------------------------------------------------
    def _get_slow(self, block: bool, timeout: float | None) -> np.ndarray[Any, Any]:
        self._check_open()
        self._become(CONSUMER)
        deadline = _deadline(timeout)
        while True:
            item = self._get_once(block, deadline)
            if item is not None:
                return item
            self._raise_if_eof()
            if self._unstick(CONSUMER):
                continue
            if not block or not self._sleep(self._await_items, deadline):
                raise queue.Empty

    def _raise_if_eof(self) -> None:
        """EOFError if every producer is gone and nothing is left.

        A producer publishes its last item before it unregisters, so once we
        see it gone, a second look at the indices sees everything it sent.
        In a multi-producer ring, claims that dead producers left unpublished
        become holes first (skipped by the next get).
        """
        if self._peers_gone(PRODUCER):
            self._unstick(CONSUMER, urgent=True)
            head, tail = self._indices()
            if head == tail:
                raise EOFError("every producer of this ring has closed or died, and it is drained")

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> np.ndarray[Any, Any]:
        """Remove 1..max_items items (as many as are ready) and return a copy,
        shape ``(k, *shape)``."""
        self._check_open()
        max_items = _positive_int(max_items, "max_items")
        self._become(CONSUMER)
        deadline = _deadline(timeout)
        while True:
            items = self._get_many_once(max_items, block, deadline)
            if items is not None:
                return items
            self._raise_if_eof()
            if self._unstick(CONSUMER):
                continue
            if not block or not self._sleep(self._await_items, deadline):
                raise queue.Empty

    def borrow(
        self, block: bool = True, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[np.ndarray[Any, Any]]:
        """Read the oldest item in place: ``with ring.borrow() as item:`` gives
        a read-only view, consumed when the block exits (normally or not).
        The view must not be used after the block: the producer may
        overwrite the slot.  ``block=False`` or an expired ``timeout`` raises
        ``queue.Empty``; EOFError as for get()."""
        _deadline(timeout)
        return _Loan(self, 1, block, timeout, single=True)

    def borrow_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[np.ndarray[Any, Any]]:
        """Like borrow, for up to ``max_items`` oldest items as one contiguous
        read-only ``(k, *shape)`` view; k stops where the ring wraps."""
        _deadline(timeout)
        return _Loan(self, _positive_int(max_items, "max_items"), block, timeout, single=False)

    def __iter__(self) -> Iterator[np.ndarray[Any, Any]]:
        """``for item in ring:`` yields copies until EOFError, then stops."""
        while True:
            try:
                yield self.get()
            except EOFError:
                return

    def _lend(self, max_items: int, block: bool, timeout: float | None) -> tuple[int, int]:
        """Wait for ready items; (first slot, count) of a run that does not
        wrap (borrow's __enter__)."""
        if not self._role & CONSUMER:  # first use, or closed
            self._check_open()
            self._become(CONSUMER)
        deadline = _deadline(timeout)
        index, count = self._peek_once(max_items, block, deadline)  # when count > 0, the core marks the view open
        if not count:
            while True:
                index, count = self._peek_once(max_items, block, deadline)
                if count:
                    break
                self._raise_if_eof()
                if self._unstick(CONSUMER):
                    continue
                if not block or not self._sleep(self._await_items, deadline):
                    raise queue.Empty
        return index, count

    # -- one step of each operation: the core's call, guarded in the semaphore flavour ----
    # The lock-free flavour calls the core directly.  The semaphore flavour
    # (see _semaphore.py) takes a permit if one is free, takes its side's
    # lock if the side has several endpoints, makes the same core call (the
    # indices decide, the permit is only a hint), then settles the permits.
    def _put_once(self, arr: np.ndarray[Any, Any], block: bool, deadline: float | None) -> bool:
        if self._sem is None:
            return self._try_put(arr)
        return self._guarded(PRODUCER, lambda: self._try_put(arr), int, block, deadline)

    def _put_many_once(self, arr: np.ndarray[Any, Any], done: int, block: bool, deadline: float | None) -> int:
        if self._sem is None:
            return self._try_put_many(arr, done)
        return self._guarded(PRODUCER, lambda: self._try_put_many(arr, done), int, block, deadline)

    def _get_once(self, block: bool, deadline: float | None) -> np.ndarray[Any, Any] | None:
        if self._sem is None:
            return self._try_get()
        return self._guarded(CONSUMER, self._try_get, _count_one, block, deadline)

    def _get_many_once(self, max_items: int, block: bool, deadline: float | None) -> np.ndarray[Any, Any] | None:
        if self._sem is None:
            return self._try_get_many(max_items)
        return self._guarded(CONSUMER, lambda: self._try_get_many(max_items), _count_batch, block, deadline)

    def _claim_once(self, block: bool, deadline: float | None) -> int:
        """The next free slot's index, or -1 (reserve); in the semaphore
        flavour the side lock stays held until the block ends."""
        if self._sem is None:
            return self._write_claim()
        index: int = self._guarded(PRODUCER, self._write_claim, lambda i: -1 if i < 0 else 0, block, deadline, True)
        return index

    def _peek_once(self, max_items: int, block: bool, deadline: float | None) -> tuple[int, int]:
        """(first slot, count) of ready items (borrow); as _claim_once."""
        if self._sem is None:
            return self._read_peek(max_items)
        got: tuple[int, int] = self._guarded(
            CONSUMER, lambda: self._read_peek(max_items), lambda r: -1 if r[1] == 0 else 0, block, deadline, True
        )
        return got

    def _guarded(
        self,
        role: int,
        op: Callable[[], T],
        moved: Callable[[T], int],
        block: bool,
        deadline: float | None,
        view: bool = False,
    ) -> T:
        """Run the core call ``op`` of ``role`` the semaphore flavour's way.

        ``moved(result)`` says how many items it moved (0: none, and the
        permit we hold is stale).  For a ``view`` (reserve/borrow) it says
        0 when the view opened, which keeps the side lock until
        ``_view_done``, and -1 when there was nothing to open."""
        sem = self._sem
        assert sem is not None
        mine = sem.free if role == PRODUCER else sem.full
        if not self._permits[role]:
            self._permits[role] = sem.take(mine, 0)
        if not self._side_lock(role, block, deadline):
            raise queue.Full if role == PRODUCER else queue.Empty
        locked = True
        try:
            if _BROKEN_UNLOCK_EARLY and role == PRODUCER:
                self._side_unlock(role)
                locked = False
            out = op()
        except BaseException:
            if locked:
                self._side_unlock(role)
            raise
        n = moved(out)
        if view and n == 0:
            self._sem_held = self._sem_held | {role}  # settled when the block ends
            return out
        if locked:
            self._side_unlock(role)
        self._settle(role, max(n, 0))
        return out

    def _settle(self, role: int, n: int) -> None:
        """``n`` items moved by ``role``: the permit we hold and n - 1 more
        are spent, n go to the other side.  With n == 0 the permit we hold
        was stale (the indices showed no room, or no item): dropped."""
        sem = self._sem
        assert sem is not None
        mine, theirs = (sem.free, sem.full) if role == PRODUCER else (sem.full, sem.free)
        spent = int(self._permits[role])
        while spent < n and sem.take(mine, 0):
            spent += 1
        self._permits[role] = False
        sem.give(theirs, n)

    def _view_done(self, role: int, n: int) -> None:
        """A reserve() (n = 1 published, 0 dropped) or borrow() (n items
        taken) block of the semaphore flavour ended: give the lock back and
        settle (a dropped reservation's permit goes back)."""
        sem = self._sem
        if sem is None or role not in self._sem_held:
            return  # lock-free, or close() settled it
        self._sem_held = self._sem_held - {role}
        self._side_unlock(role)
        if n:
            self._settle(role, n)
        elif self._permits[role]:
            self._permits[role] = False
            sem.give(sem.free if role == PRODUCER else sem.full, 1)

    def _side_lock(self, role: int, block: bool, deadline: float | None) -> bool:
        """Take ``role``'s side lock if that side has several endpoints;
        False once the deadline has passed.  A non-blocking call still
        waits for a holder that is only copying one item."""
        assert self._sem is not None
        if not (self.multi_producer if role == PRODUCER else self.multi_consumer):
            return True
        if not block:
            deadline = time.monotonic() + _semaphore.LIVENESS_INTERVAL_S
        return self._sem.lock(role, deadline)

    def _side_unlock(self, role: int) -> None:
        assert self._sem is not None
        if self.multi_producer if role == PRODUCER else self.multi_consumer:
            self._sem.unlock(role)

    def _await_room(self, timeout: float) -> None:
        """Sleep until a producer can probably go on (see _sleep)."""
        if self._sem is None:
            self._wait_writable(timeout)
        elif not self._permits[PRODUCER]:
            self._permits[PRODUCER] = self._sem.take(self._sem.free, timeout)

    def _await_items(self, timeout: float) -> None:
        """Sleep until a consumer can probably go on (see _sleep)."""
        if self._sem is None:
            self._wait_readable(timeout)
        elif not self._permits[CONSUMER]:
            self._permits[CONSUMER] = self._sem.take(self._sem.full, timeout)

    # -- views ----------------------------------------------------------------------------
    # A reserve (PRODUCER) or borrow (CONSUMER) view is marked open by the
    # core when it claims the slot: until it closes, the core refuses other
    # calls of that role on this handle (they would race the view).
    def _close_view(self, role: int) -> None:
        self._views = self._views & ~role

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by name.  Until the copy is unpickled, it counts as a
        pending handle of this process, so the name outlives our close()."""
        self._check_open()
        self._refuse_anon_pickle("Ring")
        return (_attach, (self.name, self.backend, self._table.send()))


class _Reservation:
    """``with ring.reserve() as slot``: claim on enter, publish on a normal
    exit, drop on an exception.  A class, not a generator: this is a hot path."""

    __slots__ = ("_block", "_ring", "_timeout")

    def __init__(self, ring: Ring, block: bool, timeout: float | None) -> None:
        self._ring, self._block, self._timeout = ring, block, timeout

    def __enter__(self) -> np.ndarray[Any, Any]:
        return self._ring._claim_slot(self._block, self._timeout)

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        ring = self._ring
        if not ring._views & PRODUCER:
            return  # a fork child leaving its parent's block: the slot is the parent's
        try:
            if not ring._closed:
                if exc_type is None:
                    ring._write_publish()
                else:
                    ring._write_abort()  # a multi-producer ring's claimed slot becomes a hole
                    if ring._geo.multi:
                        ring._count(L.HOLES_OFF)
        finally:
            ring._close_view(PRODUCER)
            ring._view_done(PRODUCER, 1 if exc_type is None else 0)


class _Loan:
    """``with ring.borrow() as item``: view the oldest items on enter,
    release them on exit, whatever happened inside."""

    __slots__ = ("_block", "_count", "_max", "_ring", "_single", "_timeout")

    def __init__(self, ring: Ring, max_items: int, block: bool, timeout: float | None, single: bool) -> None:
        self._ring, self._max, self._block, self._timeout, self._single = ring, max_items, block, timeout, single
        self._count = 0

    def __enter__(self) -> np.ndarray[Any, Any]:
        ring = self._ring
        index, self._count = ring._lend(self._max, self._block, self._timeout)
        assert ring._items_ro is not None
        view: np.ndarray[Any, Any] = (
            ring._items_ro[index, ...] if self._single else ring._items_ro[index : index + self._count]
        )
        return view

    def __exit__(self, *exc: object) -> None:
        ring = self._ring
        if not ring._views & CONSUMER:
            return  # a fork child leaving its parent's block: the items are the parent's
        try:
            if not ring._closed:
                ring._read_release(self._count)
        finally:
            ring._close_view(CONSUMER)
            ring._view_done(CONSUMER, self._count)


def _count_one(item: np.ndarray[Any, Any] | None) -> int:
    """Items a get moved (see Ring._guarded)."""
    return 0 if item is None else 1


def _count_batch(items: np.ndarray[Any, Any] | None) -> int:
    """Items a get_many moved (see Ring._guarded)."""
    return 0 if items is None else len(items)


def _check_supported(geo: L.Geometry) -> None:
    if geo.sync not in (L.SYNC_LOCKFREE, L.SYNC_SEMAPHORE):
        raise NotImplementedError(f"this shmring does not know sync flavour {geo.sync}")


def _geometry(
    capacity: Any, shape: Any, dtype: Any, multi_producer: bool, multi_consumer: bool, sync: str
) -> L.Geometry:
    capacity = _positive_int(capacity, "capacity")
    shape = L.check_shape(shape)
    dt = L.check_dtype(dtype)
    if sync not in SYNCS:
        raise ValueError(f"sync must be one of {SYNCS}, not {sync!r}")
    geo = L.Geometry(
        kind=L.KIND_RING,
        capacity=capacity,
        shape=shape,
        dtype=dt,
        flags=(L.FLAG_MULTI_PRODUCER if multi_producer else 0) | (L.FLAG_MULTI_CONSUMER if multi_consumer else 0),
        sync=L.SYNC_SEMAPHORE if sync == "semaphore" else L.SYNC_LOCKFREE,
    )
    if geo.slot_size == 0:
        raise ValueError(f"items of shape {shape} and dtype {dt} have no bytes")
    if capacity > (1 << 48) or geo.total_size > (1 << 46):
        raise ValueError(f"a ring of {capacity} slots of {geo.slot_size} bytes is too large")
    _check_supported(geo)
    return geo
