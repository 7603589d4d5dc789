"""Registration and liveness: the endpoint table under deaths, stale state and misuse."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from typing import Any

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


# -- a registrant held inside every window of its registration --------------------------

REGISTER_WINDOWS = ["claimed", "token", "counted", "active", "owned"]


def _hold_at(point: str, reached: int, release: int) -> None:
    """Make this process stop once at ``point`` until the parent says go."""
    held: list[str] = []

    def pause(p: str) -> None:
        if p == point and not held:
            held.append(p)
            os.write(reached, b"x")
            os.read(release, 1)

    E.pause = pause


def _consume_or_refuse(name: str, out: str, point: str | None, pipes: tuple[int, int] | None) -> int:
    """Child: attach, try to become the consumer and read until EOF, writing
    what it received to ``out``; exit 3 on RoleError, 0 otherwise."""
    ring = shmring.Ring.attach(name)
    if point is not None and pipes is not None:
        _hold_at(point, *pipes)
    got: list[int] = []
    try:
        got = [int(x) for x in ring]
    except shmring.RoleError:
        return 3
    finally:
        with open(out, "w") as f:
            f.write(" ".join(map(str, got)))
    return 0


def _received(out: str) -> list[int]:
    with open(out) as f:
        return [int(x) for x in f.read().split()]


def _fork(fn: Any, *args: Any) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn(*args)
        except BaseException:  # noqa: BLE001 - the child's error goes to stderr; its exit code says 1
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("point", REGISTER_WINDOWS)
def test_a_registrant_held_in_any_window_is_never_reaped_and_one_consumer_wins(
    name: str, point: str, tmp_path: Any
) -> None:
    """The adversarial review's recipe: a consumer came and left; a new one
    stops inside its registration while the producer scans (and must not
    reap it) and a third registers.  Never two consumers at once: every
    item arrives exactly once, in order."""
    outs = [str(tmp_path / "slow"), str(tmp_path / "third")]
    with shmring.Ring(name, capacity=32, dtype=np.int64) as producer:
        with shmring.Ring.attach(name) as first:
            with pytest.raises(queue.Empty):
                first.get_nowait()  # a consumer was here: put judges its peers from now on
        reached_r, reached_w = os.pipe()
        release_r, release_w = os.pipe()
        slow = _fork(_consume_or_refuse, name, outs[0], point, (reached_w, release_r))
        assert os.read(reached_r, 1) == b"x"
        # The slow registrant is alive and counted however far it got.
        assert producer._table.reap() == 0
        assert producer._table.live(E.CONSUMER) == 1
        producer.put(0)  # no BrokenPipeError: a consumer is (being) registered
        third = _fork(_consume_or_refuse, name, outs[1], None, None)
        if point == "owned":
            third_code: int | None = _exit_code(third)
            assert third_code == 3  # the slow one owns the role already
        else:
            third_code = _registered_or_refused(producer, third)
        for i in range(1, 10):
            producer.put(i, timeout=20)
        os.write(release_w, b"g")
        for i in range(10, 20):
            producer.put(i, timeout=20)
        producer.close()  # EOF once drained
        codes = [_exit_code(slow), _exit_code(third) if third_code is None else third_code]
        assert sorted(codes) in ([0, 0], [0, 3]), codes
        got = [_received(out) for out in outs]
        assert sorted(got[0] + got[1]) == list(range(20)), got  # nothing lost, nothing twice
        assert all(g == sorted(g) for g in got)
        for fd in (reached_r, reached_w, release_r, release_w):
            os.close(fd)


def _registered_or_refused(ring: shmring.Ring, pid: int) -> int | None:
    """Wait until child ``pid`` is an active consumer (None) or has exited
    (its exit code)."""
    deadline = time.monotonic() + 20
    while not any(e.pid == pid and e.role == "consumer" and e.state == "active" for e in ring.endpoints()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return None


def _close_held(name: str, point: str, pipes: tuple[int, int], ready: int) -> int:
    ring = shmring.Ring.attach(name)
    with pytest.raises(queue.Empty):
        ring.get_nowait()  # the consumer role is ours
    os.write(ready, b"r")
    _hold_at(point, *pipes)
    ring.close()
    return 0


@pytest.mark.parametrize("point", ["freeing", "cleared"])
def test_a_consumer_held_while_leaving_does_not_block_its_successor(name: str, point: str, tmp_path: Any) -> None:
    with shmring.Ring(name, capacity=32, dtype=np.int64) as producer:
        reached_r, reached_w = os.pipe()
        release_r, release_w = os.pipe()
        ready_r, ready_w = os.pipe()
        leaving = _fork(_close_held, name, point, (reached_w, release_r), ready_w)
        assert os.read(ready_r, 1) == b"r"
        assert os.read(reached_r, 1) == b"x"  # stopped inside its close
        out = str(tmp_path / "successor")
        successor = _fork(_consume_or_refuse, name, out, None, None)
        assert _registered_or_refused(producer, successor) is None  # took the role, not refused
        for i in range(10):
            producer.put(i, timeout=20)
        deadline = time.monotonic() + 20
        while not producer.empty():  # the successor took the role and is reading
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.write(release_w, b"g")
        assert _exit_code(leaving) == 0
        producer.close()
        assert _exit_code(successor) == 0
        assert _received(out) == list(range(10))
        for fd in (reached_r, reached_w, release_r, release_w, ready_r, ready_w):
            os.close(fd)


# -- sleeper accounting -------------------------------------------------------------------


def _sleepers(ring: shmring.Ring) -> int:
    return int(_core.load32(mapping(ring), L.CONSUMER_WAITERS_OFF)) & 0xFFFF


def _wait_for_sleepers(ring: shmring.Ring, n: int) -> None:
    deadline = time.monotonic() + 20
    while _sleepers(ring) != n:
        assert time.monotonic() < deadline, f"sleeper count {_sleepers(ring)}, expected {n}"
        time.sleep(0.001)


def test_a_late_decrement_from_a_predecessors_sleeper_cannot_corrupt_the_count(name: str) -> None:
    """A successor resets the count while a thread of the old holder still
    sleeps; that thread's decrement must not wrap the successor's count."""
    with shmring.Ring(name, capacity=4, dtype=np.int64) as ring:
        got: list[int] = []
        sleeper = threading.Thread(target=lambda: got.append(int(ring.get(timeout=20))))
        sleeper.start()
        _wait_for_sleepers(ring, 1)
        ring._table._forget_sleepers(E.CONSUMER)  # what a successor's registration does
        assert _sleepers(ring) == 0
        ring.put(1)  # nobody counted asleep: the thread wakes at its next liveness slice
        sleeper.join(20)
        assert got == [1]
        assert _sleepers(ring) == 0  # the old-epoch decrement was dropped, not wrapped


def test_after_a_consumer_closes_under_its_sleeping_thread_the_successor_is_woken(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64) as producer:
        old = shmring.Ring.attach(name)
        errors: list[BaseException] = []

        def sleep_in_get() -> None:
            try:
                old.get(timeout=20)
            except ValueError as exc:  # the handle closed under us
                errors.append(exc)

        t = threading.Thread(target=sleep_in_get)
        t.start()
        _wait_for_sleepers(producer, 1)
        old.close()
        successor = shmring.Ring.attach(name)
        with pytest.raises(queue.Empty):
            successor.get_nowait()  # registers: a new sleeper epoch
        t.join(20)
        assert len(errors) == 1
        got: list[int] = []
        t2 = threading.Thread(target=lambda: got.append(int(successor.get(timeout=20))))
        t2.start()
        _wait_for_sleepers(producer, 1)  # a wrapped or lost count never reads 1 here
        producer.put(5)
        t2.join(20)
        assert got == [5] and _sleepers(producer) == 0
        successor.close()
