"""Lifetime of a ring's name: handles open or in flight keep it, the last
handle out removes it, restarts after a crash, attach that waits."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

import shmring
from shmring import cli

FORK = mp.get_context("fork")
METHODS = ["fork", "forkserver", "spawn"]


def exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


# -- actors (module level so spawn/forkserver children can import them) ----------


def drain(ring: shmring.Ring) -> list[int]:
    """Every item until EOF, then close."""
    with ring:
        return [int(x) for x in ring]


def drain_to(ring: shmring.Ring, results: Any) -> None:
    results.put(drain(ring))


_kept: list[shmring.Ring] = []


def keep(ring: shmring.Ring) -> None:
    """A pool initializer: the worker holds the ring until it exits."""
    _kept.append(ring)


def drain_kept() -> list[int]:
    return [int(x) for x in _kept[0]]


def create_put_and_die(name: str, sig: int) -> None:
    ring = shmring.Ring(name, capacity=4, dtype=np.int64)
    ring.put(7)
    os.kill(os.getpid(), sig)


# -- handles in flight -----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_child_started_as_the_creator_leaves_gets_every_item_then_eof(name: str, method: str) -> None:
    ctx = mp.get_context(method)
    results = ctx.Queue()
    with shmring.Ring(name, capacity=16, dtype=np.int64) as ring:
        for i in range(5):
            ring.put(i)
        child = ctx.Process(target=drain_to, args=(ring, results))
        child.start()
    # The creator has left: its close must not have taken the name from the child.
    assert results.get(timeout=60) == [0, 1, 2, 3, 4]
    child.join(60)
    assert child.exitcode == 0
    assert not exists(name)  # the last handle out unlinked it


@pytest.mark.parametrize("method", METHODS)
def test_a_pool_initializer_receives_the_ring_although_the_creator_left(name: str, method: str) -> None:
    ctx = mp.get_context(method)
    ring = shmring.Ring(name, capacity=16, dtype=np.int64)
    ring.put_many(np.arange(5))
    with ctx.Pool(1, initializer=keep, initargs=(ring,)) as pool:
        ring.close()  # the workers are started: the creator leaves at once
        assert pool.apply(drain_kept) == [0, 1, 2, 3, 4]
        pool.close()
        pool.join()
    assert not exists(name)


@pytest.mark.parametrize("method", METHODS)
def test_a_process_pool_executor_initializer_receives_the_ring_although_the_creator_left(
    name: str, method: str
) -> None:
    ctx = mp.get_context(method)
    ring = shmring.Ring(name, capacity=16, dtype=np.int64)
    ring.put_many(np.arange(5))
    ex = concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=keep, initargs=(ring,))
    try:
        future = ex.submit(drain_kept)  # starts the worker: the ring is pickled (or inherited) now
        ring.close()
        assert future.result(timeout=60) == [0, 1, 2, 3, 4]
    finally:
        ex.shutdown()
    assert not exists(name)


def test_a_pickled_handle_keeps_the_name_until_it_is_unpickled(name: str) -> None:
    ring = shmring.Ring(name, capacity=4)
    ring.put(9)
    data = pickle.dumps(ring)
    ring.close()
    assert exists(name)  # in flight: the name must wait for it
    received = pickle.loads(data)
    assert int(received.get()) == 9
    assert [e.role for e in received.endpoints() if e.role == "pending"] == []
    received.close()
    assert not exists(name)


def test_a_handle_in_flight_from_a_dead_sender_does_not_keep_the_name(name: str) -> None:
    ring = shmring.Ring(name, capacity=4)
    pid = os.fork()
    if pid == 0:
        pickle.dumps(ring)  # pending, never received; the sender dies
        os._exit(0)
    os.waitpid(pid, 0)
    assert [e.alive for e in ring.endpoints() if e.role == "pending"] == [False]
    ring.close()
    assert not exists(name)


def test_gc_collects_a_region_whose_holders_and_senders_are_all_dead(name: str) -> None:
    pid = os.fork()
    if pid == 0:
        ring = shmring.Ring(name, capacity=4)
        pickle.dumps(ring)  # a pending handle of a process about to die
        os._exit(0)  # no close, no atexit
    os.waitpid(pid, 0)
    assert exists(name)
    assert cli.main(["gc"]) == 0
    assert not exists(name)


def test_the_name_lives_while_another_handle_is_open_and_goes_with_the_last(name: str) -> None:
    first = shmring.Ring(name, capacity=4)
    second = shmring.Ring.attach(name)
    first.close()
    assert exists(name)
    third = shmring.Ring.attach(name)  # still reachable by name
    second.close()
    assert exists(name)
    third.close()
    assert not exists(name)


def test_a_handle_in_another_process_keeps_the_name(name: str) -> None:
    attached, leave = FORK.Event(), FORK.Event()

    def hold() -> None:
        with shmring.Ring.attach(name):
            attached.set()
            leave.wait(30)

    child = FORK.Process(target=hold)
    with shmring.Ring(name, capacity=4):
        child.start()
        assert attached.wait(30)
    assert exists(name)
    leave.set()
    child.join(30)
    assert child.exitcode == 0 and not exists(name)


def test_a_fork_childs_inherited_copy_neither_keeps_nor_removes_the_name(name: str) -> None:
    ring = shmring.Ring(name, capacity=4)
    pid = os.fork()
    if pid == 0:
        ring.close()  # the parent's handle is still open
        os._exit(0 if exists(name) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ring.close()
    assert not exists(name)


def test_pickling_a_closed_handle_is_a_value_error_at_once(name: str) -> None:
    ring = shmring.Ring(name, capacity=4)
    ring.close()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(ring)


def test_a_file_ring_outlives_its_last_handle(tmp_path: Any) -> None:
    path = str(tmp_path / "ring.bin")
    with shmring.Ring(path, capacity=2, backend="file") as ring:
        other = pickle.loads(pickle.dumps(ring))
        other.close()
    assert os.path.exists(path)
    with shmring.Ring.attach(path, backend="file") as again:
        again.unlink()
    assert not os.path.exists(path)


# -- restart after a crash ---------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_restarted_producer_replaces_the_abandoned_ring_only_when_asked(name: str, sig: int) -> None:
    child = FORK.Process(target=create_put_and_die, args=(name, sig))
    child.start()
    child.join(30)
    assert child.exitcode == -sig and exists(name)
    with pytest.raises(FileExistsError, match="abandoned") as info:
        shmring.Ring(name, capacity=4, dtype=np.int64)
    assert "replace_abandoned=True" in str(info.value) and "shmring rm" in str(info.value)
    with shmring.Ring(name, capacity=8, dtype=np.int64, replace_abandoned=True) as ring:
        assert ring.capacity == 8 and ring.empty()  # a new ring, not the old one
    assert not exists(name)


def test_replace_abandoned_still_refuses_a_ring_in_use(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        with pytest.raises(FileExistsError, match=f"in use by pid {os.getpid()}"):
            shmring.Ring(name, capacity=4, replace_abandoned=True)
        ring.put(1)  # untouched
        assert int(ring.get()) == 1


def _restart_race(name: str, go: Any, done: Any, out: Any) -> None:
    go.wait(30)
    try:
        ring = shmring.Ring(name, capacity=4, replace_abandoned=True)
    except FileExistsError:
        out.put("refused")
        return
    out.put("won")
    done.wait(30)  # hold it while the other tries
    ring.close()


def test_of_two_restarters_exactly_one_replaces_the_abandoned_ring(name: str) -> None:
    for _ in range(5):
        dead = FORK.Process(target=create_put_and_die, args=(name, signal.SIGKILL))
        dead.start()
        dead.join(30)
        go, done, out = FORK.Event(), FORK.Event(), FORK.Queue()
        racers = [FORK.Process(target=_restart_race, args=(name, go, done, out)) for _ in range(2)]
        for r in racers:
            r.start()
        go.set()
        verdicts = sorted(out.get(timeout=30) for _ in racers)
        done.set()
        for r in racers:
            r.join(30)
        assert verdicts == ["refused", "won"]
        assert not exists(name)


# -- attach that waits ---------------------------------------------------------------


def test_attach_waits_for_a_creator_that_starts_late(name: str) -> None:
    made: list[shmring.Ring] = []
    creator = threading.Timer(0.3, lambda: made.append(shmring.Ring(name, capacity=4)))
    creator.start()
    try:
        with shmring.Ring.attach(name, timeout=30) as ring:
            assert ring.capacity == 4
    finally:
        creator.join()
        for r in made:
            r.close()
    assert not exists(name)


def test_attach_gives_up_with_file_not_found_when_the_time_runs_out(name: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        shmring.Ring.attach(name, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(FileNotFoundError):
        shmring.Ring.attach(name)  # timeout=0: at once
    with pytest.raises(ValueError):
        shmring.Ring.attach(name, timeout=-1)


# -- smaller rules ------------------------------------------------------------------------


def test_reserve_and_borrow_take_block(name: str) -> None:
    with shmring.Ring(name, capacity=1) as ring:
        with pytest.raises(queue.Empty):
            with ring.borrow(block=False):
                pass
        with pytest.raises(queue.Empty):
            with ring.borrow_many(2, block=False):
                pass
        ring.put(1)
        with pytest.raises(queue.Full):
            with ring.reserve(block=False):
                pass
        assert ring.qsize() == 1


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_a_bad_timeout_is_refused_even_when_no_wait_is_needed(name: str, bad: float) -> None:
    with shmring.Ring(name, capacity=2) as ring:
        with pytest.raises(ValueError):
            ring.reserve(timeout=bad)
        ring.put(1)
        with pytest.raises(ValueError):
            ring.borrow(timeout=bad)
        with pytest.raises(ValueError):
            ring.borrow_many(1, timeout=bad)
        assert ring.qsize() == 1


def test_iterating_a_ring_yields_copies_until_eof(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64) as ring:
        with shmring.Ring.attach(name) as producer:
            producer.put_many(np.arange(3))
        items = list(ring)
        assert [int(x) for x in items] == [0, 1, 2]
        items[0][...] = 99  # copies: writable, not views of the ring
        assert ring.empty()


def test_nbytes_is_capacity_times_item_size(name: str) -> None:
    with shmring.Ring(name, capacity=5, shape=(3, 2), dtype=np.float32) as ring:
        assert ring.nbytes == 5 * 3 * 2 * 4


# -- found by review: each a regression test -------------------------------------------------


def test_closing_a_handle_stops_a_put_blocked_in_another_thread(name: str) -> None:
    """close() frees the producer entry; a put of the same handle blocked in
    another thread must not publish after that (a successor may own the role)."""
    consumer = shmring.Ring(name, capacity=1, dtype=np.int64)
    ring = shmring.Ring.attach(name)
    ring.put(1)
    errors: list[BaseException] = []

    def blocked_put() -> None:
        try:
            ring.put(2, timeout=20)
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=blocked_put)
    t.start()
    time.sleep(0.05)
    ring.close()
    assert int(consumer.get_nowait()) == 1  # room now: a put that survived close() would fill it
    t.join(20)
    assert len(errors) == 1 and "closed" in str(errors[0])
    with pytest.raises(EOFError):
        consumer.get(timeout=5)
    consumer.close()


def _attach_and_report(name: str, go: Any, out: Any) -> None:
    go.wait(30)
    try:
        ring = shmring.Ring.attach(name, timeout=0.5)
    except FileNotFoundError:
        out.put("too late")
        return
    out.put("ok" if exists(name) else "orphan")
    ring.close()


def test_an_attach_racing_the_last_close_never_keeps_an_orphaned_handle(name: str) -> None:
    verdicts = []
    for _ in range(30):
        ring = shmring.Ring(name, capacity=4)
        go, out = FORK.Event(), FORK.Queue()
        child = FORK.Process(target=_attach_and_report, args=(name, go, out))
        child.start()
        go.set()
        ring.close()  # the last handle out, while the child attaches
        verdicts.append(out.get(timeout=30))
        child.join(30)
        assert not exists(name)
    assert "orphan" not in verdicts, verdicts


HOLDERS_TERMINATED = """
import multiprocessing as mp, sys, time, shmring
def hold(ring, ready):
    ready.set()
    time.sleep(600)
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    ring = shmring.Ring(sys.argv[1], capacity=4)
    ready = [ctx.Event() for _ in range(2)]
    holders = [ctx.Process(target=hold, args=(ring, r)) for r in ready]
    for p in holders:
        p.start()
    for r in ready:
        assert r.wait(60)
    ring.close()  # the children still hold it
    for p in holders:
        p.terminate()  # SIGTERM, as Pool.__exit__ does to its workers: no finalizers run
        p.join()
"""


def test_a_ring_held_by_children_that_are_terminated_goes_when_its_creator_exits(name: str, tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "holders.py"
    script.write_text(HOLDERS_TERMINATED)
    subprocess.run([sys.executable, str(script), name], check=True, timeout=120)
    assert not exists(name)


def test_a_handle_pickled_and_never_unpickled_does_not_outlive_a_clean_exit(name: str) -> None:
    import subprocess
    import sys

    code = (
        "import pickle, shmring\n"
        f"r = shmring.Ring({name!r}, capacity=4)\n"
        "data = pickle.dumps(r)  # in flight to nobody\n"
        "r.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not exists(name)


def _create_and_hang_before_publishing(name: str) -> None:
    from shmring import _endpoints

    _endpoints.pause = lambda point: time.sleep(60) if point == "active" else None
    shmring.Ring(name, capacity=4)  # its holder entry is in; the header is not published yet


def test_a_region_whose_creator_died_before_publishing_it_can_be_replaced(name: str) -> None:
    child = FORK.Process(target=_create_and_hang_before_publishing, args=(name,))
    child.start()
    deadline = time.monotonic() + 30
    while not exists(name):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    with pytest.raises(FileExistsError, match="being created"):
        shmring.Ring(name, capacity=4, replace_abandoned=True)  # its creator is alive
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    with pytest.raises(FileExistsError, match="abandoned"):
        shmring.Ring(name, capacity=4)
    with shmring.Ring(name, capacity=4, replace_abandoned=True) as ring:
        ring.put(1)
        assert int(ring.get()) == 1
    assert not exists(name)


def test_a_fork_child_leaving_its_parents_borrow_or_reserve_block_touches_nothing(name: str) -> None:
    with shmring.Ring(name, capacity=8, dtype=np.int64) as ring:
        ring.put_many(np.arange(6))
        got = []
        with ring.borrow() as item:
            got.append(int(item))
            pid = os.fork()
        if pid == 0:
            os._exit(0)  # the child left the block: the loan is the parent's
        os.waitpid(pid, 0)
        got += [int(ring.get()) for _ in range(5)]
        assert got == [0, 1, 2, 3, 4, 5] and ring.empty()
        with ring.reserve() as slot:
            slot[...] = 7
            pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        assert ring.qsize() == 1 and int(ring.get()) == 7


def _receive_and_die_while_freeing(blob: bytes) -> None:
    from shmring import _endpoints

    _endpoints.pause = lambda point: time.sleep(60) if point == "freeing" else None
    pickle.loads(blob)


def test_a_receiver_killed_while_retiring_a_pending_entry_does_not_leak_the_entry(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        for _ in range(3):
            child = FORK.Process(target=_receive_and_die_while_freeing, args=(pickle.dumps(ring),))
            child.start()
            deadline = time.monotonic() + 30
            while not any(e.role == "pending" and e.state == "freeing" for e in ring.endpoints()):
                assert time.monotonic() < deadline
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            ring._table.reap()  # finishes the entry its dead freer left half-freed
            assert [(e.role, e.pid) for e in ring.endpoints()] == [("holder", os.getpid())]
