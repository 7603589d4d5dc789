"""Rings with several producers and/or consumers (lock-free flavour).

Every method of the single-producer ring, per-producer order with many
processes on each side, and survival of claimers SIGKILLed while holding a
claim (a reserve()d slot, a borrow()ed run).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._endpoints import CONSUMER, PRODUCER

FORK = mp.get_context("fork")
TOPOLOGIES = [(True, False), (False, True), (True, True)]


@pytest.fixture(params=TOPOLOGIES, ids=["mp-sc", "sp-mc", "mp-mc"])
def ring(request: pytest.FixtureRequest, name: str) -> Iterator[shmring.Ring]:
    mp_, mc = request.param
    r = shmring.Ring(name, capacity=4, shape=(2,), dtype=np.int64, multi_producer=mp_, multi_consumer=mc)
    yield r
    r.close()


def pair(i: int) -> np.ndarray[Any, Any]:
    return np.array([i, -i], dtype=np.int64)


# -- one process: every method --------------------------------------------------------


def test_every_method_in_order(ring: shmring.Ring) -> None:
    ring.put(pair(0))
    ring.put_nowait(pair(1))
    assert ring.put_many(np.stack([pair(2), pair(3)])) == 2
    assert ring.full() and ring.qsize() == 4
    with pytest.raises(queue.Full):
        ring.put_nowait(pair(9))
    assert ring.get().tolist() == [0, 0]
    assert ring.get_many(2).tolist() == [[1, -1], [2, -2]]
    with ring.reserve() as slot:
        slot[:] = pair(4)
    with ring.borrow() as item:
        assert item.tolist() == [3, -3]
        assert not item.flags.writeable
    with ring.borrow_many(4) as items:
        assert items.tolist() == [[4, -4]]
    assert ring.empty()
    with pytest.raises(queue.Empty):
        ring.get_nowait()
    with pytest.raises(queue.Empty):
        ring.get(timeout=0.01)


@pytest.mark.parametrize("backend", ["shm", "anon", "file"])
def test_wraps_many_laps_on_every_backend(backend: str, name: str, tmp_path: Path) -> None:
    where = {"shm": name, "anon": None, "file": str(tmp_path / "ring")}[backend]
    with shmring.Ring(
        where, capacity=3, dtype=np.int64, multi_producer=True, multi_consumer=True, backend=backend
    ) as r:
        got = []
        for i in range(0, 300, 2):
            r.put_many([i, i + 1])
            got.extend(r.get_many(5).tolist())
        assert got == list(range(300))


def test_a_reserve_that_raises_leaves_a_hole_that_get_skips(ring: shmring.Ring) -> None:
    if not ring.multi_producer:
        pytest.skip("a single producer simply does not publish")
    ring.put(pair(1))
    with pytest.raises(KeyError), ring.reserve() as slot:
        slot[:] = pair(99)
        raise KeyError
    ring.put(pair(2))
    assert ring.qsize() == 3  # the hole holds its slot until a consumer passes it
    assert ring.get().tolist() == [1, -1]
    assert ring.get().tolist() == [2, -2]
    assert ring.empty()


def test_borrow_never_shows_a_hole(name: str) -> None:
    with shmring.Ring(name, capacity=8, dtype=np.int64, multi_producer=True, multi_consumer=True) as r:
        r.put(1)
        with pytest.raises(ValueError), r.reserve():
            raise ValueError
        r.put_many([2, 3])
        with r.borrow_many(8) as run:
            assert run.tolist() == [1]
        with r.borrow_many(8) as run:
            assert run.tolist() == [2, 3]


def test_get_many_skips_holes_in_a_batch(name: str) -> None:
    with shmring.Ring(name, capacity=8, dtype=np.int64, multi_producer=True) as r:
        for i in range(6):
            if i % 2:
                with pytest.raises(ValueError), r.reserve():
                    raise ValueError
            else:
                r.put(i)
        assert r.get_many(8).tolist() == [0, 2, 4]
        assert r.empty()


def test_close_inside_a_reserve_block_leaves_a_hole(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as consumer:
        producer = shmring.Ring.attach(name)
        producer.put(1)
        with producer.reserve() as slot:
            slot[...] = 2
            producer.close()
        assert consumer.get(timeout=5) == 1
        with pytest.raises(EOFError):
            consumer.get(timeout=5)


def test_one_consumer_only_on_a_multi_producer_ring(name: str) -> None:
    with shmring.Ring(name, capacity=4, multi_producer=True) as r:
        with pytest.raises(queue.Empty):
            r.get_nowait()
        other = shmring.Ring.attach(name)
        try:
            with pytest.raises(shmring.RoleError):
                other.get_nowait()
            other.put(1)  # many producers are fine
            r.put(2)
            assert r.get_many(4).tolist() == [1, 2]
        finally:
            other.close()


def test_big_items_copy_without_the_gil(name: str) -> None:
    shape = (256, 1024)  # 256 KiB
    with shmring.Ring(name, capacity=3, shape=shape, multi_producer=True, multi_consumer=True) as r:
        for i in range(7):
            r.put(np.full(shape, i, np.uint8))
            got = r.get()
            assert got.shape == shape and (got == i).all()


# -- a hostile header raises, never hangs --------------------------------------------


def test_a_sequence_word_ahead_of_its_position_raises_layout_error(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_consumer=True) as r:
        r.put(1)
        assert r._region is not None and r._region.mapping is not None
        _core.store64(r._region.mapping, L.SEQ_OFFSET, 2 * (0 + 4) + 1)  # slot 0 claims a later lap
        with pytest.raises(shmring.LayoutError):
            r.get_nowait()


def test_an_impossible_position_raises_layout_error(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as r:
        assert r._region is not None and r._region.mapping is not None
        _core.store64(r._region.mapping, L.HEAD_OFF, 1 << 62)
        with pytest.raises(shmring.LayoutError):
            r.put(1)


def test_data_offset_and_sequence_words_are_checked(name: str) -> None:
    with shmring.Ring(name, capacity=600, dtype=np.int64, multi_producer=True) as r:
        assert r._geo.data_offset == L.SEQ_OFFSET + 8192  # 600 words round up to two pages
        assert r._region is not None and r._region.mapping is not None
        raw = bytearray(r._region.mapping[: L.HEADER_SIZE])
        struct.pack_into("<Q", raw, L.DATA_OFFSET_OFF, L.DATA_OFFSET)
        struct.pack_into("<Q", raw, L.CHECKSUM_OFF, L.checksum(raw))
        with pytest.raises(shmring.LayoutError, match="puts the data at"):
            L.read_header(raw, len(r._region.mapping), L.KIND_RING)


# -- many processes ---------------------------------------------------------------------


def produce(ring: shmring.Ring, me: int, n: int, batch: int) -> None:
    i = 0
    while i < n:
        k = min(batch, n - i)
        items = np.array([[me, s] for s in range(i, i + k)], dtype=np.int64)
        if k == 1:
            ring.put(items[0])
        else:
            ring.put_many(items)
        i += k
    ring.close()


def consume(ring: shmring.Ring, out: str, batch: int) -> None:
    got = []
    try:
        while True:
            if batch == 1:
                got.append(ring.get(timeout=60))
            elif batch == 2:
                with ring.borrow_many(3, timeout=60) as run:
                    got.extend(run.copy())
            else:
                got.extend(ring.get_many(batch, timeout=60))
    except EOFError:
        pass
    np.save(out, np.array(got, dtype=np.int64).reshape(-1, 2))
    ring.close()


def start_producers_first(ring: shmring.Ring, procs: list[Any], producers: int, all_consumers: bool = False) -> None:
    """Start the producers, wait until all have registered (with no consumer
    yet, none can finish), then the consumers: otherwise a consumer could
    see every producer gone (EOF) before the last one arrived.

    ``all_consumers``: wait for every consumer to register too, before a test
    kills one (a fork child registers at its first get: if the killed one was
    the only consumer yet, the producers rightly see EPIPE, as a pipe's writer
    does when its only reader dies)."""
    for proc in procs[:producers]:
        proc.start()
    deadline = time.monotonic() + 60
    while ring._table.live(PRODUCER) < producers and time.monotonic() < deadline:
        time.sleep(0.005)
    for proc in procs[producers:]:
        proc.start()
    consumers = len(procs) - producers
    while all_consumers and ring._table.live(CONSUMER) < consumers and time.monotonic() < deadline:
        time.sleep(0.001)
    ring.close()


def check_stream(files: list[Path], producers: int, n: int, dead: dict[int, int] | None = None) -> None:
    """No loss, no duplicate, and each producer's items in order at each consumer."""
    seen: dict[int, list[int]] = {p: [] for p in range(producers)}
    for f in files:
        got = np.load(f)
        for p in range(producers):
            mine = got[got[:, 0] == p, 1].tolist()
            assert mine == sorted(mine), f"producer {p}'s items out of order at {f.name}"
            seen[p].extend(mine)
    for p, items in seen.items():
        assert len(items) == len(set(items)), f"producer {p}: duplicates"
        assert sorted(items) == list(range(n)), f"producer {p}: lost {set(range(n)) - set(items)}"


@pytest.mark.parametrize("producers,consumers", [(4, 4), (3, 1), (1, 3), (1, 1)])
@pytest.mark.parametrize("sync", ["lockfree", "semaphore"])
def test_many_producers_and_consumers_lose_nothing(
    sync: str, producers: int, consumers: int, name: str, tmp_path: Path
) -> None:
    n = 3000
    ring = shmring.Ring(
        name,
        capacity=16,
        shape=(2,),
        dtype=np.int64,
        sync=sync,
        multi_producer=producers > 1,
        multi_consumer=consumers > 1,
    )
    files = [tmp_path / f"c{c}.npy" for c in range(consumers)]
    procs = [FORK.Process(target=produce, args=(ring, p, n, p % 4 + 1)) for p in range(producers)]
    procs += [FORK.Process(target=consume, args=(ring, str(files[c]), c % 3 + 1)) for c in range(consumers)]
    start_producers_first(ring, procs, producers)
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    check_stream(files, producers, n)


def consume_logging(ring: shmring.Ring, out: str, batch: int) -> None:
    """A consumer that appends what it takes to ``out`` at once, so what it
    took before a SIGKILL is known."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            items = ring.get_many(batch, timeout=60)
            os.write(fd, np.ascontiguousarray(items, dtype=np.int64).tobytes())
    except EOFError:
        pass
    os.close(fd)
    ring.close()


@pytest.mark.parametrize("backend", ["shm", "anon", "file"])
@pytest.mark.parametrize("sync", ["lockfree", "semaphore"])
def test_4x4_with_a_producer_and_a_consumer_killed(sync: str, backend: str, name: str, tmp_path: Path) -> None:
    """No duplicate, per-producer order, and nothing lost but what the dead
    held: the killed consumer's last batch (at most 3 items, taken and not
    yet logged) and the killed producer's last claim (after its prefix)."""
    n, where = 20000, {"shm": name, "anon": None, "file": str(tmp_path / "ring")}[backend]
    ring = shmring.Ring(
        where, capacity=16, shape=(2,), dtype=np.int64, sync=sync, multi_producer=True, multi_consumer=True,
        backend=backend,
    )  # fmt: skip
    files = [tmp_path / f"c{c}.bin" for c in range(4)]
    # Producer 0 puts until it is killed, so no consumer can see EOF before the kills, however
    # late the scheduler starts one (and every consumer has registered before them).
    procs = [FORK.Process(target=produce, args=(ring, p, n if p else 2**62, 1 if p == 0 else p)) for p in range(4)]
    procs += [FORK.Process(target=consume_logging, args=(ring, str(files[c]), 3)) for c in range(4)]
    start_producers_first(ring, procs, 4, all_consumers=True)
    deadline = time.monotonic() + 30
    while not (files[0].exists() and files[0].stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.001)  # kill mid-stream: once consumer 0 has taken something
    for victim in (procs[0], procs[4]):  # producer 0, consumer 0
        os.kill(victim.pid or 0, signal.SIGKILL)
    for proc in procs:
        proc.join(120)
        assert proc.exitcode in ((-signal.SIGKILL,) if proc in (procs[0], procs[4]) else (0,)), proc
    if backend == "file":
        os.unlink(where or "")
    delivered: dict[int, list[int]] = {p: [] for p in range(4)}
    for f in files:
        got = np.fromfile(f, dtype=np.int64).reshape(-1, 2) if f.exists() else np.empty((0, 2), np.int64)
        for p in range(4):
            mine = got[got[:, 0] == p, 1].tolist()
            assert mine == sorted(mine), f"producer {p}'s items out of order at {f.name}"
            delivered[p].extend(mine)
    missing = 0
    for p, items in delivered.items():
        assert len(items) == len(set(items)), f"producer {p}: duplicates"
        sent = n if p else (max(items) + 1 if items else 0)  # the killed producer sent a prefix
        assert set(items) <= set(range(sent))
        missing += sent - len(items)
    assert missing <= 3, f"{missing} items lost; the killed consumer held at most 3"


# -- claimers SIGKILLed holding a claim --------------------------------------------------


def die_holding_a_reserved_slot(ring: shmring.Ring, value: int) -> None:
    with ring.reserve() as slot:
        slot[...] = value
        os.kill(os.getpid(), signal.SIGKILL)


def die_holding_a_borrowed_run(ring: shmring.Ring, k: int, ready: Any) -> None:
    with ring.borrow_many(k) as run:
        assert len(run) == k
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)


def run_child(target: Any, *args: Any) -> None:
    p = FORK.Process(target=target, args=args)
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


def test_a_producer_killed_inside_reserve_leaves_only_its_own_message_unsent(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as consumer:
        producer = shmring.Ring.attach(name)
        producer.put(1)
        run_child(die_holding_a_reserved_slot, producer, 2)
        run_child(die_holding_a_reserved_slot, producer, 3)  # two holes in a row
        producer.put(4)
        assert consumer.get(timeout=10) == 1
        assert consumer.get(timeout=10) == 4  # the dead claims were repaired, not waited on forever
        producer.close()
        with pytest.raises(EOFError):
            consumer.get(timeout=10)


def test_eof_when_the_last_producer_died_holding_a_claim(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as consumer:
        with pytest.raises(queue.Empty):
            consumer.get_nowait()
        run_child(die_holding_a_reserved_slot, consumer, 7)  # the child is the only producer
        with pytest.raises(EOFError):
            consumer.get(timeout=10)


def test_a_consumer_killed_inside_borrow_does_not_stall_the_producers(name: str) -> None:
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_consumer=True) as producer:
        consumer = shmring.Ring.attach(name)
        with pytest.raises(queue.Empty):
            consumer.get_nowait()  # registered: a consumer stays when the child dies
        producer.put_many([0, 1, 2, 3])
        ready = FORK.Event()
        run_child(die_holding_a_borrowed_run, consumer, 2, ready)
        assert ready.is_set()
        with pytest.raises(queue.Full):
            producer.put_nowait(9)  # the dead consumer's run still holds its slots
        assert producer.put_many([4, 5], timeout=10) == 2  # repaired: its items count as taken
        assert consumer.get_many(8, timeout=10).tolist() == [2, 3, 4, 5]
        consumer.close()


def test_a_live_claimer_is_never_repaired(name: str) -> None:
    """A slow live producer's claim is announced: consumers wait for it."""
    with shmring.Ring(name, capacity=4, dtype=np.int64, multi_producer=True) as consumer:
        producer = shmring.Ring.attach(name)
        try:
            with producer.reserve() as slot:
                slot[...] = 5
                with pytest.raises(queue.Empty):
                    consumer.get(timeout=0.5)  # several liveness intervals: it was not skipped
            assert consumer.get(timeout=5) == 5
        finally:
            producer.close()


def test_sequence_words_start_free(name: str) -> None:
    with shmring.Ring(name, capacity=5, dtype=np.int64, multi_producer=True) as r:
        assert r._region is not None and r._region.mapping is not None
        assert _core.load64_many(r._region.mapping, L.SEQ_OFFSET, 5) == [0, 2, 4, 6, 8]


def test_a_one_slot_ring_is_full_after_one_put(name: str) -> None:
    """Regression (found by the model test): with Vyukov's turns p and p + 1,
    a one-slot ring read "published p" as "free for p + 1" and let a second
    put overwrite the first item."""
    with shmring.Ring(name, capacity=1, dtype=np.int64, multi_producer=True, multi_consumer=True) as r:
        r.put(1)
        with pytest.raises(queue.Full):
            r.put_nowait(2)
        assert r.get_nowait() == 1
        r.put(3)
        assert r.get_nowait() == 3


@pytest.mark.parametrize("sync", ["lockfree", "semaphore"])
@pytest.mark.parametrize("mp_,mc", [(False, False), (True, False), (False, True), (True, True)])
def test_an_attached_handle_keeps_the_creators_flavour_and_topology(sync: str, mp_: bool, mc: bool, name: str) -> None:
    def look(ring: shmring.Ring, out: Any) -> None:
        other = shmring.Ring.attach(ring.name or "")
        out.put((other.sync, other.multi_producer, other.multi_consumer))
        other.close()

    with shmring.Ring(name, capacity=2, sync=sync, multi_producer=mp_, multi_consumer=mc) as r:
        out = FORK.SimpleQueue()
        child = FORK.Process(target=look, args=(r, out))
        child.start()
        child.join(30)
        assert out.get() == (sync, mp_, mc)
