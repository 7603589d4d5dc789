"""What a Ring and a Queue share: a C ring object bound to a region, the
endpoint table that says who produces and consumes, waiting in bounded
sleeps that re-check the peers, the repair of dead claimers' claims, and
closing.  Each structure adds its own data path on top (ring.py, queue.py).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from . import _core, _lifetime, _naming, _semaphore, _stats
from . import _layout as L
from ._endpoints import CONSUMER, HOLDER, PRODUCER, Endpoint, EndpointTable, process_start_time
from ._handle import SharedHandle
from ._region import Region
from ._stats import Statistics

__all__ = ["LIVENESS_INTERVAL_S", "Channel", "deadline", "init_sequence_words", "positive_int"]

# Longest single sleep of a blocked call: how often it re-checks that its
# peers are alive (DESIGN: a dead peer is noticed within about a second).
LIVENESS_INTERVAL_S = 0.1


def deadline(timeout: float | None) -> float | None:
    """The monotonic time a call with ``timeout`` gives up (None: never)."""
    if timeout is None:
        return None
    if not timeout >= 0:  # also refuses NaN
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + timeout


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, not {value}")
    return int(value)


def init_sequence_words(mapping: Any, geo: L.Geometry) -> None:
    """Every slot free for lap 0 (seq[i] = 2i, see _mpmc.h).  Plain stores suffice: the
    region is not published yet, and publish_header's release store of the
    magic orders them before any attacher's acquire load of it."""
    seq = np.frombuffer(mapping, np.uint64, geo.capacity, geo.seq_offset)
    seq[:] = np.arange(0, 2 * geo.capacity, 2, dtype=np.uint64)
    del seq  # no view may outlive the region's close


class Channel(SharedHandle, _core.SpscRing):
    """Base of Ring and Queue (not public): roles, liveness, repair, close."""

    _table: EndpointTable
    _endpoint_slots: dict[int, int]  # role -> endpoint table slot of this handle
    _register_lock: threading.Lock
    _holder_slot: int | None = None  # our HOLDER entry (None in a fork child's inherited copy)
    _next_scan: float = 0.0
    _stuck_at: tuple[int, int] | None = None  # (role, position) a claim point was first seen stuck at
    _stuck_since: float = 0.0

    @property
    def multi_producer(self) -> bool:
        """True if several producers may put at once."""
        return self._geo.multi_producer

    @property
    def multi_consumer(self) -> bool:
        """True if several consumers may get at once."""
        return self._geo.multi_consumer

    # -- creating and opening -----------------------------------------------------------
    def _create(
        self, name: str | None, geo: L.Geometry, backend: str, mode: int, replace_abandoned: bool, maxsize: int = 0
    ) -> None:
        """Make the region of a new structure and open this handle on it;
        nothing is left behind if any step fails."""
        region = _naming.create(name, geo.total_size, backend, mode, geo.kind, replace_abandoned)
        sem_id = _semaphore.new_id() if geo.sync == L.SYNC_SEMAPHORE else 0
        sems = None
        try:
            assert region.mapping is not None
            # Our holder entry exists before the header is published, so no
            # one can judge a region being born abandoned.
            holder = EndpointTable(region.mapping).register(HOLDER)
            if geo.multi:
                init_sequence_words(region.mapping, geo)
            if sem_id:
                sems = self._make_semaphores(region.mapping, sem_id, geo, True, mode)
            pid = os.getpid()
            region.publish_header(L.encode_header(geo, time.time_ns(), pid, process_start_time(pid), sem_id, maxsize))
            self._open(region, geo, holder, sems)
            if sem_id and region.name is None:
                _semaphore.unlink(sem_id)  # anon: fork children inherit them open; no name to leave behind
        except BaseException:
            if sems is not None:
                sems.close()
                _semaphore.unlink(sem_id)
            region.close()
            region.unlink()
            raise

    def _open(self, region: Region, geo: L.Geometry, holder: int, sems: Any = None) -> None:
        assert region.mapping is not None
        self._table = EndpointTable(region.mapping)
        try:
            if geo.sync == L.SYNC_SEMAPHORE and sems is None:
                sem_id = L.header_info(region.mapping)["sem_id"]
                sems = self._make_semaphores(region.mapping, sem_id, geo, False, 0o600)
            self._bind(
                region.mapping,
                geo.capacity,
                geo.slot_size,
                geo.data_offset,
                geo.dtype,
                geo.shape,
                L.RING_CORE_OFFSETS,
                geo.seq_offset,
            )
            self._opened(region, geo, sems)
        except BaseException:
            if sems is not None:
                sems.close()
            self._table.unregister(holder)
            raise
        self._region = region
        self._geo = geo
        self._holder_slot = holder
        self._endpoint_slots = {}
        self._register_lock = threading.Lock()
        self._closed = False
        _lifetime.track(self)

    # -- hooks of the structures ------------------------------------------------------
    def _make_semaphores(self, mapping: Any, sem_id: int, geo: L.Geometry, create: bool, mode: int) -> Any:
        """sync="semaphore": open (create) the structure's semaphores; the
        object has close()."""
        raise NotImplementedError

    def _opened(self, region: Region, geo: L.Geometry, sems: Any) -> None:
        """The core object is bound to the region: the structure's own
        binding (may raise: the caller undoes the rest)."""

    def _closed_error(self) -> Exception:
        return ValueError("ring is closed")

    def _registered(self, role: int) -> None:
        """Called when this handle has just registered in ``role``."""

    def _settle_views(self) -> None:
        """close(): an open reserve()/borrow() block's claim is settled while
        our entries still announce it (a hole; a taken run)."""
        self._abandon_views()

    def _drop_views(self) -> None:
        """close(): our own views must not pin the mapping."""

    def _close_extras(self) -> None:
        """close(): after the mapping is released (semaphores)."""

    # -- roles and liveness --------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _become(self, role: int) -> None:
        """Register this handle as producer or consumer on first use."""
        if self._views & role:
            raise RuntimeError(
                f"a {'reserve' if role == PRODUCER else 'borrow'}() block is open on this handle: finish it first"
            )
        with self._register_lock:  # two threads' first calls on one handle register it once
            if role in self._endpoint_slots:
                self._role = self._role | role
                return
            exclusive = not (self.multi_producer if role == PRODUCER else self.multi_consumer)
            slot = self._table.register(role, exclusive)
            self._endpoint_slots[role] = slot
            if self._geo.multi:
                self._set_claim(role, self._table.claim_offset(slot))
            self._registered(role)
            self._role = self._role | role
        self._wake_all()

    def _peers_gone(self, role: int) -> bool:
        """True once the other side was ever there and is now all gone.

        The live-count hint answers the common case for free; the table scan
        (which reaps dead processes) runs when the hint says zero, or every
        LIVENESS_INTERVAL_S while we wait.
        """
        if not self._table.ever(role):
            return False
        now = time.monotonic()
        if self._table.live_hint(role) != 0 and now < self._next_scan:
            return False
        self._next_scan = now + LIVENESS_INTERVAL_S
        return self._table.live(role) == 0

    def _unstick(self, role: int, urgent: bool = False) -> bool:
        """Repair the claims of dead processes that hold up ``role``'s claim
        point (multi rings); True if any was repaired.

        A claim point stuck at the same position for LIVENESS_INTERVAL_S (or
        at once when ``urgent``: the other side is all gone) is checked
        against the claims that live processes announce; a position no live
        process announces was claimed by a dead one.  A dead producer's slot
        becomes a hole that consumers skip, a dead consumer's slot is freed
        (its item counts as taken).  See docs/design.md."""
        if not self._geo.multi:
            return False
        pos, n = self._stuck(role)
        if not n:
            self._stuck_at = None
            return False
        if not urgent:
            now = time.monotonic()
            if self._stuck_at != (role, pos):
                self._stuck_at, self._stuck_since = (role, pos), now
                return False
            if now - self._stuck_since < LIVENESS_INTERVAL_S:
                return False
        claims = self._table.live_claims(PRODUCER if role == CONSUMER else CONSUMER)
        repaired = 0
        for p in range(pos, pos + n):
            if any(start <= p < end for start, end in claims):
                break  # a live claimer: it will finish (and so in order after it)
            repaired += self._repair(role, p)
        self._stuck_at = None
        if repaired:
            self._count(L.ABANDONED_OFF, repaired)
            if role == CONSUMER and self._geo.kind == L.KIND_RING:
                self._count(L.HOLES_OFF, repaired)  # a dead producer's slots: holes that carry no item
        return bool(repaired)

    def _count(self, off: int, n: int = 1) -> None:
        """Bump one of the region's statistics words (see _stats.py)."""
        mapping = self._region.mapping if self._region is not None else None
        if mapping is not None:
            _core.fetch_add64(mapping, off, n)

    def _sleep(self, wait: Any, deadline: float | None) -> bool:
        """One bounded wait; False once the deadline has passed."""
        if deadline is None:
            wait(LIVENESS_INTERVAL_S)
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        wait(min(left, LIVENESS_INTERVAL_S))
        return True

    # -- lifetime -------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        """The attached producers and consumers, as the header records them."""
        self._check_open()
        return self._table.entries()

    def statistics(self) -> Statistics:
        """What went through this region since its creation, what is in it
        and who is attached: a snapshot shared by every handle (see
        ``shmring.Statistics``).  Reading it costs no put or get anything."""
        self._check_open()
        fill = self._q_count()[0] if self._geo.kind == L.KIND_QUEUE else 0  # a Queue's is a walk of its records
        assert self._region is not None and self._region.mapping is not None
        return _stats.collect(self._region.mapping, self._geo, fill)

    def close(self) -> None:
        """Leave as producer/consumer (peers see EOF/EPIPE at once) and unmap.

        The last handle out (open or pickled in flight, in any process)
        unlinks a shm region's name; a file region's file stays.  Safe to call
        twice.  Views from borrow()/reserve() keep the mapping alive until
        they are gone.
        """
        if self._closed or self._region is None:
            return
        self._closed = True
        self._role = 0  # the core's fast paths now divert to the slow path, which refuses
        self._refuse()  # and so does every step of a call blocked in another thread
        _lifetime.untrack(self)
        while self._busy:  # another thread's copy is running without the GIL: let it publish first
            time.sleep(0.0002)
        region = self._region
        try:
            self._settle_views()
            for slot in self._endpoint_slots.values():
                self._table.unregister(slot)
            self._endpoint_slots = {}
            self._role = 0
            self._wake_all()  # our own sleeping threads too: they find the handle closed
            if self._holder_slot is not None:
                self._table.unregister(self._holder_slot)
                self._holder_slot = None
                _naming.leave(region, self._table)
        finally:
            self._drop_views()
            self._release()
            self._close_extras()
            region.close()

    def _after_fork_in_child(self) -> None:
        """A fork child's copy holds nothing: the parent's entries, the
        parent's threads' copies, waits and views are not its own."""
        self._after_fork()
        self._endpoint_slots = {}
        self._register_lock = threading.Lock()  # a parent's thread may have held it at the fork
        self._holder_slot = None
        if self._region is not None:
            self._region.creator_pid = 0

    def __enter__(self) -> Any:
        return self
