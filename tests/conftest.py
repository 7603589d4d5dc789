"""Shared fixtures: unique segment names and a /dev/shm leak check on every test."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator

import pytest

from shmring import _layout
from shmring._endpoints import is_alive

SHM_DIR = "/dev/shm"


def _entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return set()


def _someone_elses(entry: str) -> bool:
    """A shmring segment whose creator is another live process: not ours to
    judge (a concurrent run on the same machine), unless that creator is us."""
    try:
        with open(os.path.join(SHM_DIR, entry), "rb") as f:
            head = f.read(_layout.IMMUTABLE_END)
    except OSError:
        return False
    if len(head) < _layout.IMMUTABLE_END or head[:8] != _layout.MAGIC:
        return False
    pid, start = struct.unpack_from("<QQ", head, _layout.CREATOR_PID_OFF)
    return pid != os.getpid() and is_alive(pid, start)


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
