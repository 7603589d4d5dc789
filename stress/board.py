"""Shared bookkeeping between the supervisor and its actors: one small
memory-mapped file per actor (its *log*) and one per lane (its *control*).

An actor writes its own log; the supervisor writes only the ``STOP``,
``KILLED``, ``HOLD`` and ``SEND_REQ`` words of it.  Every word the arbiter relies on after a SIGKILL is
written with a single aligned 8-byte store, so a kill leaves either the old
or the new value, never half of each:

* a producer's ``STATE`` word packs ``published | pending << 40``: the
  messages it has put for sure, and the size of the call in flight;
* a consumer appends *runs* ``(producer, first seq, last seq)``: extending a
  run is one store of ``last``; a new run is written in full before
  ``NRUNS`` is bumped.  ``STATE`` holds the size of its take in flight.
  Where producers run side by side (``interleaved``), each producer's newest
  run is extended, so a run is one producer's messages as this consumer got
  them; otherwise only the newest run is, and the runs keep the delivery
  order across producers.

The files live in the run's temporary directory (not /dev/shm) and outlive a
killed actor, which is the point.  Cross-process ordering: the supervisor
reads an actor's log for the verdict only after reaping it (waitpid orders
everything), and flags are written before the syscall (kill, close) whose
effect the other side observes.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from .message import SEQ_BITS

# Word indexes in an actor log.
STATE = 0  # producer: published | pending << 40; consumer: size of the take in flight
COUNT = 1  # messages published (producer) or delivered and logged (consumer)
BYTES = 2  # slot bytes moved
PHASE = 3  # see PHASE_* below
OP = 4  # code of the call in flight (OPS), 0 between calls
STALL_UNTIL = 5  # CLOCK_MONOTONIC ns until which the actor pauses on purpose (0: none)
STOP = 6  # supervisor: finish the current call, close, exit
KILLED = 7  # supervisor: set just before SIGKILL
NRUNS = 8  # consumer: runs logged
VIOLATIONS = 9  # forbidden events this actor recorded (polled for --fail-fast)
PID = 10
TRANSIENT_EOF = 11
TRANSIENT_EPIPE = 12
ABORTED = 13  # reserve() blocks aborted on purpose
CALLS = 14  # calls made
ATTACHED = 15  # the actor has its handle (opened, or unpickled in a travel lane)
SEND_REQ = 16  # supervisor: id of a request to pickle this actor's handle for a replacement peer
SEND_DONE = 17  # actor: id of the last request answered (ticket-<id> written, or refused)
WINDOWS = 18  # registration/unregistration windows this actor passed (the core's test hook)
HOLD = 19  # supervisor: hold the next reserve()/borrow() block open (an aimed kill is coming)
HOLDING = 20  # actor: inside a held block, its claim taken and not yet published or released
# Array lanes (array_actors.py):
LOCKING = 21  # in a lock()/write() call: set before it, cleared after its block (a death here may hold the lock)
DIED_SEEN = 22  # lock()/write() calls that returned holder_died=True
READ_ERRORS = 23  # reader: read() raised "died part-way" (each one a record: error time, last good version)
DONE_BASE = 64  # per element: sum of the updates done | the update in flight << DONE_PENDING_SHIFT
DONE_WORDS = 64  # elements a counter lane may have
DONE_PENDING_SHIFT = 56
DONE_MASK = (1 << DONE_PENDING_SHIFT) - 1

PHASE_STARTING, PHASE_REGISTERED, PHASE_EXITING, PHASE_DONE = 0, 1, 2, 3

HEADER_BYTES = 4096
RUN_WORDS = 3
MAX_RUNS = 16384
# Side by side, a consumer's share of each producer's stream has a gap
# wherever another consumer took a message, so it needs many more runs.
# The file is sparse: only the runs written take space.
MAX_RUNS_INTERLEAVED = 1 << 22
PENDING_SHIFT = SEQ_BITS
PUBLISHED_MASK = (1 << PENDING_SHIFT) - 1

# Operation codes for the OP word; the names are the adapters' operation names.
OPS = (
    "none",
    "copy",
    "copy_many",
    "copy_nowait",
    "copy_timeout",
    "zero_copy",
    "zero_copy_many",
    "zero_copy_abort",
    # Array lanes
    "lock",
    "write",
    "read",
    "add",
    "compare_exchange",
    "load",
)
OP_CODE = {name: i for i, name in enumerate(OPS)}
# (An Array read() is not blocking, but it retries with a backoff while a write is under way: it waits.)
BLOCKING_OPS = frozenset({"copy", "copy_many", "zero_copy", "zero_copy_many", "lock", "write", "read"})

Words = npt.NDArray[np.uint64]


def _map(path: str, size: int, create: bool) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    try:
        if create:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)


class ActorLog:
    """The log of one actor (producer or consumer)."""

    def __init__(self, path: str, runs: bool, create: bool, interleaved: bool = False):
        self.path = path
        self.has_runs = runs
        self.interleaved = interleaved
        self.max_runs = MAX_RUNS_INTERLEAVED if interleaved else MAX_RUNS
        size = HEADER_BYTES + (self.max_runs * RUN_WORDS * 8 if runs else 0)
        self._map = _map(path, size, create)
        self.w: Words = np.frombuffer(self._map, dtype=np.uint64)
        self._runs: Words = self.w[HEADER_BYTES // 8 :].reshape(-1, RUN_WORDS)
        self._cur = -1  # index of the run being extended, in this (consumer) process
        self._cur_of: dict[int, int] = {}  # interleaved: producer -> index of its newest run

    def __reduce__(self) -> tuple[object, ...]:
        """A spawned actor maps the same file again."""
        return (ActorLog, (self.path, self.has_runs, False, self.interleaved))

    @property
    def events_path(self) -> str:
        return self.path + ".events"

    def close(self) -> None:
        self.w = np.zeros(HEADER_BYTES // 8, dtype=np.uint64)
        self._runs = self.w[:0].reshape(0, RUN_WORDS)
        try:
            self._map.close()
        except BufferError:
            pass

    def get(self, word: int) -> int:
        return int(self.w[word])

    def set(self, word: int, value: int) -> None:
        self.w[word] = value

    def add(self, word: int, delta: int = 1) -> None:
        self.w[word] += np.uint64(delta)

    # -- producer state ----------------------------------------------------------
    def producer_state(self) -> tuple[int, int]:
        """(published, pending)."""
        word = int(self.w[STATE])
        return word & PUBLISHED_MASK, word >> PENDING_SHIFT

    def set_producer_state(self, published: int, pending: int) -> None:
        self.w[STATE] = published | (pending << PENDING_SHIFT)

    # -- consumer runs -----------------------------------------------------------
    def log_delivery(self, producer: int, seq: int) -> bool:
        """Record one delivered message; False once the run table is full."""
        cur = self._cur_of.get(producer, -1) if self.interleaved else self._cur
        if cur >= 0:
            run = self._runs[cur]
            if run[0] == producer and run[2] + 1 == seq:
                run[2] = seq
                return True
        n = int(self.w[NRUNS])
        if n >= self.max_runs:
            return False
        run = self._runs[n]
        run[0], run[1], run[2] = producer, seq, seq
        self.w[NRUNS] = n + 1
        self._cur = n
        self._cur_of[producer] = n
        return True

    def add_record(self, a: int, b: int, c: int = 0) -> bool:
        """Append a record of three words (the run table, never merged:
        Array readers log their read() errors here); False once it is full."""
        n = int(self.w[NRUNS])
        if n >= self.max_runs:
            return False
        self._runs[n] = (a, b, c)
        self.w[NRUNS] = n + 1
        return True

    def runs(self) -> Iterator[tuple[int, int, int]]:
        for p, first, last in self._runs[: int(self.w[NRUNS])].tolist():
            yield int(p), int(first), int(last)


# Word indexes in a lane control file.
LANE_DONE = 0  # supervisor: no producer will come any more; EOF is final
CUR_PRODUCER = 1  # actor id of the newest producer started in the lane
CUR_CONSUMER = 2  # actor id of the newest consumer started
BORN_NS = 3  # CLOCK_MONOTONIC ns when the lane was made (Array lanes: versions count from it)


class LaneControl:
    """Words the supervisor writes and the lane's actors read."""

    def __init__(self, path: str, create: bool):
        self.path = path
        self._map = _map(path, 64, create)
        self.w: Words = np.frombuffer(self._map, dtype=np.uint64)

    def __reduce__(self) -> tuple[object, ...]:
        return (LaneControl, (self.path, False))

    def get(self, word: int) -> int:
        return int(self.w[word])

    def set(self, word: int, value: int) -> None:
        self.w[word] = value

    def close(self) -> None:
        self.w = np.zeros(8, dtype=np.uint64)
        try:
            self._map.close()
        except BufferError:
            pass
