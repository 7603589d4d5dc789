"""``python -m stress``: build the matrix, run its cells, print the verdict.

Each cell runs in its own supervisor process (``python -m stress.cell``),
started with the cell's SHMRING_DELAY / SHMRING_BROKEN in its environment
and in a session of its own, so a hung cell is ended as a group.  This
process never imports shmring: it only plans, watches, checks /dev/shm for
leftovers and reports.  Exit status: 0 when every cell ran clean, 1 when any
forbidden outcome was seen, 2 for bad options, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import glob
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .adapters import ADAPTERS, BACKENDS, SYNCS
from .config import SCENARIOS, CellConfig, Scenario
from .outcomes import ACCEPTABLE, FORBIDDEN
from .procs import SHM_DIR, shm_entries

TOUGH_DURATION = 4 * 3600.0
TOUGH_CELL_TIME = 120.0
DEFAULT_DURATION = 60.0
BROKEN_VARIANTS = (
    "publish_before_copy",
    "relaxed_publish",
    "overwrite_unreleased",
    "ignore_dead_producer",
    "skip_abandoned_check",
    "unlock_early",
    "free_before_copy",
    "uncounted_take",
    # The harness's own, in its Array adapter (the core ignores these names):
    "array_no_lock",
    "array_plain_add",
    "array_skip_lock",
)
KNOBS = (
    "producers",
    "consumers",
    "sizes",
    "batch",
    "capacity",
    "zero_copy",
    "kill_rate",
    "delay",
    "lane_time",
    "deadlock_after",
    "busy_cpu",
    "max_ring_mib",
    "travel",
    "spawn",
    "scan_delay",
    "maxsize",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stress",
        description="Fuzz shmring structures across processes with kills, and name every forbidden outcome.",
        epilog="Modes: --quick runs the whole matrix in a few minutes (CI); --tough runs for hours (by hand). "
        "See docs/stress.md.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the whole matrix, two scenarios per cell, a few minutes")
    mode.add_argument("--tough", action="store_true", help="every scenario, round after round, for hours")
    m = p.add_argument_group("matrix")
    m.add_argument("--structure", default="all", choices=("all", *ADAPTERS), help="structure under test")
    m.add_argument("--sync", default="all", choices=("all", *SYNCS), help="sync flavour")
    m.add_argument("--backend", default="all", choices=("all", *BACKENDS), help="region backend")
    t = p.add_argument_group("time and seed")
    t.add_argument("--duration", type=float, help="seconds for the whole run, shared by its cells (default 60)")
    t.add_argument(
        "--cell-time", type=float, help="seconds per cell; the matrix repeats with new seeds to fill --duration"
    )
    t.add_argument("--messages", type=int, help="end each cell once this many messages were published")
    t.add_argument("--seed", type=int, help="base seed (cell i runs seed+i); random by default")
    k = p.add_argument_group("knobs (defaults: " + ", ".join(f"{f}={getattr(CellConfig(), f)}" for f in KNOBS) + ")")
    k.add_argument(
        "--producers",
        help="producers, N or MIN:MAX: drawn per lane (mpmc: default 2:6; queue: 1:4; array: writers, adders, "
        "holders, default 2:3), or lanes side by side (ring; default 2)",
    )
    k.add_argument("--consumers", help="consumers, N or MIN:MAX, likewise")
    k.add_argument("--sizes", help="payload bytes per slot: small, mixed, large, N or MIN:MAX")
    k.add_argument("--batch", help="items per batch call, N or MIN:MAX")
    k.add_argument(
        "--capacity", help="slots per ring, N or MIN:MAX (default 1:256); queue: bytes (default 16384:4194304)"
    )
    k.add_argument("--zero-copy", type=float, help="share of calls using reserve()/borrow() instead of copies")
    k.add_argument("--kill-rate", type=float, help="SIGKILLs per second of random producers/consumers")
    k.add_argument("--delay", help="delay injection PERMILLE:MAX_US (SHMRING_DELAY), or off")
    k.add_argument("--lane-time", help="seconds a lane lives before it is ended, N or MIN:MAX")
    k.add_argument("--deadlock-after", type=float, help="seconds without progress that count as a deadlock")
    k.add_argument("--busy-cpu", type=float, help="most CPU share a blocked process may use")
    k.add_argument("--max-ring-mib", type=int, help="largest ring, MiB")
    k.add_argument(
        "--travel",
        type=float,
        help="share of lanes whose handles travel pickled from a creator process that leaves at once (shm, file)",
    )
    k.add_argument("--spawn", type=int, help="actors per cell started as spawned interpreters (in travel lanes)")
    k.add_argument(
        "--scan-delay",
        help="PERMILLE:MAX_US: that share of endpoint-table scans pause mid-way (a preemption), or off",
    )
    k.add_argument(
        "--maxsize", help="queue: half the lanes admit at most this many messages at once, N or MIN:MAX (0: none)"
    )
    k.add_argument(
        "--broken",
        choices=("", *BROKEN_VARIANTS),
        default=os.environ.get("SHMRING_BROKEN", ""),
        help="run a deliberately broken core (SHMRING_BROKEN), or Array adapter (array_*): the harness must catch it",
    )
    o = p.add_argument_group("output")
    o.add_argument("--fail-fast", action="store_true", help="stop at the first forbidden outcome")
    o.add_argument("--list", action="store_true", help="print the matrix and the named outcomes, run nothing")
    return p


@dataclasses.dataclass
class Plan:
    """The cells of a run, produced lazily (tough mode loops)."""

    cells: Callable[[], Iterator[CellConfig]]
    duration: float | None  # the whole run's, when it repeats the matrix
    points: int  # structure x sync x backend combinations


def make_plan(args: argparse.Namespace) -> Plan:
    structures = list(ADAPTERS) if args.structure == "all" else [args.structure]
    syncs = list(SYNCS) if args.sync == "all" else [args.sync]
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    points = [(s, y, b) for s in structures for y in syncs for b in backends]
    given = {f: getattr(args, f) for f in KNOBS if getattr(args, f) is not None}
    if args.delay is None and os.environ.get("SHMRING_DELAY"):
        given["delay"] = os.environ["SHMRING_DELAY"]
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    tag = f"{os.getpid()}{secrets.token_hex(2)}"
    common = dict(broken=args.broken, fail_fast=args.fail_fast, messages=args.messages)
    scenarios = SCENARIOS["quick"] if args.quick else SCENARIOS["tough"] if args.tough else [Scenario("custom", {})]
    n = len(points) * len(scenarios)
    # total: the whole run's time (None: one pass); cell_time: one cell's (None: the scenario's own).
    if args.quick:
        total, cell_time = args.duration, args.cell_time or (args.duration / n if args.duration else None)
    elif args.tough:
        total, cell_time = args.duration or TOUGH_DURATION, args.cell_time or TOUGH_CELL_TIME
    elif args.messages is not None and args.duration is None:
        total, cell_time = None, args.cell_time
    else:
        total = args.duration if args.duration is not None else DEFAULT_DURATION
        cell_time = args.cell_time or total / n
    repeat = total is not None and cell_time is not None  # fill `total`, round after round

    def cell(i: int, point: tuple[str, str, str], scenario: Scenario) -> CellConfig:
        knobs = {**scenario.knobs_for(point[0]), **given, **common}
        if cell_time is not None:
            knobs["duration"] = cell_time
        elif args.messages is not None:
            knobs["duration"] = None
        cfg = CellConfig(
            structure=point[0],
            sync=point[1],
            backend=point[2],
            seed=seed + i,
            scenario=scenario.name,
            tag=f"{tag}c{i}",
            **knobs,
        )
        cfg.validate()
        return cfg

    def cells() -> Iterator[CellConfig]:
        i = 0
        while True:
            for point in points:
                for scenario in scenarios:
                    yield cell(i, point, scenario)
                    i += 1
            if not repeat:
                return

    next(cells())  # validate the knobs before anything runs
    return Plan(cells, total if repeat else None, len(points))


def cell_env(cfg: CellConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(cfg.env())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cell(cfg: CellConfig, on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one cell in its own supervisor process and return its result.

    A cell that overruns its time by far is ended (SIGTERM, then SIGKILL to
    its whole session) and reported as ``harness_error``.  Afterwards, what
    the cell left in /dev/shm or the temporary directory is reported as
    ``leaked`` and removed.
    """
    limit = (cfg.duration or 3600.0) + 3 * cfg.deadlock_after + 60.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "stress.cell", cfg.to_json()],
        stdout=subprocess.PIPE,
        env=cell_env(cfg),
        start_new_session=True,
        text=True,
    )
    result: dict[str, Any] | None = None
    timer = threading.Timer(limit, _end_group, (proc,))
    timer.daemon = True
    timer.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                sys.stderr.write(line)
                continue
            if record.get("type") == "progress" and on_progress:
                on_progress(record)
            elif record.get("type") == "result":
                result = record
        proc.wait()
    finally:
        timer.cancel()
        _end_group(proc)
        proc.stdout.close()
    if result is None:
        result = {"type": "result", "cell": cfg.name, "scenario": cfg.scenario, "seed": cfg.seed, "skipped": ""}
        result.update(elapsed=0.0, lanes=0, messages=0, bytes=0, kills=0, acceptable={}, cpu_checks=0)
        result["violations"] = [
            {
                "outcome": "harness_error",
                "where": cfg.name,
                "detail": f"the cell's supervisor ended without a result (status {proc.returncode}, limit {limit:g} s)",
            }
        ]
    for entry in shm_entries(f"stress-{cfg.tag}-"):
        result["violations"].append(
            {"outcome": "leaked", "where": cfg.name, "detail": f"{SHM_DIR}/{entry} left behind by the cell"}
        )
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(SHM_DIR, entry))
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"shmring-stress-{cfg.tag}-*")):
        shutil.rmtree(path, ignore_errors=True)
    return result


def _end_group(proc: subprocess.Popen[str]) -> None:
    """End a cell: SIGTERM lets it clean up; then SIGKILL its whole session."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the cell's session: its actors die with it
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


# -- reporting ----------------------------------------------------------------------------------
def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _label(r: dict[str, Any]) -> str:
    return f"{r['cell']} {r['scenario']}"


def print_progress(out: TextIO, p: dict[str, Any]) -> None:
    out.write(
        f"    {p['t']:6.1f}s  lanes {p['lanes']:4d}  msgs {p['messages']:>12,}  {_mb(p['bytes']):>9} MB  "
        f"kills {p['kills']:4d}  violations {p['violations']}\n"
    )
    out.flush()


def summary_table(results: list[dict[str, Any]]) -> str:
    head = ("cell", "scenario", "seed", "secs", "lanes", "messages", "MB", "kills", "viol.", "msg/s", "MB/s", "result")
    rows = []
    tot: Counter[str] = Counter()
    for r in results:
        secs = max(r["elapsed"], 1e-9)
        nv = len(r["violations"])
        status = "skipped" if r["skipped"] and not nv else ("FAIL" if nv else "ok")
        rows.append(
            (
                r["cell"],
                r["scenario"],
                str(r["seed"]),
                f"{r['elapsed']:.1f}",
                str(r["lanes"]),
                f"{r['messages']:,}",
                _mb(r["bytes"]),
                str(r["kills"]),
                str(nv),
                f"{r['messages'] / secs:,.0f}" if not r["skipped"] else "-",
                f"{r['bytes'] / secs / 1e6:,.1f}" if not r["skipped"] else "-",
                status,
            )
        )
        for key in ("elapsed", "lanes", "messages", "bytes", "kills"):
            tot[key] += r[key]
        tot["violations"] += nv
    secs = max(tot["elapsed"], 1e-9)
    rows.append(
        (
            "total",
            "",
            "",
            f"{tot['elapsed']:.1f}",
            str(tot["lanes"]),
            f"{tot['messages']:,}",
            _mb(tot["bytes"]),
            str(tot["kills"]),
            str(tot["violations"]),
            f"{tot['messages'] / secs:,.0f}",
            f"{tot['bytes'] / secs / 1e6:,.1f}",
            "FAIL" if tot["violations"] else "ok",
        )
    )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10}

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *(fmt(r) for r in rows[:-1]), rule, fmt(rows[-1])])


def report_failures(out: TextIO, failed: list[tuple[CellConfig, dict[str, Any]]], detailed: bool) -> None:
    """Each failing cell: its outcomes (in full when ``detailed``), seed and reproducing command."""
    for cfg, r in failed:
        out.write(f"\nFAIL {_label(r)}: {len(r['violations'])} forbidden outcome(s)\n")
        by_name = Counter(v["outcome"] for v in r["violations"])
        out.write("  outcomes: " + ", ".join(f"{k} x{n}" for k, n in by_name.most_common()) + "\n")
        for v in r["violations"][:12] if detailed else []:
            lines = v["detail"].splitlines() or [""]
            out.write(f"  - {v['outcome']} [{v['where']}]: {lines[0]}\n")
            for line in lines[1:60]:
                out.write(f"      {line}\n")
        if detailed and len(r["violations"]) > 12:
            out.write(f"  ... and {len(r['violations']) - 12} more\n")
        out.write(f"  seed: {cfg.seed}\n  reproduce: {cfg.command()}\n")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        for cfg in plan.cells():
            out.write(f"{cfg.name} {cfg.scenario}: {cfg.command()}\n")
        out.write("\nforbidden outcomes:\n" + "".join(f"  {k}: {d}\n" for k, d in FORBIDDEN.items()))
        out.write("acceptable outcomes:\n" + "".join(f"  {k}: {d}\n" for k, d in ACCEPTABLE.items()))
        return 0
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    failed: list[tuple[CellConfig, dict[str, Any]]] = []
    not_built: dict[tuple[str, str, str], str] = {}
    interrupted = False
    try:
        for cfg in plan.cells():
            if plan.duration is not None:
                left = plan.duration - (time.monotonic() - started)
                if left < 1.0:
                    break
                if cfg.duration is not None and cfg.duration > left:
                    cfg = dataclasses.replace(cfg, duration=round(left, 1))
            point = (cfg.structure, cfg.sync, cfg.backend)
            if len(not_built) == plan.points:
                break
            if point in not_built:
                continue
            label = f"{cfg.name} {cfg.scenario}"
            when = f"{cfg.duration:g} s" if cfg.duration is not None else f"{cfg.messages:,} messages"
            out.write(f"> {label}  seed {cfg.seed}  ({when}, kill rate {cfg.kill_rate:g}/s, delay {cfg.delay})\n")
            out.flush()
            r = run_cell(cfg, functools.partial(print_progress, out))
            if r["skipped"]:
                not_built[point] = r["skipped"]
                out.write(f"  skipped: {r['skipped']}\n")
            else:
                nv = len(r["violations"])
                verdict = "ok" if not nv else f"FAIL ({nv} forbidden outcome(s))"
                out.write(
                    f"  {verdict}: {r['messages']:,} msgs, {_mb(r['bytes'])} MB, {r['kills']} kills, "
                    f"{r['lanes']} lanes in {r['elapsed']:.1f} s\n"
                )
            out.flush()
            results.append(r)
            if r["violations"]:
                failed.append((cfg, r))
                report_failures(out, [(cfg, r)], detailed=True)
                if args.fail_fast:
                    break
    except KeyboardInterrupt:
        interrupted = True
        out.write("\ninterrupted\n")
    out.write("\n" + summary_table(results) + "\n")
    accepted: Counter[str] = Counter()
    for r in results:
        accepted.update(r.get("acceptable", {}))
    checks = sum(r.get("cpu_checks", 0) for r in results)
    worst = max((r.get("max_blocked_cpu", 0.0) for r in results), default=0.0)
    handles: Counter[str] = Counter()
    travel: Counter[str] = Counter()
    for r in results:
        handles.update(r.get("handles", {}))
        travel.update(r.get("travel_lanes", {}))
    windows = sum(r.get("windows", 0) for r in results)
    aimed: Counter[str] = Counter()
    for r in results:
        aimed.update(r.get("aimed_kills", {}))
    out.write(
        "acceptable outcomes: "
        + (", ".join(f"{k} x{n}" for k, n in sorted(accepted.items()) if n) or "none")
        + f"\nbusy-wait checks: {checks} (highest CPU share while blocked: {worst:.1%})\n"
        + "handles that travelled (travel lanes), by sender: "
        + (", ".join(f"{k} x{n}" for k, n in sorted(handles.items())) or "none")
        + f"; last-out unlink checked in {travel['judged']} lane(s) ({travel['cut short']} cut short)"
        + f"\nregistration windows passed by actors: {windows:,}\n"
        + (
            f"kills aimed inside a held reserve()/borrow() or Array write()/lock()/add() block "
            f"(crowded lanes): {aimed['held']} "
            f"of {aimed['held'] + aimed['missed']}\n"
            if aimed
            else ""
        )
    )
    for why in dict.fromkeys(not_built.values()):
        cells = ", ".join("/".join(p) for p, w in not_built.items() if w == why)
        out.write(f"skipped {cells}: {why}\n")
    out.write(f"wall time {time.monotonic() - started:.1f} s\n")
    report_failures(out, failed, detailed=False)
    out.flush()
    if interrupted:
        return 130
    return 1 if failed else 0
