"""Who is attached: producer/consumer registration and liveness.

Each handle that puts (or gets) claims one entry of the header's endpoint
table, holding its pid and the process start time from /proc.  A peer is
alive while /proc/<pid>/stat exists, is not a zombie, and shows the same
start time (so a recycled pid is not mistaken for the old process).

The table is the truth.  Two per-role words beside it are hints for the C
fast path: ``*_LIVE`` counts registered endpoints (so a put notices "no
consumer left" with one load) and ``*_EVER`` records that the role was ever
taken (before that, put fills the ring and get waits, as with a pipe whose
other end is not open yet).  Slow paths confirm any hint against the table.
See docs/design.md, "Endpoints and liveness".
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from typing import Any

from . import _core
from . import _layout as L
from .errors import RoleError, ShmringError

PRODUCER = _core.ROLE_PRODUCER
CONSUMER = _core.ROLE_CONSUMER
ROLE_NAMES = {PRODUCER: "producer", CONSUMER: "consumer"}

STATE_CLAIMING = 1  # entry taken; start time being written
STATE_ACTIVE = 2

_LIVE_OFF = {PRODUCER: L.PRODUCERS_LIVE_OFF, CONSUMER: L.CONSUMERS_LIVE_OFF}
_EVER_OFF = {PRODUCER: L.PRODUCERS_EVER_OFF, CONSUMER: L.CONSUMERS_EVER_OFF}
_OWNER_OFF = {PRODUCER: L.PRODUCER_OWNER_OFF, CONSUMER: L.CONSUMER_OWNER_OFF}
# Each role's sleepers count lives on the futex of the index it waits for.
_WAITERS_OFF = {PRODUCER: L.PRODUCER_WAITERS_OFF, CONSUMER: L.CONSUMER_WAITERS_OFF}


def pack_word(pid: int, role: int, state: int) -> int:
    return (pid & 0xFFFFFFFF) | (role << 32) | (state << 40)


def unpack_word(word: int) -> tuple[int, int, int]:
    return word & 0xFFFFFFFF, (word >> 32) & 0xFF, (word >> 40) & 0xFF


def _stat_fields(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) from /proc/<pid>/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return rest[0].decode(), int(rest[19])
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int:
    fields = _stat_fields(pid)
    if fields is None:
        raise ShmringError(f"cannot read /proc/{pid}/stat")
    return fields[1]


_own: tuple[int, int] = (0, 0)  # (pid, start time) of this process, cached


def own_start_time() -> int:
    """This process's start time (re-read after a fork changes the pid)."""
    global _own
    pid = os.getpid()
    if _own[0] != pid:
        _own = (pid, process_start_time(pid))
    return _own[1]


def is_alive(pid: int, start_time: int) -> bool:
    """True if ``pid`` runs and is the process that started at ``start_time``
    (0 = unknown).  A zombie counts as dead."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return False
    state, started = fields
    if state in ("Z", "X", "x"):
        return False
    return start_time == 0 or started == start_time


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One row of the endpoint table, as ``shmring stat`` shows it."""

    slot: int
    pid: int
    role: str
    state: str
    start_time: int
    alive: bool


class EndpointTable:
    """Operations on the endpoint table of one mapping."""

    def __init__(self, buf: Any):
        self._buf = buf

    def _entry(self, slot: int) -> int:
        return L.ENDPOINTS_OFF + slot * L.ENDPOINT_SIZE

    def register(self, role: int, exclusive: bool) -> int:
        """Claim an entry for this process in ``role``; returns its slot.

        ``exclusive`` (single-producer or single-consumer) raises RoleError if
        another live endpoint holds the role.  The steps are ordered so that a
        death between any two of them leaves nothing a reaper cannot undo and
        errs, if at all, towards "someone may still be there" (see
        docs/design.md, "Endpoints and liveness").
        """
        buf, pid = self._buf, os.getpid()
        slot = self._claim(pack_word(pid, role, STATE_CLAIMING))
        if slot < 0 and self.reap():
            slot = self._claim(pack_word(pid, role, STATE_CLAIMING))
        if slot < 0:
            raise ShmringError(f"endpoint table full ({L.MAX_ENDPOINTS} attached handles)")
        off = self._entry(slot)
        token = secrets.randbits(64) | 1  # never 0, which means "no owner"
        _core.store64(buf, off + L.ENDPOINT_START, own_start_time())
        _core.store64(buf, off + L.ENDPOINT_TOKEN, token)
        _core.store32(buf, _EVER_OFF[role], 1)
        if exclusive:
            try:
                self._take_ownership(role, token)
            except BaseException:
                _core.store64(buf, off + L.ENDPOINT_WORD, 0)
                raise
            # Any sleeper counted on this role's futex was a predecessor that
            # died asleep (we hold the role alone): forget it, or every
            # publish would pay a futex_wake system call forever.
            _core.store32(buf, _WAITERS_OFF[role], 0)
        _core.fetch_add32(buf, _LIVE_OFF[role], 1)
        # SYNC POINT (release, in store64): start time and token above are
        # visible to whoever acquire-loads the ACTIVE word.
        _core.store64(buf, off + L.ENDPOINT_WORD, pack_word(pid, role, STATE_ACTIVE))
        return slot

    def _claim(self, word: int) -> int:
        for slot in range(L.MAX_ENDPOINTS):
            if _core.cas64(self._buf, self._entry(slot) + L.ENDPOINT_WORD, 0, word) == 0:
                return slot
        return -1

    def _take_ownership(self, role: int, token: int) -> None:
        """CAS the role's owner word from 0 to our token.  Tokens are random
        per registration, so an owner word can never be mistaken for ours."""
        owner_off = _OWNER_OFF[role]
        for _ in range(4):
            seen = _core.cas64(self._buf, owner_off, 0, token)
            if seen == 0:
                return
            if not self._token_live(seen, role):
                _core.cas64(self._buf, owner_off, seen, 0)  # stale: its holder died or left
                continue
            break
        raise RoleError(
            f"this ring already has a live {ROLE_NAMES[role]}; create it with "
            f"multi_{ROLE_NAMES[role]}=True to have several"
        )

    def _token_live(self, token: int, role: int) -> bool:
        """True if a live entry of ``role`` holds ``token`` (dead ones met are reaped)."""
        for slot, word, start, tok in self._rows():
            if tok == token and unpack_word(word)[1] == role:
                if self._entry_alive(word, start):
                    return True
                self._reap_entry(slot, word, start, tok)  # dead, whoever frees it
                return False
        return False

    def unregister(self, slot: int, role: int) -> None:
        """Give up the role (owner word first), then free our entry."""
        off = self._entry(slot)
        token = _core.load64(self._buf, off + L.ENDPOINT_TOKEN)
        _core.cas64(self._buf, _OWNER_OFF[role], token, 0)
        word = _core.load64(self._buf, off + L.ENDPOINT_WORD)
        if word != 0 and _core.cas64(self._buf, off + L.ENDPOINT_WORD, word, 0) == word:
            if unpack_word(word)[2] == STATE_ACTIVE:
                self._decrement_hint(role)

    def _decrement_hint(self, role: int) -> None:
        off = _LIVE_OFF[role]
        while True:
            cur = _core.load32(self._buf, off)
            if cur == 0 or _core.cas32(self._buf, off, cur, cur - 1) == cur:
                return

    def _rows(self) -> list[tuple[int, int, int, int]]:
        """(slot, word, start time, token) of every taken entry: one core call."""
        words = _core.load64_many(self._buf, L.ENDPOINTS_OFF, L.MAX_ENDPOINTS * L.ENDPOINT_SIZE // 8)
        per = L.ENDPOINT_SIZE // 8
        return [
            (
                slot,
                words[slot * per],
                words[slot * per + L.ENDPOINT_START // 8],
                words[slot * per + L.ENDPOINT_TOKEN // 8],
            )
            for slot in range(L.MAX_ENDPOINTS)
            if words[slot * per] != 0
        ]

    @staticmethod
    def _entry_alive(word: int, start: int) -> bool:
        pid, _, _ = unpack_word(word)
        if pid == os.getpid():
            # Ours, unless a process that had our pid before died registered:
            # its start time differs (0 = still being written: ours).
            return start in (0, own_start_time())
        return is_alive(pid, start)

    def _reap_entry(self, slot: int, word: int, start: int, token: int) -> bool:
        """Free ``slot`` if it still holds ``word`` and that process is dead.
        False when alive, or when another reaper freed it first."""
        if self._entry_alive(word, start):
            return False
        # CAS on the whole word: if the entry was freed and reclaimed since we
        # read it, the word differs and we leave the new owner alone.
        if _core.cas64(self._buf, self._entry(slot) + L.ENDPOINT_WORD, word, 0) != word:
            return False
        _, role, state = unpack_word(word)
        if role in _OWNER_OFF:
            _core.cas64(self._buf, _OWNER_OFF[role], token, 0)
            if state == STATE_ACTIVE:  # the hint is counted just before ACTIVE
                self._decrement_hint(role)
        return True

    def reap(self) -> int:
        """Free the entries of dead processes; returns how many."""
        if os.environ.get("SHMRING_BROKEN") == "ignore_dead_producer":
            return 0  # deliberately broken variant for the stress harness's own tests
        return sum(self._reap_entry(*row) for row in self._rows())

    def live(self, role: int) -> int:
        """Live endpoints in ``role``; dead ones met on the way are reaped."""
        broken = os.environ.get("SHMRING_BROKEN") == "ignore_dead_producer"
        n = 0
        for row in self._rows():
            if unpack_word(row[1])[1] != role:
                continue
            if broken or self._entry_alive(row[1], row[2]):
                n += 1
            else:
                self._reap_entry(*row)  # dead, whoever frees it
        return n

    def ever(self, role: int) -> bool:
        return _core.load32(self._buf, _EVER_OFF[role]) != 0

    def live_hint(self, role: int) -> int:
        return int(_core.load32(self._buf, _LIVE_OFF[role]))

    def entries(self) -> list[Endpoint]:
        out = []
        for slot, word, start, _ in self._rows():
            pid, role, state = unpack_word(word)
            out.append(
                Endpoint(
                    slot=slot,
                    pid=pid,
                    role=ROLE_NAMES.get(role, f"role {role}"),
                    state={STATE_CLAIMING: "claiming", STATE_ACTIVE: "active"}.get(state, f"state {state}"),
                    start_time=start,
                    alive=is_alive(pid, start),
                )
            )
        return out
