"""Who is attached: the endpoint table, liveness, and who may unlink.

Every open handle holds a HOLDER entry of the header's endpoint table; a
handle that puts (or gets) holds a PRODUCER (CONSUMER) entry too; a handle
pickled and not yet unpickled is a PENDING entry of its sender.  An entry's
word carries its process's full identity (pid and start time from /proc), so
one CAS claims an entry that every peer can judge at once: a process is alive
while /proc/<pid>/stat exists, is not a zombie and shows the same start time
(a recycled pid is not mistaken for the old process).

The table is the truth.  Two per-role words beside it are hints for the C
fast path: ``*_LIVE`` counts registered producers (consumers), so a put
notices "no consumer left" with one load, and ``*_EVER`` records that the
role was ever taken (before that, put fills the ring and get waits, as with
a pipe whose other end is not open yet).  Slow paths confirm any hint
against the table.  See docs/design.md, "Endpoints and liveness".
"""

from __future__ import annotations

import dataclasses
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import _core
from . import _layout as L
from .errors import RoleError, ShmringError

PRODUCER = _core.ROLE_PRODUCER  # 1
CONSUMER = _core.ROLE_CONSUMER  # 2
HOLDER = 3  # an open handle: keeps the name alive
PENDING = 4  # a pickled handle in flight, entered by its sender
ROLE_NAMES = {PRODUCER: "producer", CONSUMER: "consumer", HOLDER: "holder", PENDING: "pending"}

STATE_CLAIMING = 1  # entry taken, token being written
STATE_ACTIVE = 2
STATE_FREEING = 3  # being freed: token and owner word are cleared before the entry reads 0
STATE_NAMES = {STATE_CLAIMING: "claiming", STATE_ACTIVE: "active", STATE_FREEING: "freeing"}

_LIVE_OFF = {PRODUCER: L.PRODUCERS_LIVE_OFF, CONSUMER: L.CONSUMERS_LIVE_OFF}
_EVER_OFF = {PRODUCER: L.PRODUCERS_EVER_OFF, CONSUMER: L.CONSUMERS_EVER_OFF}
_OWNER_OFF = {PRODUCER: L.PRODUCER_OWNER_OFF, CONSUMER: L.CONSUMER_OWNER_OFF}
# Each role's sleepers count lives beside the futex of the index it waits for.
_WAITERS_OFF = {PRODUCER: L.PRODUCER_WAITERS_OFF, CONSUMER: L.CONSUMER_WAITERS_OFF}

_PID_MASK = (1 << L.WORD_PID_BITS) - 1
_ROLE_MASK = (1 << L.WORD_ROLE_BITS) - 1
_STATE_MASK = (1 << L.WORD_STATE_BITS) - 1
_START_MASK = (1 << (64 - L.WORD_START_SHIFT)) - 1


def pack_word(pid: int, role: int, state: int, start: int) -> int:
    """An entry word: pid, role, state and start time (modulo 2**37 ticks)."""
    if not 0 < pid <= _PID_MASK:
        raise ShmringError(f"pid {pid} does not fit the endpoint table")
    return pid | role << L.WORD_ROLE_SHIFT | state << L.WORD_STATE_SHIFT | (start & _START_MASK) << L.WORD_START_SHIFT


def unpack_word(word: int) -> tuple[int, int, int, int]:
    """(pid, role, state, start time modulo 2**37) of an entry word."""
    return (
        word & _PID_MASK,
        (word >> L.WORD_ROLE_SHIFT) & _ROLE_MASK,
        (word >> L.WORD_STATE_SHIFT) & _STATE_MASK,
        word >> L.WORD_START_SHIFT,
    )


def _with_state(word: int, state: int) -> int:
    return (word & ~(_STATE_MASK << L.WORD_STATE_SHIFT)) | state << L.WORD_STATE_SHIFT


# -- test hooks: windows between the steps of every transition -----------------------
# ``pause`` is called at each named point; tests set it (in a child process) to
# hold a registrant inside a window while peers scan.  SHMRING_DELAY
# ("PERMILLE:MAX_US", as the C core reads it) sleeps at random points: the
# stress harness's delay injection.
pause: Callable[[str], None] | None = None


def _delay_from_env() -> tuple[float, float]:
    try:
        permille, max_us = (int(v) for v in os.environ.get("SHMRING_DELAY", "").split(":"))
    except ValueError:
        return 0.0, 0.0
    return min(max(permille, 0), 1000) / 1000, min(max(max_us, 0), 1_000_000) / 1e6


_DELAY_P, _DELAY_MAX_S = _delay_from_env()


def _window(point: str) -> None:
    if pause is not None:
        pause(point)
    if _DELAY_P and random.random() < _DELAY_P:
        time.sleep(random.random() * _DELAY_MAX_S)


# -- liveness ------------------------------------------------------------------------
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
    (compared modulo 2**37 ticks; 0 = unknown).  A zombie counts as dead."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return False
    state, started = fields
    if state in ("Z", "X", "x"):
        return False
    return start_time == 0 or (started & _START_MASK) == (start_time & _START_MASK)


def word_alive(word: int) -> bool:
    """Is the process named by an entry (or remover) word alive?"""
    pid, _, _, start = unpack_word(word)
    if start == 0:
        return False  # every word we write carries a real start time: this one is corrupt
    if pid == os.getpid():
        # Ours, unless a dead process that had our pid before wrote it: its
        # start time differs.
        return start == own_start_time() & _START_MASK
    return is_alive(pid, start)


def own_identity(role: int = 0, state: int = 0) -> int:
    return pack_word(os.getpid(), role, state, own_start_time())


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
    """Operations on the endpoint table of one mapping.

    Every transition of an entry is a CAS on the exact word read:
    ``0 → CLAIMING`` (claim), ``CLAIMING → ACTIVE`` (publish),
    ``CLAIMING/ACTIVE → FREEING`` (leave, reap, or a pending handle
    received: one winner), ``FREEING → 0`` after the token and the owner
    word were cleared by CAS on their exact values.  So a newcomer always
    finds a zeroed token in the entry it claims, and no one acting on a word
    it read earlier can touch an entry that was freed and claimed since.
    """

    def __init__(self, buf: Any):
        self._buf = buf

    @staticmethod
    def _entry(slot: int) -> int:
        return L.ENDPOINTS_OFF + slot * L.ENDPOINT_SIZE

    # -- joining ---------------------------------------------------------------------
    def register(self, role: int, exclusive: bool = False, token: int = 0) -> int:
        """Claim an entry for this process in ``role``; returns its slot.

        ``exclusive`` (single-producer or single-consumer) raises RoleError if
        another live endpoint holds the role.  ``token`` names the entry
        (a fresh random one by default).  A death between any two steps
        leaves an entry that names a dead process, which any peer frees.
        """
        word = own_identity(role, STATE_CLAIMING)
        slot = self._claim(word)
        if slot < 0 and self.reap():
            slot = self._claim(word)
        if slot < 0:
            raise ShmringError(f"endpoint table full ({L.MAX_ENDPOINTS} entries of live processes)")
        _window("claimed")
        off = self._entry(slot)
        token = token or secrets.randbits(64) | 1  # never 0, which means "no owner"
        _core.store64(self._buf, off + L.ENDPOINT_TOKEN, token)
        # A dead predecessor's announcement may still be here; until this
        # store, it only makes survivors wait for us (the safe direction).
        _core.store64(self._buf, off + L.ENDPOINT_CLAIM_START, L.NO_CLAIM)
        _window("token")
        if role in _LIVE_OFF:
            _core.store32(self._buf, _EVER_OFF[role], 1)
            # Counted just before ACTIVE: a death in between leaves the hint
            # one too high, the safe direction (slow paths ask the table).
            _core.fetch_add32(self._buf, _LIVE_OFF[role], 1)
            _window("counted")
        active = _with_state(word, STATE_ACTIVE)
        # SYNC POINT (seq_cst CAS): the token above is visible to whoever
        # acquire-loads the ACTIVE word.
        if _core.cas64(self._buf, off + L.ENDPOINT_WORD, word, active) != word:
            raise ShmringError("our endpoint entry was changed under us: the header is corrupt")
        _window("active")
        if exclusive:
            try:
                self._take_ownership(role, token)
            except BaseException:
                self._free(slot, active, token)
                raise
            _window("owned")
            self._forget_sleepers(role)
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
            f"multi_{ROLE_NAMES[role]}=True to have several, or wait for it to close"
        )

    def _token_live(self, token: int, role: int) -> bool:
        """True if a live ACTIVE entry of ``role`` holds ``token``.

        Only ACTIVE entries count: their token was written before they became
        ACTIVE, so it is theirs (a CLAIMING entry's may not be written yet)."""
        for slot, word, tok in self._rows():
            _, r, state, _ = unpack_word(word)
            if tok == token and r == role and state == STATE_ACTIVE:
                if word_alive(word):
                    return True
                self._reap(slot, word, tok)  # dead, whoever frees it
                return False
        return False

    def _forget_sleepers(self, role: int) -> None:
        """Holding the role alone, start a new sleeper epoch with no sleepers.

        A predecessor SIGKILLed asleep would otherwise leave its count up, and
        every publish would pay a futex_wake system call; a predecessor's
        thread that leaves its wait after this carries the old epoch, and the
        core drops its decrement (see _atomic.h, waiters_leave)."""
        off = _WAITERS_OFF[role]
        while True:
            cur = _core.load32(self._buf, off)
            new = (((cur >> 16) + 1) & 0xFFFF) << 16
            if _core.cas32(self._buf, off, cur, new) == cur:
                return

    # -- leaving -----------------------------------------------------------------------
    def unregister(self, slot: int) -> None:
        """Give up our entry (and the role it owns)."""
        off = self._entry(slot)
        word = _core.load64(self._buf, off + L.ENDPOINT_WORD)
        token = _core.load64(self._buf, off + L.ENDPOINT_TOKEN)
        if word != 0 and word_alive(word):  # ours, unless a peer freed it (corrupt or reaped)
            self._free(slot, word, token)

    def _free(self, slot: int, word: int, token: int) -> bool:
        """Free the entry at ``slot`` that was seen holding ``word`` and
        ``token``; False when someone else changed it first."""
        off = self._entry(slot)
        _, role, state, _ = unpack_word(word)
        if state != STATE_FREEING:
            freeing = _with_state(word, STATE_FREEING)
            if _core.cas64(self._buf, off + L.ENDPOINT_WORD, word, freeing) != word:
                return False
            # We alone moved it out of CLAIMING/ACTIVE: the hint was counted
            # only for ACTIVE entries (just before ACTIVE, see register).
            if state == STATE_ACTIVE and role in _LIVE_OFF:
                self._decrement_hint(role)
            word = freeing
        _window("freeing")
        if role in _OWNER_OFF:
            _core.cas64(self._buf, _OWNER_OFF[role], token, 0)  # only if it still names this entry
        _core.cas64(self._buf, off + L.ENDPOINT_TOKEN, token, 0)
        _window("cleared")
        return _core.cas64(self._buf, off + L.ENDPOINT_WORD, word, 0) == word

    def _reap(self, slot: int, word: int, token: int) -> bool:
        """Free an entry met dead or leaving; a dead process's counts in the
        region's statistics (REAPED_OFF) when this call freed it."""
        freed = self._free(slot, word, token)
        if freed and not word_alive(word):
            _core.fetch_add64(self._buf, L.REAPED_OFF, 1)
        return freed

    def _decrement_hint(self, role: int) -> None:
        off = _LIVE_OFF[role]
        while True:
            cur = _core.load32(self._buf, off)
            if cur == 0 or _core.cas32(self._buf, off, cur, cur - 1) == cur:
                return

    # -- handles in flight ---------------------------------------------------------------
    def send(self) -> int:
        """Enter a pending handle (one being pickled); returns its ticket."""
        ticket = secrets.randbits(64) | 1
        self.register(PENDING, token=ticket)
        return ticket

    def received(self, ticket: int) -> bool:
        """The pending handle ``ticket`` arrived (its receiver holds its own
        entry by now): free the sender's entry.  False if it was not found."""
        for slot, word, tok in self._rows():
            if tok == ticket and unpack_word(word)[1] == PENDING:
                return self._free(slot, word, tok)
        return False

    # -- claims of multi-producer/-consumer rings ----------------------------------------
    @classmethod
    def claim_offset(cls, slot: int) -> int:
        """Offset of the announcement words (start, end) of the entry at ``slot``."""
        return cls._entry(slot) + L.ENDPOINT_CLAIM_START

    def live_claims(self, role: int) -> list[tuple[int, int]]:
        """The claims ``[start, end)`` announced by live endpoints in ``role``.

        The caller saw a claim point stuck *before* calling this (see _mpmc.h,
        mpmc_stuck): a claim not listed here belongs to a dead process.  An
        entry whose process lives counts whatever its state (a newcomer's
        entry may still show its dead predecessor's claim: we only wait
        longer).  Start is read before end, as mpmc_claim_t requires."""
        per = L.ENDPOINT_SIZE // 8
        words = _core.load64_many(self._buf, L.ENDPOINTS_OFF, L.MAX_ENDPOINTS * per)
        start_at, end_at = L.ENDPOINT_CLAIM_START // 8, L.ENDPOINT_CLAIM_END // 8
        claims = []
        for slot in range(L.MAX_ENDPOINTS):
            word = words[slot * per]
            start, end = words[slot * per + start_at], words[slot * per + end_at]
            if word and start != L.NO_CLAIM and unpack_word(word)[1] == role and word_alive(word):
                claims.append((start, end))
        return claims

    def live_busy(self, role: int) -> int:
        """Live endpoints of ``role`` in the middle of a Queue message: a
        claim announced, or (producers) an admission held under maxsize
        (claim start ADMITTING; see _queue.h).  For Queue._heal_admissions."""
        per = L.ENDPOINT_SIZE // 8
        words = _core.load64_many(self._buf, L.ENDPOINTS_OFF, L.MAX_ENDPOINTS * per)
        start_at = L.ENDPOINT_CLAIM_START // 8
        n = 0
        for slot in range(L.MAX_ENDPOINTS):
            word, start = words[slot * per], words[slot * per + start_at]
            if word and start != L.NO_CLAIM and unpack_word(word)[1] == role and word_alive(word):
                n += 1
        return n

    # -- scanning ------------------------------------------------------------------------
    def _rows(self) -> list[tuple[int, int, int]]:
        """(slot, word, token) of every taken entry: one core call."""
        per = L.ENDPOINT_SIZE // 8
        words = _core.load64_many(self._buf, L.ENDPOINTS_OFF, L.MAX_ENDPOINTS * per)
        tok = L.ENDPOINT_TOKEN // 8
        return [
            (slot, words[slot * per], words[slot * per + tok]) for slot in range(L.MAX_ENDPOINTS) if words[slot * per]
        ]

    def _live_rows(self, roles: tuple[int, ...]) -> Iterator[tuple[int, int, int]]:
        """Entries of ``roles`` whose process lives; dead ones met are freed."""
        broken = os.environ.get("SHMRING_BROKEN") == "ignore_dead_producer"
        for row in self._rows():
            _, role, state, _ = unpack_word(row[1])
            if role not in roles:
                continue
            if broken and role == PRODUCER:
                yield row
            elif state == STATE_FREEING or not word_alive(row[1]):
                # Dead, or leaving: whoever frees it.  Finishing someone's
                # FREEING entry is harmless (every step is a CAS on exact
                # values), and frees the entry of a freer that died half-way.
                self._reap(*row)
            else:
                yield row

    def reap(self) -> int:
        """Free the entries of dead processes; returns how many."""
        if os.environ.get("SHMRING_BROKEN") == "ignore_dead_producer":
            return 0  # deliberately broken variant for the stress harness's own tests
        return sum(
            self._reap(*row)
            for row in self._rows()
            if unpack_word(row[1])[2] == STATE_FREEING or not word_alive(row[1])
        )

    def live(self, role: int) -> int:
        """Live endpoints in ``role``; dead ones met on the way are freed."""
        return sum(1 for _ in self._live_rows((role,)))

    def held(self, exiting: bool = False) -> bool:
        """True while a live process holds an open or pending handle (the
        name must stay); dead ones met on the way are freed.  ``exiting``:
        this process is about to exit, so its own pending handles count as
        a dead sender's already."""
        me = os.getpid()
        return any(
            not (exiting and unpack_word(row[1])[:2] == (me, PENDING)) for row in self._live_rows((HOLDER, PENDING))
        )

    def users(self) -> list[int]:
        """Pids of the live processes with any entry (the table is left as it is)."""
        return sorted({e.pid for e in self.entries() if e.alive})

    def ever(self, role: int) -> bool:
        return _core.load32(self._buf, _EVER_OFF[role]) != 0

    def live_hint(self, role: int) -> int:
        return int(_core.load32(self._buf, _LIVE_OFF[role]))

    def entries(self) -> list[Endpoint]:
        out = []
        for slot, word, _ in self._rows():
            pid, role, state, start = unpack_word(word)
            out.append(
                Endpoint(
                    slot=slot,
                    pid=pid,
                    role=ROLE_NAMES.get(role, f"role {role}"),
                    state=STATE_NAMES.get(state, f"state {state}"),
                    start_time=start,
                    alive=word_alive(word),
                )
            )
        return out

    # -- removing the name ----------------------------------------------------------
    # The last handle out and a replacer of an abandoned region both announce
    # that they are about to unlink the name, in the remover word, before
    # their last look at the table; an attacher, after registering its holder
    # entry, looks at the remover word.  Both sides are seq_cst, so one of them
    # sees the other: the remover sees the newcomer and keeps the name, or the
    # newcomer sees the remover and waits for its verdict (see Ring.attach).
    def claim_removal(self) -> bool:
        """Become the one process about to remove the name; False if a live
        process is doing so already.  A dead remover is taken over."""
        me = own_identity()
        for _ in range(4):
            seen = _core.cas64(self._buf, L.REMOVER_OFF, 0, me)
            if seen in (0, me):
                return True
            if word_alive(seen):
                return False
            _core.cas64(self._buf, L.REMOVER_OFF, seen, 0)
        return False

    def release_removal(self) -> None:
        """The name stays after all."""
        _core.cas64(self._buf, L.REMOVER_OFF, own_identity(), 0)

    def removal_pending(self) -> bool:
        """True while a live process (another thread of ours included) is
        about to remove the name."""
        seen = _core.load64(self._buf, L.REMOVER_OFF)
        return seen != 0 and word_alive(seen)
