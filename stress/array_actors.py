"""The actors of Array lanes: writers and readers, adders and loaders,
holders and observers, run in fork children of the supervisor.

An Array holds state, not a stream, so its lanes come in three kinds that
run side by side (schedule.plan_array_lane); in each, the "producers" change
the Array and the "consumers" look at it:

``seqlock``
  A *writer* fills the whole array, under ``write()``, with one value: the
  time of the write in microseconds since the lane was made, times 65536,
  plus its actor id (so a version says who wrote it and when).  It writes
  half, then the rest (an aimed kill lands between the halves), and it first
  looks at what it overwrites: data that is not uniform means the previous
  writer died part-way, which ``holder_died`` must say (else
  ``holder_died_missed``; or ``torn`` if that writer lives: two at once).  A
  *reader* calls ``read()`` and checks the copy: not uniform is ``torn``, a
  version older than one it already read is ``stale_read``.  A read() that
  raises "died part-way" is logged (error time, the version of its last good
  copy) for the arbiter, which accepts it only under a writer SIGKILLed
  inside write() (``spurious_read_error`` otherwise).
``counter``
  An *adder* adds a small value to a random counter with ``add()`` (or a
  ``compare_exchange()`` loop), by flat or tuple index.  Per counter, its log
  word holds the sum of what it added and, while one is in flight, that
  value (one 8-byte store before the call, one after): a SIGKILL leaves the
  arbiter exactly "this last update may or may not have landed".  add()
  returns the old value, which must have grown by at least what this adder
  added before (``miscounted``).  A *loader* ``load()``s counters, which must
  never go down.
``lock``
  A *holder* takes ``lock()``, checks the owner word (element 1) is 0 unless
  ``holder_died`` (a dead holder's id; a live one's is ``lock_broken``),
  writes its id there, reads the counter (element 0) with a plain load, may
  be held there for an aimed kill or stall, stores the counter + 1 and
  clears the owner word.  A lost update is two holders at once; the arbiter
  compares the final counter with the holders' logs.  An *observer*
  ``load()``s the counter, which must never go down.

Every ``holder_died=True`` a writer or holder sees is counted (``DIED_SEEN``);
around each lock()/write() call ``LOCKING`` says a death there may hold the
lock.  The arbiter (arbiter.judge_array) does the rest from the logs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import board
from .actors import EXIT_OK, ActorContext, Events, _close, _hold, _open, log_path
from .board import ActorLog
from .schedule import Schedule

VERSION_SHIFT = 65536  # a seqlock value: version (us since the lane was made) * 65536 + writer id % 65536


def version_of(value: Any) -> int:
    return int(value) // VERSION_SHIFT


def writer_of(value: Any) -> int:
    return int(value) % VERSION_SHIFT


def run_array(ctx: ActorContext, events: Events) -> int:
    """Entry point of an Array actor (after actors._act's setup)."""
    log = ctx.log
    handle = _open(ctx, events)
    role = _Role(ctx, events, handle)
    step: Callable[[], None] = {
        ("seqlock", True): role.write,
        ("seqlock", False): role.read,
        ("counter", True): role.add,
        ("counter", False): role.load,
        ("lock", True): role.hold,
        ("lock", False): role.observe,
    }[ctx.plan.kind, ctx.producer]
    sched = Schedule(ctx.seed, ctx.temper, producer=ctx.producer, now=time.monotonic())
    while True:
        step()
        log.add(board.COUNT)
        log.add(board.CALLS)
        if log.get(board.PHASE) == board.PHASE_STARTING:
            log.set(board.PHASE, board.PHASE_REGISTERED)
        if log.get(board.STOP) or (not ctx.producer and ctx.control.get(board.LANE_DONE)):
            break
        seconds, stall = sched.pause(time.monotonic())
        if stall and ctx.producer and ctx.plan.kind != "counter":
            role.stall = seconds  # made inside the next lock()/write() block: the others must sleep
        elif seconds:
            time.sleep(seconds)
    log.set(board.PHASE, board.PHASE_EXITING)
    _close(ctx, handle)
    log.set(board.PHASE, board.PHASE_DONE)
    return EXIT_OK


class _Role:
    """One actor's state and its step, whichever role it plays."""

    def __init__(self, ctx: ActorContext, events: Events, handle: Any):
        self.ctx, self.events, self.handle, self.log = ctx, events, handle, ctx.log
        self.adapter: Any = ctx.adapter
        self.rng = random.Random(ctx.seed ^ 0x5EED)
        self.shape = tuple(ctx.plan.shape)
        self.size = int(np.prod(self.shape))
        self.born = ctx.control.get(board.BORN_NS)
        self.stall = 0.0
        self.logs: dict[int, ActorLog] = {}
        self.last_version = -1  # reader: the version of its newest good copy
        self.out: np.ndarray[Any, Any] | None = None
        self.seen: dict[int, int] = {}  # adder/loader/observer: counter -> lowest value it may have now
        itemsize = np.dtype(ctx.plan.dtype).itemsize
        self.most = 15 if itemsize == 4 else 127  # largest value added (32-bit counters never wrap)

    # -- shared pieces -------------------------------------------------------------------
    def _begin(self, op: str, locking: bool = False) -> None:
        self.log.set(board.OP, board.OP_CODE[op])
        self.log.set(board.STATE, 1)  # a call in flight (the busy-wait check looks at blocked lock users)
        if locking:
            self.log.set(board.LOCKING, 1)

    def _end(self) -> None:
        self.log.set(board.LOCKING, 0)
        self.log.set(board.STATE, 0)
        self.log.set(board.OP, 0)

    def _stall_inside(self) -> None:
        if self.stall:
            seconds, self.stall = self.stall, 0.0
            self.log.set(board.STALL_UNTIL, time.monotonic_ns() + int(seconds * 1e9))
            time.sleep(seconds)
            self.log.set(board.STALL_UNTIL, 0)

    def _killed(self, actor: int) -> bool:
        """Was ``actor`` (of this lane) SIGKILLed, or is it being?"""
        log = self.logs.get(actor)
        if log is None:
            try:
                log = ActorLog(log_path(self.ctx.workdir, actor), runs=False, create=False)
            except OSError:
                return False
            self.logs[actor] = log
        return log.get(board.KILLED) != 0

    def _index(self, flat: int) -> Any:
        """A random spelling of element ``flat``: an int or a tuple."""
        if len(self.shape) > 1 and self.rng.random() < 0.5:
            return tuple(int(i) for i in np.unravel_index(flat, self.shape))
        return flat

    def _came_back(self, outcome: str, what: str, flat: int, value: int) -> None:
        """A counter must never go down: check ``value`` against what was seen."""
        low = self.seen.get(flat, 0)
        if value < low:
            self.events.record(outcome, f"{what} {value} at counter {flat}, below the {low} already seen there")
        self.seen[flat] = max(low, value)

    # -- seqlock ---------------------------------------------------------------------------
    def write(self) -> None:
        log, me = self.log, self.ctx.actor_id
        self._begin("write", locking=True)
        with self.adapter.write(self.handle) as (view, died):
            if died:
                log.add(board.DIED_SEEN)
            flat = view.reshape(-1)
            lo, hi = flat.min(), flat.max()
            if lo != hi and not died:
                who = writer_of(hi)  # the newer value: the write that stopped part-way
                killed = self._killed(who)
                self.events.record(
                    "holder_died_missed" if killed else "torn",
                    f"write() found the data torn (writer {writer_of(lo)} v{version_of(lo)} and writer {who} "
                    f"v{version_of(hi)}) and holder_died False: writer {who} "
                    + ("was SIGKILLed part-way" if killed else "lives: two writers at once"),
                )
            version = (time.monotonic_ns() - self.born) // 1000
            value = version * VERSION_SHIFT + me % VERSION_SHIFT
            half = flat.size // 2
            flat[:half] = value
            _hold(log)  # an aimed kill lands here: half the data is new
            self._stall_inside()
            flat[half:] = value
        self._end()

    def read(self) -> None:
        import shmring

        if self.out is None:
            self.out = np.empty(self.shape, np.dtype(self.ctx.plan.dtype))
        out, log = self.out, self.log
        self._begin("read")
        try:
            self.adapter.read(self.handle, out)
        except shmring.ShmringError as exc:
            if "died part-way" not in str(exc):
                raise
            last = self.born + self.last_version * 1000 if self.last_version >= 0 else 0
            log.add_record(time.monotonic_ns(), last)
            log.add(board.READ_ERRORS)
            self._end()
            time.sleep(0.001)
            return
        self._end()
        log.add(board.BYTES, out.nbytes)
        flat = out.reshape(-1)
        lo, hi = flat.min(), flat.max()
        if lo != hi:
            values, counts = np.unique(flat, return_counts=True)
            mix = ", ".join(
                f"{c} x writer {writer_of(v)} v{version_of(v)}" for v, c in zip(values[:4], counts[:4], strict=True)
            )
            more = f" (+{len(values) - 4} more values)" if len(values) > 4 else ""
            self.events.record("torn", f"read() returned a copy of {flat.size} elements that mixes writes: {mix}{more}")
        version = version_of(hi)
        if version < self.last_version:
            self.events.record(
                "stale_read",
                f"read() returned version {version} (writer {writer_of(hi)}) after version {self.last_version}",
            )
        self.last_version = max(self.last_version, version)

    # -- counter ---------------------------------------------------------------------------
    def add(self) -> None:
        log, rng = self.log, self.rng
        flat = rng.randrange(self.size)
        index = self._index(flat)
        value = rng.randint(1, self.most)
        word = board.DONE_BASE + flat
        done = log.get(word) & board.DONE_MASK
        cas = rng.random() < 0.25
        self._begin("compare_exchange" if cas else "add")
        log.set(word, done | value << board.DONE_PENDING_SHIFT)  # in flight: may land or not
        if cas:
            while True:
                old = self.adapter.load(self.handle, index)
                ok, _seen = self.adapter.compare_exchange(self.handle, index, old, old + value)
                if ok:
                    break
        else:
            old = self.adapter.add(self.handle, index, value)
        _hold(log)  # an aimed kill lands here: the update landed, the log does not say so
        log.set(word, done + value)
        self._end()
        self._came_back("miscounted", f"{'compare_exchange' if cas else 'add'} found", flat, old)
        self.seen[flat] = max(self.seen[flat], old + value)

    def load(self) -> None:
        flat = self.rng.randrange(self.size)
        self._begin("load")
        value = self.adapter.load(self.handle, self._index(flat))
        self._end()
        self._came_back("miscounted", "load() returned", flat, value)

    # -- lock ------------------------------------------------------------------------------
    def hold(self) -> None:
        log, me = self.log, self.ctx.actor_id
        word = board.DONE_BASE
        done = log.get(word) & board.DONE_MASK
        self._begin("lock", locking=True)
        log.set(word, done | 1 << board.DONE_PENDING_SHIFT)
        with self.adapter.lock(self.handle) as died:
            if died:
                log.add(board.DIED_SEEN)
            data = self.handle.array.reshape(-1)  # plain loads and stores: only the lock protects them
            owner = int(data[1])
            if owner and not died:
                killed = self._killed(owner)
                self.events.record(
                    "holder_died_missed" if killed else "lock_broken",
                    f"lock() returned with holder_died False, and the owner word says holder {owner} is inside "
                    f"({'it was SIGKILLed there' if killed else 'it lives: two holders at once'})",
                )
            data[1] = me
            count = int(data[0])
            _hold(log)  # an aimed kill lands here: the counter read, not yet written
            self._stall_inside()
            data[0] = count + 1
            log.set(word, done + 1)
            if int(data[1]) != me:
                self.events.record(
                    "lock_broken", f"holder {int(data[1])} wrote the owner word while holder {me} held the lock"
                )
            data[1] = 0
        self._end()

    def observe(self) -> None:
        self._begin("load")
        value = self.adapter.load(self.handle, 0)
        self._end()
        self._came_back("lock_broken", "the counter of lock() holders read", 0, value)
