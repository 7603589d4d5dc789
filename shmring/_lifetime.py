"""Handles that must be closed at interpreter exit or reset after fork.

Every open structure handle registers here.  At exit each is closed (which
unregisters its endpoints, so peers see EOF/EPIPE at once, and unlinks the
regions this process created).  In a fork child each inherited handle forgets
the parent's registrations and ownership: the child becomes a producer or
consumer only by its own first put/get, and never unlinks the parent's
segments.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import weakref
from typing import Protocol


class Tracked(Protocol):
    def close(self) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_open: weakref.WeakSet[Tracked] = weakref.WeakSet()


def track(handle: Tracked) -> None:
    _open.add(handle)


def untrack(handle: Tracked) -> None:
    _open.discard(handle)


def _close_all() -> None:
    for handle in list(_open):
        try:
            handle.close()
        except Exception:  # noqa: BLE001 - exit must go on for the others
            pass


def _after_fork() -> None:
    for handle in list(_open):
        handle._after_fork_in_child()


class _Hook:
    """A weak-referenceable anchor for multiprocessing's after-fork registry."""


_hook = _Hook()


def _register_exit_finalizer(_: object = None) -> None:
    """multiprocessing children leave through os._exit(), skipping atexit;
    their bootstrap runs multiprocessing's finalizers instead.  It also clears
    that registry right after forking, then runs the after-fork callbacks:
    so register again from one of those."""
    multiprocessing.util.Finalize(None, _close_all, exitpriority=0)


atexit.register(_close_all)
_register_exit_finalizer()
multiprocessing.util.register_after_fork(_hook, _register_exit_finalizer)
os.register_at_fork(after_in_child=_after_fork)
