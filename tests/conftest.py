"""Shared fixtures: unique segment names and a /dev/shm leak check on every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

SHM_DIR = "/dev/shm"


def _entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_shm_leak() -> Iterator[None]:
    """Fail the test if it leaves anything new in /dev/shm (and remove it)."""
    before = _entries()
    yield
    leaked = sorted(_entries() - before)
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
