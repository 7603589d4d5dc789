"""The semaphore flavour (``sync="semaphore"``): the classic bounded buffer
of the semaphore notes -- a free-slot count, a filled-slot count, and a
lock for each side that has several endpoints -- over posix_ipc named
semaphores, made robust.

posix_ipc semaphores are not robust: a process SIGKILLed while holding one,
or between taking a permit and giving the matching one back, leaves it
taken for good.  So here the semaphores are where processes *sleep*, and
the ring's indices are the truth:

* **The counts are hints.**  A producer takes a free-slot permit (waiting at
  most ``LIVENESS_INTERVAL_S`` at a time), then, under its side's lock, asks
  the indices whether a slot is free; the core's single-producer protocol
  does the copy and the release store of ``head``.  A permit lost with a
  dead process costs one timed wait, never a slot: the indices show the
  room.  A permit with no room behind it (a stale one) is dropped.  Either
  step brings the count back to the indices, so the counts heal
  themselves; a lock taken over from a dead holder also resets them from
  the indices at once.
* **The locks are words** (``_lock.Lock``): the holder's identity (pid and
  start time) is CASed into the header; the lock's semaphore is only its
  waiters' parking place.  A waiter that has parked for
  ``LIVENESS_INTERVAL_S`` looks at the holder, and if it is dead takes the
  lock over with a CAS (one winner).  The critical section is one call of the core (copy, then the release
  store of the index), so a holder dying anywhere inside leaves the ring as
  it was, or with its item published: there is nothing to undo.

The semaphores are named after a random id kept in the header
(``/dev/shm/sem.shmring-<id>-free`` ...).  They go with the region's name
(the last handle out, ``unlink()``, ``shmring rm``/``gc``); an anon ring's
are unlinked at once (fork children inherit them open); a file ring's are
unlinked by its last handle out and made anew, from the indices, by the
next attach.  See docs/design.md, "The semaphore flavour".
"""

from __future__ import annotations

import os
import secrets
import struct
from typing import Any

import posix_ipc

from . import _core
from . import _layout as L
from ._endpoints import CONSUMER, PRODUCER
from ._lock import LIVENESS_INTERVAL_S, Lock, SemaphorePark

__all__ = [
    "ALL_PARTS",
    "LIVENESS_INTERVAL_S",
    "Semaphores",
    "id_in_header",
    "names",
    "new_id",
    "orphans",
    "unlink",
    "unlink_for_header",
]

_RING_PARTS = ("free", "full", "plock", "clock")
ALL_PARTS = (*_RING_PARTS, "lock")  # an Array's lock parks on "lock"
_LOCK_OFF = {PRODUCER: L.PRODUCER_LOCK_OFF, CONSUMER: L.CONSUMER_LOCK_OFF}
_RESYNC_MAX = 64  # permits one repair adds or removes: lost ones are few (one per dead process)
_SEM_MAX = 0x7FFFFFFF  # SEM_VALUE_MAX on Linux


def new_id() -> int:
    """A fresh semaphore id for a new ring (never 0, which means none)."""
    return secrets.randbits(63) | 1


def names(sem_id: int, parts: tuple[str, ...] = _RING_PARTS) -> list[str]:
    """The posix_ipc names of a ring's semaphores: free, full, and the two
    side locks' parking places (``parts``: others, e.g. ``("lock",)``)."""
    return [f"/shmring-{sem_id:016x}-{part}" for part in parts]


def unlink(sem_id: int) -> None:
    """Remove the semaphores of a ring or an Array (those that exist)."""
    for name in names(sem_id, ALL_PARTS):
        try:
            posix_ipc.unlink_semaphore(name)
        except posix_ipc.ExistentialError:
            pass


def mapped_inodes(shm_dir: str = "/dev/shm", exclude_pid: int = 0) -> set[int]:
    """Inodes of the files under ``shm_dir`` that live processes (but
    ``exclude_pid``) have mapped.  By inode, not by path: glibc's sem_open
    maps a temporary file and only then links it under its name, so the
    creator's mapping shows the temporary name."""
    inodes: set[int] = set()
    prefix = shm_dir.rstrip("/") + "/"
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == exclude_pid:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    fields = line.split(None, 5)
                    if len(fields) == 6 and fields[5].startswith(prefix):
                        inodes.add(int(fields[4]))
        except (OSError, ValueError):
            continue
    return inodes


def orphans(shm_dir: str = "/dev/shm") -> list[str]:
    """The shmring semaphores that no live process has open.

    Removing one is always safe: its ring, if it still exists, makes it anew
    from its indices at the next attach (the counts are only hints).  These
    are what a ring leaves when every process using it was killed and its
    name was then removed without its header (say, by ``rm /dev/shm/...``)."""
    try:
        entries = [e for e in os.listdir(shm_dir) if e.startswith("sem.shmring-")]
    except FileNotFoundError:
        return []
    if not entries:
        return []
    mapped = mapped_inodes(shm_dir)
    out = []
    for entry in entries:
        try:
            if os.stat(os.path.join(shm_dir, entry)).st_ino not in mapped:
                out.append("/" + entry[len("sem.") :])
        except FileNotFoundError:
            continue
    return sorted(out)


def id_in_header(buf: Any) -> int:
    """The semaphore id a header names: 0 unless it is a valid
    semaphore-flavour header."""
    if len(buf) < L.IMMUTABLE_END or bytes(buf[: len(L.MAGIC)]) != L.MAGIC:
        return 0
    (stored,) = struct.unpack_from("<Q", buf, L.CHECKSUM_OFF)
    (flags,) = struct.unpack_from("<I", buf, L.FLAGS_OFF)
    if stored != L.checksum(buf) or flags >> 8 != L.SYNC_SEMAPHORE:
        return 0
    return L.header_info(buf)["sem_id"]


def unlink_for_header(buf: Any) -> None:
    """Remove the semaphores a mapped header names, if it is a valid
    semaphore-flavour header (anything else is left alone)."""
    sem_id = id_in_header(buf)
    if sem_id:
        unlink(sem_id)


class Semaphores:
    """The open semaphores of one ring handle, and its side locks."""

    def __init__(self, buf: Any, sem_id: int, capacity: int, create: bool, mode: int = 0o600) -> None:
        self._buf = buf
        self.sem_id = sem_id
        self.capacity = capacity
        self.limit = min(capacity, _SEM_MAX)
        self.holder_died = False  # a lock of ours was taken over from a dead holder
        used = self._used()
        flags = posix_ipc.O_CREX if create else posix_ipc.O_CREAT
        opened: list[Any] = []
        try:
            for name, initial in zip(names(sem_id), (self.limit - min(used, self.limit), used, 0, 0), strict=True):
                opened.append(posix_ipc.Semaphore(name, flags, mode, min(initial, _SEM_MAX)))
        except BaseException:
            for sem in opened:
                sem.close()
            if create:
                unlink(sem_id)
            raise
        self.free, self.full, plock, clock = opened
        self._parks = (plock, clock)
        self._locks = {
            role: Lock(buf, _LOCK_OFF[role], SemaphorePark(park, self.take), on_takeover=self.resync)
            for role, park in ((PRODUCER, plock), (CONSUMER, clock))
        }
        self.busy = 0  # calls of this process on the semaphores under way (close() waits for them)

    # -- permits -----------------------------------------------------------------------
    def take(self, sem: Any, timeout: float) -> bool:
        """One permit, waiting up to ``timeout`` seconds (0: do not wait)."""
        self.busy += 1
        try:
            sem.acquire(timeout)
            return True
        except posix_ipc.BusyError:
            return False
        except posix_ipc.SignalError:
            return False  # interrupted: the caller's loop comes round, and Python runs the handler
        finally:
            self.busy -= 1

    def give(self, sem: Any, n: int) -> None:
        """``n`` permits, never raising the count past the capacity (a
        surplus would only be dropped again)."""
        for _ in range(n):
            if sem.value >= self.limit:
                return
            sem.release()

    def _used(self) -> int:
        """Items the indices say are in the ring (clamped: a hint)."""
        tail = _core.load64(self._buf, L.TAIL_OFF)
        head = _core.load64(self._buf, L.HEAD_OFF)
        return max(0, min(head - tail, self.capacity))

    # -- counts ------------------------------------------------------------------------
    def resync(self) -> None:
        """Move the counts to what the indices say (after a dead holder)."""
        used = self._used()
        for sem, target in ((self.free, self.limit - min(used, self.limit)), (self.full, min(used, self.limit))):
            diff = target - sem.value
            if diff > 0:
                self.give(sem, min(diff, _RESYNC_MAX))
            for _ in range(min(-diff, _RESYNC_MAX)):
                if not self.take(sem, 0):
                    break

    # -- side locks --------------------------------------------------------------------
    def lock(self, role: int, deadline: float | None) -> bool:
        """Take ``role``'s lock; False once ``deadline`` has passed.  A dead
        holder's lock is taken over (``holder_died`` then says so)."""
        lock = self._locks[role]
        if not lock.acquire(deadline):
            return False
        self.holder_died = self.holder_died or lock.holder_died
        return True

    def unlock(self, role: int) -> None:
        """Give ``role``'s lock back and wake one parked waiter."""
        self._locks[role].release()

    def close(self) -> None:
        """Close our handles on the semaphores (the caller has made sure no
        other thread of ours is inside a call: ``busy`` is 0)."""
        for sem in (self.free, self.full, *self._parks):
            sem.close()
