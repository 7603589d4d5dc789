"""The outcomes the arbiter can report, each by name (jcstress style).

A *forbidden* outcome is a bug in the structure under test (or, for
``harness_error``, in this harness): any one of them fails the run.  An
*acceptable* outcome is something a concurrent run may legitimately show; it
is counted and printed so a reader sees how often the interesting windows
were hit, and it never fails a run.  docs/stress.md explains each rule.
"""

from __future__ import annotations

import dataclasses

FORBIDDEN: dict[str, str] = {
    "lost": "a message its producer had published was never delivered (and no acceptable outcome covers it)",
    "duplicated": "a message was delivered more than once",
    "reordered": "messages of one producer (or of one lane, for single-producer structures) arrived out of order",
    "corrupted": (
        "a delivered message fails its checks: magic, length, trailer or checksum of the payload (queue: also "
        "its type, dtype, shape, plain values or writability, or a record that does not even decode)"
    ),
    "torn": (
        "an Array read() returned a copy that mixes two write()s (not one uniform value), or a write() found "
        "such data while the writer of its newer part lived (two writers at once)"
    ),
    "stale_read": "an Array read() returned an older version than one the same reader had already read",
    "spurious_read_error": (
        "an Array read() raised 'died part-way' though no writer had died inside write() since the reader's "
        "last good copy"
    ),
    "miscounted": (
        "an Array counter's total is not what its actors logged (give or take the updates SIGKILLed actors "
        "had in flight), or a counter went down; a Queue drained and left by all still counts messages "
        "(qsize) or admissions (maxsize); a drained Ring's or Queue's statistics() show a fill, or messages in "
        "and out that differ by more than the actors SIGKILLed"
    ),
    "lock_broken": (
        "two holders inside an Array's lock()/write() at once: a lost update of the counter incremented "
        "under the lock, a live holder's id in the owner word, or the counter seen going down"
    ),
    "holder_died_missed": "the next holder after one SIGKILLed inside an Array's lock()/write() saw holder_died False",
    "spurious_holder_died": "an Array's lock()/write() said holder_died when no holder had died inside",
    "phantom": "a message was delivered that no producer published (an aborted reserve, or an unknown sequence)",
    "deadlock": "no progress for --deadlock-after seconds while work was pending (the header and endpoints are dumped)",
    "leaked": "a /dev/shm entry or ring file of the run still exists after its structure was closed",
    "busy_wait": "a process blocked in a put/get used more CPU than --busy-cpu allows",
    "spurious_eof": "get raised EOFError while a registered producer was alive and not closing",
    "spurious_epipe": "put raised BrokenPipeError while a registered consumer was alive and not closing",
    "actor_error": "a producer or consumer raised an exception the contract does not allow",
    "harness_error": "the harness itself failed (a bug here, not necessarily in shmring)",
}

ACCEPTABLE: dict[str, str] = {
    "in_flight_put": (
        "a producer SIGKILLed inside a put/put_many/reserve: the messages of that call may be missing, "
        "but the delivered ones are a prefix of the call and in order (mpmc: the holes it left)"
    ),
    "in_flight_take": (
        "a consumer SIGKILLed inside a take of at most B items: up to B messages that follow its last "
        "logged message in lane order may be missing (it took them but never logged them), as a prefix "
        "(mpmc: at most B, each after the last message of its producer that the consumer logged)"
    ),
    "transient_eof": (
        "EOFError while no producer was registered: between a killed producer and its replacement, "
        "or between the last producer's close and the end of its lane (the consumer retries)"
    ),
    "transient_epipe": "BrokenPipeError between a killed consumer and its replacement",
    "reserve_aborted": (
        "a reserve() block that raised was never published (queue: a put of a message larger than the queue "
        "raised ValueError); counted; delivering it is 'phantom'"
    ),
    "in_flight_update": (
        "Array: an adder (or lock holder) SIGKILLed with an update in flight: it landed or not, and the "
        "counter's total matches only with that choice"
    ),
    "holder_died": "Array: a lock()/write() took the lock over from a holder that died inside (holder_died=True)",
    "died_part_way": "Array: read() raised 'died part-way' after a writer was SIGKILLed inside write(); it retries",
}


@dataclasses.dataclass(frozen=True)
class Violation:
    """One forbidden outcome, where it happened and what was seen."""

    outcome: str
    where: str
    detail: str

    def __post_init__(self) -> None:
        if self.outcome not in FORBIDDEN:
            raise ValueError(f"unknown forbidden outcome {self.outcome!r}")

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Violation:
        return cls(data["outcome"], data["where"], data["detail"])

    def __str__(self) -> str:
        return f"{self.outcome} [{self.where}]: {self.detail}"
