"""The ``shmring`` command: ls, stat, rm, gc, bench.

``ls`` and ``gc`` look at every entry of /dev/shm and consider only those
whose header is a valid shmring header; nothing else is touched.
"""

from __future__ import annotations

import argparse
import datetime
import os
import struct
import sys
from typing import Any

import posix_ipc

from . import _layout as L
from . import _semaphore
from ._endpoints import EndpointTable, is_alive
from ._region import Region
from .errors import LayoutError

SHM_DIR = "/dev/shm"


def inspect(name: str, backend: str = "shm") -> dict[str, Any]:
    """Header, indices and endpoints of one region, without registering."""
    region = Region.attach(name, backend)
    try:
        m = region.mapping
        assert m is not None
        (kind,) = struct.unpack_from("<I", m, L.KIND_OFF)
        geo = L.read_header(m, region.size, kind if kind in L.KIND_NAMES else L.KIND_RING)
        info = L.header_info(m)
        head, tail = (struct.unpack_from("<Q", m, off)[0] for off in (L.HEAD_OFF, L.TAIL_OFF))
        waiters = [w & 0xFFFF for w in struct.unpack_from("<II", m, L.CONSUMER_WAITERS_OFF)]  # count bits
        endpoints = EndpointTable(m).entries()
        queue = geo.kind == L.KIND_QUEUE
        count = 0
        if queue:  # capacity in bytes; used = messages (a walk over the records), shape and dtype do not apply
            count = _queue_messages(region, geo)
        return {
            "name": name,
            "kind": L.KIND_NAMES.get(geo.kind, str(geo.kind)),
            "capacity": geo.capacity * geo.slot_size if queue else geo.capacity,
            "maxsize": info["maxsize"] if queue else None,
            "sync": "semaphore" if geo.sync == L.SYNC_SEMAPHORE else "lockfree",
            "topology": f"{'M' if geo.multi_producer else 'S'}P{'M' if geo.multi_consumer else 'S'}C",
            "sem_id": info["sem_id"] if geo.sync == L.SYNC_SEMAPHORE else 0,
            "shape": "-" if queue else geo.shape,
            "dtype": "bytes" if queue else str(geo.dtype),
            "bytes": region.size,
            "head": head,
            "tail": tail,
            "qsize": count if queue else head - tail,
            "consumer_waiters": waiters[0],
            "producer_waiters": waiters[1],
            "created": datetime.datetime.fromtimestamp(info["created_ns"] / 1e9).isoformat(timespec="seconds"),
            "creator_pid": info["creator_pid"],
            "creator_alive": is_alive(info["creator_pid"], info["creator_start"]),
            "endpoints": endpoints,
        }
    finally:
        region.close()


def _queue_messages(region: Region, geo: L.Geometry) -> int:
    """A Queue's messages, counted as qsize() does, through a core object
    bound to the mapping (no endpoint registered)."""
    from ._core import SpscRing

    assert region.mapping is not None
    core = SpscRing()
    core._bind(region.mapping, geo.capacity, geo.slot_size, geo.data_offset, geo.dtype, geo.shape,
               L.RING_CORE_OFFSETS, geo.seq_offset)  # fmt: skip
    try:
        core._q_bind(L.QUEUE_ADMITTED_OFF, L.QUEUE_ROOM_OFF, geo.record_offset, 0, False)
        return core._q_count()[0]
    finally:
        core._release()


def shmring_segments() -> list[dict[str, Any]]:
    """Every /dev/shm entry that holds a valid shmring header."""
    out = []
    for entry in sorted(os.listdir(SHM_DIR)):
        path = os.path.join(SHM_DIR, entry)
        if entry.startswith("sem.") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                if f.read(8) != L.MAGIC:
                    continue
            out.append(inspect(entry))
        except (OSError, LayoutError, ValueError):
            continue
    return out


def _abandoned(seg: dict[str, Any]) -> bool:
    """No live process holds, sends, produces into or consumes from it (the
    endpoint table names every one; the creator's own handle included)."""
    return not any(e.alive for e in seg["endpoints"])


def cmd_ls(args: argparse.Namespace) -> int:
    segs = shmring_segments()
    if not segs:
        print("no shmring segments in /dev/shm")
        return 0
    head = f"{'name':<40} {'kind':<5} {'capacity':>9} {'shape':<12} {'dtype':<8} {'used':>9} {'open':>4} {'P/C':>5}"
    print(f"{head}  created")
    for s in segs:
        live = [e.role for e in s["endpoints"] if e.alive]
        handles = live.count("holder") + live.count("pending")  # open, or pickled and in flight
        flag = "  (abandoned)" if _abandoned(s) else ""
        roles = f"{live.count('producer'):>2}/{live.count('consumer'):<2}"
        print(
            f"{s['name']:<40} {s['kind']:<5} {s['capacity']:>9} {s['shape']!s:<12} {s['dtype']:<8} "
            f"{s['qsize']:>9} {handles:>4} {roles}  {s['created']}{flag}"
        )
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    s = inspect(args.name, args.backend)
    keys = ["name", "kind", "sync", "topology", "capacity", "shape", "dtype", "bytes", "head", "tail", "qsize"]
    if s["maxsize"] is not None:  # a Queue: capacity in bytes, head/tail in 64-byte slots
        keys.insert(5, "maxsize")
    for key in keys:
        print(f"{key:>17}: {s[key]}")
    print(f"{'waiters':>17}: {s['consumer_waiters']} consumer, {s['producer_waiters']} producer")
    print(f"{'created':>17}: {s['created']} by pid {s['creator_pid']} ({'alive' if s['creator_alive'] else 'gone'})")
    print(f"{'endpoints':>17}: {len(s['endpoints'])}")
    for e in s["endpoints"]:
        print(f"{'':>19}slot {e.slot:>2}  {e.role:<8} pid {e.pid:<8} {e.state:<8} {'alive' if e.alive else 'dead'}")
    return 0


def _unlink_semaphores_of(name: str, backend: str) -> None:
    """A semaphore ring's semaphores, named in its header, go with it."""
    try:
        region = Region.attach(name, backend)
    except Exception:  # noqa: BLE001 - not a readable shmring region: it has none
        return
    try:
        if region.mapping is not None:
            _semaphore.unlink_for_header(region.mapping)
    finally:
        region.close()


def cmd_rm(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        _unlink_semaphores_of(name, args.backend)
        try:
            if args.backend == "file":
                os.unlink(name)
            else:
                posix_ipc.unlink_shared_memory("/" + name)
        except (FileNotFoundError, posix_ipc.ExistentialError):
            print(f"shmring rm: {name}: no such segment", file=sys.stderr)
            status = 1
    return status


def cmd_gc(args: argparse.Namespace) -> int:
    removed = 0
    for s in shmring_segments():
        if _abandoned(s):
            print(f"{'would remove' if args.dry_run else 'removing'} {s['name']}")
            if not args.dry_run:
                if s["sem_id"]:
                    _semaphore.unlink(s["sem_id"])
                try:
                    posix_ipc.unlink_shared_memory("/" + s["name"])
                except posix_ipc.ExistentialError:
                    pass  # someone else removed it first
            removed += 1
    print(f"{removed} abandoned segment(s)")
    orphans = _semaphore.orphans(SHM_DIR)
    for name in orphans:
        print(f"{'would remove' if args.dry_run else 'removing'} semaphore {name} (no process has it open)")
        if not args.dry_run:
            try:
                posix_ipc.unlink_semaphore(name)
            except posix_ipc.ExistentialError:
                pass
    if orphans:
        print(f"{len(orphans)} orphaned semaphore(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shmring", description="Inspect and manage shmring shared-memory segments.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list shmring segments in /dev/shm").set_defaults(func=cmd_ls)
    p = sub.add_parser("stat", help="show one segment's header, indices and endpoints")
    p.add_argument("name")
    p.add_argument("--backend", choices=("shm", "file"), default="shm")
    p.set_defaults(func=cmd_stat)
    p = sub.add_parser("rm", help="unlink segments by name")
    p.add_argument("names", nargs="+")
    p.add_argument("--backend", choices=("shm", "file"), default="shm")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("gc", help="unlink segments whose creator and every endpoint are dead")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_gc)
    sub.add_parser("bench", help="measure Ring against multiprocessing and pipes (see: shmring bench --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from . import bench

        result: int = bench.main(argv[1:])
        return result
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (FileNotFoundError, LayoutError, PermissionError) as exc:
        print(f"shmring {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
