"""The actors: producer and consumer main loops, run in fork children of the
supervisor.

A producer numbers its messages 0, 1, 2, ... and, around every call, records
in its log how many it has surely published and how many are in flight
(board.py).  A consumer checks every message it receives (the adapter's
``verify``: message.verify, or queue_message.check for a Queue's objects)
and logs it after the call has released it, so a kill between the take and
the log is covered by the *in-flight take* it announced beforehand.  Neither
judges ordering or loss: that is the arbiter's job, from the logs alone.

Each side also checks the pipe semantics it observes: an EOFError while the
lane's current producer is registered, alive and not closing is
``spurious_eof``; a BrokenPipeError likewise is ``spurious_epipe``.  Either
error in a window around a kill is acceptable, counted, and retried.

In a *travel* lane no actor attaches by name or uses an inherited handle: it
unpickles a handle that another process pickled for it (the lane's creator,
which has left by then or leaves meanwhile; or its live peer, asked by the
supervisor through the log; or, for a spawned actor, the supervisor itself
through multiprocessing).  A courier thread answers those requests, even
while the actor is blocked in a call.  The lane's creator runs here too
(:func:`creator_main`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import faulthandler
import json
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

from . import board
from .adapters import Adapter
from .board import ActorLog, LaneControl
from .config import CellConfig, parse_delay
from .message import ABORTED_SEQ, Corrupt
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
    ticket: bytes | None = None  # travel lanes: the pickled handle to unpickle (None: open, or handed)
    travel: bool = False
    handle: Any = None  # the actor's own handle, once it has it (a spawned actor is handed it by multiprocessing)
    courier: Courier | None = None


class Events:
    """Append-only JSON lines: forbidden and notable things an actor saw."""

    def __init__(self, log: ActorLog):
        self.log = log
        self.fd = os.open(log.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.written = 0

    def record(self, outcome: str, detail: str, forbidden: bool = True) -> None:
        # The line goes out before the count: an actor SIGKILLed between the
        # two then leaves a shown event uncounted (harmless), never a counted
        # event unshown (which the supervisor would have to call a harness error).
        if self.written < MAX_EVENTS:
            self.written += 1
            line = json.dumps({"outcome": outcome, "detail": detail, "forbidden": forbidden}) + "\n"
            os.write(self.fd, line.encode())
        if forbidden:
            self.log.add(board.VIOLATIONS)


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


def ticket_path(workdir: str, request: int) -> str:
    return os.path.join(workdir, f"ticket-{request}")


COURIER_POLL_S = 0.01


class Courier:
    """Pickles this actor's handle for a replacement peer when the supervisor
    asks (``SEND_REQ`` in the log): the ticket goes to a file, then
    ``SEND_DONE`` says it is there (or that the request is refused, once the
    actor is leaving).  A thread, so a request is answered while the actor is
    blocked in a call; a lock keeps a pickling and the actor's close apart
    (a handle pickled while its own thread closes it is a race of the caller,
    not of shmring)."""

    def __init__(self, ctx: ActorContext, handle: Any, events: Events):
        self.ctx, self.handle, self.events = ctx, handle, events
        self.lock = threading.Lock()
        self.closing = False
        threading.Thread(target=self._run, name="courier", daemon=True).start()

    def _run(self) -> None:
        log = self.ctx.log
        while not self.closing:
            time.sleep(COURIER_POLL_S)
            request = log.get(board.SEND_REQ)
            if request != log.get(board.SEND_DONE):
                self.send(request)

    def send(self, request: int) -> None:
        with self.lock:
            try:
                if not self.closing:
                    data = self.ctx.adapter.export(self.handle)  # a pending entry of this process from here on
                    path = ticket_path(self.ctx.workdir, request)
                    with open(path + ".tmp", "wb") as f:
                        f.write(data)
                    os.replace(path + ".tmp", path)
            except Exception as exc:  # noqa: BLE001 - every escape is a finding
                self.events.record("actor_error", f"pickling the handle: {type(exc).__name__}: {exc}")
            self.ctx.log.set(board.SEND_DONE, request)

    def close(self) -> None:
        """Close the handle; requests from now on are refused."""
        with self.lock:
            self.closing = True
            self.ctx.log.set(board.SEND_DONE, self.ctx.log.get(board.SEND_REQ))
            self.ctx.adapter.close(self.handle)


def _open(ctx: ActorContext, events: Events) -> Any:
    """The actor's handle: handed over (spawned), unpickled (travel), or opened."""
    adapter = ctx.adapter
    if ctx.handle is None:
        if ctx.ticket is not None:
            ctx.handle = adapter.adopt(ctx.ticket)
        else:
            ctx.handle = adapter.open(ctx.owner, ctx.name, ctx.cfg.backend)
    ctx.log.set(board.ATTACHED, 1)
    if ctx.travel:
        ctx.courier = Courier(ctx, ctx.handle, events)
    return ctx.handle


def _close(ctx: ActorContext, handle: Any) -> None:
    if ctx.courier is not None:
        ctx.courier.close()
    else:
        ctx.adapter.close(handle)


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
        code = _act(ctx)
    finally:
        os._exit(code)  # skip the supervisor's atexit handlers and stdio buffers, inherited by fork


def _act(ctx: ActorContext) -> int:
    _die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    trace = open(ctx.log.path + ".trace", "w")  # kept open: faulthandler writes to it on SIGUSR1
    faulthandler.register(signal.SIGUSR1, file=trace, all_threads=True)
    ctx.log.set(board.PID, os.getpid())
    ctx.adapter.instrument(lambda point: ctx.log.add(board.WINDOWS))
    _preempt_scans(ctx.adapter, ctx.cfg)
    events = Events(ctx.log)
    try:
        if ctx.plan.kind:
            from .array_actors import run_array

            return run_array(ctx, events)
        return (run_producer if ctx.producer else run_consumer)(ctx, events)
    except BaseException as exc:  # noqa: BLE001 - every escape is a finding
        ctx.log.set(board.PHASE, board.PHASE_EXITING)  # its peers' EOF/EPIPE is no longer spurious
        events.record("actor_error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}{_state(ctx)}")
        return EXIT_ERROR


def _preempt_scans(adapter: Adapter, cfg: CellConfig) -> None:
    permille, max_us = parse_delay(cfg.scan_delay)
    if permille:
        adapter.preempt_scans(permille / 1000, max_us / 1e6)


def spawn_main(handle: Any, ctx: ActorContext) -> NoReturn:
    """Entry point of an actor started as a spawned interpreter: multiprocessing
    has unpickled ``handle`` (attached by name, retired the sender's pending
    entry) before this runs.  It leaves the way a user's process does, through
    multiprocessing's exit path and the interpreter's, where shmring closes
    what is still open and looks again at the names it left to others."""
    ctx.handle = handle
    code = EXIT_ERROR
    try:
        code = _act(ctx)
    finally:
        sys.exit(code)


# -- the creator of a travel lane ---------------------------------------------------------
FRAME = struct.Struct("<cI")


def send_frame(fd: int, kind: bytes, payload: bytes = b"") -> None:
    data = FRAME.pack(kind, len(payload)) + payload
    while data:
        data = data[os.write(fd, data) :]


def creator_main(
    adapter: Adapter, cfg: CellConfig, name: str | None, plan: LanePlan, tickets: int, out_fd: int, go_fd: int
) -> NoReturn:
    """Fork child of the supervisor: create the lane's structure, pickle
    ``tickets`` handles of it (each a pending entry of this process), send
    them (frame ``T``), wait for the supervisor's go (it takes its own
    non-holding view first), then leave: close the handle, or exit without
    closing it (``plan.creator_dies``), and say so (frame ``L``).  Whether the
    actors have unpickled by then is up to the plan and the scheduler."""
    code = EXIT_ERROR
    try:
        _die_with_parent()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        _preempt_scans(adapter, cfg)
        try:
            owner = adapter.create(name, cfg.backend, cfg.sync, plan)
            data = [adapter.export(owner) for _ in range(tickets)]
        except BaseException as exc:  # reported to the supervisor, then re-raised
            send_frame(out_fd, b"E", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}".encode())
            raise
        send_frame(out_fd, b"T", pickle.dumps(data))
        os.read(go_fd, 1)  # the go, or EOF if the supervisor gave up
        if plan.creator_delay:
            time.sleep(plan.creator_delay)
        if not plan.creator_dies:
            adapter.close(owner)
        try:
            send_frame(out_fd, b"L")
        except OSError:
            pass  # the supervisor did not wait for it
        code = EXIT_OK
    finally:
        os._exit(code)


def _state(ctx: ActorContext) -> str:
    """The structure's header as this actor sees it, for an error report."""
    try:
        dump = ctx.adapter.dump(ctx.handle if ctx.handle is not None else ctx.owner)
    except Exception as exc:  # noqa: BLE001 - the report must not hide the error
        return f"(header dump failed: {exc!r})"
    lines = [f"{k}: {v}" for k, v in dump.items() if not isinstance(v, list)]
    lines += [str(x) for v in dump.values() if isinstance(v, list) for x in v]
    return "header seen by the failing actor:\n  " + "\n  ".join(lines)


HOLD_MAX_S = 0.5


def _hold(log: ActorLog) -> None:
    """Inside a reserve()/borrow() block, with its claim taken: if the
    supervisor aims a kill at us (``HOLD``), say so and wait for the SIGKILL
    there, so the kill lands between claim and publish (release), where a
    dead producer leaves a hole and a dead consumer a taken, unreleased run.
    Never more than HOLD_MAX_S: a late supervisor kills elsewhere."""
    if not log.get(board.HOLD):
        return
    log.set(board.HOLD, 0)
    log.set(board.HOLDING, 1)
    deadline = time.monotonic() + HOLD_MAX_S
    while time.monotonic() < deadline:
        time.sleep(0.001)
    log.set(board.HOLDING, 0)


WATCH_POLL_S = 0.002  # how often an actor looks for an aimed kill (HOLD) to meet inside a copy
WATCH_SPIN_S = 0.0002  # then how often it looks for the copy (low: the busy-wait check may watch it)


def _watch_copies(ctx: ActorContext, handle: Any) -> None:
    """Aimed kills inside a copy: a Queue's put and get have no block to hold
    open (``_hold``), but a record of 64 KiB or more is copied without the
    GIL between its claim and its publish (release).  While a kill is aimed
    at this actor (``HOLD``), a thread waits for such a copy of the main
    thread (it gets the GIL as the copy lets it go), says ``HOLDING`` and
    stops the process there (SIGSTOP) for the supervisor's SIGKILL: a dead
    producer's hole, or a dead consumer's claimed record."""
    log, adapter = ctx.log, ctx.adapter

    def watch() -> None:
        while True:
            time.sleep(WATCH_POLL_S)
            while log.get(board.HOLD):
                if adapter.copying(handle):
                    log.set(board.HOLD, 0)
                    log.set(board.HOLDING, 1)
                    os.kill(os.getpid(), signal.SIGSTOP)
                    return
                time.sleep(WATCH_SPIN_S)

    threading.Thread(target=watch, name="copy-watch", daemon=True).start()


def _pause(ctx: ActorContext, sched: Schedule) -> None:
    seconds, stall = sched.pause(time.monotonic())
    if not seconds:
        return
    if stall:
        ctx.log.set(board.STALL_UNTIL, time.monotonic_ns() + int(seconds * 1e9))
    time.sleep(seconds)
    if stall:
        ctx.log.set(board.STALL_UNTIL, 0)


def _open_watched(ctx: ActorContext, events: Events) -> Any:
    """The actor's handle; and, for a structure whose claims have no block
    to hold (a Queue), the thread that meets aimed kills inside copies."""
    handle = _open(ctx, events)
    if not ctx.adapter.producer_in_place:
        _watch_copies(ctx, handle)
    return handle


def run_producer(ctx: ActorContext, events: Events) -> int:
    log, adapter = ctx.log, ctx.adapter
    handle = _open_watched(ctx, events)
    enc = adapter.encoder(ctx.actor_id, ctx.plan, ctx.seed)
    sched = Schedule(ctx.seed, ctx.temper, producer=True, now=time.monotonic(), timed_batches=adapter.timed_batches)
    scratch = adapter.scratch(ctx.plan, max(ctx.temper.batch[1], 1))
    consumer = Peer(ctx, board.CUR_CONSUMER)
    published = aborted = 0
    abort = False  # a reserve() that raises on purpose (Queue: a put too large to ever go in)
    in_place = False  # the call writes its slot in place: encode runs inside a reserve() block

    def encode(rows: Any) -> None:
        if in_place:
            _hold(log)  # before writing: the slot still holds a previous lap's bytes
        enc.fill(rows, ABORTED_SEQ + aborted if abort else published)

    while True:  # at least one call, so a producer started to close a lane registers first
        call = sched.next_call()
        abort = call.op == "zero_copy_abort"
        in_place = adapter.producer_in_place and call.op in ("zero_copy", "zero_copy_abort")
        before = consumer.snapshot()
        log.set(board.OP, board.OP_CODE[call.op])
        log.set_producer_state(published, 0 if abort else call.count)
        sent = 0
        try:
            sent = adapter.send(handle, call, scratch, encode)
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
    _close(ctx, handle)
    log.set(board.PHASE, board.PHASE_DONE)
    return EXIT_OK


def run_consumer(ctx: ActorContext, events: Events) -> int:
    log, adapter = ctx.log, ctx.adapter
    handle = _open_watched(ctx, events)
    sched = Schedule(ctx.seed, ctx.temper, producer=False, now=time.monotonic(), timed_batches=adapter.timed_batches)
    producer = Peer(ctx, board.CUR_PRODUCER)
    got: list[tuple[int, int]] = []
    moved = 0  # bytes of the messages got
    in_place = False  # the call reads its slots in place: visit runs inside a borrow() block

    def visit(rows: Any) -> None:
        nonlocal moved
        if in_place:
            _hold(log)
        for i in range(len(rows)):
            try:
                p, seq, nbytes = adapter.verify(ctx.plan, rows[i], in_place)
            except Corrupt as exc:
                events.record("corrupted", str(exc))
                continue
            if seq >= ABORTED_SEQ:
                events.record("phantom", f"delivered aborted reserve #{seq - ABORTED_SEQ} of producer {p}")
                continue
            got.append((p, seq))
            moved += nbytes

    while True:
        call = sched.next_call()
        in_place = call.op in ("zero_copy", "zero_copy_many")
        before = producer.snapshot()
        log.set(board.OP, board.OP_CODE[call.op])
        log.set(board.STATE, call.count)  # the take in flight: at most this many
        got.clear()
        moved = 0
        try:
            adapter.receive(handle, call, visit)
        except queue.Empty:
            pass
        except Corrupt as exc:  # a record that would not even decode (Queue)
            events.record("corrupted", str(exc))
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
                events.record("harness_error", f"consumer log full ({log.max_runs} runs): too many anomalies")
                break
        log.add(board.COUNT, len(got))
        log.add(board.BYTES, moved)
        log.set(board.STATE, 0)
        log.set(board.OP, 0)
        log.add(board.CALLS)
        if log.get(board.PHASE) == board.PHASE_STARTING:
            log.set(board.PHASE, board.PHASE_REGISTERED)
        _pause(ctx, sched)
    log.set(board.OP, 0)
    log.set(board.PHASE, board.PHASE_EXITING)
    _close(ctx, handle)
    log.set(board.PHASE, board.PHASE_DONE)
    return EXIT_OK
