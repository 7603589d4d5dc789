"""The sections of the report, in the order they run: what each measures,
and the table it prints as it goes.

A section is a ``Section`` subclass listed in ``SECTIONS``: its ``run``
measures its rows (measurements.py) into the ``Report`` and prints them with
the tools of report.py.  A new transport in an existing section is one class
in transports.py, multi.py or pings.py; a new section is a record in
results.py, its measurement, and a ``Section`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.context import ForkContext
from typing import ClassVar, TextIO

from .arrays import measure_adds, measure_locks, measure_snapshot
from .config import COLD_BYTES, PING_BYTES, Settings, fmt_size
from .measurements import measure_copy_floor, measure_idle, measure_many, measure_pingpong, measure_throughput
from .multi import multi_transports
from .objects import BATCH_TRANSPORTS, TRANSPORTS, measure_objects
from .pings import PINGS, RingPing
from .report import Column, Table, fmt_gb, fmt_rate, fmt_ratio
from .results import CopyFloor, ManyToMany, ObjectsCell, Report, Throughput
from .transports import PEER_TRANSPORTS, RING_TRANSPORTS


class Section:
    """One part of the report: measures its rows into ``report`` and prints them to ``out``."""

    # The report's last line says how much CPU other processes took during
    # each section that names itself here (a window runs from the end of the
    # previous named section, or the start, to the end of this one).
    load: ClassVar[str | None] = None

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        raise NotImplementedError


class CopyFloorSection(Section):
    """``np.copyto`` into a preallocated array, one core, per item size: what
    one memcpy of an item costs here, the bound any copying transport is
    measured against."""

    table = Table(
        Column("size", 8),
        Column("copies/s", 10),
        Column("hot GB/s", 8),
        Column("cold GB/s", 9),
    )

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        report.copy_floor = [measure_copy_floor(size, settings.copy_seconds) for size in settings.sizes]
        print(
            "Copy floor: np.copyto into preallocated arrays, one core (best of 5 rounds); hot = one cached "
            f"destination, cold = destinations cycled over {fmt_size(COLD_BYTES)}",
            file=out,
        )
        print(self.table.heading(), file=out)
        for row in report.copy_floor:
            cold = "-" if row.cold_gb_per_s is None else fmt_gb(row.cold_gb_per_s)
            cells = [fmt_size(row.size), fmt_rate(row.copies_per_s), fmt_gb(row.gb_per_s), cold]
            print(self.table.row(cells), file=out)
        print(file=out)


class ThroughputSection(Section):
    """One producer process sends uint8 arrays of shape ``(size,)`` to one
    consumer process for a fixed time; messages/s and GB/s (10**9 bytes/s)
    are what the consumer received from the producer's first timed send to
    the end of the stream.  Rows: Ring ``put``/``get``, Ring
    ``put_many``/``get_many`` and Ring ``reserve``/``borrow`` (zero-copy: the
    producer writes only the stamps into the slot, so its GB/s is nominal,
    frames/s x size), then the peers ``multiprocessing.Queue``,
    ``multiprocessing.Pipe`` and a raw ``os.pipe``.  Each Ring row shows how
    many times faster it is than each peer; copying Ring rows of 1 MiB or more
    show their bandwidth as a percentage of the copy floor.

    Each size's rows are printed as soon as they are measured."""

    load = "throughput"
    table = Table(
        Column("size", 8),
        Column("transport", 24, "<"),
        Column("cap", 5, before=" "),
        Column("batch", 5, before=" "),
        Column("msgs/s", 9),
        Column("GB/s", 8),
        Column("", 1, before=""),  # "*": nominal GB/s (zero-copy)
        Column("Ring vs peers (msgs/s ratio)"),
    )

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        print(
            f"Throughput: each cell sends for {settings.cell_seconds:g} s after a warm-up of one pass over the "
            "ring; capacity = ring slots = mp.Queue maxsize",
            file=out,
        )
        print(self.table.heading(), file=out)
        for size, floor in zip(settings.sizes, report.copy_floor, strict=True):
            rows = [measure_throughput(ctx, kind, size, settings.cell_seconds) for kind in RING_TRANSPORTS]
            rows += [measure_throughput(ctx, kind, size, settings.cell_seconds) for kind in PEER_TRANSPORTS]
            report.throughput += rows
            self.print_size(rows, floor, out)
            out.flush()
        print(
            "  * zero-copy: the producer writes only the stamps into the slot; GB/s is nominal (frames/s x size)",
            file=out,
        )

    def print_size(self, rows: Sequence[Throughput], floor: CopyFloor | None, out: TextIO) -> None:
        """The rows of one size: each Ring row compared with every peer, and
        with the copy floor where it has a cold figure."""
        peers = [r for r in rows if not r.ring]
        for row in rows:
            notes = ""
            if row.ring:
                notes = ", ".join(f"{fmt_ratio(row.msgs_per_s / p.msgs_per_s)} {p.transport}" for p in peers)
                if not row.zero_copy and floor is not None and floor.cold_gb_per_s is not None:
                    notes += (
                        f"; {100 * row.gb_per_s / floor.gb_per_s:.0f}% of hot np.copyto, "
                        f"{100 * row.gb_per_s / floor.cold_gb_per_s:.0f}% of cold"
                    )
            cells = [
                fmt_size(row.size),
                row.transport + (" *" if row.zero_copy else ""),
                str(row.capacity),
                str(row.batch),
                fmt_rate(row.msgs_per_s),
                fmt_gb(row.gb_per_s),
                "*" if row.zero_copy else " ",
                notes,
            ]
            print(self.table.row(cells), file=out)


class ManySection(Section):
    """P producer processes and C consumer processes share one queue, for each
    topology of ``settings.many_topologies`` (2Px2C and 4Px4C; --quick: 2Px2C)
    and each size of ``settings.many_sizes`` (64 B and 64 KiB; --quick: 64 B).
    Each producer sends uint8 arrays for ``cell_seconds`` after a warm-up of
    one pass over the queue; msgs/s and GB/s are what the consumers received
    together, from the first producer's first timed send until the last
    consumer saw the end of the stream.  Capacity is the single-pair rows'
    (mp.Queue ``maxsize``; faster-fifo: bytes for as many messages).

    Every message carries its producer and sequence number (multi.py); every
    consumer checks that each producer's messages reach it in increasing
    order, and at the end every message sent must have reached exactly one
    consumer (``check_many``): BenchError otherwise.

    Peers: ``multiprocessing.Queue`` (``put(array)``/``get()``, pickled) and,
    when ``import faster_fifo`` works, ``faster_fifo.Queue`` one message per
    ``put``/``get`` with raw bytes instead of pickle (``put`` of
    ``array.tobytes()``, ``get`` into a fresh ``np.frombuffer`` copy: the
    consumer holds an array, as with ``ring.get()``; not ``get_many``, which
    batches).  Each Ring row (``MULTI_RING_TRANSPORTS``) shows how many times
    faster it is than each peer of the same size and topology
    (``ring_vs_peers``)."""

    load = "many producers"
    table = Table(
        Column("size", 8),
        Column("transport", 24, "<"),
        Column("PxC", 5, before=" "),
        Column("cap", 5, before=" "),
        Column("msgs/s", 9),
        Column("GB/s", 8),
        Column("Ring vs peers (msgs/s ratio)", before="   "),
    )

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        kinds = multi_transports()
        print(file=out)
        print(
            f"Many producers and consumers: P producer processes -> one queue -> C consumer processes; each producer "
            f"sends for {settings.cell_seconds:g} s after a warm-up (together, one pass over the queue)",
            file=out,
        )
        print(self.table.heading(), file=out)
        for size in settings.many_sizes:
            for producers, consumers in settings.many_topologies:
                rows = [measure_many(ctx, kind, size, producers, consumers, settings.cell_seconds) for kind in kinds]
                report.many_to_many += rows
                for row, notes in zip(rows, ring_vs_peers(rows), strict=True):
                    print(self.table.row(self.cells(row, notes)), file=out)
                out.flush()
        if not any(kind.ring for kind in kinds):
            print("  Ring rows come with the multi-producer Ring (Ring(..., multi_producer=True))", file=out)

    @staticmethod
    def cells(row: ManyToMany, notes: str) -> list[str]:
        return [
            fmt_size(row.size),
            row.transport,
            f"{row.producers}x{row.consumers}",
            str(row.capacity),
            fmt_rate(row.msgs_per_s),
            fmt_gb(row.gb_per_s),
            notes,
        ]


def ring_vs_peers(rows: Sequence[ManyToMany]) -> list[str]:
    """The "Ring vs peers" cell of each row: for a Ring row, how many times
    its msgs/s exceed each peer row's of the same size and topology
    (``x3.1 mp.Queue, x1.2 faster-fifo``); empty for peers and where no peer
    matches."""
    notes = []
    for row in rows:
        peers = [
            p
            for p in rows
            if not p.ring and (p.size, p.producers, p.consumers) == (row.size, row.producers, row.consumers)
        ]
        notes.append(
            ", ".join(f"{fmt_ratio(row.msgs_per_s / p.msgs_per_s)} {p.transport}" for p in peers) if row.ring else ""
        )
    return notes


class QueueSection(Section):
    """shmring.Queue against multiprocessing.Queue and faster-fifo (when
    installed) for Python objects: 64 B of bytes, a small dict, a 1 MiB
    array and a dict of four, one producer and one consumer, then two of
    each; get() and borrow(); then put_many/get_many of 64 B bytes (see
    objects.py).  Each shmring row shows how many times faster it is than
    each peer of the same payload and topology; 1 MiB get() rows show their
    bandwidth as a share of the hot copy floor of 1 MiB."""

    load = "queue"
    table = Table(
        Column("payload", 18, "<"),
        Column("transport", 24, "<"),
        Column("PxC", 5, before=" "),
        Column("msgs/s", 9),
        Column("GB/s", 8),
        Column("Queue vs peers (msgs/s ratio)", before="   "),
    )

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        seconds = settings.cell_seconds
        print(file=out)
        print(
            f"Queue: Python objects from P producer processes to C consumer processes, {seconds:g} s per cell",
            file=out,
        )
        print(self.table.heading(), file=out)
        floor = next((f for f in report.copy_floor if f.size == 1 << 20), None)
        cells = [
            (payload, kind, topo)
            for payload in settings.queue_payloads
            for topo in settings.queue_topologies
            for kind in TRANSPORTS
        ]
        cells += [("64 B bytes", kind, topo) for topo in settings.queue_topologies for kind in BATCH_TRANSPORTS]
        group: list[ObjectsCell] = []
        for payload, kind, (producers, consumers) in cells:
            if not kind.available():
                continue
            row = measure_objects(ctx, kind, payload, producers, consumers, seconds)
            report.objects.append(row)
            if group and (group[0].payload, group[0].producers, kind.batched) != (
                payload,
                producers,
                group[0].transport.endswith("_many"),
            ):
                self.print_group(group, floor, out)
                group = []
            group.append(row)
        if group:
            self.print_group(group, floor, out)

    def print_group(self, rows: Sequence[ObjectsCell], floor: CopyFloor | None, out: TextIO) -> None:
        peers = [r for r in rows if not r.shmring]
        for row in rows:
            notes = ""
            if row.shmring:
                notes = ", ".join(f"{fmt_ratio(row.msgs_per_s / p.msgs_per_s)} {p.transport}" for p in peers)
                if row.payload == "1 MiB array" and row.transport.endswith("get") and floor is not None:
                    notes += f"; {100 * row.gb_per_s / floor.gb_per_s:.0f}% of hot np.copyto"
            cells = [
                row.payload,
                row.transport,
                f"{row.producers}x{row.consumers}",
                fmt_rate(row.msgs_per_s),
                fmt_gb(row.gb_per_s) if row.gb_per_s else "-",
                notes,
            ]
            print(self.table.row(cells), file=out)
        out.flush()


class PingPongSection(Section):
    """A sends a 64-byte array, B echoes it back, A times each round trip;
    median and 99th percentile in microseconds."""

    load = "ping-pong"
    table = Table(
        Column("transport", 10, "<"),
        Column("median us", 10, before=" "),
        Column("p99 us", 9, before=" "),
        Column("min us", 8, before=" "),
        Column("trips", 7, before=" "),
        Column("ring vs peer", before="   "),
    )

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        report.pingpong = [
            measure_pingpong(ctx, kind, settings.round_trips, settings.warmup_round_trips) for kind in PINGS
        ]
        print(file=out)
        print(f"Ping-pong: {PING_BYTES}-byte array, A sends, B echoes, A times each round trip", file=out)
        print(self.table.heading(), file=out)
        ring = next((r for r in report.pingpong if r.transport == RingPing.label), None)
        for row in report.pingpong:
            note = (
                ""
                if ring is None or row is ring
                else f"ring {fmt_ratio(row.median_us / ring.median_us)} faster (median)"
            )
            cells = [
                row.transport,
                f"{row.median_us:.1f}",
                f"{row.p99_us:.1f}",
                f"{row.min_us:.1f}",
                str(row.round_trips),
                note,
            ]
            print(self.table.row(cells), file=out)


class ArraySection(Section):
    """shmring.Array against its stand-ins: read() snapshots against
    np.copyto, its lock against multiprocessing.Lock, add() against
    multiprocessing.Value under get_lock() (see arrays.py)."""

    load = "array"
    table = Table(
        Column("operation", 16, "<"),
        Column("implementation", 22, "<"),
        Column("procs", 5),
        Column("ops/s", 10),
        Column("GB/s", 8),
        Column("Array vs stand-in", 0, "<"),
    )

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        seconds = settings.cell_seconds
        rows = measure_snapshot(seconds) + measure_locks(ctx, seconds) + measure_adds(ctx, seconds)
        report.array = rows
        print(file=out)
        print(f"Array: shared state; each row runs for {seconds:g} s (two processes: both at once)", file=out)
        print(self.table.heading(), file=out)
        for row in rows:
            peers = [p for p in rows if not p.shmring and (p.op, p.processes) == (row.op, row.processes)]
            notes = ", ".join(f"{fmt_ratio(row.ops_per_s / p.ops_per_s)} {p.implementation}" for p in peers)
            cells = [
                row.op,
                row.implementation,
                str(row.processes),
                fmt_rate(row.ops_per_s),
                fmt_gb(row.gb_per_s) if row.gb_per_s else "-",
                notes if row.shmring else "",
            ]
            print(self.table.row(cells), file=out)
        out.flush()


class IdleSection(Section):
    """The CPU time a consumer spends blocked in ``ring.get()`` for a while,
    with a live producer that sends nothing: it should sleep, not spin."""

    load = "idle"

    def run(self, ctx: ForkContext, settings: Settings, report: Report, out: TextIO) -> None:
        report.idle = idle = measure_idle(ctx, settings.idle_seconds)
        print(file=out)
        print(
            f"Idle CPU: consumer blocked in ring.get() for {idle.wall_s:.2f} s, producer alive and idle: "
            f"{idle.cpu_s * 1e3:.1f} ms CPU (user+sys) = {idle.cpu_percent:.2f}% of one core, "
            f"{idle.wakeups} voluntary context switches",
            file=out,
        )


SECTIONS: tuple[Section, ...] = (
    CopyFloorSection(),
    ThroughputSection(),
    ManySection(),
    QueueSection(),
    PingPongSection(),
    ArraySection(),
    IdleSection(),
)
