"""Watchdogs of a running cell: the deadlock report and the busy-wait check.

A lane that moves no message for ``--deadlock-after`` seconds is reported
with everything needed to see why: the structure's header (indices, waiter
counts, endpoint table), each actor's log (phase, call in flight, counts),
its /proc state and wait channel, and the Python stack of every live actor
(faulthandler, registered on SIGUSR1 in each actor).

The busy-wait check rides on the actors' deliberate stalls: while one actor
pauses, its peer should block (the ring drains or fills; in an Array lane,
a writer or holder stalls holding the lock and the others wait for it).  If the peer sits
in one blocking call for the whole window and moves nothing, its CPU time
over the window must stay under ``--busy-cpu``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time

from . import board, procs
from .adapters import Adapter
from .lanes import Actor, Lane, exit_text
from .outcomes import Violation

TRACE_WAIT_S = 0.3  # for the actors to write their stacks
CHECK_AFTER_S = 0.12  # into a stall before the peer is expected to be blocked
CHECK_MARGIN_S = 0.03  # before the stall ends
CHECK_MIN_S = 0.15  # shortest window worth measuring


def deadlock_report(lane: Lane, adapter: Adapter, now: float) -> str:
    """Everything about a wedged lane, as text.  Takes TRACE_WAIT_S."""
    lines = [f"no progress for {now - lane.progress_at:.1f} s in state {lane.state!r}; plan {lane.plan}"]
    try:
        for key, value in adapter.dump(lane.owner).items():
            if isinstance(value, list):
                lines += [f"  {key}:"] + [f"    {x}" for x in value]
            else:
                lines.append(f"  {key}: {value}")
    except Exception as exc:  # noqa: BLE001 - a failed dump must not hide the deadlock
        lines.append(f"  (header dump failed: {exc!r})")
    for a in lane.actors:
        log = a.log
        published, pending = log.producer_state()
        state = f"published {published} pending {pending}" if a.producer else f"take pending {log.get(board.STATE)}"
        if lane.plan.kind:  # an Array lane
            state = f"in lock()/write() {log.get(board.LOCKING)} saw holder_died {log.get(board.DIED_SEEN)}x"
        life = procs.describe(a.pid) if a.alive else ("killed" if a.killed else exit_text(a.status or 0))
        lines.append(
            f"  {a.role} {a.id} pid {a.pid}: {life}; phase {log.get(board.PHASE)} "
            f"op {board.OPS[log.get(board.OP) % len(board.OPS)]} {state} count {log.get(board.COUNT)}"
        )
    live = lane.live()
    for a in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(a.pid, signal.SIGUSR1)
    time.sleep(TRACE_WAIT_S)
    for a in live:
        stack: list[str] = []
        with contextlib.suppress(OSError), open(a.log.path + ".trace") as f:
            stack = [ln.strip() for ln in f if ln.strip()][-12:]
        if stack:
            lines.append(f"  stack of {a.role} {a.id}:")
            lines += [f"    {ln}" for ln in stack]
    return "\n".join(lines)


@dataclasses.dataclass
class _Check:
    peer: Actor
    start_at: float
    end_at: float
    begun: bool = False
    cpu0: int = 0
    t0: float = 0.0
    op: int = 0
    count: int = 0


class BusyWatch:
    """Schedules a CPU check of the peer whenever an actor stalls."""

    def __init__(self, limit: float, cell: str):
        self.limit = limit
        self.cell = cell
        self.checks: list[_Check] = []
        self.seen: dict[int, int] = {}  # actor id -> the stall already scheduled
        self.checked = 0
        self.highest = 0.0

    def forget(self, lane: Lane) -> None:
        for a in lane.actors:
            self.seen.pop(a.id, None)
        self.checks = [c for c in self.checks if c.peer.lane is not lane]

    def scan(self, lanes: list[Lane], now: float) -> list[Violation]:
        now_ns = time.monotonic_ns()
        for lane in lanes:
            for a in lane.live():
                until = a.log.get(board.STALL_UNTIL)
                if not until or self.seen.get(a.id) == until:
                    continue
                self.seen[a.id] = until
                start, end = now + CHECK_AFTER_S, now + (until - now_ns) / 1e9 - CHECK_MARGIN_S
                if end - start >= CHECK_MIN_S:
                    self.checks += [_Check(peer, start, end) for peer in lane.stall_peers(a)]
        found = []
        for check in list(self.checks):
            if not check.begun and now >= check.start_at:
                if not self._begin(check, now):
                    self.checks.remove(check)
            elif check.begun and now >= check.end_at:
                self.checks.remove(check)
                found += self._end(check, now)
        return found

    def _begin(self, check: _Check, now: float) -> bool:
        log = check.peer.log
        op = log.get(board.OP)
        cpu = procs.cpu_ns(check.peer.pid) if check.peer.alive else None
        if cpu is None or board.OPS[op % len(board.OPS)] not in board.BLOCKING_OPS or log.get(board.STATE) == 0:
            return False  # not in a blocking call: nothing to measure
        check.begun, check.cpu0, check.t0, check.op, check.count = True, cpu, now, op, log.get(board.COUNT)
        return True

    def _end(self, check: _Check, now: float) -> list[Violation]:
        peer, log = check.peer, check.peer.log
        cpu = procs.cpu_ns(peer.pid) if peer.alive else None
        if cpu is None or log.get(board.OP) != check.op or log.get(board.COUNT) != check.count:
            return []  # it died, or it was not blocked all along
        share = (cpu - check.cpu0) / 1e9 / (now - check.t0)
        self.checked += 1
        self.highest = max(self.highest, share)
        if share <= self.limit:
            return []
        detail = (
            f"{peer.role} {peer.id} blocked in {board.OPS[check.op]} used {share:.0%} of a CPU "
            f"for {now - check.t0:.2f} s (limit {self.limit:.0%})"
        )
        return [Violation("busy_wait", peer.lane.where(self.cell), detail)]
