"""Where the bytes live: POSIX shm (``shm``), anonymous shared memory
(``anon``) and regular files (``file``).

A :class:`Region` is one writable ``mmap`` plus the knowledge of how to
unlink it.  Creation reserves the memory up front (``posix_fallocate``) so a
full /dev/shm raises ``OSError`` at creation instead of ``SIGBUS`` at the
first touch.  Attaching checks the segment's real size before the header is
read, and the header against that size before any byte past it is touched.
Nothing here is registered with ``multiprocessing.resource_tracker``.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import time
from collections.abc import Callable
from typing import Literal

import posix_ipc

from . import _core, _layout, _semaphore
from .errors import LayoutError

Backend = Literal["shm", "anon", "file"]
BACKENDS: tuple[str, ...] = ("shm", "anon", "file")
NAME_MAX = 255
# How long attach waits for a creator that has made the segment but not yet
# published its header (the magic is written last).
_INIT_GRACE_S = 1.0


def check_name(name: str, backend: str) -> None:
    """Refuse names that cannot be a shm object's name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if backend == "file":
        if not name or "\0" in name:
            raise ValueError("file name must be a non-empty path without NUL")
        return
    if not name or "/" in name or "\0" in name or len(name.encode()) > NAME_MAX - 1:
        raise ValueError(f"shm name must be 1..{NAME_MAX - 1} bytes with no '/' or NUL (got {name!r})")


def default_name() -> str:
    return f"shmring-{os.getpid()}-{secrets.token_hex(6)}"


class Region:
    """One mapping of a shared segment.  ``close()`` and ``unlink()`` are
    always safe to call, any number of times."""

    backend: str = "shm"
    name: str | None = None
    size: int = 0
    mapping: mmap.mmap | None = None
    creator_pid: int = 0  # pid that created it, 0 for attached regions
    unlinked: bool = False
    ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino): which object the name named when we opened it
    changed: float = 0.0  # st_ctime when we opened it

    def __init__(
        self,
        backend: str,
        name: str | None,
        mapping: mmap.mmap,
        size: int,
        creator_pid: int,
        ident: tuple[int, int] = (0, 0),
    ):
        self.backend = backend
        self.name = name
        self.mapping = mapping
        self.size = size
        self.creator_pid = creator_pid
        self.ident = ident

    @property
    def owner(self) -> bool:
        """True in the process that created the region (never in a fork child)."""
        return self.creator_pid == os.getpid()

    # -- creation ------------------------------------------------------------
    @classmethod
    def create(cls, name: str | None, size: int, backend: str = "shm", mode: int = 0o600) -> Region:
        if backend == "anon":
            if name is not None:
                raise ValueError("an anon region has no name; pass name=None")
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            return cls("anon", None, mmap.mmap(-1, size, flags=flags), size, os.getpid())
        if name is None:
            if backend == "file":
                raise ValueError("a file region needs a path as its name")
            name = default_name()
        check_name(name, backend)
        if backend == "shm":
            try:
                shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=mode)
            except posix_ipc.ExistentialError:
                raise FileExistsError(errno.EEXIST, "shared memory segment exists", name) from None
            except posix_ipc.PermissionsError:
                raise PermissionError(errno.EACCES, "permission denied", name) from None
            fd, close_fd = shm.fd, shm.close_fd
            unlink: Callable[[], None] = lambda: posix_ipc.unlink_shared_memory("/" + name)  # noqa: E731
        else:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
            close_fd = lambda: os.close(fd)  # noqa: E731
            unlink = lambda: os.unlink(name)  # noqa: E731
        try:
            os.fchmod(fd, mode)  # shm_open and open apply the umask; honour the mode asked for
            os.posix_fallocate(fd, 0, size)
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
            ident = _ident(fd)
        except BaseException:
            unlink()
            raise
        finally:
            close_fd()
        return cls(backend, name, mapping, size, os.getpid(), ident)

    @classmethod
    def attach(cls, name: str, backend: str = "shm", timeout: float = 0.0) -> Region:
        """Map an existing region by name, waiting up to ``timeout`` seconds
        for it to appear and for its creator to publish the header."""
        if backend == "anon":
            raise ValueError("an anon region cannot be attached by name; it only crosses fork")
        check_name(name, backend)
        if not timeout >= 0:  # also refuses NaN
            raise ValueError("'timeout' must be a non-negative number")
        appear_by = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                fd, close_fd = _open_existing(name, backend)
                break
            except FileNotFoundError:
                left = appear_by - time.monotonic()
                if left <= 0:
                    raise
            # No portable way to sleep until a name appears: poll, backing
            # off to 50 ms (a few wake-ups a second, no busy CPU).
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        try:
            ident = _ident(fd)
            changed = os.fstat(fd).st_ctime
            deadline = max(appear_by, time.monotonic() + _INIT_GRACE_S)
            while True:
                size = os.fstat(fd).st_size
                if size >= _layout.HEADER_SIZE:
                    mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
                    if _core.load64(mapping, _layout.MAGIC_OFF) != 0 or time.monotonic() > deadline:
                        break
                    mapping.close()
                elif size != 0 or time.monotonic() > deadline:
                    raise LayoutError(f"segment {name!r} has {size} bytes, too few for a shmring header")
                time.sleep(0.005)  # a creator is between making the segment and publishing its header
        finally:
            close_fd()
        region = cls(backend, name, mapping, size, 0, ident)
        region.changed = changed
        return region

    def still_named(self) -> bool:
        """True while our name still names this region (not removed, not
        made anew).  An anon region has no name to lose."""
        if self.name is None or self.unlinked:
            return self.name is None
        try:
            fd, close_fd = _open_existing(self.name, self.backend)
        except (FileNotFoundError, PermissionError):
            return False
        try:
            return _ident(fd) == self.ident
        finally:
            close_fd()

    def publish_header(self, immutable: bytes) -> None:
        """Copy a header in and publish it: the magic goes last, released."""
        assert self.mapping is not None
        self.mapping[8 : len(immutable)] = immutable[8:]
        # SYNC POINT (release) with the acquire load of the magic in attach().
        _core.store64(self.mapping, _layout.MAGIC_OFF, _layout.MAGIC_WORD)

    # -- teardown --------------------------------------------------------------
    def close(self) -> None:
        """Unmap (now, or when the last numpy view of it dies)."""
        mapping, self.mapping = self.mapping, None
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                # Views handed out by borrow()/reserve() are still alive; their
                # .base keeps the mapping, which is unmapped when they go.
                pass

    def unlink(self) -> None:
        """Remove the name, if it still names this region (not one made
        since under the same name), and a semaphore ring's semaphores;
        mappings stay valid.  A second call is a no-op."""
        if self.unlinked or self.name is None:
            return
        self.unlinked = True
        if unlink_name(self.name, self.backend, self.ident) and self.mapping is not None:
            _semaphore.unlink_for_header(self.mapping)  # a semaphore ring's go with its name

    def flush(self) -> None:
        """msync the mapping (meaningful for ``file`` regions)."""
        if self.mapping is not None:
            self.mapping.flush()


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _open_existing(name: str, backend: str) -> tuple[int, Callable[[], None]]:
    """An fd on an existing shm object or file, and how to close it."""
    if backend == "shm":
        try:
            shm = posix_ipc.SharedMemory("/" + name)
        except posix_ipc.ExistentialError:
            raise FileNotFoundError(errno.ENOENT, "no such shared memory segment", name) from None
        except posix_ipc.PermissionsError:
            raise PermissionError(errno.EACCES, "permission denied", name) from None
        return shm.fd, shm.close_fd
    fd = os.open(name, os.O_RDWR)
    return fd, lambda: os.close(fd)


def unlink_name(name: str, backend: str, ident: tuple[int, int] = (0, 0)) -> bool:
    """Remove ``name``; with ``ident``, only while it still names that
    object.  True if this call removed it."""
    try:
        if ident != (0, 0):
            fd, close_fd = _open_existing(name, backend)
            try:
                if _ident(fd) != ident:
                    return False  # the name was unlinked and made anew meanwhile: not ours
            finally:
                close_fd()
        if backend == "shm":
            posix_ipc.unlink_shared_memory("/" + name)
        else:
            os.unlink(name)
        return True
    except (posix_ipc.ExistentialError, FileNotFoundError, PermissionError):
        return False
