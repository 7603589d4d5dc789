"""Registration and liveness: the endpoint table under deaths, stale state and misuse."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal

import numpy as np
import pytest

import shmring
from shmring import _core
from shmring import _endpoints as E
from shmring import _layout as L

FORK = mp.get_context("fork")


def mapping(ring: shmring.Ring) -> object:
    assert ring._region is not None and ring._region.mapping is not None
    return ring._region.mapping


def test_a_stale_owner_word_is_taken_over_and_a_live_one_is_not(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        _core.store64(mapping(ring), L.PRODUCER_OWNER_OFF, 12345)  # a token no entry holds
        ring.put(1)  # takes the role over
        with shmring.Ring.attach(name) as other:
            with pytest.raises(shmring.RoleError):
                other.put(2)
        assert ring.get() == 1


def test_a_dead_process_with_our_pid_does_not_hold_a_role(name: str) -> None:
    """pid reuse: an entry with our pid but another start time is a dead process's."""
    with shmring.Ring(name, capacity=4) as ring:
        m = mapping(ring)
        off = L.ENDPOINTS_OFF + 5 * L.ENDPOINT_SIZE
        _core.store64(m, off + L.ENDPOINT_TOKEN, 777)
        _core.store64(m, off, E.pack_word(os.getpid(), E.CONSUMER, E.STATE_ACTIVE, E.own_start_time() + 1))
        _core.store64(m, L.CONSUMER_OWNER_OFF, 777)
        _core.store32(m, L.CONSUMERS_EVER_OFF, 1)
        with pytest.raises(queue.Empty):
            ring.get_nowait()  # registering as consumer reaps the impostor: no RoleError
        ring.put(1)
        assert ring.get() == 1
        assert [e.slot for e in ring.endpoints() if e.role == "consumer"] != [5]


def test_a_sleeper_count_left_by_a_dead_waiter_is_reset(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        _core.store32(mapping(ring), L.CONSUMER_WAITERS_OFF, 3)  # as if three sleepers were SIGKILLed
        ring.put(1)
        assert ring.get() == 1
        assert _core.load32(mapping(ring), L.CONSUMER_WAITERS_OFF) & 0xFFFF == 0  # a new epoch, no sleepers


def test_a_borrow_blocks_gets_but_not_puts_on_the_same_handle(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64) as ring:
        ring.put_many(np.array([10, 20]))
        with ring.borrow() as item:
            with ring.reserve() as slot:  # a relay: produce while consuming
                slot[...] = 30
            with pytest.raises(RuntimeError):
                ring.get()
            with pytest.raises(RuntimeError):
                ring.get_many(2)
            assert int(item) == 10
        assert [int(x) for x in ring.get_many(4)] == [20, 30]  # nothing lost


def test_reserve_and_borrow_on_scalar_rings_give_views(name: str) -> None:
    with shmring.Ring(name, capacity=2, dtype=np.float32) as ring:
        with ring.reserve() as slot:
            assert slot.shape == () and slot.flags.writeable
            slot[...] = 2.5
        with ring.borrow() as item:
            assert item.shape == () and not item.flags.writeable and float(item) == 2.5
        assert ring.empty()


def test_fast_path_calls_still_validate_the_timeout(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        ring.put(1)
        ring.get()  # both roles registered: the next calls take the C fast path
        for bad in (-5, float("nan")):
            with pytest.raises(ValueError):
                ring.put(np.uint8(1).reshape(()), timeout=bad)
            with pytest.raises(ValueError):
                ring.get(timeout=bad)
        with pytest.raises(TypeError):
            ring.get(timeout="soon")
        assert ring.empty()
        with pytest.raises(ValueError):
            _core.futex_wait(bytearray(8), 0, 0, float("nan"))


def consume_one_and_return(ring: shmring.Ring) -> None:
    ring.get()


def make_a_ring_and_return(name: str) -> None:
    shmring.Ring(name, capacity=2)  # never closed: the child's exit must unlink it


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_close_their_handles_when_they_return(name: str, method: str) -> None:
    ctx = mp.get_context(method)
    child = ctx.Process(target=make_a_ring_and_return, args=(name,))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and not os.path.exists(f"/dev/shm/{name}")
    with shmring.Ring(name, capacity=100) as ring:
        child = ctx.Process(target=consume_one_and_return, args=(ring,))
        child.start()
        ring.put(1)
        child.join(60)
        with pytest.raises(BrokenPipeError):
            ring.put(2, timeout=5)  # at once: the child unregistered as it left


def test_a_replacement_producer_is_not_refused_when_another_reaper_frees_the_dead_one_first(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the stress harness: a reap lost to a concurrent reaper (the
    consumer's liveness scan) was taken for a live holder -> RoleError."""
    with shmring.Ring(name, capacity=4, dtype=np.int64):
        pid = os.fork()
        if pid == 0:
            producer = shmring.Ring.attach(name)
            producer.put(1)  # registers as the producer
            os.kill(os.getpid(), signal.SIGSTOP)
            os._exit(0)
        os.waitpid(pid, os.WUNTRACED)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        consumer = shmring.Ring.attach(name)
        real_is_alive, raced = E.is_alive, []

        def is_alive_while_a_peer_reaps(p: int, start: int) -> bool:
            alive = real_is_alive(p, start)
            if p == pid and not raced:
                raced.append(1)
                consumer._table.reap()  # frees the entry between our read and our CAS
            return alive

        monkeypatch.setattr(E, "is_alive", is_alive_while_a_peer_reaps)
        with shmring.Ring.attach(name) as replacement:
            replacement.put(2)
        assert raced
        assert [int(consumer.get(timeout=5)) for _ in range(2)] == [1, 2]
        consumer.close()
