"""The supervisor's picture of a cell: its lanes and their actors."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

from . import board
from .board import ActorLog, LaneControl
from .schedule import LanePlan


@dataclasses.dataclass(eq=False)
class Actor:
    """One producer or consumer process (a fork child of the supervisor, or
    a spawned interpreter)."""

    id: int
    producer: bool
    lane: Lane
    log: ActorLog
    pid: int = 0
    killed: bool = False  # SIGKILLed by the kill schedule (or to end its lane)
    status: int | None = None  # waitpid status once reaped
    # Travel lanes: where its handle came from ("creator", "peer", "spare",
    # "name", "spawn"; "open" elsewhere) and who pickled it: "creator",
    # "supervisor" or the peer Actor (None: attached by name).
    source: str = "open"
    sender: Actor | str | None = None
    proc: Any = None  # the multiprocessing.Process of a spawned actor
    killed_at: int = 0  # CLOCK_MONOTONIC ns just before its SIGKILL
    reaped_at: int = 0  # ns once waitpid saw it dead

    @property
    def attached(self) -> bool:
        """It has its handle (a pickled one is unpickled by now)."""
        return self.log.get(board.ATTACHED) != 0

    @property
    def alive(self) -> bool:
        return self.status is None

    @property
    def role(self) -> str:
        return "producer" if self.producer else "consumer"

    @property
    def exited_cleanly(self) -> bool:
        return self.status is not None and os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0


@dataclasses.dataclass(eq=False)
class Lane:
    """One structure instance and the actors that used it, in the order they started."""

    id: int
    name: str | None
    plan: LanePlan
    owner: Any  # the supervisor's handle: it created the instance and will unlink it
    control: LaneControl
    dir: str  # the actors' logs
    born: float
    actors: list[Actor] = dataclasses.field(default_factory=list)
    starts: list[tuple[float, bool, bool]] = dataclasses.field(default_factory=list)  # (when, producer, stop at once)
    state: str = "running"  # running -> stopping -> draining -> finished
    complete: bool = False  # drained to the final EOF
    aborted: str = ""  # why it was cut short (its verdict then skips "lost")
    progress: tuple[int, int] = (-1, -1)  # messages published, delivered
    progress_at: float = 0.0  # when they last moved
    role_progress_at: dict[bool, float] = dataclasses.field(default_factory=dict)  # Array lanes: per role
    end_requested: bool = False  # end it as soon as it may (travel lanes wait for handles in flight)
    # Travel lanes (see cell.py): no handle in the supervisor, a creator process, tickets.
    travel: bool = False
    creator_pid: int = 0
    creator_status: int | None = None
    first: dict[bool, bytes] = dataclasses.field(default_factory=dict)  # the creator's tickets for the first actors
    spares: list[bytes] = dataclasses.field(default_factory=list)  # more of them (their sender is gone by then)
    spawn_role: bool | None = None  # the first producer (True) or consumer (False) is spawned
    request: tuple[int, Actor] | None = None  # a ticket asked of a peer: (request id, peer)
    history: list[tuple[float, str]] = dataclasses.field(default_factory=list)  # travel lanes: what happened when
    name_gone: bool = False  # its name was seen gone (noted in the history)

    def note(self, what: str) -> None:
        if self.travel:
            self.history.append((time.monotonic(), what))

    def story(self) -> str:
        """The travel lane's history, for a report."""
        shown = self.history if len(self.history) <= 40 else [*self.history[:30], (0.0, "..."), *self.history[-9:]]
        return "\n".join(f"  {t - self.born:+8.4f} s  {what}" if t else "  ..." for t, what in shown)

    @property
    def creator_alive(self) -> bool:
        return self.creator_pid != 0 and self.creator_status is None

    def live(self, producer: bool | None = None) -> list[Actor]:
        return [a for a in self.actors if a.alive and (producer is None or a.producer == producer)]

    def stall_peers(self, actor: Actor) -> list[Actor]:
        """Who should block while ``actor`` stalls: its peers of the other
        role; in an Array lane, whose writers and holders stall holding the
        lock, the others waiting for it (and a seqlock lane's readers, which
        retry with a backoff while the write is under way)."""
        if self.plan.kind:
            if not actor.producer:
                return []
            return [a for a in self.live() if a is not actor and (a.producer or self.plan.kind == "seqlock")]
        return self.live(not actor.producer)

    def where(self, cell: str) -> str:
        return f"{cell} lane {self.id}"


def exit_text(status: int) -> str:
    """A waitpid status in words."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)} ({signal.Signals(os.WTERMSIG(status)).name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"
