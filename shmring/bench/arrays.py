"""The measurements of the Array section: shared state rather than streams.

Each row times one operation of ``shmring.Array`` against what a user would
reach for instead, in the same run:

* ``read()`` of a 1 MiB array (a consistent snapshot) against ``np.copyto``
  of the same bytes into the same preallocated array, one process;
* ``with a.lock(): pass`` against ``with multiprocessing.Lock(): pass``,
  uncontended (one process) and contended (two processes, both looping);
* ``a.add(i, 1)`` from two processes against ``multiprocessing.Value`` with
  ``with v.get_lock(): v.value += 1``, the standard library's way to count.

Every multi-process row checks its result: the adds' final value equals the
number of adds the processes reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing.context import ForkContext
from typing import Any

import numpy as np

from ..array import Array
from .children import run_children
from .config import CHILD_GRACE_S
from .results import ArrayOp, BenchError

SNAPSHOT_BYTES = 1 << 20


def _rate(step: Callable[[], object], seconds: float, chunk: int = 256) -> tuple[int, float]:
    """Call ``step`` in chunks for ``seconds``; (calls, elapsed)."""
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(chunk):
            step()
        n += chunk
        now = time.perf_counter()
        if now >= end:
            return n, now - t0


def _row(op: str, impl: str, processes: int, n: int, elapsed: float, nbytes: int = 0) -> ArrayOp:
    return ArrayOp(
        op=op,
        implementation=impl,
        shmring=impl.startswith("Array"),
        processes=processes,
        operations=n,
        seconds=elapsed,
        ops_per_s=n / elapsed,
        gb_per_s=n * nbytes / elapsed / 1e9 if nbytes else 0.0,
    )


def measure_snapshot(seconds: float) -> list[ArrayOp]:
    """read() of 1 MiB into a preallocated array, and np.copyto of the same."""
    shape = (SNAPSHOT_BYTES // 8,)
    with Array(shape=shape, dtype=np.float64, fill=1.0, backend="anon") as a:
        out = np.empty(shape)
        rows = [_row("snapshot 1 MiB", "Array.read(out)", 1, *_rate(lambda: a.read(out), seconds, 16), SNAPSHOT_BYTES)]
        src = a.array
        rows.append(
            _row("snapshot 1 MiB", "np.copyto", 1, *_rate(lambda: np.copyto(out, src), seconds, 16), SNAPSHOT_BYTES)
        )
    return rows


def _contended(
    ctx: ForkContext, seconds: float, make: Callable[[], Any], loop: Callable[[Any], Callable[[], object]]
) -> tuple[int, float]:
    """Two forked processes run ``loop(shared)`` for ``seconds`` after a
    common start; (total calls, longest elapsed)."""
    shared = make()
    start = ctx.Event()

    def job() -> tuple[int, float]:
        step = loop(shared)
        if not start.wait(CHILD_GRACE_S):
            raise BenchError("the start signal never came")
        return _rate(step, seconds)

    results = run_children(ctx, [("a", job), ("b", job)], CHILD_GRACE_S + seconds, start.set)
    return sum(n for n, _ in results), max(t for _, t in results)


def _lock_step(lock_cm: Callable[[], Any]) -> Callable[[], object]:
    def step() -> None:
        with lock_cm():
            pass

    return step


def measure_locks(ctx: ForkContext, seconds: float) -> list[ArrayOp]:
    """Lock/unlock round trips, one process and two contending."""
    rows = []
    with Array(shape=1, dtype=np.int64, backend="anon") as a:
        rows.append(_row("lock/unlock", "Array.lock()", 1, *_rate(_lock_step(a.lock), seconds)))
        n, t = _contended(ctx, seconds, lambda: a, lambda arr: _lock_step(arr.lock))
        rows.append(_row("lock/unlock", "Array.lock()", 2, n, t))
    lock = ctx.Lock()
    rows.append(_row("lock/unlock", "multiprocessing.Lock", 1, *_rate(_lock_step(lambda: lock), seconds)))
    n, t = _contended(ctx, seconds, ctx.Lock, lambda lk: _lock_step(lambda: lk))
    rows.append(_row("lock/unlock", "multiprocessing.Lock", 2, n, t))
    return rows


def measure_adds(ctx: ForkContext, seconds: float) -> list[ArrayOp]:
    """Counter increments from two processes; the final count is checked."""
    rows = []
    with Array(shape=1, dtype=np.int64, backend="anon") as a:
        n, t = _contended(ctx, seconds, lambda: a, lambda arr: lambda: arr.add(0, 1))
        if a.load(0) != n:
            raise BenchError(f"Array.add: the counter reads {a.load(0)} after {n} adds")
        rows.append(_row("add 1 (counter)", "Array.add", 2, n, t))

    def locked_add(v: Any) -> Callable[[], object]:
        def step() -> None:
            with v.get_lock():
                v.value += 1

        return step

    value = ctx.Value("q", 0)
    n, t = _contended(ctx, seconds, lambda: value, locked_add)
    if value.value != n:
        raise BenchError(f"multiprocessing.Value: the counter reads {value.value} after {n} adds")
    rows.append(_row("add 1 (counter)", "multiprocessing.Value", 2, n, t))
    return rows
