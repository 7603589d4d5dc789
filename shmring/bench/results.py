"""What a run produces: one record per row of the report, gathered in a
``Report`` (which ``--json`` writes as is), or a ``BenchError``.

A new kind of row is a new record here and a new ``Report`` field; the JSON
follows from ``dataclasses.asdict``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import numpy as np

from .. import __version__
from .config import START_METHOD, Settings


class BenchError(RuntimeError):
    """A measurement failed: corrupt or lost data, a dead or stuck child."""


@dataclasses.dataclass(frozen=True)
class CopyFloor:
    """``np.copyto(dst, src)`` of one item, single core, dst preallocated:
    hot (one destination, cached) and cold (destinations beyond the caches)."""

    size: int
    copies_per_s: float
    gb_per_s: float
    cold_gb_per_s: float | None  # None below FLOOR_PERCENT_FROM: small items are call-bound


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One cell: ``messages`` items of ``size`` bytes in ``seconds``, from
    the producer's first timed send until the consumer saw the end of the
    stream.  For zero-copy rows ``gb_per_s`` is nominal (frames/s x size)."""

    size: int
    transport: str
    ring: bool  # a Ring row (else a peer)
    zero_copy: bool
    capacity: int  # ring slots, or mp.Queue maxsize
    batch: int  # items per put_many/get_many call (1: one item per call)
    messages: int
    seconds: float
    msgs_per_s: float
    gb_per_s: float


@dataclasses.dataclass(frozen=True)
class ManyToMany:
    """One many-producers cell: ``producers`` processes sent for a fixed
    time into one queue that ``consumers`` processes took from; ``messages``
    timed items of ``size`` bytes arrived in ``seconds``, from the first
    producer's first timed send until the last consumer saw the end."""

    size: int
    transport: str
    ring: bool  # a Ring row (else a peer)
    producers: int
    consumers: int
    capacity: int  # messages the queue holds (Ring slots, mp.Queue maxsize)
    messages: int
    seconds: float
    msgs_per_s: float
    gb_per_s: float


@dataclasses.dataclass(frozen=True)
class ObjectsCell:
    """One Queue-section cell: ``producers`` processes sent ``payload``
    objects for a fixed time into one queue that ``consumers`` processes
    took from; ``messages`` arrived in ``seconds``.  ``gb_per_s`` counts
    the bytes of the payload's arrays (0 for a dict of plain values)."""

    payload: str
    transport: str
    shmring: bool  # a shmring.Queue row (else a peer)
    producers: int
    consumers: int
    messages: int
    seconds: float
    msgs_per_s: float
    gb_per_s: float


@dataclasses.dataclass(frozen=True)
class PingPong:
    """Round trips of a 64-byte array: A sends, B echoes, A times."""

    transport: str
    round_trips: int
    median_us: float
    p99_us: float
    min_us: float


@dataclasses.dataclass(frozen=True)
class ArrayOp:
    """One operation of shmring.Array (or its stand-in), timed for a while
    in ``processes`` processes at once."""

    op: str
    implementation: str
    shmring: bool  # an Array row (else the stand-in it is compared with)
    processes: int
    operations: int
    seconds: float
    ops_per_s: float
    gb_per_s: float  # bytes copied per second (snapshots), else 0


@dataclasses.dataclass(frozen=True)
class IdleCpu:
    """CPU time of a consumer blocked in ``ring.get()`` (producer alive, idle)."""

    wall_s: float
    cpu_s: float  # user + system time of the consumer process
    cpu_percent: float
    wakeups: int  # voluntary context switches while blocked


@dataclasses.dataclass
class Report:
    """Everything one run measured; ``--json`` writes it as is."""

    meta: dict[str, Any]
    copy_floor: list[CopyFloor] = dataclasses.field(default_factory=list)
    throughput: list[Throughput] = dataclasses.field(default_factory=list)
    many_to_many: list[ManyToMany] = dataclasses.field(default_factory=list)
    objects: list[ObjectsCell] = dataclasses.field(default_factory=list)
    pingpong: list[PingPong] = dataclasses.field(default_factory=list)
    array: list[ArrayOp] = dataclasses.field(default_factory=list)
    idle: IdleCpu | None = None


def meta(settings: Settings) -> dict[str, Any]:
    """``Report.meta``: versions, platform and settings of this run."""
    return {
        "shmring": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "start_method": START_METHOD,
        "cell_seconds": settings.cell_seconds,
        "sizes": list(settings.sizes),
        "many_topologies": [list(t) for t in settings.many_topologies],
        "many_sizes": list(settings.many_sizes),
        "queue_topologies": [list(t) for t in settings.queue_topologies],
        "queue_payloads": list(settings.queue_payloads),
        "round_trips": settings.round_trips,
    }
