"""The semaphore flavour (sync="semaphore"): the classic bounded buffer over
posix_ipc named semaphores, with one or many producers and consumers, on
every backend; its semaphores never outlive the ring; processes killed
holding a side lock or a permit never wedge it or shrink it."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import posix_ipc
import pytest
from test_mpmc import pair, run_child

import shmring
from shmring import _semaphore, cli

FORK = mp.get_context("fork")
TOPOLOGIES = [(False, False), (True, False), (False, True), (True, True)]


def semaphores_of(ring: shmring.Ring) -> list[str]:
    """The /dev/shm entries of the ring's semaphores that exist."""
    assert ring._sem is not None
    return [n for n in _semaphore.names(ring._sem.sem_id) if os.path.exists(f"/dev/shm/sem.{n[1:]}")]


@pytest.fixture(params=TOPOLOGIES, ids=["sp-sc", "mp-sc", "sp-mc", "mp-mc"])
def ring(request: pytest.FixtureRequest, name: str) -> Iterator[shmring.Ring]:
    mp_, mc = request.param
    r = shmring.Ring(
        name, capacity=4, shape=(2,), dtype=np.int64, sync="semaphore", multi_producer=mp_, multi_consumer=mc
    )
    yield r
    r.close()


def test_every_method_in_order(ring: shmring.Ring) -> None:
    ring.put(pair(0))
    ring.put_nowait(pair(1))
    assert ring.put_many(np.stack([pair(2), pair(3)])) == 2
    assert ring.full()
    with pytest.raises(queue.Full):
        ring.put_nowait(pair(9))
    with pytest.raises(queue.Full):
        ring.put(pair(9), timeout=0.05)
    assert ring.get().tolist() == [0, 0]
    assert ring.get_many(2).tolist() == [[1, -1], [2, -2]]
    with ring.reserve() as slot:
        slot[:] = pair(4)
    with pytest.raises(KeyError), ring.reserve() as slot:
        slot[:] = pair(99)
        raise KeyError  # dropped: nothing published, no hole
    with ring.borrow() as item:
        assert item.tolist() == [3, -3]
    with ring.borrow_many(4) as items:
        assert items.tolist() == [[4, -4]]
    assert ring.empty()
    with pytest.raises(queue.Empty):
        ring.get_nowait()
    with pytest.raises(queue.Empty):
        ring.get(timeout=0.05)
    assert ring._sem is not None
    assert (ring._sem.free.value, ring._sem.full.value) == (4, 0)  # the counts match the indices


def test_counts_follow_the_items(ring: shmring.Ring) -> None:
    assert ring._sem is not None
    for i in range(10):
        ring.put_many([pair(i), pair(i + 1), pair(i + 2)])
        assert (ring._sem.free.value, ring._sem.full.value) == (1, 3)
        assert len(ring.get_many(8)) == 3
        assert (ring._sem.free.value, ring._sem.full.value) == (4, 0)


@pytest.mark.parametrize("backend", ["shm", "anon", "file"])
def test_wraps_many_laps_on_every_backend(backend: str, name: str, tmp_path: Path) -> None:
    where = {"shm": name, "anon": None, "file": str(tmp_path / "ring")}[backend]
    with shmring.Ring(where, capacity=3, dtype=np.int64, sync="semaphore", multi_producer=True, backend=backend) as r:
        got = []
        for i in range(0, 300, 2):
            r.put_many([i, i + 1])
            got.extend(r.get_many(5).tolist())
        assert got == list(range(300))


# -- the semaphores' lifetime -----------------------------------------------------------


def test_the_semaphores_go_with_the_last_handle(name: str) -> None:
    r = shmring.Ring(name, capacity=4, sync="semaphore")
    assert len(semaphores_of(r)) == 4
    other = shmring.Ring.attach(name)
    r.close()
    assert len(semaphores_of(other)) == 4  # the name lives: so do they
    other.close()
    assert not os.path.exists(f"/dev/shm/{name}")
    assert semaphores_of(other) == []


def test_an_anon_ring_leaves_no_semaphore_names(name: str) -> None:
    with shmring.Ring(capacity=4, sync="semaphore", backend="anon") as r:
        assert semaphores_of(r) == []
        r.put(1)
        assert r.get() == 1


def test_unlink_and_shmring_rm_remove_the_semaphores(name: str) -> None:
    with shmring.Ring(name, capacity=4, sync="semaphore") as r:
        r.unlink()
        assert semaphores_of(r) == []
        r.put(1)  # open handles keep working
        assert r.get() == 1
    r2 = shmring.Ring(name, capacity=4, sync="semaphore")
    try:
        assert cli.main(["rm", name]) == 0
        assert semaphores_of(r2) == []
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        r2.close()


def test_a_file_ring_makes_its_semaphores_anew_from_its_indices(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    with shmring.Ring(path, capacity=4, dtype=np.int64, sync="semaphore", backend="file") as r:
        r.put_many([1, 2, 3])
        sem_names = _semaphore.names(r._sem.sem_id) if r._sem else []
    assert all(not os.path.exists(f"/dev/shm/sem.{n[1:]}") for n in sem_names)  # gone with the last handle
    with shmring.Ring.attach(path, backend="file") as again:
        assert again._sem is not None
        assert (again._sem.free.value, again._sem.full.value) == (1, 3)
        assert again.get_many(4).tolist() == [1, 2, 3]
        again.unlink()


# -- many processes ---------------------------------------------------------------------


# Many processes on each side: tests/test_mpmc.py, test_many_producers_and_consumers_lose_nothing[semaphore-*].


# -- deaths ---------------------------------------------------------------------------------


def die_holding_the_producer_lock(ring: shmring.Ring) -> None:
    with ring.reserve() as slot:  # a semaphore ring's reserve() holds its side's lock
        slot[...] = 99
        os.kill(os.getpid(), signal.SIGKILL)


def die_holding_a_permit(ring: shmring.Ring, role: str) -> None:
    sem = ring._sem
    assert sem is not None
    assert sem.take(sem.free if role == "free" else sem.full, 0)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_lock_holder_killed_inside_does_not_wedge_the_producers(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, sync="semaphore", multi_producer=True) as consumer:
        producer = shmring.Ring.attach(name)
        try:
            producer.put(1)
            run_child(die_holding_the_producer_lock, producer)
            assert producer._sem is not None and not producer._sem.holder_died
            producer.put(2, timeout=10)  # the dead holder's lock is taken over
            assert producer._sem.holder_died
            assert consumer.get_many(4, timeout=10).tolist() == [1, 2]  # its reservation was never published
        finally:
            producer.close()


@pytest.mark.parametrize("permit", ["free", "full"])
def test_a_permit_taken_by_a_dead_process_does_not_shrink_the_ring(permit: str, name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, sync="semaphore") as r:
        if permit == "full":
            r.put_many([1, 2, 3, 4])
        run_child(die_holding_a_permit, r, permit)
        if permit == "free":
            assert r.put_many([1, 2, 3, 4], timeout=10) == 4  # all four slots are still there
        assert r.get_many(4, timeout=10).tolist() == [1, 2, 3, 4]  # and all four items
        assert r._sem is not None
        r.put_many([5, 6])
        assert r.get_many(4).tolist() == [5, 6]
        assert r._sem.free.value == 4  # the counts healed


def test_eof_and_broken_pipe(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, sync="semaphore", multi_producer=True) as consumer:
        producer = shmring.Ring.attach(name)
        producer.put(1)
        producer.close()
        assert consumer.get(timeout=5) == 1
        with pytest.raises(EOFError):
            consumer.get(timeout=5)
    with shmring.Ring(name, capacity=4, dtype=np.int64, sync="semaphore") as producer:
        consumer = shmring.Ring.attach(name)
        with pytest.raises(queue.Empty):
            consumer.get_nowait()
        consumer.close()
        with pytest.raises(BrokenPipeError):
            producer.put(1, timeout=5)


def test_a_blocked_get_is_woken_by_a_put(name: str) -> None:
    import threading

    with shmring.Ring(name, capacity=2, dtype=np.int64, sync="semaphore", multi_consumer=True) as r:
        got: list[Any] = []
        waiter = shmring.Ring.attach(name)
        t = threading.Thread(target=lambda: got.append(waiter.get(timeout=30)))
        t.start()
        r.put(7)
        t.join(30)
        waiter.close()
        assert got == [7]


def test_ctrl_c_interrupts_a_blocked_get(tmp_path: Path, name: str) -> None:
    script = tmp_path / "blocked.py"
    script.write_text(
        "import os, signal, threading, shmring\n"
        f"r = shmring.Ring({name!r}, capacity=2, sync='semaphore')\n"
        "threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "try:\n"
        "    r.get()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
        "r.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "interrupted", out.stderr


def test_gc_removes_orphaned_semaphores_and_keeps_live_ones(name: str) -> None:
    with shmring.Ring(name, capacity=2, sync="semaphore") as r:
        orphan = _semaphore.names(_semaphore.new_id())[0]
        posix_ipc.Semaphore(orphan, posix_ipc.O_CREX, 0o600, 0).close()  # as a killed ring's would be
        assert cli.main(["gc"]) == 0
        assert not os.path.exists(f"/dev/shm/sem.{orphan[1:]}")
        assert len(semaphores_of(r)) == 4  # ours are open: kept
