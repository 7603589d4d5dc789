"""The ``shmring`` command: ls, stat, rm, gc (ipcs/ipcrm for shmring
regions) and bench.

The reading of regions is in ``_inspect`` (plain data); this module parses
arguments and prints.  Every error is one line on stderr, ``shmring <cmd>:
<what>``, with exit status 1 (2 for usage errors, from argparse; 130 for
Ctrl-C), never a traceback.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from typing import Any

import posix_ipc

from . import _inspect as I
from . import _semaphore
from .errors import ShmringError

SHM_DIR = I.SHM_DIR
NAME_HELP = (
    "A bare NAME is a POSIX shm segment (/dev/shm/NAME), as Ring(name=...) takes it;\n"
    "a name with a '/' is the PATH of a file region (backend=\"file\"): ./frames.ring."
)
IPCS_NOTE = (
    "Note: ipcs lists System V IPC only, not POSIX shared memory; POSIX segments\n"
    "are files in /dev/shm (ls -l /dev/shm)."
)


def inspect(name: str, backend: str | None = None) -> dict[str, Any]:
    """Everything ``shmring stat --json`` shows of one region (see
    ``_inspect.describe``), read without registering."""
    p = I.probe(I.resolve(name, backend))
    I.require_region(p)
    return I.describe(p)


# -- formatting ---------------------------------------------------------------------
def human_size(n: float) -> str:
    """Bytes as ls -h shows them: 512B, 4.0K, 4.1M, 1.2G (powers of 1024)."""
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """3s, 5m, 2h, 4d."""
    s = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart; the columns
    in ``right`` right-aligned (numbers).  The last column is not padded."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    out = []
    for row in [headers, *rows]:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _shape(shape: list[int] | None) -> str:
    return "-" if shape is None else str(tuple(shape))


def _people(info: dict[str, Any]) -> str:
    cell = f"{info['producers']}/{info['consumers']}/{info['observers']}"
    return cell + (f" (+{info['dead']} dead)" if info["dead"] else "")


def _creator(info: dict[str, Any]) -> str:
    if info["creator_pid"] is None:
        return "?"
    return f"{info['creator_pid']}{'' if info['creator_alive'] else '*'}"


def _capacity(info: dict[str, Any]) -> str:
    if info["capacity"] is None:
        return "-"
    return human_size(info["capacity"]) if info["capacity_unit"] == "bytes" else str(info["capacity"])


def _fill(info: dict[str, Any]) -> str:
    if info["fill_ratio"] is None:
        return "-"
    count = "?" if info["fill"] is None else str(info["fill"])
    return f"{count} ({info['fill_ratio']:.0%})"


def _print_json(obj: Any, compact: bool = False) -> None:
    print(json.dumps(obj, indent=None if compact else 2, default=str))


# -- ls -----------------------------------------------------------------------------
LS_STAT_COLUMNS = (("messages_in", "IN"), ("messages_out", "OUT"))  # shown when the statistics hold them
# Rare events the statistics count, as ``stat`` explains them.
STAT_EVENTS = (
    ("holes", "positions published without an item"),
    ("abandoned", "slots of dead claimers repaired"),
    ("reaped", "dead processes' endpoint entries freed"),
    ("takeovers", "locks taken from a dead holder"),
)


def cmd_ls(args: argparse.Namespace) -> int:
    for d in args.dir:
        I.check_dir(d)
    rows = [I.describe(p, detail=False) for p in I.survey(args.dir)]
    rows.sort(key=lambda r: (r["backend"] != "shm", r["name"]))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        where = " or ".join([SHM_DIR, *args.dir])
        print(f"no shmring regions in {where}")
        print(IPCS_NOTE.replace("\n", " "))
        return 0
    headers = ["NAME", "KIND", "SYNC", "TOPOLOGY", "CAPACITY", "DTYPE", "SHAPE", "FILL", "P/C/O", "CREATOR"]
    stat_cols = [(k, h) for k, h in LS_STAT_COLUMNS if any(k in (r.get("statistics") or {}) for r in rows)]
    headers += [h for _, h in stat_cols] + ["AGE", "SIZE", "STATE"]
    cells = []
    for r in rows:
        stats = r.get("statistics") or {}
        cells.append(
            [
                r["name"],
                r["kind"] or "-",
                r["sync"] or "-",
                r["topology"] or "-",
                _capacity(r),
                r["dtype"] or "-",
                _shape(r["shape"]),
                _fill(r),
                _people(r),
                _creator(r),
                *(str(stats.get(k, "-")) if r["kind"] != "Array" else "-" for k, _ in stat_cols),
                human_age(r["age_s"]),
                human_size(r["bytes"]),
                _ls_state(r),
            ]
        )
    right = {4, 7, 9, *range(10, 10 + len(stat_cols) + 2)}
    for line in table(headers, cells, right):
        print(line)
    if any(r["creator_pid"] is not None and not r["creator_alive"] for r in rows):
        print("* creator no longer running")
    return 0


def _ls_state(r: dict[str, Any]) -> str:
    if r["status"] == I.UNREADABLE:
        return f"unreadable: {r['detail']}"
    if r["status"] == I.HALF_CREATED and r["state"].endswith(f"({I.STALE})"):
        return "half-created? (stale: gc --force removes it)"
    return str(r["state"])


# -- stat ---------------------------------------------------------------------------
def stat_lines(info: dict[str, Any], rates: dict[str, float] | None = None, watching: bool = False) -> list[str]:
    """``shmring stat``'s text: the header, the moving words, the endpoints,
    the semaphores, the statistics (and, watching, the rates)."""
    lines: list[str] = []

    def row(key: str, value: Any) -> None:
        lines.append(f"{key:>16}: {value}")

    kind = info["kind"] or "region"
    lines.append(f"{kind} {info['name']}  ({info['path']})")
    row("state", info["state"] + (f": {info['detail']}" if info["detail"] else ""))
    row("size", f"{info['bytes']} B ({human_size(info['bytes'])})")
    if info["created"]:
        row("created", f"{info['created']} ({human_age(info['age_s'])} ago)")
    else:
        row("age", human_age(info["age_s"]))
    if info["creator_pid"] is not None:
        row("creator", f"pid {info['creator_pid']} ({'alive' if info['creator_alive'] else 'dead'})")
    header = info.get("header")
    if header:
        lines.append("header (immutable)")
        row("magic", f"{header['magic']!r}  version {header['version']}")
        row("kind", f"{kind} (code {header['kind_code']})")
        flags = header["flags"]
        row("flags", f"0x{flags:08x}  (sync {info['sync']}, code {header['sync_code']})")
        row("topology", info["topology"] or "- (an Array has no producers or consumers)")
        if info["kind"] == "Queue":
            row("capacity", f"{info['capacity']} B ({human_size(info['capacity'])}) = {header['slots']} slots")
            row("maxsize", f"{header['maxsize']} messages" if header["maxsize"] else "0 (no limit but its bytes)")
        else:
            row("capacity", f"{info['capacity']} {info['capacity_unit']}")
            row("shape", _shape(header["shape"]))
            row("dtype", f"{header['dtype']}  (descr {header['descr']})")
        row("slot size", f"{header['slot_size']} B")
        row("header size", f"{header['header_size']} B")
        if header["seq_offset"]:
            row("seq offset", header["seq_offset"])
        if "record_offset" in header:
            row("record offset", header["record_offset"])
        row("data offset", header["data_offset"])
        row("total size", f"{header['total_size']} B ({human_size(header['total_size'])})")
        row("sem id", f"{header['sem_id']:016x}" if header["sem_id"] else "- (lock-free flavour)")
        row("creator start", f"{header['creator_start']} ticks after boot")
        row("checksum", f"0x{header['checksum']:08x}")
    words = info.get("words")
    if words:
        lines.append("moving words")
        if info["kind"] == "Array":
            row("lock", _who(words["lock"], "free"))
            row("writes", f"{words['writes']}{' (a write is under way)' if words['writing'] else ''}")
            row("seq", words["seq"])
            row("lock waiters", f"{info['waiters']['lock']}  (word {words['lock_waiters_word']})")
        else:
            row("head", words["head"])
            row("tail", words["tail"])
            fill = "?" if info["fill"] is None else info["fill"]
            if info["kind"] == "Queue":
                row("fill", f"{fill} message(s), in {info['fill_ratio']:.0%} of its bytes")
            else:
                row("fill", f"{fill} of {info['capacity']} items ({info['fill_ratio']:.0%})")
            if info["kind"] == "Queue":
                row("admitted", words["admitted"])
            w = info["waiters"]
            row(
                "waiters",
                f"{w['consumer']} consumer, {w['producer']} producer  (raw words 0x{words['consumer_waiters_word']:08x}"
                f", 0x{words['producer_waiters_word']:08x}: epoch << 16 | count, killed sleepers included)",
            )
            row("owners", f"producer {_owner(words['producer_owner'])}, consumer {_owner(words['consumer_owner'])}")
            if info["sync"] == "semaphore":
                row("side locks", f"producers {_who(words['producer_lock'], 'free')}, "
                                  f"consumers {_who(words['consumer_lock'], 'free')}")  # fmt: skip
            row(
                "live hints",
                f"producers {words['producers_live_hint']} (ever: {bool(words['producers_ever'])}), "
                f"consumers {words['consumers_live_hint']} (ever: {bool(words['consumers_ever'])})",
            )
        row("remover", _who(words["remover"], "none"))
    lines.append(
        f"endpoints: {info['producers']} producer(s), {info['consumers']} consumer(s), "
        f"{info['observers']} observer(s), {info['pending']} pending, {info['dead']} dead process(es)"
    )
    if info["endpoints"]:
        rows = [
            [str(e["slot"]), e["role"], str(e["pid"]), e["state"], "alive" if e["alive"] else "dead"]
            for e in info["endpoints"]
        ]
        lines += ["  " + ln for ln in table(["SLOT", "ROLE", "PID", "STATE", "ALIVE"], rows, {0, 2})]
    if info.get("semaphores"):
        lines.append("semaphores")
        rows = [[s["name"], "missing" if s["missing"] else str(s["value"])] for s in info["semaphores"]]
        lines += ["  " + ln for ln in table(["NAME", "VALUE"], rows, {1})]
    stats = info.get("statistics")
    if stats:
        lines.append("statistics (since creation, every handle in every process)")
        if info["kind"] == "Array":
            row("writes", f"{stats['writes']} write() block(s){' (one under way)' if stats['writing'] else ''}")
        else:
            for side in ("in", "out"):
                count, size = stats[f"messages_{side}"], stats[f"bytes_{side}"]
                row(f"messages {side}", f"{count}  ({size} B, {human_size(size)})")
        for key, meaning in STAT_EVENTS:
            if key != "holes" or info["kind"] == "Ring":
                row(key, f"{stats[key]}  ({meaning})")
    if watching:
        lines.append("rates (per second)")
        if rates is None:
            row("-", "(from the next refresh on)")
        elif not rates:
            row("-", "(nothing counted for this kind)")
        for key, value in (rates or {}).items():
            row(key.replace("_", " "), f"{human_size(value)}/s" if key.startswith("bytes") else f"{value:.1f}/s")
    return lines


def _who(ident: dict[str, Any] | None, none: str) -> str:
    if ident is None:
        return none
    return f"pid {ident['pid']} ({'alive' if ident['alive'] else 'dead'})"


def _owner(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "none"
    if owner["slot"] is None:
        return f"token {owner['token']:016x} (no entry holds it: stale)"
    return f"slot {owner['slot']} pid {owner['pid']} ({'alive' if owner['alive'] else 'dead'})"


def cmd_stat(args: argparse.Namespace) -> int:
    target = I.resolve(args.name, args.backend)
    if args.watch is None:
        p = I.probe(target)
        I.require_region(p)
        info = I.describe(p)
        if args.json:
            _print_json(info)
        else:
            print("\n".join(stat_lines(info)))
        return 0
    try:
        return _watch(args, target)
    except KeyboardInterrupt:
        print()
        return 0


def _watch(args: argparse.Namespace, target: I.Target) -> int:
    """Refresh every ``args.watch`` seconds: in place on a terminal, as
    successive snapshots otherwise (JSON lines with --json); rates from the
    counters of successive snapshots."""
    tty = sys.stdout.isatty()
    prev: tuple[float, tuple[int, int], dict[str, int]] | None = None
    shown = 0
    while True:
        try:
            p = I.probe(target)
        except FileNotFoundError:
            print(f"shmring stat: {target.name}: removed", file=sys.stderr)
            return 1
        I.require_region(p)
        info = I.describe(p)
        now = time.monotonic()
        counts = I.counters(info)
        rates = None
        if prev is not None and prev[1] == p.ident and now > prev[0]:
            rates = {k: (v - prev[2][k]) / (now - prev[0]) for k, v in counts.items() if k in prev[2]}
        prev = (now, p.ident, counts)
        if args.json:
            _print_json({**info, "rates": rates}, compact=True)
        else:
            text = "\n".join(stat_lines(info, rates, watching=True))
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            else:
                print(("\n" if shown else "") + text)
        sys.stdout.flush()
        shown += 1
        if args.count and shown >= args.count:
            return 0
        time.sleep(args.watch)


# -- rm -----------------------------------------------------------------------------
def cmd_rm(args: argparse.Namespace) -> int:
    status = 0
    mapped = I.MappedInodes()
    for name in args.names:
        try:
            _rm_one(name, args, mapped)
        except (OSError, ShmringError, ValueError) as exc:
            print(f"shmring rm: {_message(exc)}", file=sys.stderr)
            status = 1
    return status


def _rm_one(name: str, args: argparse.Namespace, mapped: I.MappedInodes) -> None:
    p = I.probe(I.resolve(name, args.backend), mapped)
    if not args.force:
        if p.status == I.FOREIGN:
            raise ShmringError(f"{name}: not a shmring region ({p.detail}); --force removes it anyway")
        if p.status == I.UNREADABLE:
            raise ShmringError(f"{name}: not a shmring region this version can read ({p.detail}); --force removes it")
        if p.status == I.HALF_CREATED and p.verdict != I.CREATOR_DEAD:
            raise ShmringError(f"{name}: half-created shmring region ({p.detail}); --force removes it")
    users = p.live_pids if p.status == I.REGION else []
    if not I.unlink_exact(p):
        raise FileNotFoundError(2, "removed meanwhile", name)
    if users:
        pids = ", ".join(map(str, users))
        print(f"shmring rm: warning: {name} was in use by pid {pids} (their mappings stay valid)", file=sys.stderr)


def _path_hint(name: str) -> str:
    """For a name that missed: the other reading of it, if that exists."""
    if "/" not in name and os.path.exists(name):
        return f" (a file region's path needs a '/': ./{name})"
    bare = name[1:]
    if name.startswith("/") and bare and "/" not in bare and os.path.exists(os.path.join(SHM_DIR, bare)):
        return f" (a shm segment is named without the '/': {bare})"
    return ""


# -- gc -----------------------------------------------------------------------------
def cmd_gc(args: argparse.Namespace) -> int:
    for d in args.dir:
        I.check_dir(d)
    probes = I.survey(args.dir)
    verb = "would remove" if args.dry_run else "removing"

    def matches(p: I.Probe) -> bool:
        if args.match is None:
            return True
        name = p.target.name
        return fnmatch.fnmatchcase(name, args.match) or fnmatch.fnmatchcase(os.path.basename(name), args.match)

    regions = half = sems = left = 0
    gone_ids: set[int] = set()
    for p in filter(matches, probes):
        if p.status == I.REGION and p.abandoned:
            why = "abandoned: every endpoint is dead" if p.entries else "abandoned: no endpoint left"
        elif p.status == I.HALF_CREATED and p.verdict == I.CREATOR_DEAD:
            why = "half-created: its creator died before publishing the header"
        elif p.status == I.HALF_CREATED and p.verdict == I.STALE:
            if not args.force:
                print(f"leaving {p.target.name} (half-created? {p.detail}; --force to remove)")
                left += 1
                continue
            why = "half-created? no header, no endpoint (--force)"
        else:
            continue
        sem_names = I.existing_semaphores(p.sem_id())
        also = f", and its {len(sem_names)} semaphore(s)" if sem_names else ""
        print(f"{verb} {p.target.name} ({why}{also})")
        if not args.dry_run:
            kept = I.collect_abandoned(p) if p.status == I.REGION else I.remove_half_created(p)
            if kept:
                print(f"  kept {p.target.name}: {kept}")
                continue
        gone_ids.add(p.sem_id())
        sems += len(sem_names)
        if p.status == I.REGION:
            regions += 1
        else:
            half += 1
    known = {p.sem_id(): p for p in probes if p.sem_id()}
    for sem in _semaphore.orphans(SHM_DIR):
        sem_id = I.semaphore_id_of(sem)
        if sem_id in gone_ids:
            continue
        owner = known.get(sem_id)
        if args.match is not None and (owner is None or not matches(owner)):
            continue
        region = f"of {owner.target.name}" if owner is not None else "of a region that is gone"
        print(f"{verb} semaphore {sem} ({region}; no process has it open)")
        if args.dry_run or I.remove_semaphore(sem):
            sems += 1
    done = "would remove" if args.dry_run else "removed"
    summary = f"gc: {done} {regions} abandoned region(s), {half} half-created region(s), {sems} semaphore(s)"
    if left:
        summary += f"; left {left} stale-looking segment(s) (--force to remove)"
    print(summary)
    return 0


# -- the parser ---------------------------------------------------------------------
def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r} (NAME goes before --watch)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmring",
        formatter_class=_formatter,
        description="Inspect and manage shmring regions: ipcs and ipcrm for POSIX shared memory.",
        epilog="examples:\n  shmring ls\n  shmring stat cam0 --watch\n  shmring gc --dry-run\n\n" + IPCS_NOTE,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{ls,stat,rm,gc,bench}")

    p = sub.add_parser(
        "ls",
        help="list shmring regions in /dev/shm (and file regions in --dir)",
        formatter_class=_formatter,
        description=(
            "List every shmring region in /dev/shm, and the file regions (regular files with\n"
            "the shmring header) directly in each --dir.  Other files are not shown.\n\n" + IPCS_NOTE
        ),
        epilog=(
            "columns:\n"
            "  CAPACITY   items (Ring), bytes (Queue), elements (Array)\n"
            "  FILL       items (Ring) or messages (Queue) in it now, and the share of its capacity\n"
            "  P/C/O      live producers/consumers/observers; an observer is a live process with\n"
            "             a handle that neither puts nor gets; (+N dead): dead processes still listed\n"
            "  CREATOR    pid of the creating process; * when it no longer runs\n"
            "  STATE      in use, closed (a file region no one has open), abandoned (every endpoint\n"
            "             dead: gc removes it), half-created (header never published), unreadable\n"
            "             (another format version, or corrupt)\n\n"
            "examples:\n"
            "  shmring ls\n"
            "  shmring ls --dir /data/rings --json | jq '.[] | select(.abandoned) | .name'"
        ),
    )
    p.add_argument(
        "--dir", action="append", default=[], metavar="DIR", help="also list file regions in DIR (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="a JSON list of objects, in bytes, seconds and ints")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "stat",
        help="one region's header, moving words, endpoints and semaphores",
        formatter_class=_formatter,
        description=(
            "Show one region: every field of its header, its moving words (head, tail, fill,\n"
            "waiters, owners, locks), its endpoint table, its semaphores (semaphore flavour:\n"
            "their values, or 'missing') and its statistics.  Nothing is registered or changed.\n\n"
            + NAME_HELP
            + "\n\nWaiters never count more sleepers than there are live endpoints of the role: a\n"
            "sleeper killed by SIGKILL is never subtracted from the count word."
        ),
        epilog=(
            "examples:\n"
            "  shmring stat cam0\n"
            "  shmring stat ./frames.ring --json\n"
            "  shmring stat cam0 --watch 0.5          # refresh twice a second, with rates; Ctrl-C stops\n"
            "  shmring stat cam0 --watch --count 10 > log.txt"
        ),
    )
    p.add_argument("name", metavar="NAME|PATH")
    p.add_argument("--json", action="store_true", help="one JSON object (JSON lines with --watch)")
    p.add_argument(
        "--watch", nargs="?", const=1.0, type=_seconds, metavar="SECONDS", help="refresh every SECONDS (default 1)"
    )
    p.add_argument("--count", type=_positive, metavar="N", help="with --watch: stop after N refreshes")
    p.add_argument("--backend", choices=("shm", "file"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_stat, parser=p)

    p = sub.add_parser(
        "rm",
        help="remove regions by name or path, and their semaphores (ipcrm)",
        formatter_class=_formatter,
        description=(
            "Remove regions by name, with their named semaphores, as ipcrm does: processes that\n"
            "still map one keep working (a warning names them); the name goes.  A file that is not\n"
            "a shmring region (or one this version cannot read) is refused without --force; so is\n"
            "a half-created region (header never published) unless its creator is known dead.\n\n" + NAME_HELP
        ),
        epilog="examples:\n  shmring rm cam0 cam1\n  shmring rm /data/rings/frames.ring\n  shmring rm --force leftover",
    )
    p.add_argument("names", nargs="+", metavar="NAME|PATH")
    p.add_argument("--force", action="store_true", help="remove even what is not a readable shmring region")
    p.add_argument("--backend", choices=("shm", "file"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser(
        "gc",
        help="remove abandoned and half-created regions and orphaned semaphores",
        formatter_class=_formatter,
        description=(
            "Remove what dead processes left behind:\n"
            "  * regions whose every endpoint (holder, sender, producer, consumer) is dead,\n"
            "    with their semaphores; in --dir, file regions whose users all died without\n"
            "    closing (a file region closed properly has no endpoint and stays);\n"
            "  * half-created regions (the header was never published) whose creator is dead;\n"
            "  * shmring semaphores that no live process has open.\n\n"
            "A segment of /dev/shm whose first page is all zeros, at least a page long, older\n"
            f"than {I.HALF_CREATED_GRACE_S:g} s and mapped by no process is what a creator killed before it "
            "registered\n"
            "leaves; but another program's zeroed segment looks the same, so gc only lists it,\n"
            "and removes it with --force.  Anything else that is not a shmring region (no\n"
            "header, a tiny file) is never touched, even with --force.  Only regions no live\n"
            "process uses are removed: a process attaching meanwhile keeps its region.\n"
        ),
        epilog=(
            "examples:\n  shmring gc --dry-run\n  shmring gc --match 'cam*'\n  shmring gc --dir /data/rings --force"
        ),
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--force", action="store_true", help="also remove stale zeroed segments (see above)")
    p.add_argument(
        "--match",
        metavar="PATTERN",
        help="only names (or file names) matching this fnmatch pattern; a semaphore matches when its "
        "region's name does (one whose region is gone only without --match)",
    )
    p.add_argument(
        "--dir", action="append", default=[], metavar="DIR", help="also collect file regions in DIR (repeatable)"
    )
    p.set_defaults(func=cmd_gc)
    sub.add_parser(
        "bench", help="measure Ring against multiprocessing and pipes (see: shmring bench --help)", add_help=False
    )
    return parser


def _message(exc: BaseException) -> str:
    """One line for an error: ``name: what`` (and, for a bare name that is
    a file here, how to name a file region)."""
    if isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror[:1].lower() + exc.strerror[1:]
        if exc.filename is None:
            return what
        hint = _path_hint(str(exc.filename)) if isinstance(exc, FileNotFoundError) else ""
        return f"{exc.filename}: {what}{hint}"
    return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from . import bench

        result: int = bench.main(argv[1:])
        return result
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "count", None) and args.watch is None:
        args.parser.error("--count needs --watch")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `shmring ls | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, ShmringError, ValueError, posix_ipc.Error) as exc:
        print(f"shmring {args.command}: {_message(exc)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
