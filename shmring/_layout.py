"""The shared header: every byte offset of a shmring region, in one place.

A region starts with one 4096-byte header page, then (multi-producer or
multi-consumer rings only) one sequence word per slot, then the data area.  The
first 512 bytes are immutable after creation and covered by a CRC-32; the
rest are the moving parts, each group on its own 128-byte line (two 64-byte
cache lines, because Intel's adjacent-line prefetcher pairs them) so that
the producer's and the consumer's stores never share a line.

Changing any offset here is a format change: bump ``VERSION``.  The same
table, with prose, is in docs/layout.md.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import struct
import zlib
from typing import Any

import numpy as np

from .errors import LayoutError

MAGIC = b"SHMRING\x00"
VERSION = 2  # 2: endpoint word holds the start time; holder/pending entries; remover word
PAGE = 4096
LINE = 128  # false-sharing unit: two cache lines
HEADER_SIZE = PAGE
DATA_OFFSET = HEADER_SIZE

KIND_RING = 1
KIND_ARRAY = 2
KIND_QUEUE = 3
KIND_NAMES = {KIND_RING: "Ring", KIND_ARRAY: "Array", KIND_QUEUE: "Queue"}
QUEUE_SLOT = 64  # a Queue's records are runs of 64-byte slots (see _queue.c)

SYNC_LOCKFREE = 0
SYNC_SEMAPHORE = 1
FLAG_MULTI_PRODUCER = 1 << 0
FLAG_MULTI_CONSUMER = 1 << 1

MAX_NDIM = 8
DESCR_BYTES = 256

# --- immutable part: written once by the creator, covered by CHECKSUM -------
# offset, struct format, meaning
MAGIC_OFF = 0  # 8s  b"SHMRING\0"
VERSION_OFF = 8  # I   format version
KIND_OFF = 12  # I   structure kind (KIND_*)
HEADER_SIZE_OFF = 16  # I   bytes before the data area (4096)
FLAGS_OFF = 20  # I   bits 0-1 multi-producer/-consumer; bits 8-15 sync flavour
TOTAL_SIZE_OFF = 24  # Q   bytes the creator mapped (page multiple)
CAPACITY_OFF = 32  # Q   slots
SLOT_SIZE_OFF = 40  # Q   bytes per slot = itemsize * prod(shape)
DATA_OFFSET_OFF = 48  # Q   offset of slot 0 (DATA_OFFSET; later when there are sequence words)
NDIM_OFF = 56  # I   len(shape), <= MAX_NDIM
DESCR_LEN_OFF = 60  # I   bytes used in DESCR
SHAPE_OFF = 64  # 8Q  slot shape, unused dims 0
DESCR_OFF = 128  # 256s repr of numpy's dtype descr, ASCII
CREATED_NS_OFF = 384  # Q   creation time, ns since the epoch (for `shmring ls`)
CREATOR_PID_OFF = 392  # Q   pid of the creating process (for `shmring gc`)
CREATOR_START_OFF = 400  # Q   its start time (clock ticks since boot), so a recycled pid is not it
SEM_ID_OFF = 408  # Q   sync="semaphore": random id naming the ring's semaphores (0: none)
MAXSIZE_OFF = 416  # Q   Queue: messages it admits at once (0: no limit but its bytes)
CHECKSUM_OFF = 504  # Q   CRC-32 of bytes [0, 504)
IMMUTABLE_END = 512

# --- producer line: written by the producer on every put ---------------------
HEAD_OFF = 512  # Q   next index to write (free-running)
CACHED_TAIL_OFF = 520  # Q   producer's last view of TAIL (saves reading the consumer's line)
QUEUE_IN_OFF = 528  # 2Q  Queue statistics: messages put, payload bytes put (relaxed counters)

# --- consumer line: written by the consumer on every get ---------------------
TAIL_OFF = 640  # Q   next index to read (free-running)
CACHED_HEAD_OFF = 648  # Q   consumer's last view of HEAD
QUEUE_OUT_OFF = 656  # 2Q  Queue statistics: messages taken, payload bytes taken

# --- waiter line: written only around sleeping --------------------------------
CONSUMER_WAITERS_OFF = 768  # I   epoch << 16 | consumers asleep on HEAD's low half
PRODUCER_WAITERS_OFF = 772  # I   epoch << 16 | producers asleep on TAIL's low half
QUEUE_ADMITTED_OFF = 784  # Q   Queue with maxsize: version << 32 | records admitted and not yet taken
ADMIT_VERSION = 1 << 32  # every change of the admission word adds it (see _queue.h, q_admit)
QUEUE_ROOM_OFF = 792  # Q   Queue: bumped when a consumer frees slots; producers sleep on its low half

# --- Array: a region holds one kind, so an Array's words reuse the ring's lines
ARRAY_LOCK_OFF = 512  # Q   identity word of the holder of the Array's lock (0: free)
ARRAY_LOCK_WAKE_OFF = 520  # I   futex word of the lock-free flavour: bumped on every release
ARRAY_LOCK_WAITERS_OFF = 524  # I   sleepers on it
ARRAY_SEQ_OFF = 640  # Q   seqlock sequence: odd while a write() is under way (readers poll this line)

# --- endpoint summary line: written on attach/close/reap ----------------------
PRODUCERS_EVER_OFF = 896  # I   1 once any producer registered
PRODUCERS_LIVE_OFF = 900  # I   hint: registered producers (the table is the truth)
CONSUMERS_EVER_OFF = 904  # I   1 once any consumer registered
CONSUMERS_LIVE_OFF = 908  # I   hint: registered consumers
PRODUCER_OWNER_OFF = 912  # Q   single-producer rings: token of the endpoint holding the role (0: none)
CONSUMER_OWNER_OFF = 920  # Q   single-consumer rings: likewise
REMOVER_OFF = 928  # Q   identity word (pid, start time) of the process about to unlink the name (0: none)
PRODUCER_LOCK_OFF = 936  # Q   sync="semaphore", several producers: identity word of the lock's holder (0: free)
CONSUMER_LOCK_OFF = 944  # Q   likewise, the consumers' lock
# statistics of rare events (see _stats.py), bumped by whoever handles one
HOLES_OFF = 952  # Q   multi rings: positions published with no item (aborted reserve, dead producer)
ABANDONED_OFF = 960  # Q   slots of dead processes' claims that a survivor repaired
REAPED_OFF = 968  # Q   dead processes' endpoint entries that a survivor freed
TAKEOVERS_OFF = 976  # Q   locks taken over from a dead holder (Array, semaphore side locks)

# --- endpoint table -----------------------------------------------------------
ENDPOINTS_OFF = 1024
ENDPOINT_SIZE = 32
MAX_ENDPOINTS = 96
# each entry: +0 Q word  = pid (bits 0-21) | role (22-24) | state (25-26)
#                          | start time (27-63: clock ticks since boot, /proc/pid/stat field 22)
#                          one CAS claims an entry with its owner's full identity
#             +8 Q token = random, odd: names this registration in the owner words
#                          (for a pending entry: the ticket the pickled handle carries)
#             +16 Q claim start = first position this endpoint has claimed and not yet
#                          published (released) in a multi-producer/-consumer ring;
#                          NO_CLAIM when none (see _mpmc.h)
#             +24 Q claim end   = one past the last position of that claim
ENDPOINT_WORD = 0
ENDPOINT_TOKEN = 8
ENDPOINT_CLAIM_START = 16
ENDPOINT_CLAIM_END = 24
NO_CLAIM = (1 << 64) - 1
ADMITTING = (1 << 64) - 2  # claim start of a Queue producer holding an admission (maxsize) and no claim

# --- sequence words (multi rings): at SEQ_OFFSET, one Q per slot --------------
# seq[i] says whose turn slot i is (free, published, abandoned; see _mpmc.h);
# a Queue's record words follow them (one Q per slot: the length and kind of
# the record that starts there; see _queue.h); the data area follows at the
# next page boundary.
SEQ_OFFSET = HEADER_SIZE
ENDPOINTS_END = ENDPOINTS_OFF + MAX_ENDPOINTS * ENDPOINT_SIZE
WORD_PID_BITS = 22  # Linux pids are below 2**22 (PID_MAX_LIMIT)
WORD_ROLE_SHIFT, WORD_ROLE_BITS = 22, 3
WORD_STATE_SHIFT, WORD_STATE_BITS = 25, 2
WORD_START_SHIFT = 27  # start time kept modulo 2**37 ticks (43 years at 100 Hz)

_LINES = [
    (HEAD_OFF, QUEUE_IN_OFF + 8),
    (TAIL_OFF, QUEUE_OUT_OFF + 8),
    (CONSUMER_WAITERS_OFF, QUEUE_ROOM_OFF),
    (PRODUCERS_EVER_OFF, TAKEOVERS_OFF),
]
for _first, _last in _LINES:
    assert _first % LINE == 0 and _last // LINE == _first // LINE, "group must own one 128-byte line"
assert IMMUTABLE_END <= HEAD_OFF and CHECKSUM_OFF + 8 == IMMUTABLE_END
assert ENDPOINTS_OFF % LINE == 0 and ENDPOINTS_END <= HEADER_SIZE
assert DESCR_OFF + DESCR_BYTES <= CREATED_NS_OFF and SHAPE_OFF + 8 * MAX_NDIM <= DESCR_OFF
assert WORD_START_SHIFT == WORD_STATE_SHIFT + WORD_STATE_BITS == WORD_ROLE_SHIFT + WORD_ROLE_BITS + WORD_STATE_BITS
for _off in (
    HEAD_OFF,
    CACHED_TAIL_OFF,
    TAIL_OFF,
    CACHED_HEAD_OFF,
    PRODUCER_OWNER_OFF,
    CONSUMER_OWNER_OFF,
    REMOVER_OFF,
    PRODUCER_LOCK_OFF,
    CONSUMER_LOCK_OFF,
    QUEUE_ADMITTED_OFF,
    QUEUE_ROOM_OFF,
    QUEUE_IN_OFF,
    QUEUE_OUT_OFF,
    HOLES_OFF,
    ABANDONED_OFF,
    REAPED_OFF,
    TAKEOVERS_OFF,
):
    assert _off % 8 == 0
for _off in (CONSUMER_WAITERS_OFF, PRODUCER_WAITERS_OFF, PRODUCERS_LIVE_OFF, CONSUMERS_LIVE_OFF):
    assert _off % 4 == 0

# Order the C core's SpscRing expects its offsets in (see _core.c, OFF_*).
RING_CORE_OFFSETS = (
    HEAD_OFF,
    TAIL_OFF,
    CACHED_TAIL_OFF,
    CACHED_HEAD_OFF,
    CONSUMER_WAITERS_OFF,
    PRODUCER_WAITERS_OFF,
    CONSUMERS_EVER_OFF,
    CONSUMERS_LIVE_OFF,
)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The immutable part of a header, decoded and checked."""

    kind: int
    capacity: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    flags: int = 0
    sync: int = SYNC_LOCKFREE

    @property
    def slot_size(self) -> int:
        return int(self.dtype.itemsize * math.prod(self.shape))

    @property
    def multi(self) -> bool:
        """Several producers or several consumers, lock-free: the ring has
        sequence words (a semaphore ring serialises each side with a lock).
        A Queue always has them: its records are claimed as runs of slots in
        both flavours."""
        if self.kind == KIND_QUEUE:
            return True
        return bool(self.flags & (FLAG_MULTI_PRODUCER | FLAG_MULTI_CONSUMER)) and self.sync == SYNC_LOCKFREE

    @property
    def seq_offset(self) -> int:
        """Offset of the sequence words (0: the ring has none)."""
        return SEQ_OFFSET if self.multi else 0

    @property
    def data_offset(self) -> int:
        """Offset of slot 0: page-aligned, after the sequence words if any."""
        if not self.multi:
            return DATA_OFFSET
        words = 16 if self.kind == KIND_QUEUE else 8  # a Queue's record words follow its sequence words
        return SEQ_OFFSET + -(-(self.capacity * words) // PAGE) * PAGE

    @property
    def record_offset(self) -> int:
        """A Queue's record words (one per slot, after the sequence words; see _queue.h)."""
        return SEQ_OFFSET + self.capacity * 8

    @property
    def total_size(self) -> int:
        data = self.capacity * self.slot_size
        return self.data_offset + -(-data // PAGE) * PAGE

    @property
    def multi_producer(self) -> bool:
        return bool(self.flags & FLAG_MULTI_PRODUCER)

    @property
    def multi_consumer(self) -> bool:
        return bool(self.flags & FLAG_MULTI_CONSUMER)


def _descr_bytes(dtype: np.dtype[Any]) -> bytes:
    text = repr(np.lib.format.dtype_to_descr(dtype)).encode("ascii")
    if len(text) > DESCR_BYTES:
        raise ValueError(f"dtype {dtype} is too complex to describe in {DESCR_BYTES} bytes")
    return text


def check_shape(shape: Any) -> tuple[int, ...]:
    """Normalise ``shape`` (an int or a sequence of ints) and refuse what a
    header cannot describe."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, not {shape!r}") from None
    if any(d < 0 for d in dims) or len(dims) > MAX_NDIM:
        raise ValueError(f"shape must have at most {MAX_NDIM} non-negative dimensions, not {dims}")
    return dims


def check_dtype(dtype: Any) -> np.dtype[Any]:
    """Normalise ``dtype`` and refuse the ones shared memory cannot hold."""
    dt: np.dtype[Any] = np.dtype(dtype)
    if dt.hasobject:
        raise TypeError(f"dtype {dt} holds Python objects, which cannot live in shared memory")
    if dt.itemsize == 0:
        raise ValueError(f"dtype {dt} has no size")
    _descr_bytes(dt)
    return dt


def encode_header(
    geo: Geometry, created_ns: int, creator_pid: int, creator_start: int, sem_id: int = 0, maxsize: int = 0
) -> bytes:
    """The immutable 512 bytes of a header, magic and checksum included.

    The creator copies bytes [8, 512) into the region first and publishes the
    magic last with a release store (``_region.publish_header``), so a peer
    that sees the magic sees a complete header.
    """
    descr = _descr_bytes(geo.dtype)
    if len(geo.shape) > MAX_NDIM:
        raise ValueError(f"at most {MAX_NDIM} dimensions per slot")
    buf = bytearray(IMMUTABLE_END)
    struct.pack_into("<8s", buf, MAGIC_OFF, MAGIC)
    struct.pack_into("<IIII", buf, VERSION_OFF, VERSION, geo.kind, HEADER_SIZE, geo.flags | (geo.sync << 8))
    struct.pack_into(
        "<QQQQII",
        buf,
        TOTAL_SIZE_OFF,
        geo.total_size,
        geo.capacity,
        geo.slot_size,
        geo.data_offset,
        len(geo.shape),
        len(descr),
    )
    struct.pack_into(f"<{MAX_NDIM}Q", buf, SHAPE_OFF, *geo.shape, *([0] * (MAX_NDIM - len(geo.shape))))
    struct.pack_into(f"<{DESCR_BYTES}s", buf, DESCR_OFF, descr)
    struct.pack_into("<QQQQQ", buf, CREATED_NS_OFF, created_ns, creator_pid, creator_start, sem_id, maxsize)
    struct.pack_into("<Q", buf, CHECKSUM_OFF, checksum(buf))
    return bytes(buf)


MAGIC_WORD = struct.unpack("=Q", MAGIC)[0]  # native: store64 writes it as MAGIC


def checksum(buf: Any) -> int:
    return zlib.crc32(bytes(memoryview(buf)[:CHECKSUM_OFF]))


def read_header(buf: Any, mapped_size: int, kind: int) -> Geometry:
    """Decode and validate a header; any inconsistency raises LayoutError.

    Only the first page is read, and only after ``mapped_size`` (the real size
    of the segment) has been checked to hold it.
    """
    if mapped_size < HEADER_SIZE:
        raise LayoutError(f"segment of {mapped_size} bytes is too small for a shmring header")
    (magic,) = struct.unpack_from("<8s", buf, MAGIC_OFF)
    if magic != MAGIC:
        raise LayoutError("not a shmring region (bad magic)")
    version, got_kind, header_size, flags = struct.unpack_from("<IIII", buf, VERSION_OFF)
    if version != VERSION:
        raise LayoutError(f"region has format version {version}; this shmring reads version {VERSION}")
    (stored,) = struct.unpack_from("<Q", buf, CHECKSUM_OFF)
    if stored != checksum(buf):
        raise LayoutError("header checksum mismatch: the region is corrupt")
    if got_kind != kind:
        have = KIND_NAMES.get(got_kind, f"kind {got_kind}")
        want = KIND_NAMES.get(kind, f"kind {kind}")
        raise LayoutError(f"region holds {_a(have)} {have}, not {_a(want)} {want}")
    total, capacity, slot_size, data_off, ndim, descr_len = struct.unpack_from("<QQQQII", buf, TOTAL_SIZE_OFF)
    if header_size != HEADER_SIZE:
        raise LayoutError("header size differs from this format's")
    if ndim > MAX_NDIM or descr_len > DESCR_BYTES or descr_len == 0:
        raise LayoutError("header geometry out of range")
    shape = tuple(int(d) for d in struct.unpack_from(f"<{ndim}Q", buf, SHAPE_OFF))
    (raw_descr,) = struct.unpack_from(f"<{descr_len}s", buf, DESCR_OFF)
    try:
        dtype = np.lib.format.descr_to_dtype(ast.literal_eval(raw_descr.decode("ascii")))
        dtype = check_dtype(dtype)
    except Exception as exc:  # any failure here means a bad header
        raise LayoutError(f"header holds an unreadable dtype: {raw_descr!r}") from exc
    geo = Geometry(kind=kind, capacity=int(capacity), shape=shape, dtype=dtype, flags=flags & 0xFF, sync=flags >> 8)
    if capacity < 1 or geo.slot_size != slot_size or slot_size < 1:
        raise LayoutError("header geometry is inconsistent (capacity, slot size, dtype, shape)")
    if geo.data_offset != data_off:
        raise LayoutError(f"header puts the data at {data_off}, but its geometry puts it at {geo.data_offset}")
    if geo.total_size != total:
        raise LayoutError(f"header says {total} bytes but its geometry needs {geo.total_size}")
    if total > mapped_size:
        raise LayoutError(f"header says {total} bytes but the segment has only {mapped_size}")
    return geo


def _a(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def admitted_count(word: int) -> int:
    """The count in a Queue's admission word (signed 32 bits; see ADMIT_VERSION)."""
    low = word & 0xFFFFFFFF
    return low - (1 << 32) if low >> 31 else low


def read_kind(buf: Any) -> int:
    """The structure kind a header claims (before it is validated)."""
    return int(struct.unpack_from("<I", buf, KIND_OFF)[0])


def header_info(buf: Any) -> dict[str, int]:
    """Creation time, creator, semaphore id and (Queue) maxsize of a validated header."""
    created_ns, creator_pid, creator_start, sem_id, maxsize = struct.unpack_from("<QQQQQ", buf, CREATED_NS_OFF)
    return {
        "created_ns": created_ns,
        "creator_pid": creator_pid,
        "creator_start": creator_start,
        "sem_id": sem_id,
        "maxsize": maxsize,
    }
