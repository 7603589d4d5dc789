"""The bytes of one stress message: who sent it, its number, and checks.

Every message fills one whole slot, whatever its length field says::

    offset  size  field
    0       4     MAGIC
    4       4     producer id (unique per producer process of a run)
    8       8     sequence number (0, 1, 2, ... per producer)
    16      4     length: meaningful payload bytes (the rest is padding)
    20      4     CRC-32 of bytes [0, 20) and [24, end)
    24      ...   payload then padding: a slice of the producer's random pool
    end-8   8     trailer: seq ^ (producer << 40) ^ TRAILER_KEY

The whole slot is checked, not only ``length`` bytes: a slot whose second
half lands after its index was published (a missing release fence) keeps the
previous message's trailer and padding, so the tear shows even when the
payload is short.  The pool offset moves with the sequence number, so two
messages never share their payload bytes at the same place.
"""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import numpy.typing as npt

MAGIC = 0x5354524D  # "MRTS"
TRAILER_KEY = 0x5A17_C0DE_0000_0000
HEADER = struct.Struct("<IIQI")  # magic, producer, seq, length (the CRC follows at 20)
CRC = struct.Struct("<I")
TRAILER = struct.Struct("<Q")
CRC_OFF = 20
BODY_OFF = 24
OVERHEAD = 32  # header + trailer: the smallest slot
SEQ_BITS = 40
# Sequence numbers at and above this mark messages written inside a reserve()
# block that then raised: they must never be delivered.
ABORTED_SEQ = 1 << (SEQ_BITS - 1)

Bytes = npt.NDArray[np.uint8]


class Corrupt(Exception):
    """A delivered slot failed a check; the message says which."""


def trailer_word(producer: int, seq: int) -> int:
    return (seq ^ (producer << SEQ_BITS) ^ TRAILER_KEY) & 0xFFFF_FFFF_FFFF_FFFF


class Encoder:
    """Writes one producer's messages into slots of ``slot_bytes`` bytes."""

    def __init__(self, producer: int, slot_bytes: int, seed: int):
        if slot_bytes < OVERHEAD:
            raise ValueError(f"slots of {slot_bytes} bytes cannot hold a {OVERHEAD}-byte message frame")
        self.producer = producer
        self.slot_bytes = slot_bytes
        self.body = slot_bytes - OVERHEAD
        rng = random.Random(seed)
        self._pool: Bytes = np.frombuffer(rng.randbytes(2 * self.body + 1), dtype=np.uint8)
        self._rng = rng

    def write(self, out: Bytes, seq: int, length: int | None = None) -> None:
        """Encode message ``seq`` into ``out`` (a writable uint8 row of one slot)."""
        body = self.body
        if length is None:
            length = self._rng.randint(0, body) if body else 0
        off = (seq * 2654435761) % (body + 1)
        write_frame(out, self.producer, seq, self._pool[off : off + body], length)

    def fill(self, rows: Bytes, first: int) -> None:
        """Encode messages ``first``, ``first + 1``, ... into ``rows``, one a row."""
        for i in range(len(rows)):
            self.write(rows[i], first + i)


def write_frame(out: Bytes, producer: int, seq: int, body: Bytes, length: int) -> None:
    """Frame message ``seq`` of ``producer`` in ``out``, a writable uint8 row
    of any size from OVERHEAD up, around ``body`` (its size less OVERHEAD)."""
    n = out.shape[0]
    out[BODY_OFF : n - 8] = body
    buf = out.data
    HEADER.pack_into(buf, 0, MAGIC, producer, seq, length)
    TRAILER.pack_into(buf, n - 8, trailer_word(producer, seq))
    CRC.pack_into(buf, CRC_OFF, zlib.crc32(buf[BODY_OFF:], zlib.crc32(buf[:CRC_OFF])))


def verify(raw: Bytes) -> tuple[int, int, int]:
    """Check one delivered slot (or a Queue lane's frame, of any size);
    returns (producer, seq, length) or raises Corrupt."""
    n = raw.shape[0]
    if n < OVERHEAD:
        raise Corrupt(f"a frame of {n} bytes, shorter than its {OVERHEAD}-byte header and trailer")
    buf = raw.data
    magic, producer, seq, length = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise Corrupt(f"bad magic {magic:#x} (header {bytes(raw[:24]).hex()})")
    (trailer,) = TRAILER.unpack_from(buf, n - 8)
    if trailer != trailer_word(producer, seq):
        other = (trailer ^ TRAILER_KEY) & ((1 << SEQ_BITS) - 1)
        raise Corrupt(f"trailer of producer {producer} seq {seq} belongs to seq {other}: the slot mixes two messages")
    if length > n - OVERHEAD:
        raise Corrupt(f"producer {producer} seq {seq}: length {length} exceeds the slot's {n - OVERHEAD} bytes")
    (crc,) = CRC.unpack_from(buf, CRC_OFF)
    if zlib.crc32(buf[BODY_OFF:], zlib.crc32(buf[:CRC_OFF])) != crc:
        raise Corrupt(f"producer {producer} seq {seq}: payload checksum mismatch (torn or overwritten slot)")
    return producer, seq, length
