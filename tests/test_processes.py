"""Ring between real processes: volume, integrity, deaths, signals, pickling."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from typing import Any

import numpy as np
import pytest

import shmring

FORK = mp.get_context("fork")


# -- actors (module level so spawn/forkserver children can import them) ----------


def produce_small(ring: shmring.Ring, n: int) -> None:
    item = np.zeros(8, dtype=np.int64)
    for i in range(n):
        item[0] = i
        item[1] = i * 7919 % 1000003  # a second, derived word: a torn item breaks the pair
        ring.put(item)
    ring.close()


def pool_of_frames(size: int, count: int = 8) -> list[np.ndarray[Any, Any]]:
    rng = np.random.default_rng(1234)
    return [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(count)]


def frame_pool_size(size: int) -> int:
    return 3 if size > (1 << 20) else 8


def produce_frames(ring: shmring.Ring, n: int) -> None:
    pool = pool_of_frames(ring.shape[0], frame_pool_size(ring.shape[0]))
    for i in range(n):
        frame = pool[i % len(pool)]
        frame[:8] = np.frombuffer(np.int64(i).tobytes(), np.uint8)  # sequence stamp
        ring.put(frame)
    ring.close()


def produce_then_hang(ring: shmring.Ring, n: int, ready: Any) -> None:
    for i in range(n):
        ring.put(i)
    ready.set()
    time.sleep(600)


def consume_then_hang(ring: shmring.Ring, ready: Any) -> None:
    ring.get()
    ready.set()
    time.sleep(600)


def consume_and_report(ring: shmring.Ring, results: Any) -> None:
    got = []
    try:
        while True:
            got.append(int(ring.get(timeout=30)))
    except EOFError:
        results.put(got)
    ring.close()


def attach_and_put(name: str, values: list[int]) -> None:
    with shmring.Ring.attach(name) as r:
        for v in values:
            r.put(v)


# -- volume and integrity -------------------------------------------------------------


def test_a_million_small_messages_arrive_complete_and_in_order(name: str) -> None:
    n = 1_000_000
    with shmring.Ring(name, capacity=1024, shape=(8,), dtype=np.int64) as ring:
        child = FORK.Process(target=produce_small, args=(ring, n))
        child.start()
        firsts = np.empty(n, dtype=np.int64)
        seconds = np.empty(n, dtype=np.int64)
        get = ring.get
        for i in range(n):
            item = get(timeout=30)
            firsts[i] = item[0]
            seconds[i] = item[1]
        with pytest.raises(EOFError):
            ring.get(timeout=30)
        child.join(30)
        assert child.exitcode == 0
    np.testing.assert_array_equal(firsts, np.arange(n))
    np.testing.assert_array_equal(seconds, np.arange(n) * 7919 % 1000003)


def send_and_check_frames(name: str, size: int, n: int, capacity: int) -> None:
    """A fork child puts n frames of random bytes with a sequence stamp; here
    each must arrive in order with the right CRC, then EOF."""
    with shmring.Ring(name, capacity=capacity, shape=(size,), dtype=np.uint8) as ring:
        child = FORK.Process(target=produce_frames, args=(ring, n))
        child.start()
        pool = pool_of_frames(size, frame_pool_size(size))
        crcs = [zlib.crc32(memoryview(f)[8:]) for f in pool]
        for i in range(n):
            frame = ring.get(timeout=30)
            assert int(frame[:8].view(np.int64)[0]) == i
            assert zlib.crc32(memoryview(frame)[8:]) == crcs[i % len(pool)], f"frame {i} corrupt"
        with pytest.raises(EOFError):
            ring.get(timeout=30)
        child.join(30)
        assert child.exitcode == 0


def test_a_gibibyte_of_frames_arrives_intact_and_in_order(name: str) -> None:
    send_and_check_frames(name, size=1 << 20, n=1100, capacity=8)  # 1.07 GiB


def test_odd_sized_frames_through_a_ring_larger_than_the_cache_arrive_intact(name: str) -> None:
    """48 MiB of slots (more than this machine's L3) in GIL-free copies; the
    odd size misaligns every other slot."""
    send_and_check_frames(name, size=(16 << 20) + 3, n=24, capacity=3)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_ring_passes_to_spawned_children_by_name(name: str, method: str) -> None:
    ctx = mp.get_context(method)
    with shmring.Ring(name, capacity=16, dtype=np.int64) as ring:
        results = ctx.Queue()
        consumer = ctx.Process(target=consume_and_report, args=(ring, results))
        producer = ctx.Process(target=attach_and_put, args=(name, list(range(100))))
        consumer.start()
        producer.start()
        assert results.get(timeout=60) == list(range(100))
        producer.join(30)
        consumer.join(30)
        assert producer.exitcode == 0 and consumer.exitcode == 0
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_fork_child_never_unlinks_the_parents_ring(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        child = FORK.Process(target=ring.close)
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert os.path.exists(f"/dev/shm/{name}")
        ring.put(1)
        assert ring.get() == 1


def test_anon_ring_crosses_fork(name: str) -> None:
    with shmring.Ring(capacity=64, dtype=np.int64, backend="anon") as ring:
        results = FORK.Queue()
        child = FORK.Process(target=consume_and_report, args=(ring, results))
        child.start()
        for i in range(500):
            ring.put(i)
        ring.close()
        assert results.get(timeout=60) == list(range(500))
        child.join(30)


# -- deaths ----------------------------------------------------------------------------


def test_get_raises_eof_after_the_last_producer_is_sigkilled(name: str) -> None:
    with shmring.Ring(name, capacity=8, dtype=np.int64) as ring:
        ready = FORK.Event()
        child = FORK.Process(target=produce_then_hang, args=(ring, 5, ready))
        child.start()
        assert ready.wait(30)
        assert ring.get() == 0  # registers as consumer while the producer lives
        os.kill(child.pid or 0, signal.SIGKILL)
        assert [int(ring.get(timeout=10)) for _ in range(4)] == [1, 2, 3, 4]
        t0 = time.monotonic()
        with pytest.raises(EOFError):
            ring.get(timeout=30)  # queue.Empty here would mean the death went unnoticed
        assert time.monotonic() - t0 < 10
        child.join(10)


def test_a_producer_killed_while_blocked_on_a_full_ring_leads_to_eof(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64) as ring:
        ready = FORK.Event()
        child = FORK.Process(target=produce_then_hang, args=(ring, 1000, ready))
        child.start()
        while ring.qsize() < 4:
            time.sleep(0.01)
        time.sleep(0.1)  # the child is now asleep in put()
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
        got = [int(ring.get(timeout=10)) for _ in range(4)]
        assert got == [0, 1, 2, 3]
        with pytest.raises(EOFError):
            ring.get(timeout=30)


def test_put_raises_broken_pipe_after_the_consumer_is_sigkilled(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64) as ring:
        ready = FORK.Event()
        child = FORK.Process(target=consume_then_hang, args=(ring, ready))
        child.start()
        ring.put(0)
        assert ready.wait(30)
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
        with pytest.raises(BrokenPipeError):
            for i in range(100):  # fills the ring, then notices the death
                ring.put(i, timeout=30)


def test_a_killed_consumer_is_noticed_before_the_ring_fills(name: str) -> None:
    with shmring.Ring(name, capacity=100_000, dtype=np.int64) as ring:
        ready = FORK.Event()
        child = FORK.Process(target=consume_then_hang, args=(ring, ready))
        child.start()
        ring.put(0)
        assert ready.wait(30)
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
        item = np.zeros((), np.int64)
        with pytest.raises(BrokenPipeError):
            for _ in range(50_000):
                ring.put(item)
                time.sleep(0.0002)
        assert ring.qsize() < ring.capacity


def test_a_zombie_producer_counts_as_dead(name: str) -> None:
    with shmring.Ring(name, capacity=8, dtype=np.int64) as ring:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: produce two items, then vanish without closing
            try:
                ring.put(1)
                ring.put(2)
            finally:
                os.write(w, b"x")
                os._exit(0)
        os.read(r, 1)
        os.close(r)
        os.close(w)
        time.sleep(0.05)  # the child is now a zombie: exited, not reaped
        assert [int(ring.get(timeout=10)), int(ring.get(timeout=10))] == [1, 2]
        with pytest.raises(EOFError):
            ring.get(timeout=30)
        os.waitpid(pid, 0)


# -- signals and sleeping ---------------------------------------------------------------

BLOCKED_GET = textwrap.dedent(
    """
    import os, sys, time, queue
    import shmring
    ring = shmring.Ring(capacity=4)
    ring.put(0); ring.get()          # become a consumer (and, here, producer)
    mode = sys.argv[1]
    if mode == "cpu":
        t0 = sum(os.times()[:2]); w0 = time.monotonic()
        try:
            ring.get(timeout=1.5)
        except queue.Empty:
            pass
        print("cpu", sum(os.times()[:2]) - t0, "wall", time.monotonic() - w0, flush=True)
    else:
        print("ready", flush=True)
        ring.get()
    """
)


def test_ctrl_c_interrupts_a_blocked_get(name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_GET, "sigint"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0


def test_a_blocked_consumer_sleeps_instead_of_spinning() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED_GET, "cpu"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    cpu, wall = float(out[1]), float(out[3])
    assert wall >= 1.4
    assert cpu < 0.25 * wall, f"waiting used {cpu:.2f}s of CPU in {wall:.2f}s"


def test_get_with_timeout_on_an_idle_producer_raises_empty_not_eof(name: str) -> None:
    with shmring.Ring(name, capacity=4) as ring:
        producer = shmring.Ring.attach(name)
        producer.put(1)
        assert ring.get() == 1
        with pytest.raises(queue.Empty):
            ring.get(timeout=0.3)  # producer alive and silent: no EOF
        producer.close()
        with pytest.raises(EOFError):
            ring.get(timeout=5)


def test_a_fork_child_exits_although_a_parent_thread_was_copying_without_the_gil(name: str) -> None:
    """The review's recipe: a thread copies 8 MiB items (GIL released) while
    the main thread forks; the child's close() used to wait forever for a
    copy that no thread of the child would ever finish."""
    import threading

    size = 8 << 20
    with shmring.Ring(name, capacity=2, shape=(size,), dtype=np.uint8) as ring:
        item = np.ones(size, dtype=np.uint8)
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    ring.put(item, timeout=0.01)
                except queue.Full:
                    pass
                try:
                    ring.get_nowait()
                except queue.Empty:
                    pass

        busy_at_fork: list[bool] = []
        os.register_at_fork(before=lambda: busy_at_fork.append(ring._busy))  # the GIL is ours: exact
        thread = threading.Thread(target=pump)
        thread.start()
        try:
            forks = 0
            while not any(busy_at_fork) and forks < 200:
                while not ring._busy:
                    time.sleep(0)
                pid = os.fork()
                if pid == 0:
                    ring.close()  # the inherited handle; atexit would do the same
                    os._exit(0)
                forks += 1
                deadline = time.monotonic() + 10
                while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                if done[0] == 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail("the fork child hung in close()")
                assert os.waitstatus_to_exitcode(done[1]) == 0
            assert any(busy_at_fork), "never forked during a copy"
        finally:
            stop.set()
            thread.join()
