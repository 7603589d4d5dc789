"""Statistics of a region: what went through it, who is attached, what
survivors repaired.

Nothing here costs a put or a get of a Ring: its counts are its free-running
indices (``head`` items were ever claimed by producers, ``tail`` by
consumers).  A Queue counts messages and payload bytes in two relaxed words
per side (``_queue.h``, ``q_count_message``), because its indices count
64-byte slots.  Rare events (a hole, a repair, a reaped entry, a lock taken
from a dead holder) are counted by whoever handles them.  The endpoint
table gives the attached processes.  Every figure is a snapshot read without
locks: exact while no call is under way, and never more than the calls in
flight away from the truth otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

from . import _core
from . import _layout as L
from ._endpoints import EndpointTable

_ABANDONED_BIT = 1 << 63  # a hole's mark in a multi ring's sequence word (MPMC_ABANDONED, _mpmc.h)
_WAITERS_COUNT = 0xFFFF  # low bits of a waiter word: sleepers (the high bits are the epoch)


@dataclasses.dataclass(frozen=True)
class Statistics:
    """A snapshot of one region, from ``statistics()`` on a Ring, Queue or
    Array (and ``shmring stat``).  Counters run from the region's creation
    and are shared by every handle of it, in every process."""

    kind: str
    """``"Ring"``, ``"Queue"`` or ``"Array"``."""
    capacity: int
    """Items a Ring holds; bytes of a Queue's data area; elements of an Array."""
    fill: int
    """Items (Ring) or messages (Queue) in it now; 0 for an Array."""
    messages_in: int
    """Items or messages put since creation (a Ring's holes not included)."""
    messages_out: int
    """Items or messages taken since creation (those a consumer died holding included)."""
    bytes_in: int
    """Bytes put: items times the slot size (Ring), payload bytes as framed (Queue)."""
    bytes_out: int
    """Bytes taken, likewise."""
    holes: int
    """Multi rings: positions published without an item, by a reserve() block
    that raised or for a producer that died holding a claim."""
    abandoned: int
    """Slots of dead processes' claims that a survivor repaired (Ring and Queue)."""
    reaped: int
    """Endpoint entries of dead processes that a survivor freed."""
    takeovers: int
    """Locks taken over from a dead holder (an Array's lock; a semaphore ring's side locks)."""
    producers: int
    """Live processes registered as producers."""
    consumers: int
    """Live processes registered as consumers."""
    observers: int
    """Live processes that hold a handle but neither put nor got (an Array's users are all here)."""
    dead: int
    """Entries of dead processes not yet reaped (the next survivor to look frees them)."""
    producer_waiters: int
    """Producers asleep now (on a full ring or queue), at most the live producers."""
    consumer_waiters: int
    """Consumers asleep now (on an empty ring or queue), at most the live consumers."""
    writes: int
    """Array: ``write()`` blocks completed since creation; 0 for a Ring or Queue."""
    writing: bool
    """Array: a ``write()`` block is under way now."""


def collect(buf: Any, geo: L.Geometry, queue_fill: int = 0) -> Statistics:
    """The statistics of the validated region in ``buf`` (its geometry
    ``geo``).  A Queue's fill is a walk of its records that only the core can
    do: its caller passes it (``queue_fill``)."""
    load = _core.load64
    entries = EndpointTable(buf).entries()
    live = {"producer": 0, "consumer": 0}
    users: set[int] = set()
    for e in entries:
        if e.alive and e.role in live:
            live[e.role] += 1
            users.add(e.pid)
    observers = len({e.pid for e in entries if e.alive and e.role in ("holder", "pending")} - users)
    # A SIGKILLed sleeper is never subtracted from its waiter word (the next
    # sole owner of the role starts a new epoch): never report more sleepers
    # than live endpoints of the role.
    consumer_waiters, producer_waiters = (
        w & _WAITERS_COUNT for w in struct.unpack_from("<II", buf, L.CONSUMER_WAITERS_OFF)
    )
    common: dict[str, Any] = {
        "kind": L.KIND_NAMES.get(geo.kind, str(geo.kind)),
        "abandoned": load(buf, L.ABANDONED_OFF),
        "reaped": load(buf, L.REAPED_OFF),
        "takeovers": load(buf, L.TAKEOVERS_OFF),
        "producers": live["producer"],
        "consumers": live["consumer"],
        "observers": observers,
        "dead": sum(not e.alive for e in entries),
        "producer_waiters": min(producer_waiters, live["producer"]),
        "consumer_waiters": min(consumer_waiters, live["consumer"]),
    }
    if geo.kind == L.KIND_ARRAY:
        seq = load(buf, L.ARRAY_SEQ_OFF)
        zero: dict[str, Any] = dict.fromkeys(("fill", "messages_in", "messages_out", "bytes_in", "bytes_out"), 0)
        return Statistics(
            **common, **zero, holes=0, capacity=math.prod(geo.shape), writes=seq // 2, writing=bool(seq & 1)
        )
    if geo.kind == L.KIND_QUEUE:
        m_in, b_in = (load(buf, L.QUEUE_IN_OFF + 8 * i) for i in range(2))
        m_out, b_out = (load(buf, L.QUEUE_OUT_OFF + 8 * i) for i in range(2))
        return Statistics(
            **common,
            capacity=geo.capacity * geo.slot_size,
            fill=queue_fill,
            messages_in=m_in,
            messages_out=m_out,
            bytes_in=b_in,
            bytes_out=b_out,
            holes=0,
            writes=0,
            writing=False,
        )
    tail = load(buf, L.TAIL_OFF)
    head = load(buf, L.HEAD_OFF)  # after tail: head - tail is a span producers claimed
    span = min(max(head - tail, 0), geo.capacity)
    holes = load(buf, L.HOLES_OFF)
    unread_holes = _holes_in(buf, geo, tail, span) if geo.multi and holes else 0
    # Holes are positions too: take them out of both sides.  Those still in
    # the ring have not been passed by a consumer yet.
    messages_in = max(head - holes, 0)
    messages_out = max(tail - (holes - unread_holes), 0)
    return Statistics(
        **common,
        capacity=geo.capacity,
        fill=span - unread_holes,
        messages_in=messages_in,
        messages_out=messages_out,
        bytes_in=messages_in * geo.slot_size,
        bytes_out=messages_out * geo.slot_size,
        holes=holes,
        writes=0,
        writing=False,
    )


def _holes_in(buf: Any, geo: L.Geometry, start: int, count: int) -> int:
    """Holes among the ``count`` positions from ``start`` of a multi ring:
    their sequence words carry the abandoned mark."""
    holes = 0
    first = start % geo.capacity
    for off, n in ((first, min(count, geo.capacity - first)), (0, max(0, count - (geo.capacity - first)))):
        if n:
            words = _core.load64_many(buf, geo.seq_offset + 8 * off, n)
            holes += sum(1 for w in words if w & _ABANDONED_BIT)
    return holes
