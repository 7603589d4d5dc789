"""Shared fixtures: unique segment names and a /dev/shm leak check on every test."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator

import pytest

from shmring import _layout
from shmring._endpoints import is_alive, unpack_word
from shmring._semaphore import mapped_inodes

SHM_DIR = "/dev/shm"


def _entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return set()


def _mapped_by_others(entry: str) -> bool:
    """True if a live process other than this one maps /dev/shm/``entry``
    (a semaphore another run on this machine has open)."""
    try:
        inode = os.stat(os.path.join(SHM_DIR, entry)).st_ino
    except FileNotFoundError:
        return True  # gone already: someone else removed it
    return inode in mapped_inodes(SHM_DIR, exclude_pid=os.getpid())


def _someone_elses(entry: str) -> bool:
    """A shmring segment that a live process other than this one created or
    holds, or a semaphore another process has open: not ours to judge (a
    concurrent run on the same machine)."""
    if entry.startswith("sem.mp-"):
        # multiprocessing's own (the drop-in tests run its Queue side by
        # side): under spawn its resource tracker removes them, later.
        return True
    if entry.startswith("sem."):
        return _mapped_by_others(entry)
    try:
        with open(os.path.join(SHM_DIR, entry), "rb") as f:
            head = f.read(_layout.HEADER_SIZE)
    except OSError:
        return False
    if len(head) < _layout.HEADER_SIZE or head[:8] != _layout.MAGIC:
        return False
    pid, start = struct.unpack_from("<QQ", head, _layout.CREATOR_PID_OFF)
    if pid != os.getpid() and is_alive(pid, start):
        return True
    words = struct.unpack_from(f"<{_layout.MAX_ENDPOINTS * 4}Q", head, _layout.ENDPOINTS_OFF)
    holders = (unpack_word(w) for w in words[::4] if w)
    return any(p != os.getpid() and is_alive(p, st) for p, _, _, st in holders)


@pytest.fixture(autouse=True)
def no_shm_leak() -> Iterator[None]:
    """Fail the test if it leaves anything new in /dev/shm (and remove it).

    New entries made by this process, by its (now dead) children, or that
    are not shmring segments at all count as leaks."""
    before = _entries()
    yield
    leaked = sorted(e for e in _entries() - before if not _someone_elses(e))
    for entry in leaked:
        try:
            os.unlink(os.path.join(SHM_DIR, entry))
        except FileNotFoundError:
            pass
    assert not leaked, f"test leaked /dev/shm entries: {leaked}"


@pytest.fixture
def name() -> str:
    """A segment name no other test uses."""
    return f"shmring-test-{uuid.uuid4().hex[:12]}"
