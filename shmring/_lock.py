"""A cross-process lock that survives its holder's death.

The lock is a 64-bit word of the header: 0 when free, else the holder's
identity (pid and start time, as in an endpoint word), taken with a CAS.
Waiters sleep in a *park*: a futex (the lock-free flavour) or a posix_ipc
semaphore (the semaphore flavour).  A waiter that has slept
``LIVENESS_INTERVAL_S`` without being woken looks at the holder; if it is
dead, it takes the lock over with a CAS on the dead identity (one winner)
and knows it: ``holder_died``.  Uncontended acquire and release are a CAS
and a store (plus, with the futex park, one fetch-add): no system call.

Used by Array (``Array.lock``, ``Array.write``) and by the semaphore
flavour of Ring (the side locks of several producers or consumers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import _core
from . import _layout as L
from ._endpoints import own_identity, word_alive

LIVENESS_INTERVAL_S = 0.1  # longest sleep before a waiter looks at the holder

_identity = 0  # this process's identity word, cached (a fork child computes its own)


def identity() -> int:
    """This process's identity word (pid and start time), as lock words hold it."""
    global _identity
    if not _identity:
        _identity = own_identity()
    return _identity


def _forget_identity() -> None:
    global _identity
    _identity = 0


os.register_at_fork(after_in_child=_forget_identity)


class Park(Protocol):
    """Where the waiters of one lock sleep."""

    def ticket(self) -> int:
        """Taken before the CAS that failed: a wake after it is not lost."""
        ...

    def wait(self, ticket: int, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; False if nothing woke us."""
        ...

    def wake(self) -> None:
        """Wake one sleeper (the lock was just released)."""
        ...


class FutexPark:
    """A 32-bit wake word bumped on every release, and a sleeper count that
    spares the release a system call when no one sleeps."""

    def __init__(self, buf: Any, word_off: int, waiters_off: int) -> None:
        self._buf, self._word, self._waiters = buf, word_off, waiters_off

    def release(self, owner_off: int) -> None:
        """Free the lock at ``owner_off`` and wake, in one core call."""
        _core.lock_release(self._buf, owner_off, self._word, self._waiters)

    def ticket(self) -> int:
        return _core.load32(self._buf, self._word)

    def wait(self, ticket: int, timeout: float) -> bool:
        # SYNC POINT (seq_cst): announce the sleeper before sleeping; pairs
        # with the release's bump of the word and load of the count: either
        # it sees us and wakes us, or we see its bump (the futex compares).
        _core.fetch_add32(self._buf, self._waiters, 1)
        try:
            return _core.futex_wait(self._buf, self._word, ticket, timeout)
        finally:
            _core.fetch_add32(self._buf, self._waiters, -1)

    def wake(self) -> None:
        _core.fetch_add32(self._buf, self._word, 1)
        if _core.load32(self._buf, self._waiters):
            _core.futex_wake(self._buf, self._word, 1)


class SemaphorePark:
    """A posix_ipc semaphore whose count is at most about one: a release
    posts only if no wake-up is pending (a spare one costs a waiter one more
    CAS, never a missed wake-up: semaphores count)."""

    def __init__(self, sem: Any, take: Callable[[Any, float], bool]) -> None:
        self._sem, self._take = sem, take

    def ticket(self) -> int:
        return 0

    def wait(self, ticket: int, timeout: float) -> bool:
        return self._take(self._sem, timeout)

    def wake(self) -> None:
        if self._sem.value == 0:
            self._sem.release()


class Lock:
    """The lock whose word is at ``owner_off`` of ``buf``."""

    def __init__(self, buf: Any, owner_off: int, park: Park, on_takeover: Callable[[], None] | None = None) -> None:
        self._buf, self._off, self._park, self._on_takeover = buf, owner_off, park, on_takeover
        self._futex = park if isinstance(park, FutexPark) else None
        self.holder_died = False  # the last acquire took the lock over from a dead holder

    def acquire(self, deadline: float | None) -> bool:
        """Take the lock; False once ``deadline`` (monotonic) has passed."""
        me = identity()
        # SYNC POINT (seq_cst CAS): the uncontended path, as below.
        if _core.cas64(self._buf, self._off, 0, me) == 0:
            self.holder_died = False
            return True
        while True:
            ticket = self._park.ticket()
            # SYNC POINT (seq_cst CAS): acquires what the previous holder
            # released (its store of 0 in release()).
            seen = _core.cas64(self._buf, self._off, 0, me)
            if seen == 0:
                self.holder_died = False
                return True
            wait = LIVENESS_INTERVAL_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return False
            if not self._park.wait(ticket, wait) and not word_alive(seen):
                # Slept a whole interval behind a dead holder: take over.
                if _core.cas64(self._buf, self._off, seen, me) == seen:
                    self.holder_died = True
                    _core.fetch_add64(self._buf, L.TAKEOVERS_OFF, 1)  # the region's statistics
                    if self._on_takeover is not None:
                        self._on_takeover()
                    return True

    def release(self) -> None:
        if self._futex is not None:
            self._futex.release(self._off)
            return
        # SYNC POINT (release): the critical section's stores come first.
        _core.store64(self._buf, self._off, 0)
        self._park.wake()

    def holder(self) -> int:
        """The holder's identity word (0: free)."""
        return _core.load64(self._buf, self._off)
