"""The supervisor's picture of a cell: its lanes and their actors."""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

from .board import ActorLog, LaneControl
from .schedule import LanePlan


@dataclasses.dataclass(eq=False)
class Actor:
    """One producer or consumer process (a fork child of the supervisor)."""

    id: int
    producer: bool
    lane: Lane
    log: ActorLog
    pid: int = 0
    killed: bool = False  # SIGKILLed by the kill schedule (or to end its lane)
    status: int | None = None  # waitpid status once reaped

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

    def live(self, producer: bool | None = None) -> list[Actor]:
        return [a for a in self.actors if a.alive and (producer is None or a.producer == producer)]

    def where(self, cell: str) -> str:
        return f"{cell} lane {self.id}"


def exit_text(status: int) -> str:
    """A waitpid status in words."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)} ({signal.Signals(os.WTERMSIG(status)).name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"
