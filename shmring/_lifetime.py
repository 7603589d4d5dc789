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
    _to_recheck.clear()
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
    # Negative priority: runs in multiprocessing's exit handler after it has
    # joined the children (in the main process, and in its children too).
    multiprocessing.util.Finalize(None, _recheck, exitpriority=-10)


# Names this process left to others who may die without closing, or to
# handles it pickled: looked at once more at exit, after multiprocessing has
# joined (or terminated) its children, and removed if no other live process
# holds them by then.
_to_recheck: dict[tuple[str, str], tuple[int, int]] = {}


def at_exit_remove_if_last(name: str, backend: str, ident: tuple[int, int]) -> None:
    _to_recheck[(name, backend)] = ident


def _recheck() -> None:
    from ._endpoints import EndpointTable
    from ._naming import remove_if_last
    from ._region import Region

    for (name, backend), ident in list(_to_recheck.items()):
        try:
            region = Region.attach(name, backend)
        except Exception:  # noqa: BLE001 - gone, replaced or unreadable: nothing of ours
            continue
        try:
            if region.ident == ident and region.mapping is not None:
                # Our children are joined or gone by now: a handle we pickled
                # that nobody has unpickled yet never will be.
                remove_if_last(region, EndpointTable(region.mapping), exiting=True)
        except Exception:  # noqa: BLE001 - exit must go on for the others
            pass
        finally:
            region.close()
    _to_recheck.clear()


atexit.register(_close_all)
_register_exit_finalizer()
multiprocessing.util.register_after_fork(_hook, _register_exit_finalizer)
os.register_at_fork(after_in_child=_after_fork)
