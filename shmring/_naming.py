"""Names of regions: creating one under a name that may be taken (saying
whether it is abandoned, replacing an abandoned one in one race-free
step), attaching without racing the last handle out, and removing the name
when the last handle leaves.

Every structure creates its region through :func:`create`.  A region is
abandoned when no process that holds, sends, produces into or consumes from
it is alive (its endpoint table names them all).  Replacing one is a claim
on the old region's remover word first, so of two restarters one goes on
and the other gets ``FileExistsError``; the winner then unlinks the old name
(only while it still names the old region) and creates the new one with
``O_EXCL``, which a third process cannot slip under either.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from . import _layout as L
from . import _lifetime, _semaphore
from ._endpoints import HOLDER, EndpointTable
from ._region import Region
from .errors import LayoutError

# A segment without a published header and without a single endpoint entry
# is taken for abandoned once it is this old (its creator died before it
# registered; creating takes milliseconds, or seconds for a huge segment).
HALF_CREATED_GRACE_S = 10.0


def create(name: str | None, size: int, backend: str, mode: int, kind: int, replace_abandoned: bool) -> Region:
    """A new region, or FileExistsError that says what holds the name."""
    try:
        return Region.create(name, size, backend, mode)
    except FileExistsError:
        if name is None or backend == "anon":
            raise
    if not replace_abandoned:
        raise FileExistsError(errno.EEXIST, describe(name, backend, kind), name)
    _replace(name, backend, kind)
    return Region.create(name, size, backend, mode)  # FileExistsError if another restarter won


def _open_old(name: str, backend: str, kind: int) -> tuple[Region | None, str]:
    """The existing region and its kind's name, or None and why it cannot be judged."""
    try:
        old = Region.attach(name, backend)
    except FileNotFoundError:
        return None, "was just removed"
    except LayoutError as exc:
        return None, f"is not an initialised shmring region ({exc})"
    assert old.mapping is not None
    try:
        L.read_header(old.mapping, old.size, L.read_kind(old.mapping))
    except LayoutError as exc:
        if old.size >= L.HEADER_SIZE and bytes(old.mapping[: len(L.MAGIC)]) == bytes(len(L.MAGIC)):
            # Never published: its creator died while making it, or is making
            # it now.  The creator's holder entry goes in before the header, so
            # the table says which; a table still empty after a grace period
            # means the creator died before it got that far.
            entries = EndpointTable(old.mapping).entries()
            young = time.time() - old.changed < HALF_CREATED_GRACE_S
            if any(e.alive for e in entries) or (not entries and young):
                old.close()
                return None, "is being created"
            return old, "half-created region"
        old.close()
        return None, f"is not a shmring region this version can read ({exc})"
    return old, L.KIND_NAMES.get(L.read_kind(old.mapping), "region")


def describe(name: str, backend: str, kind: int) -> str:
    """Why ``name`` cannot be created: in use (by whom) or abandoned."""
    what = "file" if backend == "file" else "shared memory segment"
    old, about = _open_old(name, backend, kind)
    if old is None:
        return f"{what} {name!r} exists and {about}; remove it with `shmring rm {name}` if it is stale"
    try:
        assert old.mapping is not None
        users = EndpointTable(old.mapping).users()
    finally:
        old.close()
    if users:
        return f"{what} {name!r} exists and is in use by pid {', '.join(map(str, users))}"
    return (
        f"{what} {name!r} exists and is abandoned (every process that used it is dead): "
        f"pass replace_abandoned=True to replace it, or remove it with `shmring rm {name}`"
    )


def _replace(name: str, backend: str, kind: int) -> None:
    """Unlink the abandoned region ``name``, or raise FileExistsError."""
    old, about = _open_old(name, backend, kind)
    if old is None:
        if about == "was just removed":
            return
        raise FileExistsError(errno.EEXIST, f"{name!r} exists and {about}", name)
    try:
        assert old.mapping is not None
        table = EndpointTable(old.mapping)
        verdict_by = time.monotonic() + 1.0
        while not table.claim_removal():
            # Another process is about to remove the name (its last handle
            # out, or another restarter): wait for its verdict.
            if not old.still_named():
                return  # it removed the name: create anew
            if time.monotonic() > verdict_by:
                raise FileExistsError(errno.EEXIST, f"{name!r} is being removed or replaced by another process", name)
            time.sleep(0.0005)
        try:
            # Checked after the claim: a process that attached before it is seen.
            users = table.users()
            if users:
                raise FileExistsError(
                    errno.EEXIST, f"{name!r} exists and is in use by pid {', '.join(map(str, users))}", name
                )
            old.unlink()  # a name made anew meanwhile is left alone; a semaphore ring's semaphores go too
        except BaseException:
            table.release_removal()
            raise
    finally:
        old.close()


def attach(
    name: str, backend: str, timeout: float, kind: int, check: Callable[[L.Geometry], Any] | None = None
) -> tuple[Region, L.Geometry, int]:
    """Map an existing region, validate its header and enter our holder
    entry; returns the region, its geometry and our entry's slot.

    The last handle out may be removing the name at this very moment: after
    registering we look at the remover word.  A remover that saw our entry
    keeps the name; one that did not has said so in the remover word first,
    and we wait for its verdict: if the name goes (or now names another
    region), this mapping is an orphan, and we attach again.
    """
    if not timeout >= 0:  # also refuses NaN
        raise ValueError("'timeout' must be a non-negative number")
    deadline = time.monotonic() + timeout
    while True:
        region = Region.attach(name, backend, max(0.0, deadline - time.monotonic()))
        try:
            assert region.mapping is not None
            geo = L.read_header(region.mapping, region.size, kind)
            if check is not None:
                check(geo)
            table = EndpointTable(region.mapping)
            holder = table.register(HOLDER)
            try:
                # A live remover decides within one table scan; one that has
                # not after a second is stuck (or the word is corrupt): go on.
                verdict_by = time.monotonic() + 1.0
                while region.still_named():
                    if not table.removal_pending() or time.monotonic() > verdict_by:
                        return region, geo, holder
                    time.sleep(0.0005)
            except BaseException:
                table.unregister(holder)
                raise
            table.unregister(holder)  # an orphan: the name went under us
        except BaseException:
            region.close()
            raise
        region.close()
        if time.monotonic() >= deadline:
            raise FileNotFoundError(errno.ENOENT, "the region was removed as we attached", name)


def leave(region: Region, table: EndpointTable) -> None:
    """Our holder entry is gone: remove the name if no live process holds an
    open or pending handle.  If some do, look again at interpreter exit
    (after multiprocessing has joined its children): holders that die
    without closing (SIGKILL, a pool's terminate()) leave it to us."""
    if region.name is None:
        return
    if region.backend != "shm":
        # A file stays; a semaphore ring's semaphores go with its last handle
        # (the next attach makes them anew from the indices).
        if region.mapping is not None and not table.held():
            _semaphore.unlink_for_header(region.mapping)
        return
    if table.held():
        _lifetime.at_exit_remove_if_last(region.name, region.backend, region.ident)
        return
    remove_if_last(region, table)


def remove_if_last(region: Region, table: EndpointTable, exiting: bool = False) -> bool:
    """Unlink the name unless a live process holds an open or pending
    handle; True if it was removed.  ``exiting``: see EndpointTable.held."""
    if not table.claim_removal():
        return False  # another live process is removing it
    # Checked after the claim: an attacher registers before it looks at the
    # remover word (see attach), so one of us sees the other.
    if table.held(exiting):
        table.release_removal()
        return False
    region.unlink()
    return True
