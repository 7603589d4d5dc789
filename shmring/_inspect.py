"""Reading shmring regions for the ``shmring`` command, as plain data.

:func:`probe` says what a file is -- a region, a half-created region, a
region this version cannot read, or no shmring region at all -- from one
snapshot of its first page; :func:`describe` turns a probe into a dict of
plain values (what ``shmring ls/stat --json`` print); :func:`survey` probes
every candidate of /dev/shm and of the given directories.  Nothing here
writes to a region, registers an endpoint or waits for a creator: the
command looks without taking part.  Removing is in :func:`unlink_exact` and
:func:`collect_abandoned`.

Names: a name with a ``/`` is the path of a file region (``backend="file"``),
a bare name a POSIX shm segment (``/dev/shm/<name>``), as ``Ring(name=...)``
takes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import math
import mmap
import os
import stat
import struct
import time
from collections.abc import Iterator
from typing import Any

import posix_ipc

from . import _layout as L
from . import _naming, _semaphore, _stats
from ._endpoints import ROLE_NAMES, STATE_NAMES, Endpoint, EndpointTable, is_alive, unpack_word, word_alive
from ._region import Region, check_name
from ._stats import Statistics
from .errors import LayoutError, ShmringError

SHM_DIR = "/dev/shm"
# How old a zeroed segment must be before it may be a creator's leftover (the
# library's own grace period; the environment variable lets tests shorten it).
HALF_CREATED_GRACE_S = float(os.environ.get("SHMRING_HALF_CREATED_GRACE_S", _naming.HALF_CREATED_GRACE_S))

# What a file is (Probe.status).
REGION = "region"  # a published header this version reads
HALF_CREATED = "half-created"  # header never published: its creator died making it, or is making it now
UNREADABLE = "unreadable"  # the shmring magic, but another format version or a corrupt header
FOREIGN = "foreign"  # not a shmring region: never touched without --force

# Verdicts on a half-created region (Probe.verdict).
CREATOR_DEAD = "creator dead"  # its endpoint table (or its header body) names a creator that is dead
BEING_CREATED = "being created"  # a live process is in its table: it is being made now
STALE = "stale"  # no header, no endpoint, older than the grace period, mapped by no process

_WAITER_COUNT = 0xFFFF  # low bits of a ring's waiter word (the high bits are an epoch)
RATE_KEYS = ("messages_in", "messages_out", "bytes_in", "bytes_out", "writes")


@dataclasses.dataclass(frozen=True)
class Target:
    """A region named on the command line, or found by a scan."""

    name: str
    backend: str  # "shm" or "file"

    @property
    def path(self) -> str:
        return os.path.join(SHM_DIR, self.name) if self.backend == "shm" else self.name


def resolve(name: str, backend: str | None = None) -> Target:
    """The region ``name`` means: with a ``/`` a file region's path, else a
    POSIX shm name (``backend`` forces one; ValueError for a bad name)."""
    if backend is None:
        backend = "file" if "/" in name else "shm"
    if backend not in ("shm", "file"):
        raise ValueError(f"backend must be shm or file, not {backend!r}")
    check_name(name, backend)
    return Target(name, backend)


@dataclasses.dataclass
class Probe:
    """One look at a file: what it is, and the snapshot of its first page."""

    target: Target
    status: str
    detail: str
    size: int
    changed: float  # st_ctime: a half-created region's age
    ident: tuple[int, int]  # (st_dev, st_ino): removal only while the name still names this file
    page: bytearray  # the first page (writable: the core's loads ask for a writable buffer)
    geo: L.Geometry | None = None
    entries: list[Endpoint] = dataclasses.field(default_factory=list)
    body_ok: bool = False  # half-created: bytes [8, 512) are a whole header once the magic is put in front
    verdict: str = ""  # half-created: CREATOR_DEAD, BEING_CREATED or STALE

    @property
    def live_pids(self) -> list[int]:
        return sorted({e.pid for e in self.entries if e.alive})

    @property
    def abandoned(self) -> bool:
        """A published region no live process holds, sends, produces into or
        consumes from.  A file region with no entry at all was closed
        properly and stays (files persist by design): not abandoned."""
        if self.status != REGION or any(e.alive for e in self.entries):
            return False
        return self.target.backend == "shm" or bool(self.entries)

    def sem_id(self) -> int:
        """The semaphore id its header names (0: none, or not known)."""
        if self.status == REGION:
            return _semaphore.id_in_header(self.page)
        if self.body_ok:
            return _semaphore.id_in_header(_with_magic(self.page))
        return 0


def _with_magic(page: bytearray) -> bytearray:
    whole = bytearray(page)
    whole[: len(L.MAGIC)] = L.MAGIC
    return whole


class MappedInodes:
    """Inodes of /dev/shm that live processes map, read from /proc once and
    only if asked (a stale-looking segment someone maps is in use)."""

    def __init__(self) -> None:
        self._inodes: set[int] | None = None

    def __contains__(self, inode: object) -> bool:
        if self._inodes is None:
            self._inodes = _semaphore.mapped_inodes(SHM_DIR)
        return inode in self._inodes


def probe(target: Target, mapped: MappedInodes | None = None, now: float | None = None) -> Probe:
    """What ``target`` is.  FileNotFoundError, PermissionError and
    IsADirectoryError go to the caller; everything else is a status.

    Half-created (a shmring region whose header was never published): at
    least a header page, first 8 bytes 0, bytes [8, 1024) either 0 or a
    whole header body, and either endpoint entries that all decode as ours
    (the creator's holder entry goes in before the header), a header body,
    or -- in /dev/shm only -- a first page of zeros that is older than
    ``HALF_CREATED_GRACE_S`` and mapped by no process (STALE: a
    creator killed before it registered leaves exactly that, but so might
    another program, hence ``--force``).  Anything else is FOREIGN.
    """
    mapped = mapped if mapped is not None else MappedInodes()
    try:
        fd = os.open(target.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        where = f"no such segment in {SHM_DIR}" if target.backend == "shm" else "no such file"
        raise FileNotFoundError(errno.ENOENT, where, target.name) from None
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, target.name) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", target.name)
        page = bytearray(os.pread(fd, L.PAGE, 0)) if stat.S_ISREG(st.st_mode) else bytearray()
    finally:
        os.close(fd)
    p = Probe(target, FOREIGN, "", st.st_size, st.st_ctime, (st.st_dev, st.st_ino), page)
    if not stat.S_ISREG(st.st_mode):
        p.detail = "not a regular file"
        return p
    if st.st_size < L.HEADER_SIZE or len(page) < L.HEADER_SIZE:
        p.detail = f"{st.st_size} bytes, too few for a shmring header"
        return p
    if bytes(page[: len(L.MAGIC)]) == L.MAGIC:
        try:
            kind = L.read_kind(page)
            geo = L.read_header(page, st.st_size, kind)  # magic, version, checksum, geometry
            if kind not in L.KIND_NAMES:
                raise LayoutError(f"unknown structure kind {kind}")
            p.geo = geo
        except LayoutError as exc:
            p.status, p.detail = UNREADABLE, str(exc)
            return p
        p.status, p.entries = REGION, EndpointTable(page).entries()
        return p
    if bytes(page[: len(L.MAGIC)]) != bytes(len(L.MAGIC)):
        p.detail = "no shmring header"
        return p
    return _judge_unpublished(p, mapped, time.time() if now is None else now)


def _judge_unpublished(p: Probe, mapped: MappedInodes, now: float) -> Probe:
    """Half-created or foreign: see :func:`probe`."""
    page = p.page
    body = _with_magic(page)
    p.body_ok = struct.unpack_from("<Q", page, L.CHECKSUM_OFF)[0] == L.checksum(body)
    moving_zero = not any(page[L.IMMUTABLE_END : L.ENDPOINTS_OFF])
    if not (moving_zero and (p.body_ok or not any(page[8 : L.IMMUTABLE_END]))):
        p.detail = "no shmring header"
        return p
    words = struct.unpack_from(f"<{L.MAX_ENDPOINTS * 4}Q", page, L.ENDPOINTS_OFF)[::4]
    for word in words:
        pid, role, state, start = unpack_word(word)
        if word and not (pid > 0 and role in ROLE_NAMES and state in STATE_NAMES and start):
            p.detail = "no shmring header"
            return p
    p.entries = EndpointTable(page).entries()
    old = now - p.changed >= HALF_CREATED_GRACE_S
    creator_alive = False
    if p.body_ok:
        info = L.header_info(body)
        creator_alive = _alive(info["creator_pid"], info["creator_start"])
    if any(e.alive for e in p.entries) or creator_alive:
        p.status, p.verdict = HALF_CREATED, BEING_CREATED
        p.detail = f"being created by pid {', '.join(map(str, p.live_pids)) or '?'}"
    elif p.entries or p.body_ok:
        p.status, p.verdict = HALF_CREATED, CREATOR_DEAD
        p.detail = "its creator died before publishing the header"
    elif p.target.backend == "shm" and old and p.size % L.PAGE == 0 and not any(page) and p.ident[1] not in mapped:
        p.status, p.verdict = HALF_CREATED, STALE
        p.detail = "no header, no endpoint, mapped by no process"
    else:
        p.detail = "no shmring header"
    return p


def _alive(pid: int, start: int) -> bool:
    return pid > 0 and is_alive(pid, start)


# -- scanning -------------------------------------------------------------------------
def survey(dirs: list[str], mapped: MappedInodes | None = None) -> list[Probe]:
    """Every shmring region (published, half-created or unreadable) in
    /dev/shm and, as file regions, in ``dirs`` (non-recursive).  Files that
    vanish or cannot be read while we look are skipped."""
    mapped = mapped if mapped is not None else MappedInodes()
    now = time.time()
    targets = [Target(e, "shm") for e in _regular_files(SHM_DIR) if not e.startswith("sem.")]
    for d in dirs:
        targets += [Target(os.path.join(d, e), "file") for e in _regular_files(d)]
    out = []
    for target in targets:
        try:
            p = probe(target, mapped, now)
        except OSError:
            continue
        if p.status != FOREIGN:
            out.append(p)
    return out


def check_dir(d: str) -> None:
    """A --dir argument must be a directory we can list."""
    if not os.path.exists(d):
        raise FileNotFoundError(errno.ENOENT, "no such directory", d)
    if not os.path.isdir(d):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", d)
    os.listdir(d)  # PermissionError now rather than an empty listing


def _regular_files(d: str) -> list[str]:
    try:
        with os.scandir(d) as it:
            return sorted(e.name for e in it if e.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return []


# -- describing -----------------------------------------------------------------------
def census(entries: list[Endpoint]) -> dict[str, int]:
    """Live producers and consumers (endpoint entries), observers (live
    processes with a holder entry and no producer or consumer entry),
    pending handles in flight, and dead processes still in the table."""
    alive = [e for e in entries if e.alive]
    users = {(e.pid, e.start_time) for e in alive if e.role in ("producer", "consumer")}
    holders = {(e.pid, e.start_time) for e in alive if e.role == "holder"}
    return {
        "producers": sum(e.role == "producer" for e in alive),
        "consumers": sum(e.role == "consumer" for e in alive),
        "observers": len(holders - users),
        "pending": sum(e.role == "pending" for e in alive),
        "dead": len({(e.pid, e.start_time) for e in entries if not e.alive}),
    }


def statistics_of(p: Probe) -> Statistics | None:
    """The region's live counters (:class:`shmring.Statistics`: messages and
    bytes in and out, holes, abandoned slots, dead endpoints reaped, locks
    taken over, waiters), read from a mapping of the whole region as the
    handles' ``statistics()`` reads them, or None when the region cannot be
    mapped writable (the core binds only writable buffers) or the name now
    names another file."""
    geo = p.geo
    assert geo is not None
    with _mapped(p) as mapping:
        if mapping is None:
            return None
        fill = _count_records(mapping, geo) if geo.kind == L.KIND_QUEUE else 0
        if fill is None:
            return None
        try:
            return _stats.collect(mapping, geo, fill)
        except (LayoutError, ValueError):
            return None  # rewritten under us into something the core refuses


def plain_statistics(stats: Any) -> dict[str, Any]:
    """A statistics object as a plain dict (a dataclass, a mapping, or an
    object with ``_asdict``)."""
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    if hasattr(stats, "_asdict"):
        return dict(stats._asdict())
    return dict(stats)


def describe(p: Probe, detail: bool = True) -> dict[str, Any]:
    """Everything ``p`` says, in machine units (bytes, seconds, ints): the
    summary ``shmring ls`` shows, and with ``detail`` the whole header, the
    moving words and the semaphores (``shmring stat``)."""
    now = time.time()
    info: dict[str, Any] = {
        "name": p.target.name,
        "backend": p.target.backend,
        "path": p.target.path,
        "status": p.status,
        "state": _state(p),
        "detail": p.detail or None,
        "abandoned": p.abandoned,
        "half_created": p.status == HALF_CREATED,
        "kind": None,
        "sync": None,
        "topology": None,
        "capacity": None,
        "capacity_unit": None,
        "shape": None,
        "dtype": None,
        "fill": None,
        "fill_ratio": None,
        "bytes": p.size,
        "created": None,
        "age_s": round(max(0.0, now - p.changed), 3),
        "creator_pid": None,
        "creator_alive": None,
        **census(p.entries),
        "endpoints": [_endpoint(e) for e in p.entries],
    }
    if p.status == HALF_CREATED and p.entries:
        first = p.entries[0]  # the creator's holder entry goes in first
        info["creator_pid"], info["creator_alive"] = first.pid, first.alive
    if p.status == UNREADABLE:
        kind = L.read_kind(p.page)
        info["kind"] = L.KIND_NAMES.get(kind)
    if p.status == HALF_CREATED and p.body_ok:
        _header_fields(info, _with_magic(p.page), now)
    if p.status != REGION or p.geo is None:
        return info
    geo, page = p.geo, p.page
    _header_fields(info, page, now)
    queue, array = geo.kind == L.KIND_QUEUE, geo.kind == L.KIND_ARRAY
    head, tail = (_u64(page, off) for off in (L.HEAD_OFF, L.TAIL_OFF))
    stats = statistics_of(p)
    if stats is not None:
        info["statistics"] = plain_statistics(stats)
    if array:
        info["capacity"], info["capacity_unit"] = math.prod(geo.shape), "elements"
    elif queue:
        info["capacity"], info["capacity_unit"] = geo.capacity * geo.slot_size, "bytes"
        info["fill"] = stats.fill if stats is not None else None  # counted by statistics_of's walk only
        info["fill_ratio"] = round(min(max(head - tail, 0), geo.capacity) / geo.capacity, 4)
    else:
        # Items, holes not included, when the statistics could be read; else
        # the positions between the page's indices.
        span = min(max(head - tail, 0), geo.capacity)
        info["capacity"], info["capacity_unit"] = geo.capacity, "items"
        info["fill"] = stats.fill if stats is not None else span
        info["fill_ratio"] = round(info["fill"] / geo.capacity, 4)
    if detail:
        info["header"] = _header(p)
        info["words"] = _words(p)
        info["waiters"] = _waiters(p, info)
        info["semaphores"] = semaphore_values(p)
    return info


def _state(p: Probe) -> str:
    if p.status == HALF_CREATED:
        return f"half-created ({p.verdict})"
    if p.status != REGION:
        return p.status
    if p.abandoned:
        return "abandoned"
    return "in use" if p.entries else "closed"


def _endpoint(e: Endpoint) -> dict[str, Any]:
    return {"slot": e.slot, "role": e.role, "pid": e.pid, "state": e.state, "alive": e.alive}


def _u64(buf: Any, off: int) -> int:
    return int(struct.unpack_from("<Q", buf, off)[0])


def _u32(buf: Any, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


def _header_fields(info: dict[str, Any], page: Any, now: float) -> None:
    """The summary fields a (possibly unpublished but whole) header gives."""
    geo_kind = L.read_kind(page)
    flags = _u32(page, L.FLAGS_OFF)
    h = L.header_info(page)
    info["kind"] = L.KIND_NAMES.get(geo_kind, str(geo_kind))
    info["sync"] = "semaphore" if flags >> 8 == L.SYNC_SEMAPHORE else "lockfree"
    if geo_kind != L.KIND_ARRAY:
        mp, mc = flags & L.FLAG_MULTI_PRODUCER, flags & L.FLAG_MULTI_CONSUMER
        info["topology"] = f"{'M' if mp else 'S'}P{'M' if mc else 'S'}C"
    if geo_kind != L.KIND_QUEUE:
        ndim = min(_u32(page, L.NDIM_OFF), L.MAX_NDIM)
        info["shape"] = list(struct.unpack_from(f"<{ndim}Q", page, L.SHAPE_OFF))
        info["dtype"] = _dtype_text(page)
    created = h["created_ns"] / 1e9
    info["created"] = datetime.datetime.fromtimestamp(created).isoformat(timespec="seconds")
    info["age_s"] = round(max(0.0, now - created), 3)
    info["creator_pid"] = h["creator_pid"]
    info["creator_alive"] = _alive(h["creator_pid"], h["creator_start"])


def _dtype_text(page: Any) -> str:
    n = min(_u32(page, L.DESCR_LEN_OFF), L.DESCR_BYTES)
    raw = bytes(page[L.DESCR_OFF : L.DESCR_OFF + n]).decode("ascii", "replace")
    try:
        import ast

        import numpy as np

        return str(np.lib.format.descr_to_dtype(ast.literal_eval(raw)))
    except Exception:  # noqa: BLE001 - shown as stored
        return raw


def _header(p: Probe) -> dict[str, Any]:
    """Every immutable field, as stored."""
    assert p.geo is not None
    page, geo = p.page, p.geo
    flags = _u32(page, L.FLAGS_OFF)
    h = L.header_info(page)
    out: dict[str, Any] = {
        "magic": bytes(page[: len(L.MAGIC)]).decode("ascii", "replace"),
        "version": _u32(page, L.VERSION_OFF),
        "kind_code": geo.kind,
        "header_size": _u32(page, L.HEADER_SIZE_OFF),
        "flags": flags,
        "multi_producer": geo.multi_producer,
        "multi_consumer": geo.multi_consumer,
        "sync_code": geo.sync,
        "total_size": _u64(page, L.TOTAL_SIZE_OFF),
        "slots": geo.capacity,
        "slot_size": geo.slot_size,
        "data_offset": geo.data_offset,
        "seq_offset": geo.seq_offset,
        "shape": list(geo.shape),
        "dtype": str(geo.dtype),
        "descr": bytes(page[L.DESCR_OFF : L.DESCR_OFF + _u32(page, L.DESCR_LEN_OFF)]).decode("ascii", "replace"),
        "created_ns": h["created_ns"],
        "creator_pid": h["creator_pid"],
        "creator_start": h["creator_start"],
        "sem_id": h["sem_id"],
        "checksum": _u64(page, L.CHECKSUM_OFF),
    }
    if geo.kind == L.KIND_QUEUE:
        out["maxsize"] = h["maxsize"]
        out["record_offset"] = geo.record_offset
    return out


def _identity(word: int) -> dict[str, Any] | None:
    """An identity word (a lock holder, the remover): its pid and liveness."""
    if word == 0:
        return None
    pid, _, _, _ = unpack_word(word)
    return {"pid": pid, "alive": word_alive(word)}


def _owner(page: Any, token: int, entries: list[Endpoint]) -> dict[str, Any] | None:
    """A single-producer (-consumer) ring's owner token: whose entry holds it."""
    if token == 0:
        return None
    for e in entries:
        if _u64(page, L.ENDPOINTS_OFF + e.slot * L.ENDPOINT_SIZE + L.ENDPOINT_TOKEN) == token:
            return {"token": token, "slot": e.slot, "pid": e.pid, "alive": e.alive}
    return {"token": token, "slot": None, "pid": None, "alive": False}


def _words(p: Probe) -> dict[str, Any]:
    """The moving words, raw (waiter words as stored: see ``waiters``)."""
    page = p.page
    common: dict[str, Any] = {"remover": _identity(_u64(page, L.REMOVER_OFF))}
    assert p.geo is not None
    if p.geo.kind == L.KIND_ARRAY:
        seq = _u64(page, L.ARRAY_SEQ_OFF)
        return {
            "lock": _identity(_u64(page, L.ARRAY_LOCK_OFF)),
            "lock_wake": _u32(page, L.ARRAY_LOCK_WAKE_OFF),
            "lock_waiters_word": _u32(page, L.ARRAY_LOCK_WAITERS_OFF),
            "seq": seq,
            "writes": seq // 2,
            "writing": bool(seq & 1),
            **common,
        }
    words: dict[str, Any] = {
        "head": _u64(page, L.HEAD_OFF),
        "tail": _u64(page, L.TAIL_OFF),
        "cached_head": _u64(page, L.CACHED_HEAD_OFF),
        "cached_tail": _u64(page, L.CACHED_TAIL_OFF),
        "consumer_waiters_word": _u32(page, L.CONSUMER_WAITERS_OFF),
        "producer_waiters_word": _u32(page, L.PRODUCER_WAITERS_OFF),
        "producers_ever": _u32(page, L.PRODUCERS_EVER_OFF),
        "producers_live_hint": _u32(page, L.PRODUCERS_LIVE_OFF),
        "consumers_ever": _u32(page, L.CONSUMERS_EVER_OFF),
        "consumers_live_hint": _u32(page, L.CONSUMERS_LIVE_OFF),
        "producer_owner": _owner(page, _u64(page, L.PRODUCER_OWNER_OFF), p.entries),
        "consumer_owner": _owner(page, _u64(page, L.CONSUMER_OWNER_OFF), p.entries),
        "producer_lock": _identity(_u64(page, L.PRODUCER_LOCK_OFF)),
        "consumer_lock": _identity(_u64(page, L.CONSUMER_LOCK_OFF)),
        **common,
    }
    if p.geo.kind == L.KIND_QUEUE:
        words["admitted"] = L.admitted_count(_u64(page, L.QUEUE_ADMITTED_OFF))
        words["room"] = _u64(page, L.QUEUE_ROOM_OFF)
    return words


def _waiters(p: Probe, info: dict[str, Any]) -> dict[str, int]:
    """Sleepers now, never more than the live endpoints that could sleep.

    A waiter word counts sleepers in its low 16 bits (``epoch << 16 |
    count``; an Array's lock word is a plain count), and a sleeper killed
    by SIGKILL is never subtracted (the next sole owner of the role starts a
    new epoch): so a dead process must not be shown waiting, and the count
    is clamped to the live endpoints of its role."""
    page = p.page
    assert p.geo is not None
    if p.geo.kind == L.KIND_ARRAY:
        holders = sum(e.alive and e.role == "holder" for e in p.entries)
        return {"lock": min(_u32(page, L.ARRAY_LOCK_WAITERS_OFF) & _WAITER_COUNT, holders)}
    return {
        "consumer": min(_u32(page, L.CONSUMER_WAITERS_OFF) & _WAITER_COUNT, info["consumers"]),
        "producer": min(_u32(page, L.PRODUCER_WAITERS_OFF) & _WAITER_COUNT, info["producers"]),
    }


def semaphore_parts(kind: int) -> tuple[str, ...]:
    """The semaphores a region of ``kind`` uses (see ring.py, queue.py, array.py)."""
    if kind == L.KIND_ARRAY:
        return ("lock",)
    if kind == L.KIND_QUEUE:
        return ("free", "full")
    return ("free", "full", "plock", "clock")


def semaphore_values(p: Probe) -> list[dict[str, Any]]:
    """Each semaphore of a semaphore-flavour region and its value, opened
    without O_CREAT (a missing one is reported, never made)."""
    sem_id = p.sem_id()
    if not sem_id or p.geo is None:
        return []
    out: list[dict[str, Any]] = []
    for name in _semaphore.names(sem_id, semaphore_parts(p.geo.kind)):
        try:
            sem = posix_ipc.Semaphore(name)
        except posix_ipc.ExistentialError:
            out.append({"name": name, "value": None, "missing": True})
            continue
        try:
            out.append({"name": name, "value": int(sem.value), "missing": False})
        finally:
            sem.close()
    return out


def existing_semaphores(sem_id: int) -> list[str]:
    """The semaphores of ``sem_id`` that exist now (all kinds' parts)."""
    if not sem_id:
        return []
    names = _semaphore.names(sem_id, _semaphore.ALL_PARTS)
    return [n for n in names if os.path.exists(os.path.join(SHM_DIR, "sem." + n[1:]))]


@contextlib.contextmanager
def _mapped(p: Probe) -> Iterator[mmap.mmap | None]:
    """A shared, writable mapping of the whole region ``p`` probed (the
    core's loads bind only writable buffers; nothing is written through it),
    or None when it cannot be opened read-write, is shorter than its header
    says, or its name names another file now."""
    geo = p.geo
    assert geo is not None
    try:
        fd = os.open(p.target.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        st = os.fstat(fd)
        mapping = None
        if (st.st_dev, st.st_ino) == p.ident and st.st_size >= geo.total_size:
            mapping = mmap.mmap(fd, geo.total_size, flags=mmap.MAP_SHARED)
    except OSError:
        mapping = None  # out of address space or memory: no statistics, the rest still shows
    finally:
        os.close(fd)
    try:
        yield mapping
    finally:
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass  # a view the core took goes with the last reference


def _count_records(mapping: mmap.mmap, geo: L.Geometry) -> int | None:
    """The messages in the Queue mapped at ``mapping``: the core's walk of
    its record words (qsize()'s), through a core object bound for this call
    only.  None if the core refuses the header."""
    from ._core import SpscRing

    core = SpscRing()
    try:
        core._bind(mapping, geo.capacity, geo.slot_size, geo.data_offset, geo.dtype, geo.shape,
                   L.RING_CORE_OFFSETS, geo.seq_offset)  # fmt: skip
        try:
            core._q_bind(L.QUEUE_ADMITTED_OFF, L.QUEUE_ROOM_OFF, geo.record_offset, 0, False)
            return int(core._q_count()[0])
        finally:
            core._release()
    except (LayoutError, ValueError):
        return None


def counters(info: dict[str, Any]) -> dict[str, int]:
    """Free-running counters of a described region, for rates: the
    statistics' when they could be read; otherwise (a region we may not map
    read-write) a Ring's head and tail (items; a multi ring's holes count
    as items), a Queue's head and tail in 64-byte slots (bytes with their
    framing) and an Array's completed writes."""
    stats = info.get("statistics") or {}
    out = {k: int(stats[k]) for k in RATE_KEYS if isinstance(stats.get(k), int)}
    words = info.get("words") or {}
    if out or not words:
        return out
    slot = info["header"]["slot_size"]
    if info["kind"] == "Ring":
        head, tail = words["head"], words["tail"]
        return {"messages_in": head, "messages_out": tail, "bytes_in": head * slot, "bytes_out": tail * slot}
    if info["kind"] == "Queue":
        return {"bytes_in": words["head"] * slot, "bytes_out": words["tail"] * slot}
    return {"writes": int(words["writes"])}


# -- removing -------------------------------------------------------------------------
def unlink_exact(p: Probe) -> bool:
    """Remove ``p``'s name if it still names the file probed (not one made
    anew since), and the semaphores its header names; False if the name is
    gone or names another file now.  Errors (permission) are raised."""
    try:
        st = os.stat(p.target.path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if (st.st_dev, st.st_ino) != p.ident:
        return False
    try:
        os.unlink(p.target.path)  # shm_unlink is this unlink on Linux
    except FileNotFoundError:
        return False
    sem_id = p.sem_id()
    if sem_id:
        _semaphore.unlink(sem_id)
    return True


def collect_abandoned(p: Probe) -> str:
    """Remove an abandoned region without racing an attacher: claim the
    remover word, look at the table once more, then unlink (the protocol
    of ``_naming``: an attacher registers before it looks at the remover
    word, so one of the two sees the other).  Returns "" when removed, or
    why it was kept."""
    try:
        region = Region.attach(p.target.name, p.target.backend)
    except FileNotFoundError:
        return "removed meanwhile"
    try:
        if region.ident != p.ident or region.mapping is None:
            return "its name names another region now"
        table = EndpointTable(region.mapping)
        if not table.claim_removal():
            return "another process is removing it"
        users = table.users()
        if users:
            table.release_removal()
            return f"in use again by pid {', '.join(map(str, users))}"
        if not unlink_exact(p):
            table.release_removal()
            return "removed meanwhile"
        return ""
    finally:
        region.close()


def remove_half_created(p: Probe) -> str:
    """Remove a half-created region (and the semaphores its header body
    names); "" when removed, or why not."""
    return "" if unlink_exact(p) else "removed meanwhile"


def semaphore_id_of(name: str) -> int:
    """The id in a semaphore name ``/shmring-<16 hex>-<part>`` (0: not one)."""
    parts = name.lstrip("/").split("-")
    if len(parts) != 3 or parts[0] != "shmring":
        return 0
    try:
        return int(parts[1], 16)
    except ValueError:
        return 0


def remove_semaphore(name: str) -> bool:
    try:
        posix_ipc.unlink_semaphore(name)
        return True
    except posix_ipc.ExistentialError:
        return False


def require_region(p: Probe) -> None:
    """Refuse (ShmringError) what ``stat`` cannot show."""
    if p.status == FOREIGN:
        raise ShmringError(f"{p.target.name}: not a shmring region ({p.detail})")
    if p.status == UNREADABLE:
        raise ShmringError(f"{p.target.name}: not a shmring region this version can read ({p.detail})")
