"""shmring.Queue beyond the drop-in patterns: what travels and how, borrow,
batches, end of stream, lifetime, bad input, and survival of producers and
consumers SIGKILLed in the middle of a record."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._endpoints import PRODUCER

FORK = mp.get_context("fork")
SYNCS = ["lockfree", "semaphore"]


@pytest.fixture(params=SYNCS)
def q(request: pytest.FixtureRequest, name: str) -> Iterator[shmring.Queue]:
    with shmring.Queue(name=name, capacity=1 << 16, sync=request.param) as queue_:
        yield queue_


def exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


# -- what travels ------------------------------------------------------------------------------


def test_bytes_kinds_come_back_as_they_went(q: shmring.Queue) -> None:
    q.put(b"raw")
    q.put(bytearray(b"mutable"))
    q.put(memoryview(b"viewed"))
    q.put(memoryview(np.arange(4, dtype=np.uint8))[::2])  # not contiguous: its bytes
    assert q.get() == b"raw" and type(q.get()) is bytearray
    assert q.get() == b"viewed"
    assert q.get() == bytes([0, 2])


def test_arrays_come_back_equal_private_and_writable(q: shmring.Queue) -> None:
    arrays = [
        np.arange(12.0).reshape(3, 4),
        np.arange(12).reshape(3, 4).T,  # F-ordered
        np.arange(20)[::3],  # strided
        np.array(7, dtype=">i8"),  # 0-d, big-endian
        np.zeros((0, 5), np.complex64),
        np.array([(1, 2.5)], dtype=[("a", "<i2"), ("b", ">f8")]),
        np.array(["2024-01-02"], dtype="M8[D]"),
    ]
    for a in arrays:
        q.put(a)
    for a in arrays:
        got = q.get()
        assert got.dtype == a.dtype and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
        assert got.flags.writeable
        got[...] = got  # writable, and the ring's bytes are not under it:
    assert q.qsize() == 0


def test_arrays_nested_in_objects_go_out_of_band(q: shmring.Queue) -> None:
    big = np.arange(3000, dtype=np.float64)
    msg = {"a": big, "b": [big[::2].copy(), (1, "x")], "c": None}
    kind, parts = shmring.queue.encode(msg)
    assert kind == shmring.queue.KIND_PICKLE and isinstance(parts, tuple) and len(parts) == 3
    assert len(parts[0]) < 1000  # the stream holds no array bytes (24 KB): they follow it
    q.put(msg)
    got = q.get()
    np.testing.assert_array_equal(got["a"], big)
    np.testing.assert_array_equal(got["b"][0], big[::2])
    assert got["b"][1] == (1, "x") and got["c"] is None
    assert got["a"].flags.writeable and got["b"][0].flags.writeable


def test_an_unpicklable_object_raises_in_the_caller_and_puts_nothing(q: shmring.Queue) -> None:
    q.put(1)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put({"f": lambda: 0})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put_many([2, lambda: 0, 3])
    assert q.qsize() == 1 and q.get() == 1


def test_a_message_larger_than_the_queue_raises_at_once(q: shmring.Queue) -> None:
    with pytest.raises(ValueError, match="larger than this queue can ever hold"):
        q.put(b"x" * q.capacity)
    with pytest.raises(ValueError):
        q.put(np.zeros(q.capacity))
    assert q.qsize() == 0
    q.put(b"x" * (q.capacity - 16))  # the largest message that fits: the whole ring
    assert len(q.get()) == q.capacity - 16


# -- borrow --------------------------------------------------------------------------------


def test_borrow_gives_read_only_views_into_the_ring(q: shmring.Queue) -> None:
    a = np.arange(1000, dtype=np.int32)
    q.put({"a": a, "n": 1})
    assert q._data_ro is not None
    lo = q._data_ro.__array_interface__["data"][0]
    with q.borrow() as obj:
        view = obj["a"]
        np.testing.assert_array_equal(view, a)
        assert not view.flags.writeable
        addr = view.__array_interface__["data"][0]
        assert lo <= addr < lo + q.capacity  # no copy: the bytes are the ring's
        with pytest.raises(ValueError):
            view[0] = 5
    assert q.qsize() == 0


def test_borrow_frees_its_record_on_exit_even_on_error(q: shmring.Queue) -> None:
    for lap in range(50):  # many laps of a ring that holds a few messages
        q.put(np.full(4000, lap, np.int64))
        with pytest.raises(KeyError):
            with q.borrow() as arr:
                assert arr[0] == lap
                raise KeyError
    assert q.qsize() == 0


def test_borrow_bytes_and_plain_objects(q: shmring.Queue) -> None:
    q.put(b"abc")
    q.put([1, 2])
    with q.borrow() as b:
        assert b == b"abc"
    with q.borrow(timeout=1) as obj:
        assert obj == [1, 2]
    with pytest.raises(queue.Empty):
        with q.borrow(block=False):
            pass


# -- batches --------------------------------------------------------------------------------


def test_put_many_and_get_many_mix_kinds_in_order(q: shmring.Queue) -> None:
    items: list[Any] = [b"a", b"bb", {"x": np.arange(3)}, b"c", "s", np.ones(2)]
    assert q.put_many(items) == len(items)
    got = q.get_many(4)
    got += q.get_many(100)
    assert got[:2] == [b"a", b"bb"] and got[3:5] == [b"c", "s"]
    np.testing.assert_array_equal(got[2]["x"], np.arange(3))
    np.testing.assert_array_equal(got[5], np.ones(2))
    with pytest.raises(queue.Empty):
        q.get_many(3, block=False)


def test_put_many_stops_where_the_room_ends(name: str) -> None:
    with shmring.Queue(3, name=name) as q:
        assert q.put_many([b"1", b"2", b"3", b"4"], timeout=0.05) == 3
        with pytest.raises(queue.Full):
            q.put_many([b"5"], block=False)
        assert q.get_many(10) == [b"1", b"2", b"3"]


# -- end of stream ------------------------------------------------------------------------


def put_and_leave(q: shmring.Queue, items: list[Any]) -> None:
    for item in items:
        q.put(item)
    q.close()


def test_eof_only_for_an_untimed_get_after_every_producer_left(q: shmring.Queue) -> None:
    assert q.name is not None
    p = FORK.Process(target=put_and_leave, args=(q, [1, 2]))
    p.start()
    p.join(30)
    assert q.get() == 1 and q.get() == 2
    with pytest.raises(queue.Empty):
        q.get_nowait()  # as multiprocessing's: Empty, not EOF
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(EOFError):
        q.get()
    with pytest.raises(EOFError):
        q.get_many(5)


def test_iteration_ends_at_eof(q: shmring.Queue) -> None:
    p = FORK.Process(target=put_and_leave, args=(q, list(range(20))))
    p.start()
    assert list(q) == list(range(20))
    p.join(30)


def get_one_and_leave(q: shmring.Queue) -> None:
    q.get()
    q.close()


def test_broken_pipe_only_for_an_untimed_put_on_a_full_queue(name: str) -> None:
    with shmring.Queue(2, name=name) as q:
        p = FORK.Process(target=get_one_and_leave, args=(q,))
        p.start()
        q.put("taken")
        p.join(30)
        q.put("a")  # room: fine with no consumer left (one may come later)
        q.put("b")
        with pytest.raises(queue.Full):
            q.put("c", timeout=0.05)
        with pytest.raises(queue.Full):
            q.put_nowait("c")
        with pytest.raises(BrokenPipeError):
            q.put("c")
        assert take_all(q) == ["a", "b"]


def take_all(q: shmring.Queue) -> list[Any]:
    return q.get_many(100, block=False)


# -- lifetime, naming, backends ----------------------------------------------------------------


def test_the_last_handle_out_removes_the_name(name: str) -> None:
    q = shmring.Queue(name=name)
    other = shmring.Queue.attach(name)
    other.put(b"x")
    q.close()
    assert exists(name)
    assert other.get() == b"x"
    other.close()
    assert not exists(name)


def test_attach_refuses_another_kind_and_waits_for_a_name(name: str) -> None:
    with shmring.Queue(name=name):
        with pytest.raises(shmring.LayoutError, match="holds a Queue, not a Ring"):
            shmring.Ring.attach(name)
        with pytest.raises(FileExistsError):
            shmring.Queue(name=name)
    with pytest.raises(FileNotFoundError):
        shmring.Queue.attach(name, timeout=0.05)


def test_an_attached_handle_keeps_maxsize_and_flavour(name: str) -> None:
    with shmring.Queue(4, name=name, sync="semaphore", capacity=4096) as q:
        other = shmring.Queue.attach(name)
        assert (other.maxsize, other.sync, other.capacity) == (4, "semaphore", 4096)
        other.close()
        assert q.maxsize == 4


def drain_to(q: shmring.Queue, out: Any) -> None:
    out.put([q.get(), q.get()])


@pytest.mark.parametrize("backend", ["anon", "file"])
def test_other_backends(backend: str, tmp_path: Path) -> None:
    where = str(tmp_path / "q") if backend == "file" else None
    with shmring.Queue(name=where, backend=backend) as q:
        out = FORK.Queue()
        p = FORK.Process(target=drain_to, args=(q, out))
        p.start()
        q.put(np.arange(3))
        q.put({"k": b"v"})
        a, d = out.get(timeout=30)
        p.join(30)
        np.testing.assert_array_equal(a, np.arange(3))
        assert d == {"k": b"v"}
        if backend == "anon":
            with pytest.raises(TypeError, match="anon"):
                pickle.dumps(q)
    if where:
        os.unlink(where)


def test_bad_arguments(name: str) -> None:
    with pytest.raises(TypeError):
        shmring.Queue("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        shmring.Queue(capacity=0)
    with pytest.raises(ValueError):
        shmring.Queue(sync="spin")
    with pytest.raises(ValueError):
        shmring.Queue(name="a/b")
    with shmring.Queue(name=name) as q:
        with pytest.raises(ValueError):
            q.get(timeout=-1)
        with pytest.raises(ValueError):
            q.get_many(0)
    assert not exists(name)


def test_closed_handle_errors_are_both_value_and_os_errors(q: shmring.Queue) -> None:
    q.close()
    for call in (lambda: q.put(1), q.get, q.qsize, q.empty, q.full, lambda: q.put_many([1]), q.get_many):
        with pytest.raises(shmring.ClosedError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)


def test_a_corrupt_record_raises_layout_error_and_is_dropped(name: str) -> None:
    """A hostile process rewrites records in place: each get raises
    LayoutError (never reads outside the queue), and the queue goes on."""
    with shmring.Queue(name=name, capacity=4096) as q:
        mapping = q._region.mapping  # type: ignore[union-attr]
        data, records = q._geo.data_offset, q._geo.record_offset
        for _ in range(3):
            q.put(b"hello")  # one slot each: records at slots 0, 1, 2
        _core.store64(mapping, records, 1 << 40)  # slot 0's record word: an impossible length
        with pytest.raises(shmring.LayoutError):
            q.get_nowait()
        _core.store64(mapping, records, 5 | 1 << 48)  # as it was: the queue can go on
        assert q.get_nowait() == b"hello"
        _core.store64(mapping, data + 64 + 8, 3)  # slot 1's header: a kind its record word does not say
        with pytest.raises(shmring.LayoutError):
            q.get_nowait()
        _core.store64(mapping, data + 128 + 8, 1 | 5 << 32)  # slot 2: 5 parts in 5 bytes
        _core.store64(mapping, records + 16, 5 | 1 << 48)
        with pytest.raises(shmring.LayoutError):
            q.get_nowait()
        q.put(b"after")
        assert q.get_nowait() == b"after" and q.qsize() == 0


# -- many processes, and deaths -----------------------------------------------------------


def produce(q: shmring.Queue, me: int, n: int) -> None:
    rng = np.random.default_rng(me)
    for i in range(n):
        size = int(rng.integers(0, 2000))
        if i % 4 == 3:
            q.put_many([(me, i, np.full(size, i % 256, np.uint8))])
        else:
            q.put((me, i, np.full(size, i % 256, np.uint8)))
    q.close()


def consume_logging(q: shmring.Queue, out: str, mode: int) -> None:
    """Appends (producer, seq) of each message to ``out`` as soon as it has
    it, so what it took before a SIGKILL is known; checks every payload."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            if mode == 0:
                msgs = [q.get()]
            elif mode == 1:
                with q.borrow() as m:
                    msgs = [(m[0], m[1], np.array(m[2]))]
            else:
                msgs = q.get_many(3)
            for me, i, payload in msgs:
                assert (payload == i % 256).all(), "corrupted payload"
                os.write(fd, np.array([me, i], np.int64).tobytes())
    except EOFError:
        pass
    os.close(fd)
    q.close()


def start_producers_first(q: shmring.Queue, procs: list[Any], producers: int) -> None:
    for p in procs[:producers]:
        p.start()
    deadline = time.monotonic() + 60
    while q._table.live(PRODUCER) < producers and time.monotonic() < deadline:
        time.sleep(0.005)
    for p in procs[producers:]:
        p.start()


def read_logs(files: list[Path], producers: int) -> dict[int, list[int]]:
    seen: dict[int, list[int]] = {p: [] for p in range(producers)}
    for f in files:
        got = np.fromfile(f, np.int64).reshape(-1, 2) if f.exists() else np.empty((0, 2), np.int64)
        for p in range(producers):
            mine = got[got[:, 0] == p, 1].tolist()
            assert mine == sorted(mine), f"producer {p}'s messages out of order at {f.name}"
            seen[p].extend(mine)
    return seen


@pytest.mark.parametrize("sync", SYNCS)
def test_three_by_three_lose_nothing(sync: str, name: str, tmp_path: Path) -> None:
    n = 1500
    with shmring.Queue(name=name, capacity=1 << 14, sync=sync) as q:
        files = [tmp_path / f"c{c}.bin" for c in range(3)]
        procs = [FORK.Process(target=produce, args=(q, p, n)) for p in range(3)]
        procs += [FORK.Process(target=consume_logging, args=(q, str(files[c]), c)) for c in range(3)]
        start_producers_first(q, procs, 3)
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        for items in read_logs(files, 3).values():
            assert sorted(items) == list(range(n))  # none lost, none twice


@pytest.mark.parametrize("backend", ["shm", "anon"])
@pytest.mark.parametrize("sync", SYNCS)
def test_a_producer_and_a_consumer_killed_mid_stream(sync: str, backend: str, name: str, tmp_path: Path) -> None:
    """No duplicate, per-producer order, and nothing lost but what the dead
    held: the killed consumer's last batch (at most 3) and the killed
    producer's last message (after its prefix)."""
    n = 4000
    where = name if backend == "shm" else None
    with shmring.Queue(name=where, capacity=1 << 14, sync=sync, backend=backend) as q:
        files = [tmp_path / f"c{c}.bin" for c in range(3)]
        procs = [FORK.Process(target=produce, args=(q, p, n)) for p in range(3)]
        procs += [FORK.Process(target=consume_logging, args=(q, str(files[c]), c)) for c in range(3)]
        start_producers_first(q, procs, 3)
        deadline = time.monotonic() + 30
        while not (files[2].exists() and files[2].stat().st_size > 160) and time.monotonic() < deadline:
            time.sleep(0.001)
        for victim in (procs[0], procs[5]):  # producer 0; consumer 2 (get_many)
            os.kill(victim.pid or 0, signal.SIGKILL)
        for p in procs:
            p.join(120)
            assert p.exitcode == (-signal.SIGKILL if p in (procs[0], procs[5]) else 0), p
        seen = read_logs(files, 3)
        missing = 0
        for p, items in seen.items():
            assert len(items) == len(set(items)), f"producer {p}: duplicates"
            sent = n if p else (max(items) + 2 if items else 0)  # the dead one sent a prefix (+1 in flight)
            assert set(items) <= set(range(sent))
            missing += sent - len(items)
        assert missing <= 3 + 1


def write_a_big_record_slowly(q: shmring.Queue, nbytes: int) -> None:
    q.put(b"x" * nbytes)


def test_a_producer_killed_inside_a_record_leaves_a_hole_consumers_skip(name: str) -> None:
    """SIGKILL while the record's bytes are being copied in: the record
    is never delivered, what follows it is, and EOF still comes."""
    caught = 0
    for _ in range(8):
        with shmring.Queue(name=name, capacity=256 << 20) as q:
            q.put(b"before")  # registers us as a producer too: keep the queue open for the test
            child = FORK.Process(target=write_a_big_record_slowly, args=(q, 200 << 20))
            child.start()
            mapping = q._region.mapping  # type: ignore[union-attr]
            while _core.load64(mapping, L.HEAD_OFF) < 2 and child.is_alive():
                pass  # the child has claimed its slots
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
            first = q._geo.seq_offset + 8 * 1  # the big record's first slot ("before" took one)
            published = _core.load64(mapping, first) & ~(3 << 62) == 2 * 1 + 1
            q.put(b"after")
            assert q.get(timeout=10) == b"before"
            if published:
                assert len(q.get(timeout=10)) == 200 << 20  # the kill came too late: delivered whole
            else:
                caught += 1
            assert q.get(timeout=10) == b"after"  # the hole is skipped once its writer is known dead
        if caught:
            break
    assert caught >= 1, "never killed a producer inside its record"


def die_inside_borrow(q: shmring.Queue, ready: Any) -> None:
    with q.borrow():
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("sync", SYNCS)
def test_a_consumer_killed_inside_borrow_does_not_stall_producers(sync: str, name: str) -> None:
    with shmring.Queue(name=name, capacity=1024, sync=sync) as q:
        consumer = shmring.Queue.attach(name)
        with pytest.raises(queue.Empty):
            consumer.get_nowait()  # a consumer stays registered when the child dies
        for i in range(3):
            q.put(bytes([i]) * 300)  # 3 records of 5 of its 16 slots: nearly full
        ready = FORK.Event()
        child = FORK.Process(target=die_inside_borrow, args=(consumer, ready))
        child.start()
        child.join(30)
        assert ready.is_set() and child.exitcode == -signal.SIGKILL
        assert consumer.get(timeout=10) == bytes([1]) * 300  # the dead one's record counts as taken
        q.put(b"y" * 600, timeout=10)  # needs the dead one's slots: repaired, not waited on forever
        assert consumer.get(timeout=10) == bytes([2]) * 300
        assert consumer.get(timeout=10) == b"y" * 600
        consumer.close()


def test_qsize_counts_messages_put_by_many_processes(name: str) -> None:
    with shmring.Queue(name=name) as q:
        procs = [FORK.Process(target=put_and_leave, args=(q, list(range(50)))) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert q.qsize() == 200 and not q.empty()
        assert len(q.get_many(1000)) == 200 and q.qsize() == 0


# -- the shmring command -----------------------------------------------------------------------


def create_and_die(name: str) -> None:
    q = shmring.Queue(2, name=name, sync="semaphore")
    q.put({"left": "behind"})
    os.kill(os.getpid(), signal.SIGKILL)


def test_ls_stat_and_gc_know_queues(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from shmring import _semaphore, cli

    with shmring.Queue(5, name=name, capacity=4096) as q:
        q.put(b"one")
        q.put(b"two")
        q.get()
        assert cli.main(["ls"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name))
        assert row.split()[1:5] == ["Queue", "lockfree", "MPMC", "4.0K"]
        assert cli.main(["ls", "--json"]) == 0
        (info,) = (r for r in json.loads(capsys.readouterr().out) if r["name"] == name)
        assert (info["capacity"], info["fill"]) == (4096, 1)
        assert (info["statistics"]["messages_in"], info["statistics"]["messages_out"]) == (2, 1)
        assert (info["statistics"]["bytes_in"], info["statistics"]["bytes_out"]) == (6, 3)
        assert cli.main(["stat", name]) == 0
        out = capsys.readouterr().out
        assert "maxsize: 5" in out and "messages in: 2  (6 B" in out and "messages out: 1  (3 B" in out
    child = FORK.Process(target=create_and_die, args=(name,))
    child.start()
    child.join(30)
    assert exists(name)
    with open(f"/dev/shm/{name}", "rb") as f:
        sem_id = _semaphore.id_in_header(f.read(L.IMMUTABLE_END))
    assert sem_id and all(os.path.exists(f"/dev/shm/sem.{n[1:]}") for n in _semaphore.names(sem_id, ("free", "full")))
    assert cli.main(["gc"]) == 0
    assert not exists(name)
    assert not any(os.path.exists(f"/dev/shm/sem.{n[1:]}") for n in _semaphore.names(sem_id, ("free", "full")))


# -- signals, sleeping, and the README ---------------------------------------------------------

BLOCKED = textwrap.dedent(
    """
    import os, sys, time, queue
    import shmring
    q = shmring.Queue(1, capacity=4096, sync=sys.argv[2])
    q.put(b"x"); q.get()                 # a producer and a consumer: no EOF, no EPIPE
    if sys.argv[1] == "cpu":
        t0 = sum(os.times()[:2]); w0 = time.monotonic()
        for call in (lambda: q.get(timeout=0.75), lambda: (q.put(1), q.put(2, timeout=0.75))):
            try:
                call()
            except (queue.Empty, queue.Full):
                pass
        print("cpu", sum(os.times()[:2]) - t0, "wall", time.monotonic() - w0, flush=True)
    else:
        print("ready", flush=True)
        q.get() if sys.argv[1] == "get" else (q.put(1), q.put(2))
    """
)


@pytest.mark.parametrize("sync", SYNCS)
@pytest.mark.parametrize("call", ["get", "put"])
def test_ctrl_c_interrupts_a_blocked_call(call: str, sync: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED, call, sync], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert "KeyboardInterrupt" in err and proc.returncode != 0


@pytest.mark.parametrize("sync", SYNCS)
def test_blocked_calls_sleep_instead_of_spinning(sync: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED, "cpu", sync], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    cpu, wall = float(out[1]), float(out[3])
    assert wall >= 1.4
    assert cpu < 0.25 * wall, f"waiting used {cpu:.2f}s of CPU in {wall:.2f}s"


def test_the_readme_queue_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = next(b for b in readme.split("```python\n")[1:] if "shmring.Queue(" in b).split("```")[0]
    for method in ("fork", "spawn"):
        script = tmp_path / f"example_{method}.py"  # a file: spawn children import the main module
        script.write_text(example.replace('__main__":', f'__main__":\n    mp.set_start_method("{method}")'))
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]


def test_an_abandoned_queue_is_replaced_only_when_asked(name: str) -> None:
    child = FORK.Process(target=create_and_die, args=(name,))
    child.start()
    child.join(30)
    with pytest.raises(FileExistsError, match="abandoned"):
        shmring.Queue(name=name)
    with shmring.Queue(name=name, replace_abandoned=True) as q:
        with pytest.raises(queue.Empty):
            q.get_nowait()  # a new queue: the dead creator's message is gone with it
        q.put(b"new")
        assert q.get() == b"new"


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sync", SYNCS)
def test_threads_share_one_handle_as_with_multiprocessing(sync: str, name: str) -> None:
    """Four threads put through one handle and two get through another, with
    messages large enough to be copied without the GIL: nothing lost."""
    import threading

    q = shmring.Queue(name=name, capacity=1 << 20, sync=sync)
    consumer = shmring.Queue.attach(name)
    n, got, errors = 60, [], []

    def put(me: int) -> None:
        try:
            for i in range(n):
                q.put((me, i, np.full(20_000, i, np.int32)))  # 80 KB: copied without the GIL
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def get() -> None:
        try:
            for _ in range(2 * n):
                me, i, a = consumer.get(timeout=30)
                assert (a == i).all()
                got.append((me, i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(me,)) for me in range(4)]
    threads += [threading.Thread(target=get) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    consumer.close()
    q.close()
    assert not errors, errors
    assert sorted(got) == [(me, i) for me in range(4) for i in range(n)]


# -- regressions the stress harness found ------------------------------------------------------


def test_put_many_says_how_many_went_in_when_the_consumers_leave_part_way(name: str) -> None:
    with shmring.Queue(3, name=name) as q:
        consumer = shmring.Queue.attach(name)
        with pytest.raises(queue.Empty):
            consumer.get_nowait()  # a consumer was there...
        consumer.close()  # ... and is gone
        assert q.put_many([b"a", b"b", b"c", b"d", b"e"]) == 3  # not BrokenPipeError: 3 went in
        with pytest.raises(BrokenPipeError):
            q.put_many([b"f"])


def put_forever(q: shmring.Queue) -> None:
    i = 0
    while True:
        q.put(i.to_bytes(8, "little"))
        i += 1


def test_qsize_stays_exact_after_producers_are_killed_anywhere(name: str) -> None:
    """qsize() counts the records themselves: a producer SIGKILLed between
    any two of its steps cannot leave it off by one."""
    with shmring.Queue(name=name, capacity=1 << 12) as q:
        for round_ in range(12):
            child = FORK.Process(target=put_forever, args=(q,))
            child.start()
            time.sleep(0.01 + 0.003 * round_)
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
            n = q.qsize()
            got = q.get_many(10_000, timeout=5) if n else []
            assert len(got) == n, f"qsize said {n}, the queue held {len(got)}"
            assert q.qsize() == 0 and q.empty()


def test_a_producer_killed_mid_message_gives_its_admission_back(name: str) -> None:
    """maxsize=1: a producer SIGKILLed inside its message's copy held the
    one admission; the next put finds it dead and takes the room back."""
    with shmring.Queue(1, name=name, capacity=128 << 20) as q:
        q.put(b"x")
        assert q.get() == b"x"  # we are a consumer (so no EOF) and a producer
        mapping = q._region.mapping  # type: ignore[union-attr]
        for _ in range(8):
            head = _core.load64(mapping, L.HEAD_OFF)
            child = FORK.Process(target=write_a_big_record_slowly, args=(q, 100 << 20))
            child.start()
            while _core.load64(mapping, L.HEAD_OFF) == head and child.is_alive():
                pass  # the child was admitted and has claimed its slots
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
            if q.qsize() == 0:  # killed inside the copy: its admission is the dead's
                break
            q.get()  # too late: it was published
        else:
            pytest.fail("never killed a producer inside its message")
        q.put(b"after", timeout=10)  # healed: not queue.Full for ever
        assert q.get(timeout=10) == b"after"


def put_sizes(q: shmring.Queue, sizes: list[int]) -> None:
    for size in sizes:
        q.put(b"x" * size)
    q.close()


def test_the_semaphore_flavour_wakes_producers_for_pads_it_frees(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages of a third to nearly all of the queue: most puts wrap, so a
    pad is claimed and the record must wait for the consumer to free the
    pad too.  A get that frees a pad on its way to nothing must wake the
    producer; it did not, and each message cost a 0.1 s timeout on both
    sides (the stress harness's large-message cells ran at 26 messages/s)."""
    long_waits = FORK.Value("i", 0)
    wait = shmring.queue._Signals.wait

    def timed_wait(sem: Any, timeout: float) -> None:
        t0 = time.monotonic()
        wait(sem, timeout)
        if time.monotonic() - t0 >= 0.09:
            with long_waits.get_lock():
                long_waits.value += 1

    monkeypatch.setattr(shmring.queue._Signals, "wait", staticmethod(timed_wait))
    rng = np.random.default_rng(1)
    sizes = [int(s) for s in rng.integers(40_000, 130_000, 100)]
    with shmring.Queue(name=name, capacity=2178 * 64, sync="semaphore") as q:
        child = FORK.Process(target=put_sizes, args=(q, sizes))
        child.start()
        got = [len(q.get(timeout=30)) for _ in sizes]  # timed: the wait in the parent is counted too
        child.join(30)
    assert got == sizes
    assert long_waits.value <= 20, f"{long_waits.value} waits ran to their 0.1 s timeout for 100 messages"
