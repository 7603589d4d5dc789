"""The messages of Queue lanes: Python objects of four kinds, and their checks.

A Queue moves objects, not slots, so its messages are objects whose whole
shape is a pure function of (producer, seq) and the lane's plan
(:func:`spec`); only their content bytes are random, and those carry checks:

``bytes``, ``bytearray``
  one frame (message.py: magic, producer, seq, length, CRC-32, trailer) of
  the drawn size, at least message.OVERHEAD bytes;
``ndarray``
  a frame viewed as an array of a drawn dtype (big-endian, structured and
  datetime ones too) and shape (1-3 dims); or, sometimes, a zero-size array,
  which has no bytes to frame: its shape holds the producer and seq + 1
  around its zero;
``nested``
  a dict: its id ``(producer, seq)``, a label, a list of arrays of drawn
  dtypes and shapes (zero-size ones too) sharing the drawn size, a tuple of
  plain values with a 0-d array, a dict with a bytearray and a list, and
  the CRC-32 of the arrays' bytes.

A consumer reads (producer, seq) from what it got, draws the spec again and
compares everything: the type, each dtype and shape, the plain values, the
arrays' writability (``get()`` returns private writable copies, ``borrow()``
read-only views into the queue), then the content (a frame's checks, or the
nested arrays' CRC).  So a torn, overwritten or misframed record shows as
``corrupted`` whatever its kind.  Sequence numbers from message.ABORTED_SEQ
up are messages larger than the queue can ever hold, which a put must refuse
(ValueError) and a consumer must never see (``phantom``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from typing import Any

import numpy as np

from .message import ABORTED_SEQ, OVERHEAD, SEQ_BITS, Bytes, Corrupt, verify, write_frame
from .schedule import LanePlan, log_uniform_int

KINDS = ("bytes", "bytearray", "ndarray", "nested")
KIND_WEIGHTS = (3, 1, 3, 3)
DTYPES = tuple(
    np.dtype(d)
    for d in ("uint8", "<i2", ">u4", "float32", "<f8", "complex64", ">i8", "M8[ns]", [("a", "<i4"), ("b", ">f8")])
)
BIG_SHARE = 0.1  # messages of half the lane's largest size or more (some lanes: more than half the queue)
EMPTY_SHARE = 0.08  # ndarray messages that are zero-size
SPREAD = 4099  # content offsets into a producer's random pool (moves with seq, so messages differ)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What message ``seq`` of a producer is, but for its content bytes."""

    kind: str
    size: int  # payload bytes: a frame's, an array's, or the nested arrays' together
    arrays: tuple[tuple[np.dtype[Any], tuple[int, ...]], ...] = ()  # ndarray: one; nested: each


def spec(plan: LanePlan, producer: int, seq: int) -> Spec:
    """The message ``seq`` of ``producer`` in a lane of ``plan`` (see the module docstring)."""
    if seq >= ABORTED_SEQ:
        return Spec("bytes", plan.capacity + 64)  # larger than the queue can ever hold, rounded up to 64
    rng = random.Random(producer << SEQ_BITS | seq)
    kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
    lo, hi = plan.min_bytes, plan.slot_bytes
    size = rng.randint(max(lo, hi // 2), hi) if rng.random() < BIG_SHARE else log_uniform_int(rng, lo, hi)
    if kind in ("bytes", "bytearray"):
        return Spec(kind, max(size, OVERHEAD))
    if kind == "ndarray":
        dt = rng.choice(DTYPES)
        if rng.random() < EMPTY_SHARE:
            dims = [producer, seq + 1]
            dims.insert(rng.randrange(3), 0)
            return Spec(kind, 0, ((dt, tuple(dims)),))
        shape = _shape(rng, max(-(-OVERHEAD // dt.itemsize), size // dt.itemsize))
        return Spec(kind, math.prod(shape) * dt.itemsize, ((dt, shape),))
    cuts = sorted(rng.randint(0, size) for _ in range(rng.randint(0, 4)))
    arrays = []
    for a, b in zip([0, *cuts], [*cuts, size], strict=True):
        dt = rng.choice(DTYPES)
        arrays.append((dt, _shape(rng, (b - a) // dt.itemsize)))
    return Spec(kind, sum(math.prod(s) * dt.itemsize for dt, s in arrays), tuple(arrays))


def _shape(rng: random.Random, count: int) -> tuple[int, ...]:
    """1-3 dims holding at least ``count`` elements (0: a zero-size shape)."""
    ndim = rng.choice((1, 1, 2, 3))
    if ndim == 1:
        return (count,)
    lead = (rng.choice((1, 2, 3, 4, 8)),) if ndim == 2 else (rng.choice((1, 2, 3)), rng.choice((1, 2, 5)))
    return (*lead, -(-count // math.prod(lead)))


def _plain(producer: int, seq: int) -> tuple[str, tuple[Any, ...]]:
    """A nested message's label and plain values (its 0-d array aside)."""
    label = f"producer {producer} seq {seq}"
    return label, (
        {"half": seq / 2, "none": None, "raw": bytearray(label.encode()), "flags": [True, False]},
        [
            producer,
            -seq,
            1e300,
        ],
    )


def _crc(arrays: list[Any]) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(a.reshape(-1).view(np.uint8), crc)
    return crc


class QueueEncoder:
    """Makes one producer's messages (message.Encoder's counterpart)."""

    def __init__(self, producer: int, plan: LanePlan, seed: int):
        self.producer, self.plan = producer, plan
        most = max(plan.slot_bytes, plan.capacity) + 256  # an array's shape may round its bytes up a little
        self._pool: Bytes = np.frombuffer(random.Random(seed).randbytes(most + SPREAD), dtype=np.uint8)

    def fill(self, out: list[Any], first: int) -> None:
        """Make messages ``first``, ``first + 1``, ... into ``out``."""
        for i in range(len(out)):
            out[i] = self.make(first + i)

    def _content(self, seq: int, part: int, n: int) -> Bytes:
        off = (seq * 2654435761 + part * 40503) % SPREAD
        return self._pool[off : off + n]

    def _frame(self, seq: int, n: int) -> Bytes:
        out: Bytes = np.empty(n, dtype=np.uint8)
        write_frame(out, self.producer, seq, self._content(seq, 0, n - OVERHEAD), n - OVERHEAD)
        return out

    def make(self, seq: int) -> Any:
        s = spec(self.plan, self.producer, seq)
        if s.kind == "bytes":
            return self._frame(seq, s.size).tobytes()
        if s.kind == "bytearray":
            return bytearray(self._frame(seq, s.size))
        if s.kind == "ndarray":
            ((dt, shape),) = s.arrays
            return self._frame(seq, s.size).view(dt).reshape(shape) if s.size else np.empty(shape, dt)
        arrays = [
            self._content(seq, i, math.prod(shape) * dt.itemsize).copy().view(dt).reshape(shape)
            for i, (dt, shape) in enumerate(s.arrays)
        ]
        label, (extra, values) = _plain(self.producer, seq)
        more = (np.array(seq, dtype="<i8"), extra, values)
        return {"id": (self.producer, seq), "label": label, "arrays": arrays, "more": more, "crc": _crc(arrays)}


def check(plan: LanePlan, obj: Any, borrowed: bool) -> tuple[int, int, int]:
    """Check one delivered object (``borrowed``: inside a borrow() block);
    returns (producer, seq, payload bytes) or raises Corrupt."""
    try:
        return _check(plan, obj, borrowed)
    except Corrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a misframed object breaks is a finding
        raise Corrupt(f"a {type(obj).__name__} message that does not parse: {type(exc).__name__}: {exc}") from None


def _check(plan: LanePlan, obj: Any, borrowed: bool) -> tuple[int, int, int]:
    t = type(obj)
    if t is bytes or t is bytearray:
        producer, seq, _ = verify(np.frombuffer(obj, dtype=np.uint8))
        _expect(spec(plan, producer, seq), t.__name__, len(obj), producer, seq)
        return producer, seq, len(obj)
    if t is np.ndarray:
        _writable(obj, borrowed, "the array")
        if obj.size:
            producer, seq, _ = verify(obj.reshape(-1).view(np.uint8))
        else:
            producer, seq = _id_of_empty(obj.shape)
        s = spec(plan, producer, seq)
        _expect(s, "ndarray", obj.nbytes, producer, seq)
        if s.arrays != ((obj.dtype, obj.shape),):
            raise Corrupt(f"producer {producer} seq {seq}: an array of {obj.dtype} {obj.shape}, not {s.arrays[0]}")
        return producer, seq, obj.nbytes
    if t is not dict or set(obj) != {"id", "label", "arrays", "more", "crc"}:
        raise Corrupt(f"a message of type {t.__name__} (keys {sorted(obj) if t is dict else '-'})")
    producer, seq = obj["id"]
    where = f"producer {producer} seq {seq}"
    arrays = obj["arrays"]
    if type(arrays) is not list or not all(type(a) is np.ndarray for a in arrays):
        raise Corrupt(f"{where}: its arrays are a {type(arrays).__name__} of {[type(a).__name__ for a in arrays]}")
    s = spec(plan, producer, seq)
    _expect(s, "nested", sum(a.nbytes for a in arrays), producer, seq)
    got = tuple((a.dtype, a.shape) for a in arrays)
    if got != s.arrays:
        raise Corrupt(f"{where}: arrays {got}, not {s.arrays}")
    if type(obj["more"]) is not tuple:
        raise Corrupt(f"{where}: its plain values are a {type(obj['more']).__name__}")
    zero_d, extra, values = obj["more"]
    for a in (*arrays, zero_d):
        # numpy pickles datetime arrays in-band (no buffer protocol): a borrow()
        # gets them as private copies, like get()
        _writable(a, borrowed and a.dtype.kind not in "mM", f"{where}: an array of {a.dtype}")
    label, expected = _plain(producer, seq)
    if obj["label"] != label or (extra, values) != expected or zero_d.shape != () or int(zero_d) != seq:
        raise Corrupt(f"{where}: plain values {obj['label']!r} {obj['more']!r}")
    if _crc(arrays) != obj["crc"]:
        raise Corrupt(f"{where}: the arrays' checksum mismatches (torn or overwritten record)")
    return producer, seq, s.size


def _expect(s: Spec, kind: str, size: int, producer: int, seq: int) -> None:
    if (s.kind, s.size) != (kind, size):
        raise Corrupt(f"producer {producer} seq {seq}: a {kind} of {size} bytes, sent as a {s.kind} of {s.size}")


def _writable(a: np.ndarray[Any, Any], borrowed: bool, what: str) -> None:
    if a.flags.writeable == borrowed:
        state = "writable" if borrowed else "read-only"
        raise Corrupt(f"{what} came out {state} from {'borrow()' if borrowed else 'get()'}")


def _id_of_empty(shape: tuple[int, ...]) -> tuple[int, int]:
    """(producer, seq) of a zero-size array message: its shape is (producer, seq + 1) around a 0."""
    if len(shape) != 3 or shape.count(0) != 1:
        raise Corrupt(f"a zero-size array of shape {shape} names no message")
    producer, seq1 = (d for d in shape if d)
    return producer, seq1 - 1
