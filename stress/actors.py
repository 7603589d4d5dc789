"""The actors: producer and consumer main loops, run in fork children of the
supervisor.

A producer numbers its messages 0, 1, 2, ... and, around every call, records
in its log how many it has surely published and how many are in flight
(board.py).  A consumer checks every message it receives (message.verify)
and logs it after the call has released it, so a kill between the take and
the log is covered by the *in-flight take* it announced beforehand.  Neither
judges ordering or loss: that is the arbiter's job, from the logs alone.

Each side also checks the pipe semantics it observes: an EOFError while the
lane's current producer is registered, alive and not closing is
``spurious_eof``; a BrokenPipeError likewise is ``spurious_epipe``.  Either
error in a window around a kill is acceptable, counted, and retried.
"""

from __future__ import annotations

import ctypes
import dataclasses
import faulthandler
import json
import os
import queue
import signal
import time
import traceback
from typing import Any

import numpy as np

from . import board
from .adapters import Adapter, Bytes
from .board import ActorLog, LaneControl
from .config import CellConfig
from .message import ABORTED_SEQ, Corrupt, Encoder, verify
from .schedule import LanePlan, Schedule, Temperament

MAX_EVENTS = 20  # events written per actor; later ones are only counted
EXIT_OK, EXIT_ERROR = 0, 3


@dataclasses.dataclass
class ActorContext:
    """What a forked actor inherits from the supervisor."""

    cfg: CellConfig
    adapter: Adapter
    owner: Any  # the supervisor's handle of the instance (used as-is for anon)
    name: str | None
    plan: LanePlan
    actor_id: int
    producer: bool
    seed: int
    temper: Temperament
    log: ActorLog
    control: LaneControl
    workdir: str


class Events:
    """Append-only JSON lines: forbidden and notable things an actor saw."""

    def __init__(self, log: ActorLog):
        self.log = log
        self.fd = os.open(log.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.written = 0

    def record(self, outcome: str, detail: str, forbidden: bool = True) -> None:
        if forbidden:
            self.log.add(board.VIOLATIONS)
        if self.written < MAX_EVENTS:
            self.written += 1
            line = json.dumps({"outcome": outcome, "detail": detail, "forbidden": forbidden}) + "\n"
            os.write(self.fd, line.encode())


class Peer:
    """The newest actor of the other role in this lane, as its log shows it,
    for telling a spurious EOF/EPIPE from one caused by a kill."""

    def __init__(self, ctx: ActorContext, word: int):
        self.ctx, self.word = ctx, word
        self.actor = 0
        self.log: ActorLog | None = None

    def snapshot(self) -> tuple[int, bool]:
        """(actor id, registered-and-alive-and-staying) right now."""
        actor = self.ctx.control.get(self.word)
        if actor != self.actor:
            if self.log is not None:
                self.log.close()
            self.actor, self.log = actor, None
            path = log_path(self.ctx.workdir, actor)
            if actor and os.path.exists(path):
                self.log = ActorLog(path, runs=False, create=False)
        log = self.log
        steady = (
            log is not None
            and log.get(board.PHASE) == board.PHASE_REGISTERED
            and log.get(board.KILLED) == 0
            and log.get(board.STOP) == 0
        )
        return actor, steady


def log_path(workdir: str, actor_id: int) -> str:
    return os.path.join(workdir, f"actor-{actor_id}.log")


def _die_with_parent() -> None:
    """SIGKILL this process when the supervisor dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_main(ctx: ActorContext) -> None:
    """Entry point in the fork child; never returns."""
    code = EXIT_ERROR
    try:
        _die_with_parent()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        trace = open(ctx.log.path + ".trace", "w")  # kept open: faulthandler writes to it on SIGUSR1
        faulthandler.register(signal.SIGUSR1, file=trace, all_threads=True)
        ctx.log.set(board.PID, os.getpid())
        events = Events(ctx.log)
        try:
            code = (run_producer if ctx.producer else run_consumer)(ctx, events)
        except BaseException as exc:  # noqa: BLE001 - every escape is a finding
            ctx.log.set(board.PHASE, board.PHASE_EXITING)  # its peers' EOF/EPIPE is no longer spurious
            events.record("actor_error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}{_state(ctx)}")
            code = EXIT_ERROR
    finally:
        os._exit(code)  # skip the supervisor's atexit handlers and stdio buffers, inherited by fork


def _state(ctx: ActorContext) -> str:
    """The structure's header as this actor sees it, for an error report."""
    try:
        dump = ctx.adapter.dump(ctx.owner)
    except Exception as exc:  # noqa: BLE001 - the report must not hide the error
        return f"(header dump failed: {exc!r})"
    lines = [f"{k}: {v}" for k, v in dump.items() if not isinstance(v, list)]
    lines += [str(x) for v in dump.values() if isinstance(v, list) for x in v]
    return "header seen by the failing actor:\n  " + "\n  ".join(lines)


def _pause(ctx: ActorContext, sched: Schedule) -> None:
    seconds, stall = sched.pause(time.monotonic())
    if not seconds:
        return
    if stall:
        ctx.log.set(board.STALL_UNTIL, time.monotonic_ns() + int(seconds * 1e9))
    time.sleep(seconds)
    if stall:
        ctx.log.set(board.STALL_UNTIL, 0)


def run_producer(ctx: ActorContext, events: Events) -> int:
    log, adapter = ctx.log, ctx.adapter
    handle = adapter.open(ctx.owner, ctx.name, ctx.cfg.backend)
    enc = Encoder(ctx.actor_id, ctx.plan.slot_bytes, ctx.seed)
    sched = Schedule(ctx.seed, ctx.temper, producer=True, now=time.monotonic())
    scratch: Bytes = np.empty((max(ctx.temper.batch[1], 1), ctx.plan.slot_bytes), dtype=np.uint8)
    consumer = Peer(ctx, board.CUR_CONSUMER)
    published = aborted = 0

    def encode(rows: Bytes) -> None:
        for i in range(len(rows)):
            enc.write(rows[i], published + i)

    def encode_aborted(rows: Bytes) -> None:
        enc.write(rows[0], ABORTED_SEQ + aborted)

    while True:  # at least one call, so a producer started to close a lane registers first
        call = sched.next_call()
        abort = call.op == "zero_copy_abort"
        before = consumer.snapshot()
        log.set(board.OP, board.OP_CODE[call.op])
        log.set_producer_state(published, 0 if abort else call.count)
        sent = 0
        try:
            sent = adapter.send(handle, call, scratch, encode_aborted if abort else encode)
        except queue.Full:
            pass
        except BrokenPipeError:
            after = consumer.snapshot()
            if before[1] and after == before:
                events.record("spurious_epipe", f"put raised BrokenPipeError while consumer {before[0]} was steady")
            log.add(board.TRANSIENT_EPIPE)
            time.sleep(0.002)
        published += sent
        log.set_producer_state(published, 0)
        log.set(board.OP, 0)
        log.set(board.COUNT, published)
        log.add(board.BYTES, sent * ctx.plan.slot_bytes)
        log.add(board.CALLS)
        if abort:
            aborted += 1
            log.add(board.ABORTED)
        if log.get(board.PHASE) == board.PHASE_STARTING:
            log.set(board.PHASE, board.PHASE_REGISTERED)
        if log.get(board.STOP):
            break
        _pause(ctx, sched)
    log.set(board.PHASE, board.PHASE_EXITING)
    adapter.close(handle)
    log.set(board.PHASE, board.PHASE_DONE)
    return EXIT_OK


def run_consumer(ctx: ActorContext, events: Events) -> int:
    log, adapter = ctx.log, ctx.adapter
    handle = adapter.open(ctx.owner, ctx.name, ctx.cfg.backend)
    sched = Schedule(ctx.seed, ctx.temper, producer=False, now=time.monotonic())
    producer = Peer(ctx, board.CUR_PRODUCER)
    slot_bytes = ctx.plan.slot_bytes
    got: list[tuple[int, int]] = []

    def visit(rows: Bytes) -> None:
        for i in range(len(rows)):
            try:
                p, seq, _ = verify(rows[i])
            except Corrupt as exc:
                events.record("corrupted", str(exc))
                continue
            if seq >= ABORTED_SEQ:
                events.record("phantom", f"delivered aborted reserve #{seq - ABORTED_SEQ} of producer {p}")
                continue
            got.append((p, seq))

    while True:
        call = sched.next_call()
        before = producer.snapshot()
        log.set(board.OP, board.OP_CODE[call.op])
        log.set(board.STATE, call.count)  # the take in flight: at most this many
        got.clear()
        taken = 0
        try:
            taken = adapter.receive(handle, call, visit)
        except queue.Empty:
            pass
        except EOFError:
            if ctx.control.get(board.LANE_DONE):
                log.set(board.STATE, 0)
                break
            after = producer.snapshot()
            if before[1] and after == before:
                events.record("spurious_eof", f"get raised EOFError while producer {before[0]} was steady")
            log.add(board.TRANSIENT_EOF)
            time.sleep(0.002)
        for p, seq in got:
            if not log.log_delivery(p, seq):
                events.record("harness_error", f"consumer log full ({board.MAX_RUNS} runs): too many anomalies")
                break
        log.add(board.COUNT, len(got))
        log.add(board.BYTES, taken * slot_bytes)
        log.set(board.STATE, 0)
        log.set(board.OP, 0)
        log.add(board.CALLS)
        if log.get(board.PHASE) == board.PHASE_STARTING:
            log.set(board.PHASE, board.PHASE_REGISTERED)
        _pause(ctx, sched)
    log.set(board.OP, 0)
    log.set(board.PHASE, board.PHASE_EXITING)
    adapter.close(handle)
    log.set(board.PHASE, board.PHASE_DONE)
    return EXIT_OK
