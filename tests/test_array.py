"""shmring.Array: a named shared ndarray with a crash-safe lock, seqlock
snapshots and atomic element operations, in both sync flavours."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import shmring
from shmring import _layout as L

FORK = mp.get_context("fork")
SYNCS = ["lockfree", "semaphore"]


@pytest.fixture(params=SYNCS)
def sync(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def counter(name: str, sync: str) -> Iterator[shmring.Array]:
    a = shmring.Array(name, shape=(4,), dtype=np.int64, sync=sync)
    yield a
    a.close()


# -- what it is ----------------------------------------------------------------------------


def test_create_fill_attach_and_share_memory(name: str, sync: str) -> None:
    with shmring.Array(name, shape=(3, 5), dtype=np.float32, fill=1.5, sync=sync) as a:
        assert a.shape == (3, 5) and a.dtype == np.float32 and a.nbytes == 60 and a.name == name
        assert a.sync == sync
        assert (a.array == 1.5).all()
        assert np.asarray(a).ctypes.data == a.array.ctypes.data  # the same memory, no copy
        assert a.array.ctypes.data % 64 == 0
        with shmring.Array.attach(name) as b:
            b.array[1, 2] = 9
            assert a.array[1, 2] == 9
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("backend", ["anon", "file"])
def test_anon_and_file_backends(backend: str, tmp_path: Path) -> None:
    where = None if backend == "anon" else str(tmp_path / "array")
    with shmring.Array(where, shape=4, dtype=np.int32, backend=backend) as a:
        a.store(0, 5)
        child = FORK.Process(target=add_many, args=(a, 1))  # anon: inherited; file: the same file
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert a.load(1) == 1
        if backend == "file":
            a.unlink()


def test_a_ring_is_not_an_array_nor_the_reverse(name: str) -> None:
    with shmring.Array(name, shape=2) as a:
        with pytest.raises(shmring.LayoutError, match="holds an Array, not a Ring"):
            shmring.Ring.attach(a.name or "")
    with shmring.Ring(name, capacity=2) as r:
        with pytest.raises(shmring.LayoutError, match="holds a Ring, not an Array"):
            shmring.Array.attach(r.name or "")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(shape=(0,)), ValueError),
        (dict(shape=(-1,)), ValueError),
        (dict(shape="x"), TypeError),
        (dict(shape=2, dtype=object), TypeError),
        (dict(shape=2, sync="spin"), ValueError),
        (dict(shape=2, dtype=np.int8, fill=300), OverflowError),
        (dict(shape=2, dtype=np.int32, fill=np.float64(1.5)), TypeError),
        (dict(shape=2, fill=[1, 2, 3]), ValueError),
    ],
)
def test_bad_arguments_raise_and_leave_nothing(kwargs: dict[str, Any], error: type, name: str) -> None:
    with pytest.raises(error):
        shmring.Array(name, **kwargs)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_pickles_by_name_and_the_last_handle_unlinks(name: str) -> None:
    a = shmring.Array(name, shape=3, dtype=np.int64)
    b = pickle.loads(pickle.dumps(a))
    a.close()
    assert os.path.exists(f"/dev/shm/{name}")  # b still holds it
    b.store(0, 1)
    b.close()
    assert not os.path.exists(f"/dev/shm/{name}")
    with shmring.Array(shape=2, backend="anon") as anon, pytest.raises(TypeError):
        pickle.dumps(anon)


def create_and_die(name: str) -> None:
    a = shmring.Array(name, shape=2, dtype=np.int64, fill=3)
    os.kill(os.getpid(), signal.SIGKILL)
    a.close()  # never reached


def test_replace_abandoned_and_attach_timeout(name: str) -> None:
    run_child(create_and_die, name)
    with pytest.raises(FileExistsError, match="abandoned"):
        shmring.Array(name, shape=2)
    with shmring.Array(name, shape=2, dtype=np.int64, replace_abandoned=True) as a:
        assert a.load(0) == 0  # a new Array, not the dead one's
    with pytest.raises(FileNotFoundError):
        shmring.Array.attach(name, timeout=0.05)


# -- the lock ---------------------------------------------------------------------------------


def add_under_lock(a: shmring.Array, n: int) -> None:
    for _ in range(n):
        with a.lock():
            a.array[0] += 1  # a plain read-modify-write: only the lock makes it exact
    a.close()


def test_the_lock_excludes_other_processes(counter: shmring.Array) -> None:
    procs = [FORK.Process(target=add_under_lock, args=(counter, 2000)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.array[0] == 8000


def test_the_lock_is_not_reentrant_and_times_out(counter: shmring.Array) -> None:
    with counter.lock():
        with pytest.raises(RuntimeError, match="not reentrant"), counter.lock():
            pass
        other = shmring.Array.attach(counter.name or "")
        try:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError), other.lock(timeout=0.2):
                pass
            assert time.monotonic() - t0 >= 0.2
        finally:
            other.close()
    with counter.lock(timeout=0):
        pass


def die_holding_the_lock(a: shmring.Array) -> None:
    a._acquire(None)
    os.kill(os.getpid(), signal.SIGKILL)


def die_inside_write(a: shmring.Array) -> None:
    with a.write() as view:
        view[:2] = 99  # half of a write
        os.kill(os.getpid(), signal.SIGKILL)


def run_child(target: Any, *args: Any) -> None:
    p = FORK.Process(target=target, args=args)
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


def test_a_dead_holders_lock_is_taken_over_and_reported(counter: shmring.Array) -> None:
    run_child(die_holding_the_lock, counter)
    t0 = time.monotonic()
    with counter.lock(timeout=10) as holder_died:
        assert holder_died and counter.holder_died
    assert time.monotonic() - t0 < 5
    with counter.lock() as holder_died:
        assert not holder_died and not counter.holder_died


def test_a_writer_dead_mid_write_is_an_error_until_the_next_write(counter: shmring.Array) -> None:
    with counter.write() as view:
        view[:] = 1
    run_child(die_inside_write, counter)
    with pytest.raises(shmring.ShmringError, match="died part-way"):
        counter.read()
    with counter.write() as view:
        assert counter.holder_died
        view[:] = 2
    assert counter.read().tolist() == [2, 2, 2, 2]


def test_ctrl_c_interrupts_a_lock_wait(tmp_path: Path, name: str, sync: str) -> None:
    script = tmp_path / "blocked.py"
    script.write_text(
        "import os, signal, threading, shmring\n"
        f"a = shmring.Array({name!r}, shape=1, sync={sync!r})\n"
        "b = shmring.Array.attach(a.name)\n"
        "a._acquire(None)\n"
        "threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "try:\n"
        "    with b.lock():\n"
        "        pass\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
        "b.close(); a.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "interrupted", out.stderr


# -- seqlock --------------------------------------------------------------------------------------


def write_versions(a: shmring.Array, stop: Any) -> None:
    version = 0
    while not stop.is_set():
        version += 1
        with a.write() as view:
            view[...] = version
        # A writer that never pauses starves every reader (a seqlock's nature:
        # a copy succeeds only between writes); a real one pauses.
        time.sleep(0.0005)
    a.close()


def test_snapshots_are_never_torn(name: str, sync: str) -> None:
    with shmring.Array(name, shape=(64, 1024), dtype=np.int64, sync=sync) as a:  # 512 KiB: copies without the GIL
        stop = FORK.Event()
        writer = FORK.Process(target=write_versions, args=(a, stop))
        writer.start()
        out = np.empty(a.shape, a.dtype)
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        try:
            while len(seen) < 20 and time.monotonic() < deadline:  # until the reads have overlapped many writes
                snap = a.read(out)
                assert snap is out
                first = out.flat[0]
                assert (out == first).all(), "a torn snapshot"
                seen.add(int(first))
        finally:
            stop.set()
            writer.join(60)
        assert writer.exitcode == 0
        assert len(seen) >= 20


def test_read_refuses_a_wrong_out(counter: shmring.Array) -> None:
    for bad in (np.empty(3, np.int64), np.empty(4, np.int32), np.empty(8, np.int64)[::2]):
        with pytest.raises(ValueError):
            counter.read(bad)


# -- atomic elements --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
def test_element_operations(dtype: Any, name: str) -> None:
    with shmring.Array(name, shape=(2, 3), dtype=dtype) as a:
        a.store((1, 2), 5)
        assert a.load(5) == a.load((-1, -1)) == a.array[1, 2] == 5
        assert a.add(5, 3) == 5 and a.load(5) == 8
        assert a.compare_exchange((1, 2), 7, 1) == (False, 8)
        assert a.compare_exchange((1, 2), 8, 1) == (True, 8) and a.load(5) == 1
        top = int(np.iinfo(dtype).max)
        a.store(0, top)
        assert a.add(0, 1) == top and a.load(0) == int(np.iinfo(dtype).min)  # wraps, as numpy does
        with pytest.raises(OverflowError):
            a.store(0, top + 1)
        with pytest.raises(IndexError):
            a.load(6)
        with pytest.raises(IndexError):
            a.load((2, 0))
        with pytest.raises(IndexError):
            a.load((0,))
        with pytest.raises(TypeError):
            a.load(1.0)


def test_element_operations_need_an_integer_dtype(name: str) -> None:
    with shmring.Array(name, shape=2, dtype=np.float64) as a, pytest.raises(TypeError, match="int32, int64"):
        a.add(0, 1)


def add_many(a: shmring.Array, n: int) -> None:
    for _ in range(n):
        a.add(1, 1)
    a.close()


def test_adds_from_many_processes_are_exact(counter: shmring.Array) -> None:
    procs = [FORK.Process(target=add_many, args=(counter, 100_000)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert counter.load(1) == 400_000


def test_the_semaphore_flavour_leaves_no_semaphore(name: str) -> None:
    with shmring.Array(name, shape=2, sync="semaphore") as a:
        sem_id = L.header_info(a._region.mapping)["sem_id"] if a._region else 0
        assert os.path.exists(f"/dev/shm/sem.shmring-{sem_id:016x}-lock")
    assert not os.path.exists(f"/dev/shm/sem.shmring-{sem_id:016x}-lock")


# -- the element operations against a sequential model ------------------------------------------


class ElementMachine(RuleBasedStateMachine):
    """load/store/add/compare_exchange on a random integer dtype and shape,
    against Python ints wrapped to the dtype's width."""

    def __init__(self) -> None:
        super().__init__()
        self.a: shmring.Array | None = None

    @initialize(
        dtype=st.sampled_from([np.int32, np.int64, np.uint32, np.uint64]), shape=st.sampled_from([(5,), (2, 3)])
    )
    def create(self, dtype: Any, shape: tuple[int, ...]) -> None:
        self.a = shmring.Array(shape=shape, dtype=dtype, backend="anon")
        info = np.iinfo(dtype)
        self.lo, self.hi, self.bits = int(info.min), int(info.max), info.bits
        self.model = [0] * int(np.prod(shape))
        self.shape = shape

    def wrap(self, v: int) -> int:
        v &= (1 << self.bits) - 1
        return v - (1 << self.bits) if self.lo < 0 and v > self.hi else v

    def index(self, data: st.DataObject) -> tuple[Any, int]:
        flat = data.draw(st.integers(0, len(self.model) - 1))
        if data.draw(st.booleans()) and len(self.shape) > 1:
            return tuple(int(i) for i in np.unravel_index(flat, self.shape)), flat
        return flat, flat

    def value(self, data: st.DataObject) -> int:
        return data.draw(st.integers(self.lo, self.hi))

    @rule(data=st.data())
    def store(self, data: st.DataObject) -> None:
        assert self.a is not None
        i, flat = self.index(data)
        v = self.value(data)
        self.a.store(i, v)
        self.model[flat] = v

    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        assert self.a is not None
        i, flat = self.index(data)
        v = self.value(data)
        assert self.a.add(i, v) == self.model[flat]
        self.model[flat] = self.wrap(self.model[flat] + v)

    @rule(data=st.data())
    def compare_exchange(self, data: st.DataObject) -> None:
        assert self.a is not None
        i, flat = self.index(data)
        expected = self.model[flat] if data.draw(st.booleans()) else self.value(data)
        new = self.value(data)
        ok, seen = self.a.compare_exchange(i, expected, new)
        assert seen == self.model[flat] and ok == (expected == self.model[flat])
        if ok:
            self.model[flat] = new

    @invariant()
    def loads_agree(self) -> None:
        if self.a is not None:
            assert [self.a.load(i) for i in range(len(self.model))] == self.model
            assert self.a.array.reshape(-1).tolist() == self.model

    def teardown(self) -> None:
        if self.a is not None:
            self.a.close()


ElementMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_element_operations_match_a_model = ElementMachine.TestCase
