"""What a bench run measures with: item sizes, ring and batch geometry,
timings, limits, and the two settings (default and ``--quick``).

Every tunable of the benchmark is here, with the measurement that chose it.
"""

from __future__ import annotations

import dataclasses
from typing import Final

START_METHOD: Final = "fork"
KiB = 1024
MiB = 1024 * KiB
DEFAULT_SIZES = (8, 64, KiB, 64 * KiB, MiB, 16 * MiB)
QUICK_SIZES = (8, 64 * KiB, MiB)
MAX_SIZE = 64 * MiB

# Ring capacity (and mp.Queue maxsize): about RING_BYTES of slots, 4..4096.
# 8 MiB keeps the slots of a 1 MiB ring in a typical L3 (measured here: a
# 64 MiB ring of 1 MiB slots streams through DRAM at a third of the speed).
RING_BYTES = 8 * MiB
MIN_CAPACITY, MAX_CAPACITY = 4, 4096
# The cold copy floor cycles destinations over this many bytes (beyond L3).
COLD_BYTES = 128 * MiB
# put_many/get_many batches: at most MAX_BATCH items and about BATCH_BYTES
# (16 MiB batches measured slower here: they no longer pipeline through the cache).
MAX_BATCH = 1024
BATCH_BYTES = 4 * MiB
# The producer reads the clock once per CHUNK_BYTES sent (at least once per message).
CHUNK_BYTES = 16 * KiB
# Ring copying rows of at least this size show their share of the copy floor.
FLOOR_PERCENT_FROM = MiB
PING_BYTES = 64
# os.pipe rows ask the kernel for this pipe buffer (Linux's default
# unprivileged maximum, /proc/sys/fs/pipe-max-size); 64 KiB otherwise.
OS_PIPE_BUFFER = MiB
# A child that is silent for this long past its expected run is killed.
CHILD_GRACE_S = 60.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures and for how long."""

    sizes: tuple[int, ...]
    cell_seconds: float  # producer's sending time per throughput cell
    copy_seconds: float  # timing loop per np.copyto size
    round_trips: int  # timed ping-pong round trips per transport
    warmup_round_trips: int
    idle_seconds: float
    many_topologies: tuple[tuple[int, int], ...]  # (producers, consumers) of the many-producers section
    many_sizes: tuple[int, ...]  # its item sizes (it sends for cell_seconds too)
    queue_topologies: tuple[tuple[int, int], ...] = ((1, 1), (2, 2))  # the Queue section's (producers, consumers)
    queue_payloads: tuple[str, ...] = ("64 B bytes", "small dict", "1 MiB array", "dict of 4 x 1 MiB")


DEFAULT = Settings(DEFAULT_SIZES, 0.5, 0.25, 5000, 500, 2.0, ((2, 2), (4, 4)), (64, 64 * KiB))
QUICK = Settings(QUICK_SIZES, 0.05, 0.02, 300, 50, 0.5, ((2, 2),), (64,), ((1, 1),), ("64 B bytes", "1 MiB array"))


def fmt_size(size: int) -> str:
    """``size`` in bytes as the report and the messages write it: 8 B, 64 KiB, 1 MiB."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"
