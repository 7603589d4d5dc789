"""The child processes every measurement runs in.

Every measurement runs between processes forked from this one
(multiprocessing start method "fork"); none of them runs threads of its own
besides what the transport under test starts.  ``run_children`` forks one
child per job, collects each job's value, and turns any failure (a failed
check, an exception, a dead or silent child) into a ``BenchError`` after
killing the other children.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext
from typing import Any

from .results import BenchError


def _child(job: Callable[[], object], conn: Connection[Any, Any]) -> None:
    """Body of every child: run ``job``, send back ("ok", value) or ("error", text)."""
    try:
        value = job()
    except BenchError as exc:  # a failed check: its message says it all
        conn.send(("error", str(exc)))
        raise SystemExit(1) from None
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails loudly
        conn.send(("error", "".join(traceback.format_exception(exc)).rstrip()))
        raise SystemExit(1) from None
    conn.send(("ok", value))


def run_children(
    ctx: ForkContext,
    jobs: Sequence[tuple[str, Callable[[], object]]],
    timeout: float,
    after_start: Callable[[], None] | None = None,
) -> list[Any]:
    """Fork one child per (label, job), run ``after_start`` here, and return
    each job's value.  Any failure kills the other children and raises
    BenchError, as does a child silent for ``timeout`` seconds."""
    procs, conns = [], []
    ok = False
    try:
        for label, job in jobs:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(job, writer), name=f"shmring-bench {label}", daemon=True)
            proc.start()
            writer.close()
            procs.append(proc)
            conns.append(reader)
        if after_start is not None:
            after_start()
        values: list[Any] = [None] * len(jobs)
        pending = set(range(len(jobs)))
        deadline = time.monotonic() + timeout
        while pending:
            ready = wait([conns[i] for i in pending], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                stuck = ", ".join(jobs[i][0] for i in sorted(pending))
                raise BenchError(f"timed out after {timeout:.0f} s waiting for: {stuck}")
            for i in [i for i in sorted(pending) if conns[i] in ready]:
                try:
                    status, value = conns[i].recv()
                except EOFError:
                    procs[i].join(1.0)
                    raise BenchError(f"{jobs[i][0]} died (exit code {procs[i].exitcode})") from None
                if status != "ok":
                    raise BenchError(f"{jobs[i][0]}: {value}")
                values[i] = value
                pending.discard(i)
        ok = True
        return values
    finally:
        for proc in procs:
            if ok:
                proc.join(10.0)
            if proc.is_alive():
                proc.kill()
            proc.join()
        for conn in conns:
            conn.close()
