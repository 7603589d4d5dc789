"""The supervisor of one cell: lanes, actors, kills, watchdogs, verdicts.

``python -m stress.cell CONFIG_JSON`` runs one cell and prints JSON lines on
stdout: ``progress`` lines while it runs and one ``result`` line at the end.
The runner (cli.py) starts it with SHMRING_DELAY / SHMRING_BROKEN already in
the environment, so the core reads them at import; the supervisor itself only
creates, inspects and unlinks structures.

A *lane* is one structure instance with its actors.  The supervisor creates
it, forks its producer and consumer (fork children inherit anon regions; the
others attach by name), and ends it after its drawn lifetime: each producer
is told to stop or, when kills are on, SIGKILLed half the time; once no
producer will come back the lane is marked done and the consumer must drain
it to a final EOF.  Then the arbiter judges the lane from the actors' logs,
the supervisor unlinks the structure and checks that nothing of it is left,
and a new lane takes its place.  Meanwhile the kill schedule SIGKILLs random
actors and starts replacements, a watchdog reports a lane that makes no
progress for ``deadlock_after`` seconds (with a dump of its header, its
endpoints and the actors' stacks), and whenever an actor stalls on purpose
its peer, which should then block, is checked for burning CPU.

A structure with many producers and consumers per instance (``mpmc``) runs
*crowded* lanes: a crowd of producers and consumers drawn per lane, side by
side, each killed one replaced.  Half of their kills are *aimed*: the actor
holds its next reserve()/borrow() block open, claim taken, and is killed
there (:meth:`Supervisor._fire_aimed`), so dead claims -- the holes and
unreleased runs the multi ring must repair -- happen in every such cell.  A
Queue (``queue``) runs crowded lanes too; its puts and gets have no block to
hold, so an aimed actor stops itself inside its next copy of a large record
(actors._watch_copies), or holds its next borrow() block.

An Array (``array``) holds state: its cell runs one lane of each kind
(seqlock, counter, lock; array_actors.py) side by side, a finished lane
followed by a new one of its kind.  Kills are aimed at writers, adders and
holders (inside write(), inside lock(), after add()); a lane's deadlock is
one role that stops moving; at a lane's end the supervisor takes the lock
once more, reads the counters and judges the lane with arbiter.judge_array
(:meth:`Supervisor._judge_array`).

A *travel* lane (``--travel``) is created elsewhere: a creator process (fork
child) makes the structure, pickles handles for the first actors and spares,
and leaves, before the actors start or while they unpickle; the supervisor
keeps only a view that holds nothing.  Replacements get a handle pickled by
their live peer (asked through its log), or a spare.  Nobody unlinks for the
lane: the last handle out must, and the leak check says whether it did.  The
first actor of a few travel lanes is a spawned interpreter, handed the handle
by multiprocessing.  Rules that keep the lane inside what the lifetime
contract promises are in :meth:`Supervisor._may_end` and
:meth:`Supervisor._killable`.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import multiprocessing.process
import os
import pickle
import random
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from . import board
from .actors import FRAME, ActorContext, child_main, creator_main, log_path, spawn_main, ticket_path
from .adapters import ADAPTERS, Adapter
from .arbiter import (
    ArrayActorRecord,
    ArrayLaneRecord,
    ConsumerRecord,
    LaneRecord,
    ProducerRecord,
    judge_array,
    judge_per_producer,
    judge_total_order,
)
from .board import ActorLog, LaneControl
from .config import CellConfig
from .lanes import Actor, Lane, exit_text
from .outcomes import Violation
from .schedule import LanePlan, plan_array_lane, temperament
from .watchdogs import BusyWatch, deadlock_report

TICK_S = 0.005
PROGRESS_S = 2.0
CREATOR_TIMEOUT_S = 20.0
AIM_SHARE = 0.5  # crowded lanes: share of kills aimed inside a reserve()/borrow() block
AIM_WAIT_S = 0.5  # an aimed actor not inside such a block by then is killed wherever it is
LAST_LOCK_S = 5.0  # Array lanes: the supervisor's last lock() (a dead holder's is taken within ~0.2 s)


class Supervisor:
    """Runs one cell; :meth:`run` returns its result as a dict."""

    def __init__(self, cfg: CellConfig, emit: Any):
        self.cfg = cfg
        self.emit = emit
        self.adapter: Adapter = ADAPTERS[cfg.structure]
        self.workdir = tempfile.mkdtemp(prefix=f"shmring-stress-{cfg.tag}-")
        self.kill_rng = random.Random(f"{cfg.seed}-kills")
        self.end_rng = random.Random(f"{cfg.seed}-ends")
        self.lanes: list[Lane] = []
        self.by_pid: dict[int, Actor] = {}
        self.next_id = 1
        self.next_lane = 1
        self.violations: list[Violation] = []
        self.acceptable: Counter[str] = Counter()
        self.messages = self.bytes = self.published = self.kills = self.lanes_done = 0
        self.busy = BusyWatch(cfg.busy_cpu, cfg.name)
        self.stopping = False
        self.start = time.monotonic()
        permille, _ = (int(x) for x in (cfg.env()["SHMRING_DELAY"] or "0:0").split(":"))
        self.delay_on = permille > 0
        self.creators: dict[int, Lane] = {}  # pid of a travel lane's creator -> its lane
        self.spawns_left = cfg.spawn
        self.handles: Counter[str] = Counter()  # travel lanes: where each actor's handle came from
        self.windows = 0
        self.next_request = 1
        self.travel_lanes: Counter[str] = Counter()  # shm travel lanes whose leak check was judged / cut short
        self.aimed: dict[int, tuple[Actor, float]] = {}  # actor id -> (actor, kill it anyway at)
        self.aimed_kills: Counter[str] = Counter()  # "held": landed inside a held block; "missed"

    # -- the main loop ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        skipped = self._probe()
        if skipped:
            return self._result(skipped=skipped)
        self._check_delay()
        n_lanes = self._lanes_wanted()
        next_progress = self.start + PROGRESS_S
        next_kill = self._next_kill(self.start)
        try:
            for i in range(n_lanes):
                self._new_lane(self.adapter.lane_kinds[i] if self.adapter.lane_kinds else "")
            while self.lanes:
                now = time.monotonic()
                self._reap()
                if not self.stopping and self._should_stop(now):
                    self._stop_all(now)
                for lane in list(self.lanes):
                    self._tick_lane(lane, now)
                    if lane.state == "finished":
                        self._finish_lane(lane)
                        if not self.stopping:
                            self._new_lane(lane.plan.kind)
                if now >= next_kill:
                    self._kill_random(now)
                    next_kill = self._next_kill(now)
                self._fire_aimed(now)
                self.violations += self.busy.scan(self.lanes, now)
                if now >= next_progress:
                    self._progress(now)
                    next_progress = now + PROGRESS_S
                time.sleep(TICK_S)
        finally:
            for lane in list(self.lanes):
                self._abort_lane(lane, lane.aborted or "interrupted")
                self._finish_lane(lane)
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self._result()

    def _lanes_wanted(self) -> int:
        a = self.adapter
        if a.lane_kinds:
            return len(a.lane_kinds)  # one lane of each kind, side by side
        (_, producers), (_, consumers) = self.cfg.crowd(a.crowd)
        per_p = a.max_producers or producers
        per_c = a.max_consumers or consumers
        return max(-(-producers // per_p), -(-consumers // per_c))

    @property
    def _crowded(self) -> bool:
        """Do several producers or consumers share one instance?"""
        a = self.adapter
        return a.max_producers != 1 or a.max_consumers != 1

    def _should_stop(self, now: float) -> bool:
        cfg = self.cfg
        if cfg.duration is not None and now - self.start >= cfg.duration:
            return True
        if cfg.messages is not None and self._published_total() >= cfg.messages:
            return True
        return cfg.fail_fast and bool(self.violations or self._actor_violations())

    def _stop_all(self, now: float) -> None:
        self.stopping = True
        failing = self.cfg.fail_fast and bool(self.violations or self._actor_violations())
        for lane in self.lanes:
            if failing:
                self._abort_lane(lane, "stopped early (--fail-fast)")
            elif lane.state == "running":
                self._request_end(lane)

    def _next_kill(self, now: float) -> float:
        rate = self.cfg.kill_rate
        return now + self.kill_rng.expovariate(rate) if rate > 0 else float("inf")

    def _probe(self) -> str:
        """A reason to skip the cell if this structure/flavour/backend is not built."""
        tiny = LanePlan(1, "uint8", (64,), 64, 1.0, True, 0.0)
        name = self._lane_name(0)
        try:
            owner = self.adapter.create(name, self.cfg.backend, self.cfg.sync, tiny)
        except NotImplementedError as exc:
            return f"not built: {exc}"
        self._dispose_checked(owner, name, f"{self.cfg.name} probe")
        return ""

    def _check_delay(self) -> None:
        """Delay injection must reach every layer that has windows (the actors
        are forks of this process, or spawned with its environment)."""
        if not self.delay_on:
            return
        for layer, armed in self.adapter.delay_armed().items():
            if not armed:
                detail = f"SHMRING_DELAY is set but delay injection is off in {layer}"
                self.violations.append(Violation("harness_error", self.cfg.name, detail))

    # -- lanes ----------------------------------------------------------------------------
    def _lane_name(self, lane_id: int) -> str | None:
        base = f"shmring-stress-{self.cfg.tag}-{lane_id}"
        if self.cfg.backend == "anon":
            return None
        if self.cfg.backend == "file":
            return os.path.join(self.workdir, base + ".ring")
        return base

    def _new_lane(self, kind: str = "") -> None:
        lane_id = self.next_lane
        self.next_lane += 1
        crowd = None
        if self._crowded:
            (p_lo, p_hi), (c_lo, c_hi) = self.cfg.crowd(self.adapter.crowd)
            p_max, c_max = self.adapter.max_producers or p_hi, self.adapter.max_consumers or c_hi
            crowd = ((min(p_lo, p_max), min(p_hi, p_max)), (min(c_lo, c_max), min(c_hi, c_max)))
        rng = random.Random(f"{self.cfg.seed}-lane{lane_id}")
        if kind:
            assert crowd is not None
            plan = plan_array_lane(rng, self.cfg, kind, crowd)
        else:
            plan = self.adapter.plan(rng, self.cfg, lane_id == 1, crowd)
        name = self._lane_name(lane_id)
        travel = plan.travel and self.cfg.backend in self.adapter.travels
        owner = None if travel else self.adapter.create(name, self.cfg.backend, self.cfg.sync, plan)
        lane_dir = os.path.join(self.workdir, f"lane-{lane_id}")
        os.mkdir(lane_dir)
        now = time.monotonic()
        lane = Lane(lane_id, name, plan, owner, LaneControl(os.path.join(lane_dir, "control"), True), lane_dir, now)
        lane.control.set(board.BORN_NS, time.monotonic_ns())
        self.lanes.append(lane)
        if travel:
            lane.travel = True
            if not self._create_elsewhere(lane):
                self._abort_lane(lane, "its creator failed")
                return
            now = time.monotonic()
            lane.born = now
        first, second = (True, False) if plan.producer_first else (False, True)
        count = {True: plan.producers, False: plan.consumers}
        for role, at in ((first, now), (second, now + plan.start_gap)):
            lane.starts += [(at + i * plan.stagger, role, False) for i in range(count[role])]
        lane.progress_at = now
        if travel:
            self._tick_lane(lane, now)  # the first actor unpickles while the creator leaves

    def _create_elsewhere(self, lane: Lane) -> bool:
        """A travel lane's birth: its creator process makes the structure and
        pickles handles; we take a view that holds nothing while it still
        holds its own, let it leave, and, when the plan says so, wait until
        it has left before any actor starts.  False if the creator failed.

        The creator pickles one handle per first actor, except a spawned one
        (multiprocessing pickles our view for it) and, in a relay lane, the
        second one (it gets its handle from the first), plus the plan's
        spares.  A spawned actor never shares a lane with a relay: the
        creator must have a handle in flight when it leaves."""
        where = lane.where(self.cfg.name)
        plan = lane.plan
        first, second = (True, False) if plan.producer_first else (False, True)
        spawn_role = plan.spawn_producer if self.spawns_left > 0 else None
        relay = plan.relay and spawn_role is None
        roles = [r for r in ((first,) if relay else (first, second)) if r is not spawn_role]
        out_r, out_w = os.pipe()
        go_r, go_w = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(go_w)
            creator_main(self.adapter, self.cfg, lane.name, plan, len(roles) + plan.spares, out_w, go_r)
        os.close(out_w)
        os.close(go_r)
        lane.creator_pid = pid
        lane.note(
            f"creator pid {pid} forked (plan: {'leaves first' if plan.close_first else 'races'}, "
            f"{'dies' if plan.creator_dies else 'closes'} after {plan.creator_delay * 1000:.1f} ms, "
            f"{len(roles)} + {plan.spares} handles, relay {relay}, spawn {spawn_role})"
        )
        self.creators[pid] = lane
        try:
            kind, payload = _read_frame(out_r, CREATOR_TIMEOUT_S)
            if kind != b"T":
                why = payload.decode(errors="replace") if kind == b"E" else "it sent no handles"
                self.violations.append(Violation("actor_error", where, f"creator pid {pid}: {why}"))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return False
            tickets: list[bytes] = pickle.loads(payload)
            try:
                lane.owner = self.adapter.peek(lane.name, self.cfg.backend)
            except Exception as exc:  # noqa: BLE001 - the creator still holds it: this is a finding
                self.violations.append(Violation("actor_error", where, f"no view of a ring its creator holds: {exc!r}"))
                return False
            os.write(go_w, b"g")
            lane.note("view taken, go sent")
            if lane.plan.close_first:
                kind, payload = _read_frame(out_r, CREATOR_TIMEOUT_S)
                if kind != b"L":
                    self.violations.append(Violation("actor_error", where, f"creator pid {pid} did not leave"))
                    return False
        finally:
            os.close(out_r)
            os.close(go_w)
        lane.first = dict(zip(roles, tickets, strict=False))
        lane.spares = tickets[len(roles) :]
        if spawn_role is not None:
            self.spawns_left -= 1
            lane.spawn_role = spawn_role
        return True

    def _handle_for(self, lane: Lane, producer: bool) -> tuple[str, bytes | None, Actor | str | None] | None:
        """Where a travel lane's next actor gets its handle: (source, ticket,
        sender), or None while a live peer is still pickling one for it."""
        if lane.spawn_role is producer:
            lane.spawn_role = None
            return ("spawn", None, "supervisor")  # multiprocessing pickles our view: our pending entry
        if producer in lane.first:
            return ("creator", lane.first.pop(producer), "creator")
        if lane.first:
            return None  # a relay lane's second actor: its peer is not even started
        if lane.request is not None:
            request, peer = lane.request
            if peer.producer is producer:
                return None  # asked for the other role's start
            answered = peer.log.get(board.SEND_DONE) == request or not peer.alive  # read before the file
            path = ticket_path(lane.dir, request)
            if os.path.exists(path):
                lane.request = None
                with open(path, "rb") as f:
                    ticket = f.read()
                os.unlink(path)
                return ("peer", ticket, peer)
            if not answered:
                return None
            lane.request = None  # refused (it is leaving) or died first
        else:
            peers = lane.live(not producer)
            if peers and peers[0].log.get(board.PHASE) < board.PHASE_EXITING:
                if peers[0].attached:
                    lane.request = (self.next_request, peers[0])
                    lane.note(f"{peers[0].role} {peers[0].id} asked for a handle")
                    peers[0].log.set(board.SEND_REQ, self.next_request)
                    self.next_request += 1
                return None  # (an unattached peer is asked once it has its handle)
        if lane.spares:
            return ("spare", lane.spares.pop(), "creator")
        return ("name", None, None)

    @staticmethod
    def _sender_pins(actor: Actor) -> bool:
        """Does the pending entry of ``actor``'s ticket surely keep the name
        until it unpickles?  Yes while its sender lives and cannot leave
        through an interpreter exit (where a process may stop counting its own
        pending handles): the supervisor, or a live fork actor.  The creator
        is not counted: a lane never ends before its creator is gone."""
        sender = actor.sender
        return sender == "supervisor" or (isinstance(sender, Actor) and sender.alive and sender.source != "spawn")

    @staticmethod
    def _sender_lives(actor: Actor) -> bool:
        """Is the sender of ``actor``'s ticket alive?  Its pending entry may
        keep the name as long as it lives, if the ticket is never unpickled."""
        sender = actor.sender
        return sender == "supervisor" or (isinstance(sender, Actor) and sender.alive)

    def _may_end(self, lane: Lane) -> bool:
        """May the lane's producers be stopped now?  In a travel lane a closing
        producer may be the last handle out, which unlinks the name; so not
        while its creator lives (its pending entries would keep the name past
        everyone), a start or a ticket is on its way, or an actor still has to
        unpickle a handle whose sender is gone (nothing else keeps the name)."""
        if not lane.travel:
            return True
        return not lane.creator_alive and not lane.starts and lane.request is None and self._settled(lane)

    def _settled(self, lane: Lane) -> bool:
        """Every live actor of the lane has its handle, or one whose sender
        keeps the name for it: an actor may close (and be the last out)."""
        return all(a.attached or self._sender_pins(a) for a in lane.live())

    def _killable(self, actor: Actor, now: float) -> bool:
        """May ``actor`` be SIGKILLed now?  In a travel lane: not before it has
        unpickled a handle whose sender lives (that pending entry would keep
        the name while its sender lives: it is the sender's, not a leak); not
        once it is closing (it may be the last handle out: the name goes); not
        once the lane's end is due (replacements would postpone it); and not
        a consumer while a stopped producer is closing (the producer would be
        the last handle out and unlink under the replacement)."""
        lane = actor.lane
        if not lane.travel:
            return True
        if actor.log.get(board.PHASE) >= board.PHASE_EXITING:
            return False  # closing: maybe the last handle out, its replacement would find no name
        if not actor.attached and self._sender_lives(actor):
            return False
        if lane.state == "running" and (lane.end_requested or now - lane.born >= lane.plan.lifetime):
            return False
        return not (lane.state == "stopping" and not actor.producer and lane.live(True))

    def _request_end(self, lane: Lane) -> None:
        lane.end_requested = True
        if self._may_end(lane):
            self._begin_end(lane)

    def _tick_lane(self, lane: Lane, now: float) -> None:
        for start in sorted(lane.starts):
            when, producer, stop = start
            if now >= when:
                if lane.travel and stop and (len(lane.starts) > 1 or not self._settled(lane)):
                    continue  # it closes at once: as for _may_end, not while a handle is still on its way
                source = self._handle_for(lane, producer) if lane.travel else ("open", None, None)
                if source is None:
                    continue
                lane.starts.remove(start)
                self._start_actor(lane, producer, stop, source)
        due = lane.end_requested or now - lane.born >= lane.plan.lifetime
        if lane.state == "running" and due and self._may_end(lane):
            self._begin_end(lane)
        if lane.state == "stopping" and not lane.live(True) and not any(s[1] for s in lane.starts):
            if self.adapter.producers_ever(lane.owner):
                lane.control.set(board.LANE_DONE, 1)
                lane.state = "draining"
            else:  # a consumer waits for a first producer, not for EOF: give it one that closes at once
                lane.starts.append((now, True, True))
        if lane.state == "draining" and not lane.live(False) and not lane.starts:
            # Drained: every consumer that was not SIGKILLed reached its final EOF.
            done = [
                a.exited_cleanly and a.log.get(board.PHASE) == board.PHASE_DONE
                for a in lane.actors
                if not a.producer and not a.killed
            ]
            lane.complete = bool(done) and all(done)
            lane.state = "finished"
        if lane.state != "finished":
            self._watch_progress(lane, now)
        if lane.travel and not lane.name_gone and lane.owner is not None:
            if not any(os.path.exists(p) for p in self.adapter.entries(lane.name, self.cfg.backend)):
                lane.name_gone = True
                lane.note("its name is gone")

    def _begin_end(self, lane: Lane) -> None:
        """Stop the lane's producers (or kill them, when kills are on)."""
        lane.state = "stopping"
        lane.note("lane ends")
        lane.starts = [s for s in lane.starts if not s[1]]
        now = time.monotonic()
        for actor in lane.live(True):
            if self.cfg.kill_rate > 0 and self.end_rng.random() < 0.5 and self._killable(actor, now):
                self._kill(actor)
            else:
                actor.log.set(board.STOP, 1)
                lane.note(f"{actor.role} {actor.id} told to stop")

    def _abort_lane(self, lane: Lane, why: str) -> None:
        lane.aborted = lane.aborted or why
        lane.starts.clear()
        for actor in lane.live():
            self._kill(actor, counted=False)
        lane.state = "finished"

    def _finish_lane(self, lane: Lane) -> None:
        """Judge, unlink and forget a lane whose actors are all gone."""
        where = lane.where(self.cfg.name)
        try:
            if lane.plan.kind:
                self._judge_array(lane, where)
                return
            record = LaneRecord(
                lane=where,
                producers=tuple(
                    ProducerRecord(a.id, not a.exited_cleanly, *a.log.producer_state())
                    for a in lane.actors
                    if a.producer
                ),
                consumers=tuple(
                    ConsumerRecord(a.id, not a.exited_cleanly, a.log.get(board.STATE), tuple(a.log.runs()))
                    for a in lane.actors
                    if not a.producer
                ),
                complete=lane.complete and not lane.aborted,
            )
            judge = judge_per_producer if self.adapter.order == "per_producer" else judge_total_order
            verdict = judge(record)
            if lane.aborted:  # a lane cut short: ordering and duplicates still count, its losses do not
                verdict.violations = [v for v in verdict.violations if v.outcome != "lost"]
            elif record.complete and lane.owner is not None:
                kills = sum(not a.exited_cleanly for a in lane.actors)
                left = self.adapter.leftover(lane.owner, kills)  # drained, everyone gone: nothing may be counted in it
                if left:
                    verdict.violations.append(Violation("miscounted", where, left))
            self.violations += verdict.violations
            self.acceptable += verdict.acceptable
            for actor in lane.actors:
                self._collect(actor, where)
        finally:
            self._dispose(lane, where)
            self.lanes.remove(lane)
            self.busy.forget(lane)
            self.lanes_done += 1

    def _judge_array(self, lane: Lane, where: str) -> None:
        """An Array lane's verdict: its final state (the supervisor takes the
        lock once more: the next holder after the last death), its actors'
        logs, and the rules of arbiter.judge_array."""
        owner, kind = lane.owner, lane.plan.kind
        final_died: bool | None = None
        if kind != "counter":
            try:
                with owner.lock(timeout=LAST_LOCK_S) as died:
                    final_died = died
            except TimeoutError:
                holder = self.adapter.dump(owner).get("lock holder word")
                detail = f"the lock stays taken ({holder}) after every actor of the lane is gone"
                self.violations.append(Violation("deadlock", where, detail))
        counters = 0 if kind == "seqlock" else 1 if kind == "lock" else math.prod(lane.plan.shape)
        final = tuple(owner.load(i) for i in range(counters))
        actors = []
        for a in lane.actors:
            log = a.log
            errors = tuple((at, last) for at, last, _ in log.runs()) if not a.producer else ()
            actors.append(
                ArrayActorRecord(
                    actor=a.id,
                    producer=a.producer,
                    died=not a.exited_cleanly,
                    killed=a.killed,
                    killed_at=a.killed_at,
                    reaped_at=a.reaped_at,
                    locking=log.get(board.LOCKING) != 0,
                    holding=log.get(board.HOLDING) != 0,
                    died_seen=log.get(board.DIED_SEEN),
                    done=tuple(log.get(board.DONE_BASE + i) for i in range(counters)),
                    read_errors=errors,
                )
            )
        verdict = judge_array(ArrayLaneRecord(where, kind, tuple(actors), final, final_died))
        self.violations += verdict.violations
        self.acceptable += verdict.acceptable
        for actor in lane.actors:
            self._collect(actor, where)

    def _collect(self, actor: Actor, where: str) -> None:
        log = actor.log
        if actor.producer:
            self.published += _published(actor)
        else:
            self.messages += log.get(board.COUNT)
            self.bytes += log.get(board.BYTES)
        self.acceptable["transient_eof"] += log.get(board.TRANSIENT_EOF)
        self.acceptable["transient_epipe"] += log.get(board.TRANSIENT_EPIPE)
        self.acceptable["reserve_aborted"] += log.get(board.ABORTED)
        self.windows += log.get(board.WINDOWS)
        shown = 0
        with contextlib.suppress(FileNotFoundError), open(log.events_path) as f:
            for line in f:
                event = json.loads(line)
                if event["forbidden"]:
                    shown += 1
                    detail = f"{actor.role} {actor.id}: {event['detail']}"
                    if actor.lane.travel and shown == 1:
                        detail += f"\nlane history:\n{actor.lane.story()}"
                    self.violations.append(Violation(event["outcome"], where, detail))
        more = log.get(board.VIOLATIONS) - shown
        if more > 0:
            self.violations.append(
                Violation("harness_error", where, f"{actor.role} {actor.id}: {more} more events not shown")
                if shown == 0
                else Violation(self.violations[-1].outcome, where, f"{actor.role} {actor.id}: {more} more like it")
            )
        if not actor.killed and not actor.exited_cleanly and actor.status is not None and shown == 0:
            died = exit_text(actor.status)
            self.violations.append(Violation("actor_error", where, f"{actor.role} {actor.id}: {died}"))

    def _dispose_checked(self, owner: Any, name: str | None, where: str) -> None:
        """Close and unlink an instance; whatever of it is left (its
        semaphore flavour's semaphores included) is ``leaked``."""
        paths = self.adapter.entries(name, self.cfg.backend)
        paths += semaphore_paths(paths)
        try:
            self.adapter.dispose(owner)
        except Exception as exc:  # noqa: BLE001 - report, then go on cleaning up
            self.violations.append(Violation("harness_error", where, f"dispose failed: {exc!r}"))
        for path in paths:
            if os.path.exists(path):
                self.violations.append(Violation("leaked", where, f"{path} still exists after close and unlink"))
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _dispose(self, lane: Lane, where: str) -> None:
        if not lane.travel:
            self._dispose_checked(lane.owner, lane.name, where)
        elif self.cfg.backend not in self.adapter.last_out_unlinks:
            if lane.owner is not None:
                self._dispose_checked(lane.owner, lane.name, where)  # the name outlives its handles: unlink it
        else:
            self._dispose_travelled(lane, where)
        for actor in lane.actors:
            actor.log.close()
        lane.control.close()
        shutil.rmtree(lane.dir, ignore_errors=True)

    def _dispose_travelled(self, lane: Lane, where: str) -> None:
        """Nobody unlinks a travel lane's name for it: when the lane ended the
        ordinary way (every producer closed or was killed, then the last
        consumer drained and closed), the last handle out must have removed
        it.  A lane cut short (its actors SIGKILLed) leaves the name by
        design; it is removed without a verdict."""
        table = ""
        paths = self.adapter.entries(lane.name, self.cfg.backend)
        paths += semaphore_paths(paths)
        if lane.owner is not None:
            with contextlib.suppress(Exception):
                table = "; ".join(str(e) for e in self.adapter.dump(lane.owner).get("endpoints", []))
            self.adapter.release(lane.owner)
        judged = lane.complete and not lane.aborted and not lane.creator_alive
        self.travel_lanes["judged" if judged else "cut short"] += 1
        for path in paths:
            if os.path.exists(path):
                if judged:
                    detail = (
                        f"{path} still exists after every handle of the lane was closed or died "
                        f"(the last handle out must unlink it); endpoints left: {table or 'none'}"
                    )
                    self.violations.append(Violation("leaked", where, detail))
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # -- actors -------------------------------------------------------------------------
    def _start_actor(
        self, lane: Lane, producer: bool, stop: bool, source: tuple[str, bytes | None, Actor | str | None]
    ) -> None:
        actor_id = self.next_id
        self.next_id += 1
        interleaved = self.adapter.order == "per_producer"
        log = ActorLog(log_path(lane.dir, actor_id), runs=not producer, create=True, interleaved=interleaved)
        if stop:
            log.set(board.STOP, 1)
        lane.control.set(board.CUR_PRODUCER if producer else board.CUR_CONSUMER, actor_id)
        rng = random.Random(f"{self.cfg.seed}-actor{actor_id}")
        kind, ticket, sender = source
        ctx = ActorContext(
            cfg=self.cfg,
            adapter=self.adapter,
            owner=None if lane.travel else lane.owner,  # a travel lane's actors never use an inherited copy
            name=lane.name,
            plan=lane.plan,
            actor_id=actor_id,
            producer=producer,
            seed=rng.getrandbits(63),
            temper=temperament(rng, self.cfg),
            log=log,
            control=lane.control,
            workdir=lane.dir,
            ticket=ticket,
            travel=lane.travel,
        )
        actor = Actor(actor_id, producer, lane, log, source=kind, sender=sender)
        if lane.travel:
            self.handles[kind] += 1
        sys.stdout.flush()
        if kind == "spawn":
            # The user's way to hand a ring to a fresh interpreter: pass it to a
            # spawn Process.  Pickling our view enters a pending entry of ours.
            proc = multiprocessing.get_context("spawn").Process(target=spawn_main, args=(lane.owner, ctx), daemon=True)
            proc.start()
            multiprocessing.process._children.discard(proc)  # type: ignore[attr-defined]  # _reap waits for it
            assert proc.pid is not None
            actor.proc, pid = proc, proc.pid
        else:
            pid = os.fork()
            if pid == 0:
                child_main(ctx)  # never returns
        actor.pid = pid
        who = sender.id if isinstance(sender, Actor) else sender
        lane.note(f"{actor.role} {actor.id} pid {pid} started, handle from {kind} ({who})")
        lane.actors.append(actor)
        self.by_pid[pid] = actor

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            creator_of = self.creators.pop(pid, None)
            if creator_of is not None:
                creator_of.creator_status = status
                creator_of.note(f"creator reaped: {exit_text(status)}")
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                    where = creator_of.where(self.cfg.name)
                    self.violations.append(Violation("actor_error", where, f"creator pid {pid}: {exit_text(status)}"))
                continue
            actor = self.by_pid.pop(pid, None)
            if actor is None:
                continue
            actor.status = status
            actor.proc = None
            actor.lane.note(f"{actor.role} {actor.id} reaped: {exit_text(status)}, attached {actor.attached}")
            if not actor.exited_cleanly:
                lane = actor.lane
                if actor.producer and lane.state == "running":
                    self._request_end(lane)  # a producer that failed is not replaced
                elif actor.producer and lane.state == "stopping" and not self.adapter.producers_ever(lane.owner):
                    self._abort_lane(lane, f"producer {actor.id} failed ({exit_text(status)})")  # not again and again
                elif not actor.producer:
                    self._abort_lane(lane, f"consumer {actor.id} failed ({exit_text(status)})")

    def _kill(self, actor: Actor, counted: bool = True) -> None:
        actor.log.set(board.KILLED, 1)
        actor.killed_at = time.monotonic_ns()
        with contextlib.suppress(ProcessLookupError):
            os.kill(actor.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            _, actor.status = os.waitpid(actor.pid, 0)
        actor.reaped_at = time.monotonic_ns()
        if actor.status is None:
            actor.status = -1
        self.by_pid.pop(actor.pid, None)
        actor.killed = True
        actor.lane.note(
            f"{actor.role} {actor.id} SIGKILLed, attached {actor.attached}, phase {actor.log.get(board.PHASE)}"
        )
        if counted:
            self.kills += 1

    def _kill_random(self, now: float) -> None:
        candidates = [
            a
            for lane in self.lanes
            if lane.state != "finished"
            for a in lane.live()
            if self._killable(a, now) and a.id not in self.aimed
        ]
        if not candidates:
            return
        actor = self.kill_rng.choice(candidates)
        aim = self._crowded and self.kill_rng.random() < AIM_SHARE
        if aim and (actor.producer or self.adapter.aim_at_consumers):
            # Aimed: it holds its next reserve()/borrow() block open, claim taken,
            # and dies there (_fire_aimed): a hole, or a taken and unreleased run.
            # (Array: inside write() half written, inside lock() between the
            # read and the write of the counter, or after add() before its log.)
            actor.log.set(board.HOLD, 1)
            self.aimed[actor.id] = (actor, now + AIM_WAIT_S)
            return
        self._kill_and_replace(actor, now)

    def _fire_aimed(self, now: float) -> None:
        for key, (actor, until) in list(self.aimed.items()):
            if not actor.alive or actor.lane.state == "finished":
                del self.aimed[key]
            elif actor.log.get(board.HOLDING) or now >= until:
                del self.aimed[key]
                self.aimed_kills["held" if actor.log.get(board.HOLDING) else "missed"] += 1
                self._kill_and_replace(actor, now)

    def _kill_and_replace(self, actor: Actor, now: float) -> None:
        lane = actor.lane
        self._kill(actor)
        gap = self.kill_rng.choice((0.0, self.kill_rng.uniform(0, 0.05)))
        if lane.travel and actor.log.get(board.PHASE) >= board.PHASE_EXITING:
            return  # it began to close as we chose it: perhaps the last handle out; no successor
        if actor.producer and lane.state == "running":
            lane.starts.append((now + gap, True, False))
        elif not actor.producer:
            lane.starts.append((now + gap, False, False))

    # -- watchdogs --------------------------------------------------------------------------
    def _watch_progress(self, lane: Lane, now: float) -> None:
        # Messages moved, not actors started: replacing a wedged actor is no progress.
        sig = (
            sum(a.log.get(board.COUNT) for a in lane.actors if a.producer),
            sum(a.log.get(board.COUNT) for a in lane.actors if not a.producer),
        )
        if lane.plan.kind:
            # Array lanes: readers never wait for writers, so each role that
            # has live actors must move on its own (wedged writers behind a
            # lock that nobody takes over while readers read on is a deadlock).
            if sig != lane.progress:
                moved = [x != y for x, y in zip(sig, lane.progress, strict=True)]
                lane.progress = sig
                for role, did in zip((True, False), moved, strict=True):
                    if did:
                        lane.role_progress_at[role] = now
            for role in (True, False):
                since = lane.role_progress_at.setdefault(role, now)
                if not lane.live(role):
                    lane.role_progress_at[role] = now
                elif now - since > self.cfg.deadlock_after:
                    lane.progress_at = since
                    self._deadlock(lane, now)
                    return
            return
        if sig != lane.progress:
            lane.progress, lane.progress_at = sig, now
        elif now - lane.progress_at > self.cfg.deadlock_after:
            self._deadlock(lane, now)

    def _deadlock(self, lane: Lane, now: float) -> None:
        report = deadlock_report(lane, self.adapter, now)
        self.violations.append(Violation("deadlock", lane.where(self.cfg.name), report))
        self._abort_lane(lane, "deadlock")

    # -- reporting ----------------------------------------------------------------------------
    def _live_logs(self) -> list[Actor]:
        return [a for lane in self.lanes for a in lane.actors]

    def _published_total(self) -> int:
        return self.published + sum(_published(a) for a in self._live_logs() if a.producer)

    def _actor_violations(self) -> int:
        return sum(a.log.get(board.VIOLATIONS) for a in self._live_logs())

    def _progress(self, now: float) -> None:
        running = self._live_logs()
        self.emit(
            {
                "type": "progress",
                "t": round(now - self.start, 1),
                "lanes": self.lanes_done + len(self.lanes),
                "messages": self.messages + sum(a.log.get(board.COUNT) for a in running if not a.producer),
                "bytes": self.bytes + sum(a.log.get(board.BYTES) for a in running if not a.producer),
                "kills": self.kills,
                "violations": len(self.violations) + self._actor_violations(),
            }
        )

    def _result(self, skipped: str = "") -> dict[str, Any]:
        return {
            "type": "result",
            "cell": self.cfg.name,
            "scenario": self.cfg.scenario,
            "seed": self.cfg.seed,
            "skipped": skipped,
            "elapsed": time.monotonic() - self.start,
            "lanes": self.lanes_done,
            "messages": self.messages,
            "bytes": self.bytes,
            "kills": self.kills,
            "violations": [v.to_json() for v in self.violations],
            "acceptable": dict(self.acceptable),
            "cpu_checks": self.busy.checked,
            "max_blocked_cpu": round(self.busy.highest, 4),
            "delay": self.delay_on,
            "handles": dict(self.handles),
            "travel_lanes": dict(self.travel_lanes),
            "windows": self.windows,
            "aimed_kills": dict(self.aimed_kills),
        }


def _published(actor: Actor) -> int:
    """Messages a producer surely published (Array lanes: its updates done)."""
    if actor.lane.plan.kind:
        return actor.log.get(board.COUNT)
    return actor.log.producer_state()[0]


def _read_frame(fd: int, timeout: float) -> tuple[bytes, bytes]:
    """One frame (kind, payload) from a creator; (b"", b"") on EOF or timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    need = FRAME.size
    kind = b""
    while len(buf) < need:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"", b""
        chunk = os.read(fd, need - len(buf))
        if not chunk:
            return b"", b""
        buf += chunk
        if not kind and len(buf) == FRAME.size:
            kind, size = FRAME.unpack(buf)
            buf, need = b"", size
            if size == 0:
                break
    return kind, buf


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def semaphore_paths(paths: list[str]) -> list[str]:
    """The /dev/shm files of the semaphores that the semaphore-flavour
    region at one of ``paths`` names in its header (read now, while it is
    still there)."""
    from shmring import _layout as L
    from shmring import _semaphore

    out = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                head = f.read(L.HEADER_SIZE)
        except OSError:
            continue
        sem_id = _semaphore.id_in_header(head)
        if sem_id:
            out += [f"/dev/shm/sem.{n[1:]}" for n in _semaphore.names(sem_id, _semaphore.ALL_PARTS)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cfg = CellConfig.from_json(args[0])
    signal.signal(signal.SIGTERM, _interrupt)
    supervisor = Supervisor(cfg, _emit)
    try:
        result = supervisor.run()
    except KeyboardInterrupt:
        result = supervisor._result()
        result["interrupted"] = True
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
