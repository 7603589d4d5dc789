"""statistics(): what went through a region, who is attached, what
survivors repaired, as every handle of it (in any process) sees it."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
from typing import Any

import numpy as np
import pytest

import shmring

FORK = mp.get_context("fork")


def run_child(target: Any, *args: Any, killed: bool = True) -> None:
    p = FORK.Process(target=target, args=args)
    p.start()
    p.join(30)
    assert p.exitcode == (-signal.SIGKILL if killed else 0)


def test_a_ring_counts_items_in_and_out_from_its_indices(name: str) -> None:
    with shmring.Ring(name, capacity=8, shape=(4,), dtype=np.float32) as ring:
        ring.put_many(np.ones((5, 4), np.float32))
        ring.get_many(2)
        with shmring.Ring.attach(name) as other:  # shared by every handle
            s = other.statistics()
        assert (s.kind, s.capacity, s.fill) == ("Ring", 8, 3)
        assert (s.messages_in, s.messages_out) == (5, 2)
        assert (s.bytes_in, s.bytes_out) == (5 * 16, 2 * 16)
        assert (s.producers, s.consumers, s.holes, s.dead) == (1, 1, 0, 0)


def test_statistics_are_a_frozen_snapshot_and_a_closed_handle_refuses(name: str) -> None:
    ring = shmring.Ring(name, capacity=2, dtype=np.int64)
    s = ring.statistics()
    assert isinstance(s, shmring.Statistics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.fill = 3  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(s)) == s
    ring.close()
    with pytest.raises(ValueError, match="closed"):
        ring.statistics()


def test_a_handle_that_neither_puts_nor_gets_is_an_observer(name: str) -> None:
    with shmring.Ring(name, capacity=2, dtype=np.int64) as ring:
        ring.put(1)
        ready, done = FORK.Event(), FORK.Event()
        p = FORK.Process(target=observe, args=(name, ready, done))
        p.start()
        try:
            assert ready.wait(30)
            s = ring.statistics()
            assert (s.producers, s.consumers, s.observers) == (1, 0, 1)
        finally:
            done.set()
            p.join(30)
        assert ring.statistics().observers == 0


def observe(name: str, ready: Any, done: Any) -> None:
    with shmring.Ring.attach(name):
        ready.set()
        done.wait(30)


def test_holes_are_not_items(name: str) -> None:
    """A reserve() that raises leaves a hole in a multi-producer ring: a
    position that is counted neither in nor out, and not in the fill."""
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as ring:
        ring.put(1)
        with pytest.raises(KeyError), ring.reserve():
            raise KeyError
        ring.put(2)
        s = ring.statistics()
        assert (s.messages_in, s.messages_out, s.fill, s.holes) == (2, 0, 2, 1)
        assert ring.get_many(4).tolist() == [1, 2]
        s = ring.statistics()
        assert (s.messages_in, s.messages_out, s.fill, s.holes) == (2, 2, 0, 1)


def die_holding_a_reserved_slot(ring: shmring.Ring) -> None:
    with ring.reserve() as slot:
        slot[...] = 9
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_producers_claim_is_counted_as_abandoned_and_its_entry_as_reaped(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as ring:
        producer = shmring.Ring.attach(name)
        producer.put(1)
        run_child(die_holding_a_reserved_slot, producer)
        assert ring.statistics().dead >= 1  # the child's entries, until a survivor looks
        producer.put(2)
        assert ring.get_many(4, timeout=10).tolist() == [1]
        assert ring.get(timeout=10) == 2  # past the repaired hole
        s = ring.statistics()
        assert (s.abandoned, s.holes, s.messages_in, s.messages_out, s.fill) == (1, 1, 2, 2, 0)
        assert s.reaped >= 1 and s.dead == 0
        producer.close()


def sleep_in_get(name: str, ready: Any) -> None:
    ring = shmring.Ring.attach(name)
    ready.set()
    ring.get()


def test_waiters_never_count_a_dead_process(name: str) -> None:
    with shmring.Ring(name, capacity=2, dtype=np.int64) as ring:
        ready = FORK.Event()
        p = FORK.Process(target=sleep_in_get, args=(name, ready))
        p.start()
        assert ready.wait(30)
        deadline = time.monotonic() + 30
        while ring.statistics().consumer_waiters != 1:
            assert time.monotonic() < deadline, "the consumer never slept"
            time.sleep(0.01)
        os.kill(p.pid or 0, signal.SIGKILL)
        p.join(30)
        s = ring.statistics()
        assert (s.consumers, s.consumer_waiters) == (0, 0)


@pytest.mark.parametrize("sync", ["lockfree", "semaphore"])
def test_a_queue_counts_messages_and_payload_bytes(sync: str, name: str) -> None:
    with shmring.Queue(name=name, sync=sync) as q:
        q.put(b"abc")
        q.put_many([b"de", b"fgh"])
        q.put(np.arange(4, dtype=np.int64))
        assert q.get() == b"abc"
        assert q.get_many(2) == [b"de", b"fgh"]
        s = q.statistics()
        assert (s.kind, s.messages_in, s.messages_out, s.fill) == ("Queue", 4, 3, 1)
        assert s.bytes_out == 3 + 2 + 3
        assert s.bytes_in > s.bytes_out + 32  # the array's 32 bytes and its dtype/shape header
        with q.borrow() as a:
            assert a.tolist() == [0, 1, 2, 3]
        s = q.statistics()
        assert (s.messages_out, s.fill, s.bytes_in - s.bytes_out) == (4, 0, 0)


def test_an_array_counts_writes_and_lock_takeovers(name: str) -> None:
    with shmring.Array(name, shape=(3,), dtype=np.int64) as a:
        for i in range(3):
            with a.write() as v:
                v[:] = i
                assert a.statistics().writing
        run_child(die_holding_the_lock, a)
        with a.lock(timeout=10) as holder_died:
            assert holder_died
        s = a.statistics()
        assert (s.kind, s.capacity, s.writes, s.writing, s.takeovers) == ("Array", 3, 3, False, 1)
        assert (s.observers, s.messages_in, s.fill) == (1, 0, 0)


def die_holding_the_lock(a: shmring.Array) -> None:
    a._acquire(None)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_semaphore_rings_side_lock_taken_from_the_dead_is_counted(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, sync="semaphore", multi_producer=True) as ring:
        run_child(die_holding_a_reserved_slot, ring)  # dies holding the producers' side lock
        ring.put(5, timeout=10)
        assert ring.get(timeout=10) == 5
        s = ring.statistics()
        assert (s.takeovers, s.messages_in, s.messages_out) == (1, 1, 1)


def test_statistics_of_an_empty_queue_walk_nothing(name: str) -> None:
    with shmring.Queue(name=name) as q:
        s = q.statistics()
        assert (s.fill, s.messages_in, s.messages_out, s.producers, s.consumers, s.observers) == (0, 0, 0, 0, 0, 1)
        with pytest.raises(queue.Empty):
            q.get_nowait()
        assert q.statistics().consumers == 1
