"""What one stress *cell* runs, and how to spell it as a command line.

A cell is one point of the matrix (structure x sync flavour x backend) run
with one set of knobs and one seed.  :class:`CellConfig` holds everything a
cell needs; :meth:`CellConfig.argv` turns it back into the ``python -m
stress`` options that rerun exactly that cell, which is what a failure
prints.  Presets for ``--quick`` and ``--tough`` live in :data:`SCENARIOS`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

KIB = 1024
MIB = 1024 * KIB

# Payload bytes per slot, drawn log-uniformly per lane.
SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "small": (0, 256),
    "mixed": (0, 256 * KIB),
    "large": (64 * KIB, 1 * MIB),
}


def parse_range(text: str, what: str, cast: type = int) -> tuple[Any, Any]:
    """``"A:B"`` or ``"A"`` -> (A, B) with 0 <= A <= B."""
    try:
        parts = [cast(p) for p in str(text).split(":")]
    except ValueError:
        raise ValueError(f"{what} must be N or MIN:MAX, not {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 0 or parts[1] < parts[0]:
        raise ValueError(f"{what} must be N or MIN:MAX with 0 <= MIN <= MAX, not {text!r}")
    return parts[0], parts[1]


def parse_sizes(text: str) -> tuple[int, int]:
    """A size preset name, ``N`` bytes, or ``MIN:MAX`` bytes of payload per slot."""
    if text in SIZE_PRESETS:
        return SIZE_PRESETS[text]
    lo, hi = parse_range(text, "--sizes")
    if hi > 64 * MIB:
        raise ValueError("--sizes: at most 64 MiB of payload per slot")
    return lo, hi


def parse_delay(text: str) -> tuple[int, int]:
    """``PERMILLE:MAX_US`` for SHMRING_DELAY (``0`` or ``off`` disables)."""
    if text in ("", "0", "off"):
        return 0, 0
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > 1000:
        raise ValueError(f"--delay must be PERMILLE:MAX_US (e.g. 30:200) or off, not {text!r}")
    return int(parts[0]), int(parts[1])


@dataclasses.dataclass(frozen=True)
class CellConfig:
    """Everything one cell needs.  All fields but the last three are knobs
    that change what runs, and :meth:`argv` spells them."""

    structure: str = "ring"
    sync: str = "lockfree"
    backend: str = "shm"
    seed: int = 0
    duration: float | None = 10.0  # seconds (None: run until `messages`)
    messages: int | None = None  # stop once this many messages were published
    # Producers and consumers, N or MIN:MAX (None: the structure's own default,
    # Adapter.crowd).  A structure with one producer and one consumer per
    # instance runs one lane per pair (the top of a range); a multi-producer,
    # multi-consumer one draws each lane's count from the range.
    producers: int | str | None = None
    consumers: int | str | None = None
    sizes: str = "mixed"
    batch: str = "1:32"  # items per put_many/get_many/borrow_many
    # Drawn per lane, capped by --max-ring-mib: slots per ring, bytes per queue
    # (None: the structure's own default, schedule.RING_CAPACITY / QUEUE_CAPACITY).
    capacity: str | None = None
    zero_copy: float = 0.3  # share of calls that use reserve()/borrow() instead of copies
    kill_rate: float = 0.0  # SIGKILLs per second (random producers and consumers)
    delay: str = "off"  # SHMRING_DELAY for the actors
    lane_time: str = "2:20"  # seconds a lane (one ring and its actors) lives before it is ended
    deadlock_after: float = 10.0
    busy_cpu: float = 0.25  # most CPU share a blocked process may use
    max_ring_mib: int = 64
    broken: str = ""  # SHMRING_BROKEN for the actors (the harness's own tests)
    travel: float = 0.0  # share of lanes whose handles travel by pickling (backends that pickle handles)
    spawn: int = 0  # actors per cell started as real spawned interpreters (first actors of travel lanes)
    scan_delay: str = "off"  # PERMILLE:MAX_US: endpoint-table scans of actors and creators pause mid-way
    maxsize: str = "0"  # Queue: half the lanes admit at most this many messages at once (0: no limit)
    # Not part of what runs:
    scenario: str = "custom"
    fail_fast: bool = False
    tag: str = "x"  # names this run's segments: shmring-stress-<tag>-...

    def validate(self) -> None:
        parse_sizes(self.sizes)
        parse_range(self.batch, "--batch")
        if self.capacity is not None and parse_range(self.capacity, "--capacity")[0] < 1:
            raise ValueError("--capacity must be at least 1")
        parse_range(self.maxsize, "--maxsize")
        if parse_range(self.batch, "--batch")[0] < 1:
            raise ValueError("--batch must be at least 1")
        parse_range(self.lane_time, "--lane-time", float)
        parse_delay(self.delay)
        parse_delay(self.scan_delay)
        if not 0 <= self.zero_copy <= 1:
            raise ValueError("--zero-copy is a share between 0 and 1")
        if not 0 <= self.travel <= 1 or self.spawn < 0:
            raise ValueError("--travel is a share between 0 and 1, --spawn a count >= 0")
        for crowd, flag in ((self.producers, "--producers"), (self.consumers, "--consumers")):
            if crowd is not None and parse_range(str(crowd), flag)[0] < 1:
                raise ValueError(f"{flag} must be at least 1")
        if self.kill_rate < 0 or self.deadlock_after <= 0:
            raise ValueError("--kill-rate must be >= 0, --deadlock-after > 0")
        if self.duration is None and self.messages is None:
            raise ValueError("a cell needs a --duration or a --messages count")

    def crowd(self, default: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """(producers, consumers) as (MIN, MAX) ranges; ``default`` is the structure's."""
        p = parse_range(str(self.producers if self.producers is not None else default), "--producers")
        c = parse_range(str(self.consumers if self.consumers is not None else default), "--consumers")
        return p, c

    def capacity_range(self, default: str) -> tuple[int, int]:
        """--capacity as (MIN, MAX); ``default`` is the structure's."""
        return parse_range(self.capacity if self.capacity is not None else default, "--capacity")

    @property
    def name(self) -> str:
        return f"{self.structure}/{self.sync}/{self.backend}"

    def env(self) -> dict[str, str]:
        """Environment for the cell's processes (the core reads it at import)."""
        permille, max_us = parse_delay(self.delay)
        out = {"SHMRING_DELAY": f"{permille}:{max_us}" if permille else ""}
        out["SHMRING_BROKEN"] = self.broken
        return out

    def argv(self) -> list[str]:
        """Options of ``python -m stress`` that rerun this cell alone."""
        d = CellConfig()
        out = ["--structure", self.structure, "--sync", self.sync, "--backend", self.backend, "--seed", str(self.seed)]
        if self.duration is not None:
            out += ["--duration", f"{self.duration:g}"]
        if self.messages is not None:
            out += ["--messages", str(self.messages)]
        for field, flag in (
            ("producers", "--producers"),
            ("consumers", "--consumers"),
            ("sizes", "--sizes"),
            ("batch", "--batch"),
            ("capacity", "--capacity"),
            ("zero_copy", "--zero-copy"),
            ("kill_rate", "--kill-rate"),
            ("delay", "--delay"),
            ("lane_time", "--lane-time"),
            ("deadlock_after", "--deadlock-after"),
            ("busy_cpu", "--busy-cpu"),
            ("max_ring_mib", "--max-ring-mib"),
            ("travel", "--travel"),
            ("spawn", "--spawn"),
            ("scan_delay", "--scan-delay"),
            ("maxsize", "--maxsize"),
            ("broken", "--broken"),
        ):
            value = getattr(self, field)
            if value != getattr(d, field) or field in ("kill_rate", "delay"):
                out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return out

    def command(self) -> str:
        return "python -m stress " + shlex.join(self.argv())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CellConfig:
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named bundle of knobs the --quick and --tough matrices run per cell;
    ``per_structure`` overrides some of them for one structure."""

    name: str
    knobs: dict[str, Any]
    per_structure: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def knobs_for(self, structure: str) -> dict[str, Any]:
        return {**self.knobs, **self.per_structure.get(structure, {})}


# Lanes of the multi-producer, multi-consumer ring: 2-6 producers x 2-6
# consumers, drawn per lane (it has no travel lanes: see adapters.MpmcAdapter).
MPMC_CROWD: dict[str, Any] = {"producers": "2:6", "consumers": "2:6", "travel": 0.0, "spawn": 0}
# Array lanes: a seqlock, a counter and a lock lane side by side, each with
# 2-3 writers/adders/holders and 1-2 readers/loaders/observers (no travel
# lanes: see adapters.ArrayAdapter).  Quick cells are shorter than mpmc's: 2 s.
ARRAY_CROWD: dict[str, Any] = {"producers": "2:3", "consumers": "1:2", "travel": 0.0, "spawn": 0}
ARRAY_QUICK: dict[str, Any] = dict(ARRAY_CROWD, duration=2.0, lane_time="0.6:1.5")
# Queue lanes: 1-4 producers x 1-4 consumers drawn per lane (no travel lanes:
# see adapters.QueueAdapter), in queues of 16 KiB-4 MiB (--capacity is bytes
# for a queue) that wrap often, messages up to nearly all of one; half the
# lanes with a maxsize (a producer SIGKILLed between its admission and its
# publish leaves an admission that the next refused producer heals).
QUEUE_CROWD: dict[str, Any] = {"producers": "1:4", "consumers": "1:4", "travel": 0.0, "spawn": 0}
QUEUE_QUICK: dict[str, Any] = dict(QUEUE_CROWD, duration=2.2, lane_time="0.8:2", capacity="16384:1048576")

SCENARIOS: dict[str, list[Scenario]] = {
    # Kills first: the slowest detection (a wedged consumer, --deadlock-after)
    # starts earliest.  The mpmc cells are shorter (they catch their broken
    # variant within a second): lanes of 4-12 processes, each a new crowd.
    "quick": [
        Scenario(
            "kills",
            dict(
                duration=8.0,
                kill_rate=3.0,
                delay="30:200",
                lane_time="1:4",
                deadlock_after=5.0,
                sizes="mixed",
                capacity="1:64",
                max_ring_mib=16,
                travel=0.5,
                spawn=1,
            ),
            {
                "mpmc": dict(MPMC_CROWD, duration=2.5, lane_time="0.8:2"),
                "array": ARRAY_QUICK,
                "queue": dict(QUEUE_QUICK, maxsize="1:8"),
            },
        ),
        Scenario(
            "calm",
            dict(
                duration=8.0,
                kill_rate=0.0,
                delay="30:200",
                lane_time="1:5",
                deadlock_after=5.0,
                sizes="mixed",
                capacity="1:64",
                max_ring_mib=16,
                travel=0.5,
                spawn=1,
            ),
            {
                "mpmc": dict(MPMC_CROWD, duration=2.5, lane_time="0.8:2"),
                "array": ARRAY_QUICK,
                "queue": dict(QUEUE_QUICK, maxsize="1:8"),
            },
        ),
    ],
    # Hours, by hand: every scenario per cell, round after round, new seeds.
    # For the ring, producers/consumers is the number of lanes side by side.
    "tough": [
        Scenario(
            "calm",
            dict(kill_rate=0.0, delay="off", lane_time="5:60"),
            {
                "ring": dict(producers=3, consumers=3),
                "mpmc": MPMC_CROWD,
                "array": ARRAY_CROWD,
                "queue": dict(QUEUE_CROWD, maxsize="1:16"),
            },
        ),
        Scenario(
            "delays",
            dict(kill_rate=0.0, delay="50:300", lane_time="5:60"),
            {
                "ring": dict(producers=2, consumers=2),
                "mpmc": MPMC_CROWD,
                "array": ARRAY_CROWD,
                "queue": dict(QUEUE_CROWD, maxsize="1:16"),
            },
        ),
        Scenario(
            "kills",
            dict(
                kill_rate=3.0,
                delay="30:200",
                lane_time="2:30",
                travel=0.3,
                spawn=2,
                scan_delay="200:2000",
            ),
            {
                "ring": dict(producers=3, consumers=3),
                "mpmc": MPMC_CROWD,
                "array": ARRAY_CROWD,
                "queue": dict(QUEUE_CROWD, maxsize="1:16"),
            },
        ),
        Scenario(
            "storm",
            dict(
                kill_rate=10.0,
                delay="200:1000",
                lane_time="1:10",
                capacity="1:8",
                travel=0.5,
                spawn=2,
                scan_delay="1000:5000",
            ),
            {
                "ring": dict(producers=4, consumers=4),
                "mpmc": dict(MPMC_CROWD, producers="4:6", consumers="4:6"),
                "array": dict(ARRAY_CROWD, producers="3:5", consumers="2:3"),
                "queue": dict(QUEUE_CROWD, producers="3:4", consumers="3:4", capacity="16384:262144"),
            },
        ),
        Scenario(
            "large",
            dict(kill_rate=1.0, delay="20:100", lane_time="5:60", sizes="large", max_ring_mib=128),
            {"mpmc": MPMC_CROWD, "array": ARRAY_CROWD, "queue": QUEUE_CROWD},
        ),
    ],
}
