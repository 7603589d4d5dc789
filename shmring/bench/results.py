"""What a run produces: one record per row of the report, gathered in a
``Report`` (which ``--json`` writes, and ``--from-json`` reads back), or a
``BenchError``.

A new kind of row is a new record here and a new ``Report`` field; the JSON
follows from ``dataclasses.asdict``, and reading it back from the fields'
type hints (``Report.from_json`` checks every value against them).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

# The version of the JSON's layout: bumped when a field changes meaning or
# goes away (adding a field does not bump it; readers ignore unknown fields).
SCHEMA = 1


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
    """Everything one run measured, and on what (``machine``: see machine.py)."""

    machine: dict[str, Any]
    copy_floor: list[CopyFloor] = dataclasses.field(default_factory=list)
    throughput: list[Throughput] = dataclasses.field(default_factory=list)
    many_to_many: list[ManyToMany] = dataclasses.field(default_factory=list)
    objects: list[ObjectsCell] = dataclasses.field(default_factory=list)
    pingpong: list[PingPong] = dataclasses.field(default_factory=list)
    array: list[ArrayOp] = dataclasses.field(default_factory=list)
    idle: IdleCpu | None = None

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` writes: ``schema``, then every field as is."""
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: object) -> Report:
        """The report a ``--json`` file holds (``json.load``ed), every value
        checked against the records' type hints: ValueError, one line naming
        the first bad field, if it is not a schema-1 report."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {_kind(data)}")
        if "schema" not in data:
            raise ValueError('no "schema" field')
        if data["schema"] != SCHEMA:
            raise ValueError(f"schema {data['schema']!r}; this shmring reads schema {SCHEMA}")
        return typing.cast(Report, _parse(data, cls, ""))


def read_json(path: str) -> Report:
    """The report in the ``--json`` file ``path``; OSError if it cannot be
    read, ValueError (one line) if it is not JSON or not a report."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return Report.from_json(data)


def _kind(value: object) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r:.40}"


def _parse(value: object, hint: Any, where: str) -> Any:
    """``value`` (from JSON) as ``hint`` says: a record from its fields, a
    list of them, a number, ...; ValueError naming ``where`` otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _parse(value, inner, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_kind(value)}")
        return [_parse(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        hints = typing.get_type_hints(hint)
        fields = {}
        for field in dataclasses.fields(hint):
            path = f"{where}.{field.name}" if where else field.name
            if field.name not in value:
                raise ValueError(f'{where or "the report"}: no "{field.name}" field')
            fields[field.name] = _parse(value[field.name], hints[field.name], path)
        return hint(**fields)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint in (float, int, str, bool):
        raise ValueError(f"{where}: expected {'a number' if hint is float else hint.__name__}, got {_kind(value)}")
    raise TypeError(f"{where}: no JSON reader for {hint!r}")  # a new kind of field: teach _parse
