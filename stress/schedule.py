"""Schedule fuzzing: every random decision of a cell, drawn from its seed.

The supervisor draws each lane's geometry and life (:func:`plan_lane`) and
each actor's temperament (:func:`temperament`); an actor then draws its calls
one by one from a :class:`Schedule`: which operation (copy or zero-copy,
blocking, non-blocking or with a timeout, one item or a batch), how many
items, and whether to sleep, burst or stall afterwards.  Stalls are long
pauses (0.3-0.6 s) that let the peer block, which is when the supervisor
checks that a blocked process does not burn CPU.

The seed fixes these decisions, not the interleaving the kernel picks, so a
rerun with the same seed replays the same schedule, not the same race.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import numpy as np

from .config import CellConfig, parse_range, parse_sizes
from .message import OVERHEAD

MIB = 1024 * 1024
RING_CAPACITY = "1:256"  # a ring lane's slots by default (--capacity)
Crowd = tuple[tuple[int, int], tuple[int, int]]  # (MIN, MAX) producers, (MIN, MAX) consumers


def log_uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    """An int in [lo, hi], uniform in log(1 + x): small values as likely as large ones."""
    return min(hi, max(lo, int(math.exp(rng.uniform(math.log1p(lo), math.log1p(hi)))) - 1))


@dataclasses.dataclass(frozen=True)
class LanePlan:
    """One lane: a ring of ``capacity`` slots of ``shape``/``dtype`` that
    lives ``lifetime`` seconds."""

    capacity: int
    dtype: str
    shape: tuple[int, ...]
    slot_bytes: int
    lifetime: float
    producer_first: bool  # start the producer before the consumer (it fills the ring first)
    start_gap: float  # seconds between the two starts
    # Travel lanes: a creator process makes the ring, pickles handles for the
    # actors and leaves (closes, or dies without closing) before or while they
    # unpickle; the supervisor holds no handle, so the last one out must unlink.
    travel: bool = False
    close_first: bool = False  # the creator has left before any actor starts (else they race)
    creator_delay: float = 0.0  # seconds between "go" and the creator leaving, when they race
    creator_dies: bool = False  # the creator exits without closing its handle
    spawn_producer: bool = False  # which first actor is spawned, if this lane spawns one
    spares: int = 0  # more handles the creator pickles, for replacements with no live peer
    relay: bool = False  # the creator pickles for the first actor only; the second gets its handle from it
    # Structures with many producers and consumers per instance: how many of
    # each run side by side (replacements after kills keep the counts), and
    # the seconds between the starts of actors of one role.
    producers: int = 1
    consumers: int = 1
    stagger: float = 0.0
    # Array lanes: "seqlock" (writers and readers), "counter" (adders and
    # loaders) or "lock" (holders and observers); see array_actors.py.
    kind: str = ""
    # Queue lanes (plan_queue_lane): ``capacity`` is the queue's bytes, its
    # messages carry min_bytes..slot_bytes bytes of payload (queue_message.py),
    # and it admits maxsize messages at once (0: no limit but its bytes).
    min_bytes: int = 0
    maxsize: int = 0


def plan_lane(
    rng: random.Random,
    cfg: CellConfig,
    first: bool = False,
    crowd: Crowd | None = None,
) -> LanePlan:
    """``first``: the cell's first lane, which always travels when --travel is
    on; ``crowd``: for a structure with many producers and consumers per
    instance, the (MIN, MAX) ranges their counts are drawn from."""
    lo, hi = parse_sizes(cfg.sizes)
    need = log_uniform_int(rng, lo, hi) + OVERHEAD
    kind = rng.choice(("u1", "u4", "i8x8"))
    shape: tuple[int, ...]
    if kind == "u1":
        dtype, shape = "uint8", (need,)
    elif kind == "u4":
        dtype, shape = "uint32", (-(-need // 4),)
    else:
        dtype, shape = "int64", (-(-need // 64), 8)
    slot_bytes = int(np.dtype(dtype).itemsize * math.prod(shape))
    cap_lo, cap_hi = cfg.capacity_range(RING_CAPACITY)
    capacity = rng.choice((cap_lo, min(cap_hi, cap_lo + 1), log_uniform_int(rng, cap_lo, cap_hi)))
    capacity = max(1, min(capacity, cfg.max_ring_mib * MIB // slot_bytes))
    t_lo, t_hi = parse_range(cfg.lane_time, "--lane-time", float)
    lifetime = rng.uniform(t_lo, t_hi)
    producer_first = rng.random() < 0.5
    start_gap = rng.choice((0.0, rng.uniform(0, 0.2)))
    # Drawn after the rest, so --travel leaves the other draws of a seed alone.
    travel = cfg.travel > 0 and (first or rng.random() < cfg.travel)
    plan = LanePlan(
        capacity=capacity,
        dtype=dtype,
        shape=shape,
        slot_bytes=slot_bytes,
        lifetime=lifetime,
        producer_first=producer_first,
        start_gap=start_gap,
        travel=travel,
        close_first=travel and rng.random() < 0.5,
        creator_delay=rng.choice((0.0, rng.uniform(0, 0.01))) if travel else 0.0,
        creator_dies=travel and rng.random() < 0.25,
        spawn_producer=travel and rng.random() < 0.5,
        spares=rng.choice((0, 2)) if travel else 0,
        relay=travel and rng.random() < 0.5,
    )
    if crowd is None:
        return plan
    # Drawn last, so the draws of single-pair lanes stay as they were.
    return dataclasses.replace(
        plan,
        producers=rng.randint(*crowd[0]),
        consumers=rng.randint(*crowd[1]),
        stagger=rng.choice((0.0, rng.uniform(0, 0.05))),
    )


ARRAY_KINDS = ("seqlock", "counter", "lock")
COUNTER_DTYPES = ("int32", "int64", "uint32", "uint64")  # the dtypes of Array's element operations
SEQLOCK_DTYPES = ("float64", "int64", "uint64")  # hold a version (us) * 65536 + a writer id exactly


def _crowd_life(rng: random.Random, cfg: CellConfig, crowd: Crowd) -> dict[str, Any]:
    """The LanePlan fields of a crowded lane's life: lifetime, start order, crowd."""
    t_lo, t_hi = parse_range(cfg.lane_time, "--lane-time", float)
    return dict(
        lifetime=rng.uniform(t_lo, t_hi),
        producer_first=rng.random() < 0.5,
        start_gap=rng.choice((0.0, rng.uniform(0, 0.2))),
        producers=rng.randint(*crowd[0]),
        consumers=rng.randint(*crowd[1]),
        stagger=rng.choice((0.0, rng.uniform(0, 0.05))),
    )


def plan_array_lane(rng: random.Random, cfg: CellConfig, kind: str, crowd: Crowd) -> LanePlan:
    """One Array lane of ``kind``: its dtype and shape, life and crowd.

    seqlock: ``--sizes`` bytes of data (at least two elements), 1-D or 2-D;
    counter: 1-8 counters (a few, so the adders collide), 1-D or 2-D;
    lock: a counter and an owner word (and 0-6 more elements)."""
    if kind == "seqlock":
        dtype = rng.choice(SEQLOCK_DTYPES)
        lo, hi = parse_sizes(cfg.sizes)
        n = max(2, log_uniform_int(rng, lo, hi) // 8)
    else:
        dtype = rng.choice(COUNTER_DTYPES)
        n = rng.choice((1, 2, 3, 4, 8)) if kind == "counter" else rng.randint(2, 8)
    shape: tuple[int, ...] = (n,)
    if n % 2 == 0 and n > 2 and rng.random() < 0.5:
        shape = (2, n // 2)
    return LanePlan(
        capacity=1,
        dtype=dtype,
        shape=shape,
        slot_bytes=n * np.dtype(dtype).itemsize,
        kind=kind,
        **_crowd_life(rng, cfg, crowd),
    )


QUEUE_CAPACITY = "16384:4194304"  # a Queue lane's bytes by default (--capacity): small, so it wraps often
QUEUE_MIN_BYTES = 8192
QUEUE_SLACK = 4096  # bytes of a queue kept for framing: pickle streams, dtypes, part tables, alignment
QUEUE_FILL = (0.02, 0.1, 0.3, 0.6, 0.95)  # the largest message, as a share of the queue


def plan_queue_lane(rng: random.Random, cfg: CellConfig, crowd: Crowd) -> LanePlan:
    """One Queue lane: its bytes (log-uniform in ``--capacity``, at least
    QUEUE_MIN_BYTES and at most ``--max-ring-mib``), the payload of its
    messages (``--sizes``, up to a drawn share of the queue: in some lanes a
    message may need nearly all of it), its maxsize (half the lanes, from
    ``--maxsize``), life and crowd."""
    cap_lo, cap_hi = cfg.capacity_range(QUEUE_CAPACITY)
    cap_hi = max(QUEUE_MIN_BYTES, min(cap_hi, cfg.max_ring_mib * MIB))
    capacity = log_uniform_int(rng, max(cap_lo, QUEUE_MIN_BYTES), cap_hi)
    lo, hi = parse_sizes(cfg.sizes)
    hi = max(OVERHEAD, min(hi, int(rng.choice(QUEUE_FILL) * (capacity - QUEUE_SLACK))))
    m_lo, m_hi = parse_range(cfg.maxsize, "--maxsize")
    maxsize = rng.choice((0, rng.randint(m_lo, m_hi))) if m_hi else 0
    return LanePlan(
        capacity=capacity,
        dtype="uint8",
        shape=(hi,),
        slot_bytes=hi,
        min_bytes=min(lo, hi),
        maxsize=maxsize,
        **_crowd_life(rng, cfg, crowd),
    )


@dataclasses.dataclass(frozen=True)
class Temperament:
    """How one actor behaves for its whole life."""

    zero_copy: float  # share of calls using reserve()/borrow()
    nonblocking: float  # share of copy calls that are *_nowait or use a short timeout
    many: float  # share of calls that move a batch
    batch: tuple[int, int]
    sleep_p: float  # chance of a short sleep after a call
    sleep_max: float  # seconds
    burst_p: float  # chance that a call starts a burst of calls without sleeps
    stall_rate: float  # long pauses per second
    abort_p: float  # producer: chance a zero-copy call aborts its reserve() on purpose


def temperament(rng: random.Random, cfg: CellConfig) -> Temperament:
    pace = rng.choice(("eager", "jittery", "slow"))
    return Temperament(
        zero_copy=cfg.zero_copy,
        nonblocking=rng.choice((0.0, 0.1, 0.3)),
        many=rng.choice((0.0, 0.3, 0.7)),
        batch=parse_range(cfg.batch, "--batch"),
        sleep_p={"eager": 0.0, "jittery": 0.05, "slow": 0.3}[pace],
        sleep_max={"eager": 0.0, "jittery": 0.001, "slow": 0.005}[pace],
        burst_p=0.01,
        stall_rate=rng.choice((0.0, 0.2, 0.5)),
        abort_p=0.05,
    )


@dataclasses.dataclass(frozen=True)
class Call:
    """One operation an actor is about to make."""

    op: str  # an adapter operation name (board.OPS)
    count: int  # items (1 unless a *_many op)
    timeout: float | None  # for copy_timeout


class Schedule:
    """The stream of calls and pauses of one actor.  ``timed_batches``: the
    structure's batch calls take a timeout (Queue), so the non-blocking share
    of them get one (and may move only part of the batch)."""

    def __init__(self, seed: int, temper: Temperament, producer: bool, now: float, timed_batches: bool = False):
        self.rng = random.Random(seed)
        self.t = temper
        self.producer = producer
        self.timed_batches = timed_batches
        self._burst_left = 0
        self._next_stall = self._draw_stall(now)

    def _draw_stall(self, now: float) -> float:
        return now + self.rng.expovariate(self.t.stall_rate) if self.t.stall_rate else math.inf

    def next_call(self) -> Call:
        rng, t = self.rng, self.t
        many = rng.random() < t.many
        k = rng.randint(*t.batch) if many else 1
        if rng.random() < t.zero_copy:
            if self.producer:
                return Call("zero_copy_abort" if rng.random() < t.abort_p else "zero_copy", 1, None)
            return Call("zero_copy_many" if many else "zero_copy", k, None)
        if rng.random() < t.nonblocking:
            if rng.random() < 0.5:
                return Call("copy_nowait", 1, None)
            return Call("copy_timeout", 1, rng.choice((0.0, 0.0005, 0.005)))
        if many and self.timed_batches and rng.random() < t.nonblocking:
            return Call("copy_many", k, rng.choice((0.0, 0.005, 0.05)))
        return Call("copy_many" if many else "copy", k, None)

    def pause(self, now: float) -> tuple[float, bool]:
        """Seconds to pause after a call, and whether it is a stall."""
        rng, t = self.rng, self.t
        if now >= self._next_stall:
            self._next_stall = self._draw_stall(now + 0.6)
            return rng.uniform(0.3, 0.6), True
        if self._burst_left:
            self._burst_left -= 1
            return 0.0, False
        if rng.random() < t.burst_p:
            self._burst_left = rng.randint(10, 500)
        if t.sleep_p and rng.random() < t.sleep_p:
            return rng.uniform(0, t.sleep_max), False
        return 0.0, False
