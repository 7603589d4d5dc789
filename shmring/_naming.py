"""Creating a region under a name that may be taken: say whether it is
abandoned, and replace an abandoned one in one race-free step.

Every structure creates its region through :func:`create`.  A region is
abandoned when no process that holds, sends, produces into or consumes from
it is alive (its endpoint table names them all).  Replacing one is a claim
on the old region's replacer word first, so of two restarters one goes on
and the other gets ``FileExistsError``; the winner then unlinks the old name
(only while it still names the old region) and creates the new one with
``O_EXCL``, which a third process cannot slip under either.
"""

from __future__ import annotations

import errno

from . import _layout as L
from ._endpoints import EndpointTable
from ._region import Region, unlink_name
from .errors import LayoutError


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
        if not table.claim_replacement():
            raise FileExistsError(errno.EEXIST, f"{name!r} is being replaced by another process", name)
        try:
            # Checked after the claim: a process that attached before it is seen.
            users = table.users()
            if users:
                raise FileExistsError(
                    errno.EEXIST, f"{name!r} exists and is in use by pid {', '.join(map(str, users))}", name
                )
            unlink_name(name, backend, old.ident)  # a name made anew meanwhile is left alone
        except BaseException:
            table.release_replacement()
            raise
    finally:
        old.close()
