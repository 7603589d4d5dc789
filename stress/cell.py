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
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from . import board
from .actors import ActorContext, child_main, log_path
from .adapters import ADAPTERS, Adapter
from .arbiter import ConsumerRecord, LaneRecord, ProducerRecord, judge_total_order
from .board import ActorLog, LaneControl
from .config import CellConfig
from .lanes import Actor, Lane, exit_text
from .outcomes import Violation
from .schedule import LanePlan, plan_lane, temperament
from .watchdogs import BusyWatch, deadlock_report

TICK_S = 0.005
PROGRESS_S = 2.0


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

    # -- the main loop ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        skipped = self._probe()
        if skipped:
            return self._result(skipped=skipped)
        n_lanes = self._lanes_wanted()
        next_progress = self.start + PROGRESS_S
        next_kill = self._next_kill(self.start)
        try:
            for _ in range(n_lanes):
                self._new_lane()
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
                            self._new_lane()
                if now >= next_kill:
                    self._kill_random(now)
                    next_kill = self._next_kill(now)
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
        a, cfg = self.adapter, self.cfg
        per_p = a.max_producers or cfg.producers
        per_c = a.max_consumers or cfg.consumers
        return max(-(-cfg.producers // per_p), -(-cfg.consumers // per_c))

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
                self._begin_end(lane)

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

    # -- lanes ----------------------------------------------------------------------------
    def _lane_name(self, lane_id: int) -> str | None:
        base = f"shmring-stress-{self.cfg.tag}-{lane_id}"
        if self.cfg.backend == "anon":
            return None
        if self.cfg.backend == "file":
            return os.path.join(self.workdir, base + ".ring")
        return base

    def _new_lane(self) -> None:
        lane_id = self.next_lane
        self.next_lane += 1
        plan = plan_lane(random.Random(f"{self.cfg.seed}-lane{lane_id}"), self.cfg)
        name = self._lane_name(lane_id)
        owner = self.adapter.create(name, self.cfg.backend, self.cfg.sync, plan)
        lane_dir = os.path.join(self.workdir, f"lane-{lane_id}")
        os.mkdir(lane_dir)
        now = time.monotonic()
        lane = Lane(lane_id, name, plan, owner, LaneControl(os.path.join(lane_dir, "control"), True), lane_dir, now)
        first, second = (True, False) if plan.producer_first else (False, True)
        lane.starts += [(now, first, False), (now + plan.start_gap, second, False)]
        lane.progress_at = now
        self.lanes.append(lane)

    def _tick_lane(self, lane: Lane, now: float) -> None:
        for start in sorted(lane.starts):
            when, producer, stop = start
            if now >= when:
                lane.starts.remove(start)
                self._start_actor(lane, producer, stop)
        if lane.state == "running" and now - lane.born >= lane.plan.lifetime:
            self._begin_end(lane)
        if lane.state == "stopping" and not lane.live(True) and not any(s[1] for s in lane.starts):
            if self.adapter.producers_ever(lane.owner):
                lane.control.set(board.LANE_DONE, 1)
                lane.state = "draining"
            else:  # a consumer waits for a first producer, not for EOF: give it one that closes at once
                lane.starts.append((now, True, True))
        if lane.state == "draining" and not lane.live(False) and not lane.starts:
            last = [a for a in lane.actors if not a.producer][-1]
            lane.complete = last.exited_cleanly and last.log.get(board.PHASE) == board.PHASE_DONE
            lane.state = "finished"
        if lane.state != "finished":
            self._watch_progress(lane, now)

    def _begin_end(self, lane: Lane) -> None:
        """Stop the lane's producers (or kill them, when kills are on)."""
        lane.state = "stopping"
        lane.starts = [s for s in lane.starts if not s[1]]
        for actor in lane.live(True):
            if self.cfg.kill_rate > 0 and self.end_rng.random() < 0.5:
                self._kill(actor)
            else:
                actor.log.set(board.STOP, 1)

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
            verdict = judge_total_order(record)
            if lane.aborted:  # a lane cut short: ordering and duplicates still count, its losses do not
                verdict.violations = [v for v in verdict.violations if v.outcome != "lost"]
            self.violations += verdict.violations
            self.acceptable += verdict.acceptable
            for actor in lane.actors:
                self._collect(actor, where)
        finally:
            self._dispose(lane, where)
        self.lanes.remove(lane)
        self.busy.forget(lane)
        self.lanes_done += 1

    def _collect(self, actor: Actor, where: str) -> None:
        log = actor.log
        if actor.producer:
            self.published += log.producer_state()[0]
        else:
            self.messages += log.get(board.COUNT)
            self.bytes += log.get(board.BYTES)
        self.acceptable["transient_eof"] += log.get(board.TRANSIENT_EOF)
        self.acceptable["transient_epipe"] += log.get(board.TRANSIENT_EPIPE)
        self.acceptable["reserve_aborted"] += log.get(board.ABORTED)
        shown = 0
        with contextlib.suppress(FileNotFoundError), open(log.events_path) as f:
            for line in f:
                event = json.loads(line)
                if event["forbidden"]:
                    shown += 1
                    detail = f"{actor.role} {actor.id}: {event['detail']}"
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
        """Close and unlink an instance; whatever of it is left is ``leaked``."""
        try:
            self.adapter.dispose(owner)
        except Exception as exc:  # noqa: BLE001 - report, then go on cleaning up
            self.violations.append(Violation("harness_error", where, f"dispose failed: {exc!r}"))
        for path in self.adapter.entries(name, self.cfg.backend):
            if os.path.exists(path):
                self.violations.append(Violation("leaked", where, f"{path} still exists after close and unlink"))
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _dispose(self, lane: Lane, where: str) -> None:
        self._dispose_checked(lane.owner, lane.name, where)
        for actor in lane.actors:
            actor.log.close()
        lane.control.close()
        shutil.rmtree(lane.dir, ignore_errors=True)

    # -- actors -------------------------------------------------------------------------
    def _start_actor(self, lane: Lane, producer: bool, stop: bool) -> None:
        actor_id = self.next_id
        self.next_id += 1
        log = ActorLog(log_path(lane.dir, actor_id), runs=not producer, create=True)
        if stop:
            log.set(board.STOP, 1)
        lane.control.set(board.CUR_PRODUCER if producer else board.CUR_CONSUMER, actor_id)
        rng = random.Random(f"{self.cfg.seed}-actor{actor_id}")
        ctx = ActorContext(
            cfg=self.cfg,
            adapter=self.adapter,
            owner=lane.owner,
            name=lane.name,
            plan=lane.plan,
            actor_id=actor_id,
            producer=producer,
            seed=rng.getrandbits(63),
            temper=temperament(rng, self.cfg),
            log=log,
            control=lane.control,
            workdir=lane.dir,
        )
        actor = Actor(actor_id, producer, lane, log)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child_main(ctx)  # never returns
        actor.pid = pid
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
            actor = self.by_pid.pop(pid, None)
            if actor is None:
                continue
            actor.status = status
            if not actor.exited_cleanly:
                lane = actor.lane
                if actor.producer and lane.state == "running":
                    self._begin_end(lane)  # a producer that failed is not replaced
                elif not actor.producer:
                    self._abort_lane(lane, f"consumer {actor.id} failed ({exit_text(status)})")

    def _kill(self, actor: Actor, counted: bool = True) -> None:
        actor.log.set(board.KILLED, 1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(actor.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            _, actor.status = os.waitpid(actor.pid, 0)
        if actor.status is None:
            actor.status = -1
        self.by_pid.pop(actor.pid, None)
        actor.killed = True
        if counted:
            self.kills += 1

    def _kill_random(self, now: float) -> None:
        candidates = [a for lane in self.lanes if lane.state != "finished" for a in lane.live()]
        if not candidates:
            return
        actor = self.kill_rng.choice(candidates)
        lane = actor.lane
        self._kill(actor)
        gap = self.kill_rng.choice((0.0, self.kill_rng.uniform(0, 0.05)))
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
        return self.published + sum(a.log.producer_state()[0] for a in self._live_logs() if a.producer)

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
        }


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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
