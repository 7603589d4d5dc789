"""The drop-in claim: the usage patterns of multiprocessing.Queue users, run
unchanged against multiprocessing.Queue and both flavours of shmring.Queue.

Each test takes ``make``, a factory with multiprocessing.Queue's signature
(``make(maxsize=0)``; ``ctx``, the start method's context, is only for
multiprocessing's own), and only uses what multiprocessing.Queue defines.
Where multiprocessing's feeder thread makes a put visible later, the test
waits as a user must (a blocking get with a timeout).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing as mp
import queue
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import shmring

Make = Callable[..., Any]
FORK = mp.get_context("fork")
T = 30  # generous timeout for a get that must succeed


@pytest.fixture(params=["multiprocessing", "shmring-lockfree", "shmring-semaphore"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    made: list[Any] = []

    def factory(maxsize: int = 0, ctx: Any = FORK) -> Any:
        if request.param == "multiprocessing":
            q: Any = ctx.Queue(maxsize)  # multiprocessing wants the children's context
        else:
            q = shmring.Queue(maxsize, sync=request.param.split("-")[1])
        made.append(q)
        return q

    yield factory
    for q in made:
        q.close()
        q.join_thread()


# -- workers (module level: spawn pickles them by name) -----------------------------------


def square_until_none(tasks: Any, results: Any) -> None:
    for x in iter(tasks.get, None):
        results.put((x, x * x))


def put_stamped(q: Any, me: int, n: int) -> None:
    for i in range(n):
        q.put((me, i))


def put_dict_of_arrays(q: Any, seed: int) -> None:
    q.put(frame(seed))


def put_exception(q: Any) -> None:
    try:
        raise ValueError("bad frame", 7)
    except ValueError as exc:
        q.put(exc)


@dataclasses.dataclass
class Reading:
    sensor: str
    values: np.ndarray[Any, Any]


def frame(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        "depth": rng.random((48, 64), dtype=np.float32),
        "meta": {"seed": seed, "tags": ["a", "b"], "pose": (1.0, 2.0, 3.0)},
        "readings": [Reading("imu", rng.random(6)), Reading("gps", np.arange(3.0))],
    }


def assert_frame(got: dict[str, Any], seed: int) -> None:
    want = frame(seed)
    assert got.keys() == want.keys()
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["depth"], want["depth"])
    assert got["meta"] == want["meta"]
    for g, w in zip(got["readings"], want["readings"], strict=True):
        assert g.sensor == w.sensor
        np.testing.assert_array_equal(g.values, w.values)


# -- the patterns -----------------------------------------------------------------------------


def test_workers_stop_at_a_sentinel_none(make: Make) -> None:
    tasks, results = make(), make()
    workers = [FORK.Process(target=square_until_none, args=(tasks, results)) for _ in range(3)]
    for w in workers:
        w.start()
    for x in range(200):
        tasks.put(x)
    for _ in workers:
        tasks.put(None)
    got = sorted(results.get(timeout=T) for _ in range(200))
    assert got == [(x, x * x) for x in range(200)]
    for w in workers:
        w.join(T)
        assert w.exitcode == 0


def test_many_workers_share_one_queue(make: Make) -> None:
    q = make()
    n, producers = 500, 4
    procs = [FORK.Process(target=put_stamped, args=(q, me, n)) for me in range(producers)]
    for p in procs:
        p.start()
    seen: dict[int, list[int]] = {me: [] for me in range(producers)}
    for _ in range(n * producers):
        me, i = q.get(timeout=T)
        seen[me].append(i)
    for p in procs:
        p.join(T)
        assert p.exitcode == 0
    assert all(items == list(range(n)) for items in seen.values())  # no loss, no duplicate, in order


def test_dicts_of_arrays_cross_processes(make: Make) -> None:
    q = make()
    procs = [FORK.Process(target=put_dict_of_arrays, args=(q, seed)) for seed in range(3)]
    for p in procs:
        p.start()
    got = [q.get(timeout=T) for _ in procs]
    for p in procs:
        p.join(T)
    for g in sorted(got, key=lambda f: f["meta"]["seed"]):
        assert_frame(g, g["meta"]["seed"])
        g["image"][0, 0, 0] = 1  # the arrays are the receiver's own
        assert g["image"].flags.writeable


def test_exceptions_travel_as_messages(make: Make) -> None:
    q = make()
    p = FORK.Process(target=put_exception, args=(q,))
    p.start()
    exc = q.get(timeout=T)
    p.join(T)
    assert isinstance(exc, ValueError) and exc.args == ("bad frame", 7)


def test_large_and_empty_messages(make: Make) -> None:
    q = make()
    big = np.random.default_rng(0).integers(0, 1 << 30, 1 << 20)  # 8 MiB
    messages: list[Any] = [b"", big, b"x" * (4 << 20), np.empty((0, 3)), "", (), {}]
    for m in messages:
        q.put(m)
    got = [q.get(timeout=T) for _ in messages]
    assert got[0] == b"" and got[2] == b"x" * (4 << 20) and got[4:] == ["", (), {}]
    np.testing.assert_array_equal(got[1], big)
    assert got[3].shape == (0, 3)


def test_timeouts_and_nowait(make: Make) -> None:
    q = make(1)
    q.put("first")
    with pytest.raises(queue.Full):
        q.put("second", timeout=0.05)
    with pytest.raises(queue.Full):
        q.put_nowait("second")
    with pytest.raises(queue.Full):
        q.put("second", block=False)
    assert q.get(timeout=T) == "first"
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)


def test_sizes(make: Make) -> None:
    q = make(3)
    assert q.qsize() == 0 and not q.full()
    for i in range(3):
        q.put(i)
    assert q.qsize() == 3 and q.full()
    assert q.get(timeout=T) == 0
    assert q.qsize() == 2 and not q.full()
    q.get(timeout=T)
    q.get(timeout=T)
    assert q.qsize() == 0 and q.empty()


def test_close(make: Make) -> None:
    q = make()
    q.put(1)
    q.close()
    with pytest.raises(ValueError):
        q.put(2)
    with pytest.raises(ValueError):
        q.get()
    if isinstance(q, shmring.Queue):
        # multiprocessing's empty() raises OSError once its reader is closed,
        # which depends on the Python version; shmring's always does.
        with pytest.raises(OSError):
            q.empty()
        with pytest.raises(OSError):
            q.qsize()
    q.join_thread()
    q.cancel_join_thread()


# -- handing the queue to children, under every start method ---------------------------------

_worker_queue: Any = None


def remember_queue(q: Any) -> None:
    global _worker_queue
    _worker_queue = q


def put_from_pool_worker(x: int) -> int:
    _worker_queue.put(x * 10)
    return x


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_args_and_pool_initializers(make: Make, method: str) -> None:
    ctx = mp.get_context(method)
    q = make(ctx=ctx)
    p = ctx.Process(target=put_stamped, args=(q, 0, 3))
    p.start()
    assert [q.get(timeout=T) for _ in range(3)] == [(0, 0), (0, 1), (0, 2)]
    p.join(T)
    assert p.exitcode == 0
    pool = ctx.Pool(2, initializer=remember_queue, initargs=(q,))
    try:
        assert sorted(pool.map(put_from_pool_worker, range(4))) == [0, 1, 2, 3]
    finally:
        # Not terminate(): a worker killed before it unpickled its handle
        # leaves that handle in flight, which keeps the name while we live.
        pool.close()
        pool.join()
    assert sorted(q.get(timeout=T) for _ in range(4)) == [0, 10, 20, 30]
    with concurrent.futures.ProcessPoolExecutor(2, ctx, initializer=remember_queue, initargs=(q,)) as ex:
        assert sorted(ex.map(put_from_pool_worker, range(3))) == [0, 1, 2]
    assert sorted(q.get(timeout=T) for _ in range(3)) == [0, 10, 20]
