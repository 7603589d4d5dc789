"""How each cell is measured: forked children, timed, every message checked.

``measure_throughput`` runs one transport (transports.py) at one size,
``measure_many`` one multi-transport (multi.py) at one size and topology,
``measure_pingpong`` one link (pings.py), ``measure_copy_floor`` the
``np.copyto`` bound in this process, ``measure_idle`` a consumer blocked in
``ring.get()``.  Each returns a record from results.py or raises BenchError.
``OtherLoad`` measures the CPU that processes outside the benchmark took
meanwhile.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import ForkContext
from multiprocessing.synchronize import Barrier, Event

import numpy as np
import numpy.typing as npt

from ..ring import Ring
from .children import run_children
from .config import CHILD_GRACE_S, CHUNK_BYTES, COLD_BYTES, FLOOR_PERCENT_FROM, fmt_size
from .messages import message
from .multi import END, MARK, PRODUCER_SHIFT, SEQ_MASK, MultiTransport, Topology
from .pings import Ping
from .results import BenchError, CopyFloor, IdleCpu, ManyToMany, PingPong, Throughput
from .transports import Cell, Transport

# -- throughput ----------------------------------------------------------------------------


def _send_for(send: Callable[[int, int], None], seq: int, chunk: int, seconds: float) -> tuple[int, int]:
    """Send chunks of stamped messages from ``seq`` for ``seconds``; returns
    (clock at the first send in ns, the next sequence number)."""
    t0 = time.monotonic_ns()
    deadline = t0 + int(seconds * 1e9)
    while time.monotonic_ns() < deadline:
        send(seq, chunk)
        seq += chunk
    return t0, seq


def _produce(transport: Transport, barrier: Barrier) -> tuple[int, int]:
    """Producer child: warm up, then send for ``cell.seconds``.
    Returns (clock at the first timed send in ns, messages timed)."""
    cell = transport.cell
    transport.in_producer()
    transport.send(0, cell.warmup)
    barrier.wait(CHILD_GRACE_S)
    t0, seq = _send_for(transport.send, cell.warmup, cell.chunk, cell.seconds)
    transport.end()
    return t0, seq - cell.warmup


def _consume(transport: Transport, barrier: Barrier) -> tuple[int, int]:
    """Consumer child: take the warm-up, then everything up to the end of the
    stream.  Returns (clock at the end of the stream in ns, messages timed)."""
    cell = transport.cell
    transport.in_consumer()
    got = transport.receive(0, cell.warmup)
    if got != cell.warmup:
        raise BenchError(f"the stream ended after {got} of {cell.warmup} warm-up messages")
    barrier.wait(CHILD_GRACE_S)
    got = transport.receive(cell.warmup, sys.maxsize)
    return time.monotonic_ns(), got


def measure_throughput(ctx: ForkContext, kind: type[Transport], size: int, seconds: float) -> Throughput:
    """Run one throughput cell in a fresh producer and consumer process."""
    cell = Cell.for_size(size, seconds, kind.batched)
    transport = kind(ctx, cell)
    try:
        barrier = ctx.Barrier(2)
        (t0, sent), (t1, received) = run_children(
            ctx,
            [
                (f"{fmt_size(size)} {kind.label} producer", lambda: _produce(transport, barrier)),
                (f"{fmt_size(size)} {kind.label} consumer", lambda: _consume(transport, barrier)),
            ],
            timeout=seconds + CHILD_GRACE_S,
            after_start=transport.in_parent,
        )
    finally:
        transport.close()
    if received != sent:
        raise BenchError(f"{kind.label}, {fmt_size(size)}: producer sent {sent} messages, consumer got {received}")
    elapsed = (t1 - t0) / 1e9
    return Throughput(
        size=size,
        transport=kind.label,
        ring=kind.ring,
        zero_copy=kind.zero_copy,
        capacity=cell.capacity,
        batch=cell.batch,
        messages=received,
        seconds=elapsed,
        msgs_per_s=received / elapsed,
        gb_per_s=received * size / elapsed / 1e9,
    )


# -- many producers and consumers ------------------------------------------------------------


def _produce_many(transport: MultiTransport, producer: int, barrier: Barrier) -> tuple[int, int]:
    """Producer child: warm up, mark, send for ``topo.seconds``, end.
    Returns (clock at the first timed send in ns, messages sent in all)."""
    topo = transport.topo
    transport.in_producer(producer)
    transport.send(0, topo.warmup)
    for _ in range(topo.consumers):
        transport.send(MARK, 1)
    barrier.wait(CHILD_GRACE_S)
    t0, seq = _send_for(transport.send, topo.warmup, topo.chunk, topo.seconds)
    for _ in range(topo.consumers):
        transport.send(END, 1)
    return t0, seq


def _consume_many(transport: MultiTransport, barrier: Barrier) -> tuple[int, npt.NDArray[np.uint64]]:
    """Consumer child: take until P warm-up markers, meet the producers, take
    until P end markers.  Returns (clock at the end in ns, the stamps taken)."""
    transport.in_consumer()
    last = [-1] * transport.topo.producers
    taken: list[int] = []
    transport.receive(last, MARK, taken)
    barrier.wait(CHILD_GRACE_S)
    transport.receive(last, END, taken)
    return time.monotonic_ns(), np.array(taken, dtype=np.uint64)


def check_many(label: str, sent: Sequence[int], taken: Sequence[npt.NDArray[np.uint64]]) -> None:
    """Every message ``0 .. sent[p]-1`` of every producer p arrived at exactly
    one consumer (``taken``: the stamps each consumer took); BenchError naming
    the first message lost, duplicated or never sent otherwise."""
    stamps = np.concatenate([np.asarray(t, dtype=np.uint64) for t in taken])
    producers = stamps >> np.uint64(PRODUCER_SHIFT)
    if len(stamps) and int(producers.max()) >= len(sent):
        raise BenchError(f"{label}: a message arrived from producer {int(producers.max())} of {len(sent)}")
    for producer, count in enumerate(sent):
        seqs = (stamps[producers == producer] & np.uint64(SEQ_MASK)).astype(np.int64)
        times = np.bincount(seqs, minlength=count)
        if len(times) > count:
            raise BenchError(
                f"{label}: producer {producer} message {len(times) - 1} arrived but only {count} were sent"
            )
        if (times != 1).any():
            seq = int(np.flatnonzero(times != 1)[0])
            what = "was lost" if times[seq] == 0 else f"arrived {times[seq]} times"
            raise BenchError(f"{label}: producer {producer} message {seq} {what} (of {count} sent)")


def measure_many(
    ctx: ForkContext, kind: type[MultiTransport], size: int, producers: int, consumers: int, seconds: float
) -> ManyToMany:
    """Run one cell: ``producers`` + ``consumers`` fresh processes on one queue."""
    topo = Topology.for_size(size, producers, consumers, seconds)
    transport = kind(ctx, topo)
    name = f"{fmt_size(size)} {kind.label} {producers}Px{consumers}C"
    try:
        barrier = ctx.Barrier(producers + consumers)
        jobs: list[tuple[str, Callable[[], object]]] = [
            (f"{name} producer {p}", functools.partial(_produce_many, transport, p, barrier)) for p in range(producers)
        ]
        jobs += [
            (f"{name} consumer {c}", functools.partial(_consume_many, transport, barrier)) for c in range(consumers)
        ]
        values = run_children(ctx, jobs, timeout=seconds + CHILD_GRACE_S, after_start=transport.in_parent)
    finally:
        transport.close()
    starts, sent = zip(*values[:producers], strict=True)
    ends, taken = zip(*values[producers:], strict=True)
    check_many(name, sent, taken)
    timed = sum(sent) - producers * topo.warmup
    elapsed = (max(ends) - min(starts)) / 1e9
    return ManyToMany(
        size=size,
        transport=kind.label,
        ring=kind.ring,
        producers=producers,
        consumers=consumers,
        capacity=topo.capacity,
        messages=timed,
        seconds=elapsed,
        msgs_per_s=timed / elapsed,
        gb_per_s=timed * size / elapsed / 1e9,
    )


# -- ping-pong -----------------------------------------------------------------------------


def measure_pingpong(ctx: ForkContext, kind: type[Ping], timed: int, warmup: int) -> PingPong:
    """``warmup + timed`` round trips between two fresh processes; the
    statistics cover the last ``timed``."""
    link = kind(ctx)
    rounds = warmup + timed
    try:
        lat, _ = run_children(
            ctx,
            [(f"{kind.label} ping", lambda: link.pinger(rounds)), (f"{kind.label} echo", lambda: link.echoer(rounds))],
            timeout=CHILD_GRACE_S,
            after_start=link.in_parent,
        )
    finally:
        link.close()
    us = np.asarray(lat[warmup:], dtype=np.float64) / 1e3
    return PingPong(
        transport=kind.label,
        round_trips=timed,
        median_us=float(np.median(us)),
        p99_us=float(np.percentile(us, 99)),
        min_us=float(us.min()),
    )


# -- copy floor and idle CPU --------------------------------------------------------------


def _best_copy_rate(
    src: npt.NDArray[np.uint8], dsts: list[npt.NDArray[np.uint8]], seconds: float, rounds: int
) -> float:
    """Copies/s of ``np.copyto(dst, src)`` cycling over ``dsts``: the best of
    ``rounds`` timing loops that together take about ``seconds``."""
    size = src.nbytes
    for dst in dsts:
        np.copyto(dst, src)  # fault everything in before timing
    reps = max(1, CHUNK_BYTES // size)
    best = 0.0
    for _ in range(rounds):
        copies = 0
        t0 = time.perf_counter()
        end = t0 + seconds / rounds
        while True:
            for _ in range(reps):
                np.copyto(dsts[copies % len(dsts)], src)
                copies += 1
            t1 = time.perf_counter()
            if t1 >= end:
                break
        best = max(best, copies / (t1 - t0))
    if not all(np.array_equal(dst, src) for dst in dsts):
        raise BenchError(f"np.copyto of {fmt_size(size)} copied wrong bytes")
    return best


def measure_copy_floor(size: int, seconds: float, rounds: int = 5) -> CopyFloor:
    """``np.copyto`` of a ``size``-byte uint8 array, in this process, best of
    ``rounds`` (a floor is what the machine can do, not its average).

    *Hot*: always into the same preallocated array, which stays in cache for
    sizes that fit.  *Cold*: into destinations cycled over COLD_BYTES, more
    than this machine's caches hold, as a ring's slots are when the ring is
    larger than the cache."""
    src = message(size)
    hot = _best_copy_rate(src, [np.zeros(size, np.uint8)], seconds, rounds)
    if size < FLOOR_PERCENT_FROM:
        return CopyFloor(size, hot, hot * size / 1e9, None)
    cold_dsts = [np.zeros(size, np.uint8) for _ in range(max(2, COLD_BYTES // size))]
    cold = _best_copy_rate(src, cold_dsts, seconds, rounds)
    return CopyFloor(size, hot, hot * size / 1e9, cold * size / 1e9)


def _idle_consumer(ring: Ring, ready: Event) -> IdleCpu:
    ring.get()  # the producer's first item: both sides are registered now
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    ready.set()
    ring.get()  # blocks until the parent puts again
    after, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ring.close()
    return IdleCpu(t1 - t0, cpu, 100.0 * cpu / (t1 - t0), after.ru_nvcsw - before.ru_nvcsw)


def measure_idle(ctx: ForkContext, seconds: float) -> IdleCpu:
    """A consumer blocked in ``ring.get()`` for ``seconds`` while this process
    is a live producer that sends nothing; its CPU use from getrusage."""
    ring = Ring(capacity=4, shape=(8,), dtype=np.uint8)
    ready = ctx.Event()

    def producer() -> None:
        if not ready.wait(CHILD_GRACE_S):
            raise BenchError("idle consumer never became ready")
        time.sleep(seconds)
        ring.put(np.zeros(8, np.uint8))

    try:
        ring.put(np.zeros(8, np.uint8))  # registers this process as the producer
        (idle,) = run_children(
            ctx, [("idle consumer", lambda: _idle_consumer(ring, ready))], CHILD_GRACE_S + seconds, producer
        )
    finally:
        ring.close()
    assert isinstance(idle, IdleCpu)
    return idle


# -- other processes ---------------------------------------------------------------------


class OtherLoad:
    """How much CPU processes outside this benchmark take from a point on:
    machine-wide busy time (from /proc/stat, steal included) minus this
    process's and its reaped children's, as a percentage of all CPUs."""

    def __init__(self) -> None:
        self.machine, self.ours = self._now()
        self.wall = time.monotonic()

    @staticmethod
    def _now() -> tuple[float, float]:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
            # user nice system idle iowait irq softirq steal: all but idle and iowait
            machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            machine = math.nan
        t = os.times()
        return machine, t.user + t.system + t.children_user + t.children_system

    def percent(self) -> float | None:
        """Since construction; None where /proc/stat cannot be read."""
        machine, ours = self._now()
        if math.isnan(machine):
            return None
        cpus = os.cpu_count() or 1
        return max(
            0.0, 100.0 * ((machine - self.machine) - (ours - self.ours)) / (cpus * (time.monotonic() - self.wall))
        )
