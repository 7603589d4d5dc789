"""The arbiter: from the logs of a finished lane, name every outcome.

Rules for structures with a total order (``Adapter.order == "total"``: one
producer and one consumer at a time per instance, replacements following
each other).  The lane's *order* L lists the messages of its producers,
first producer first, each 0..n-1; a producer killed inside a call adds that
call's messages as *maybe* published.  The consumers' logs, first consumer
first, give the *delivered* sequence D.  Then, by name:

forbidden
  ``phantom``     an entry of D is not in L (unknown producer, or a sequence
                  number its producer never reached)
  ``duplicated``  an entry of L appears in D more than once
  ``reordered``   an entry of D comes before an earlier-delivered one in L
  ``lost``        an entry of L that is surely published is not in D, and no
                  acceptable outcome below covers it (judged only when the
                  lane drained to its final EOF)
acceptable
  ``in_flight_put``   missing maybe-published messages of a killed producer's
                      last call, provided the delivered ones of that call are
                      a prefix of it (a batch is published as a prefix)
  ``in_flight_take``  a consumer killed with a take of at most B items in
                      flight: the missing messages that immediately follow its
                      last logged one in L, at most B of them, before the next
                      delivered one (it took them and died before logging)

Rules for structures with many producers and consumers side by side
(``Adapter.order == "per_producer"``, :func:`judge_per_producer`): there is
no lane order, only each producer's own sequence 0..n-1 (plus a killed
producer's call in flight as *maybe* published), and each consumer's log
lists, per producer, the messages it got in the order it got them.

forbidden
  ``phantom``     as above
  ``duplicated``  a message delivered more than once, by one consumer or two
  ``reordered``   at one consumer, a message of a producer arrives after a
                  later message of the same producer (across producers and
                  across consumers there is no order to keep)
  ``lost``        a message its producer surely published, delivered by no
                  consumer, that neither acceptable outcome covers
acceptable
  ``in_flight_put``   as above: a killed producer's call in flight may be
                      missing, after the last of it that was delivered (its
                      claims publish in order; what it claimed and never
                      published is a *hole*, skipped by the consumers).  No
                      other message of any producer may be missing on its
                      account, and a live producer's never is
  ``in_flight_take``  a consumer killed with a take of at most B items in
                      flight took them and died before logging: the messages
                      still missing are matched to the killed consumers, at
                      most B to each, and each only to a consumer that had
                      logged nothing later of that producer (a consumer
                      claims positions in order, so what it took last comes
                      after everything it logged); every missing message
                      must be matched (a small max-flow)

Rules for Array lanes (``Adapter.order == "array"``, :func:`judge_array`;
array_actors.py says what each actor does and checks on the spot: ``torn``,
``stale_read``, and counters that go down).  At the lane's end, with every
actor gone, the supervisor takes the lock once more and reads the counters:

forbidden
  ``miscounted``           a counter's final value is not the sum of what the
                           adders logged plus some subset of the updates that
                           SIGKILLed adders had in flight (lock lane: more
                           increments than the holders could have made)
  ``lock_broken``          the lock lane's counter lost an increment that its
                           holder logged as done: two holders at once
  ``spurious_holder_died`` more lock()/write() calls saw holder_died than actors
                           died inside such a call (each death is seen once:
                           by the next holder)
  ``holder_died_missed``   fewer saw it than actors were SIGKILLed holding the
                           lock (an aimed kill inside the block); the
                           supervisor's final lock() is the next holder of the
                           last one
  ``spurious_read_error``  read() raised "died part-way" with no writer of the
                           lane SIGKILLed inside write() before the error and
                           after the write of the reader's last good copy began
acceptable
  ``in_flight_update``     a SIGKILLed adder's (holder's) last update in flight
                           landed or not: the total matches only with it
  ``holder_died``          a lock()/write() took the lock over from a dead holder
  ``died_part_way``        read() raised after a writer died inside write()

Intervals keep this fast: a consumer logs *runs* of consecutive messages, so
a lane of millions of messages is judged from a handful of intervals.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter, defaultdict, deque

from .board import DONE_MASK, DONE_PENDING_SHIFT
from .outcomes import Violation

EXAMPLES = 3  # ranges quoted per violation


@dataclasses.dataclass(frozen=True)
class ProducerRecord:
    actor: int
    died: bool  # killed, or exited abnormally: its last call may be half done
    published: int  # messages surely published
    pending: int  # size of the call in flight when it died


@dataclasses.dataclass(frozen=True)
class ConsumerRecord:
    actor: int
    died: bool
    pending: int  # size of the take in flight when it died
    runs: tuple[tuple[int, int, int], ...]  # (producer, first seq, last seq), in delivery order


@dataclasses.dataclass(frozen=True)
class LaneRecord:
    lane: str
    producers: tuple[ProducerRecord, ...]  # in the order they ran
    consumers: tuple[ConsumerRecord, ...]
    complete: bool  # the last consumer reached the final EOF: everything published should be in D


@dataclasses.dataclass
class Verdict:
    violations: list[Violation] = dataclasses.field(default_factory=list)
    acceptable: Counter[str] = dataclasses.field(default_factory=Counter)


class _Union:
    """Disjoint closed intervals of L, sorted; add() returns the overlap."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, a: int, b: int) -> int:
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, b)
        j = bisect.bisect_left(ends, a)
        overlap = sum(min(b, ends[k]) - max(a, starts[k]) + 1 for k in range(j, i))
        if j < i:
            a, b = min(a, starts[j]), max(b, ends[i - 1])
        starts[j:i] = [a]
        ends[j:i] = [b]
        return overlap

    def __contains__(self, x: int) -> bool:
        k = bisect.bisect_right(self.starts, x) - 1
        return k >= 0 and self.ends[k] >= x

    def gaps(self, total: int) -> list[tuple[int, int]]:
        """Closed intervals of [0, total) not covered."""
        out, nxt = [], 0
        for a, b in zip(self.starts, self.ends, strict=True):
            if a > nxt:
                out.append((nxt, min(a, total) - 1))
            nxt = max(nxt, b + 1)
        if nxt < total:
            out.append((nxt, total - 1))
        return [(a, b) for a, b in out if a <= b]


class _Order:
    """L: where each producer's messages sit."""

    def __init__(self, producers: tuple[ProducerRecord, ...]):
        self.base: dict[int, tuple[int, int]] = {}  # actor -> (first L index, messages incl. maybe)
        self.maybe: list[tuple[int, int, int]] = []  # (first, last, actor) L ranges of in-flight calls
        self._starts: list[int] = []
        self._actors: list[int] = []
        pos = 0
        for p in producers:
            maybe = p.pending if p.died else 0
            self.base[p.actor] = (pos, p.published + maybe)
            self._starts.append(pos)
            self._actors.append(p.actor)
            if maybe:
                self.maybe.append((pos + p.published, pos + p.published + maybe - 1, p.actor))
            pos += p.published + maybe
        self.total = pos

    def name(self, a: int, b: int) -> str:
        """'producer P seq x..y' for L range [a, b] (within one producer)."""
        k = bisect.bisect_right(self._starts, a) - 1
        base = self._starts[k]
        return f"producer {self._actors[k]} seq {a - base}" + (f"..{b - base}" if b > a else "")

    def split(self, a: int, b: int) -> list[tuple[int, int]]:
        """[a, b] cut at producer boundaries."""
        out = []
        while a <= b:
            k = bisect.bisect_right(self._starts, a) - 1
            end = self._starts[k + 1] - 1 if k + 1 < len(self._starts) else self.total - 1
            out.append((a, min(b, end)))
            a = min(b, end) + 1
        return out

    def in_maybe(self, x: int) -> bool:
        return any(f <= x <= last for f, last, _ in self.maybe)


def _describe(order: _Order, ranges: list[tuple[int, int]]) -> str:
    parts = [order.name(a, b) for r in ranges[:EXAMPLES] for a, b in order.split(*r)][:EXAMPLES]
    more = f" (+{len(ranges) - EXAMPLES} more ranges)" if len(ranges) > EXAMPLES else ""
    return ", ".join(parts) + more


def judge_total_order(lane: LaneRecord) -> Verdict:
    """Apply the rules above to one lane."""
    v = Verdict()
    order = _Order(lane.producers)
    union = _Union()
    hi = -1
    phantoms: list[str] = []
    dup = reord = 0
    dup_at: list[tuple[int, int]] = []
    reord_at: list[tuple[int, int]] = []
    kill_points: list[tuple[int, int, int]] = []  # (first L index after the dead consumer's log, B, actor)
    for c in lane.consumers:
        for producer, first, last in c.runs:
            if producer not in order.base:
                phantoms.append(f"producer {producer} seq {first}..{last} (no such producer in this lane)")
                continue
            base, limit = order.base[producer]
            if last >= limit:
                phantoms.append(f"producer {producer} seq {max(first, limit)}..{last} (it published {limit})")
                last = limit - 1
                if first > last:
                    continue
            a, b = base + first, base + last
            overlap = union.add(a, b)
            if overlap:
                dup += overlap
                dup_at.append((a, min(b, hi)))
            if a <= hi:
                below = min(b, hi) - a + 1 - overlap
                if below > 0:
                    reord += below
                    reord_at.append((a, b))
            hi = max(hi, b)
        if c.died and c.pending:
            kill_points.append((hi + 1, c.pending, c.actor))
    where = lane.lane
    if phantoms:
        v.violations.append(Violation("phantom", where, "; ".join(phantoms[:EXAMPLES])))
    if dup:
        v.violations.append(
            Violation("duplicated", where, f"{dup} messages delivered twice: {_describe(order, dup_at)}")
        )
    if reord:
        v.violations.append(
            Violation("reordered", where, f"{reord} messages delivered after later ones: {_describe(order, reord_at)}")
        )
    excused = _excuse_takes(order, union, kill_points, v)
    _judge_missing(lane, order, union, excused, v)
    return v


def _excuse_takes(order: _Order, union: _Union, kill_points: list[tuple[int, int, int]], v: Verdict) -> set[int]:
    """L indices a killed consumer may have taken without logging."""
    excused: set[int] = set()
    for start, budget, _actor in kill_points:
        x, n = start, 0
        while x < order.total and n < budget and x not in union:
            excused.add(x)
            if not order.in_maybe(x):
                n += 1
            x += 1
        if n:
            v.acceptable["in_flight_take"] += 1
    return excused


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(gap: tuple[int, int], allowed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of the closed interval ``gap`` outside the sorted, merged ``allowed``."""
    a, b = gap
    out = []
    k = max(0, bisect.bisect_right(allowed, (a, a)) - 1)
    for lo, hi in allowed[k:]:
        if lo > b:
            break
        if hi < a:
            continue
        if lo > a:
            out.append((a, lo - 1))
        a = max(a, hi + 1)
        if a > b:
            return out
    out.append((a, b))
    return out


def _judge_missing(lane: LaneRecord, order: _Order, union: _Union, excused: set[int], v: Verdict) -> None:
    allowed = [(x, x) for x in excused]
    for first, last, _actor in order.maybe:
        # A killed producer's last call published a prefix of its messages (or
        # none): the missing ones after the last delivered one are acceptable.
        prefix_end = next((x for x in range(last, first - 1, -1) if x in union), first - 1)
        if prefix_end < last:
            allowed.append((prefix_end + 1, last))
            v.acceptable["in_flight_put"] += 1
    if not lane.complete:
        return
    allowed = _merge(allowed)
    lost = [r for gap in union.gaps(order.total) for r in _subtract(gap, allowed)]
    n_lost = sum(b - a + 1 for a, b in lost)
    if n_lost:
        v.violations.append(
            Violation("lost", lane.lane, f"{n_lost} published messages never delivered: {_describe(order, lost)}")
        )


# -- many producers and consumers side by side ------------------------------------------------
def judge_per_producer(lane: LaneRecord) -> Verdict:
    """The per-producer rules in the module docstring, for one lane."""
    v = Verdict()
    limits: dict[int, int] = {}  # producer -> messages it may have published (surely + maybe)
    maybe: dict[int, tuple[int, int]] = {}  # producer -> seqs of its call in flight when it died
    for p in lane.producers:
        extra = p.pending if p.died else 0
        limits[p.actor] = p.published + extra
        if extra:
            maybe[p.actor] = (p.published, p.published + extra - 1)
    delivered: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)  # producer -> runs, all consumers
    phantoms: list[str] = []
    reord = 0
    reord_at: list[str] = []
    takes: list[tuple[int, int, dict[int, int]]] = []  # killed consumers: (actor, B, last logged seq per producer)
    for c in lane.consumers:
        hi: dict[int, int] = {}  # producer -> highest seq this consumer logged
        own: dict[int, _Union] = {}
        for producer, first, last in c.runs:
            if producer not in limits:
                phantoms.append(f"producer {producer} seq {first}..{last} (no such producer in this lane)")
                continue
            limit = limits[producer]
            if last >= limit:
                phantoms.append(f"producer {producer} seq {max(first, limit)}..{last} (it published {limit})")
                last = limit - 1
                if first > last:
                    continue
            delivered[producer].append((first, last))
            overlap = own.setdefault(producer, _Union()).add(first, last)  # its own repeats: duplicates
            top = hi.get(producer, -1)
            if first <= top:
                below = min(last, top) - first + 1 - overlap
                if below > 0:
                    reord += below
                    if len(reord_at) < EXAMPLES:
                        reord_at.append(f"consumer {c.actor}: producer {producer} seq {first}..{last} after seq {top}")
            hi[producer] = max(top, last)
        if c.died and c.pending:
            takes.append((c.actor, c.pending, hi))
    where = lane.lane
    if phantoms:
        v.violations.append(Violation("phantom", where, "; ".join(phantoms[:EXAMPLES])))
    dup = 0
    dup_at: list[str] = []
    merged: dict[int, list[tuple[int, int]]] = {}
    for producer, runs in delivered.items():
        runs.sort()
        out: list[tuple[int, int]] = []
        for a, b in runs:
            if out and a <= out[-1][1]:
                n = min(b, out[-1][1]) - a + 1
                dup += n
                if len(dup_at) < EXAMPLES:
                    dup_at.append(f"producer {producer} seq {a}" + (f"..{a + n - 1}" if n > 1 else ""))
            if out and a <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        merged[producer] = out
    if dup:
        v.violations.append(Violation("duplicated", where, f"{dup} messages delivered twice: {', '.join(dup_at)}"))
    if reord:
        v.violations.append(
            Violation("reordered", where, f"{reord} messages delivered after later ones: {'; '.join(reord_at)}")
        )
    # Missing: per producer, what no consumer delivered; a killed producer's call
    # in flight may miss a suffix (after the last of it that was delivered).
    missing: list[tuple[int, int, int]] = []  # (producer, first seq, last seq)
    for producer, limit in limits.items():
        runs = merged.get(producer, [])
        allowed: list[tuple[int, int]] = []
        if producer in maybe:
            first, last = maybe[producer]
            prefix_end = max((min(b, last) for a, b in runs if a <= last and b >= first), default=first - 1)
            if prefix_end < last:
                allowed.append((prefix_end + 1, last))
                v.acceptable["in_flight_put"] += 1
        gaps, nxt = [], 0
        for a, b in runs:
            if a > nxt:
                gaps.append((nxt, a - 1))
            nxt = max(nxt, b + 1)
        if nxt < limit:
            gaps.append((nxt, limit - 1))
        missing += [(producer, a, b) for gap in gaps for a, b in _subtract(gap, allowed)]
    if not lane.complete or not missing:
        return v
    unmatched, used = _match_takes(missing, takes)
    v.acceptable["in_flight_take"] += used
    n_lost = sum(b - a + 1 for _, a, b in unmatched)
    if n_lost:
        named = ", ".join(f"producer {p} seq {a}" + (f"..{b}" if b > a else "") for p, a, b in unmatched[:EXAMPLES])
        more = f" (+{len(unmatched) - EXAMPLES} more ranges)" if len(unmatched) > EXAMPLES else ""
        v.violations.append(Violation("lost", where, f"{n_lost} published messages never delivered: {named}{more}"))
    return v


def _match_takes(
    missing: list[tuple[int, int, int]], takes: list[tuple[int, int, dict[int, int]]]
) -> tuple[list[tuple[int, int, int]], int]:
    """Match missing messages to killed consumers' takes in flight: at most B
    to each, and only messages of a producer above the last seq of it that the
    consumer logged.  Returns the ranges left unmatched and the number of takes
    that excused something (a max-flow: source -> missing ranges, cut at the
    consumers' thresholds -> takes -> sink)."""
    if not takes:
        return missing, 0
    cuts: defaultdict[int, set[int]] = defaultdict(set)
    for _, _, hi in takes:
        for producer, top in hi.items():
            cuts[producer].add(top + 1)
    pieces: list[tuple[int, int, int]] = []
    for producer, a, b in missing:
        for cut in sorted(x for x in cuts[producer] if a < x <= b):
            pieces.append((producer, a, cut - 1))
            a = cut
        pieces.append((producer, a, b))
    # Nodes: 0 source, 1 sink, 2.. pieces, then takes.
    n_p = len(pieces)
    cap: defaultdict[tuple[int, int], int] = defaultdict(int)
    adj: defaultdict[int, list[int]] = defaultdict(list)

    def edge(x: int, y: int, c: int) -> None:
        if (x, y) not in cap and (y, x) not in cap:
            adj[x].append(y)
            adj[y].append(x)
        cap[(x, y)] += c

    for i, (producer, a, b) in enumerate(pieces):
        edge(0, 2 + i, b - a + 1)
        for j, (_, _, hi) in enumerate(takes):
            if hi.get(producer, -1) < a:
                edge(2 + i, 2 + n_p + j, b - a + 1)
    for j, (_, budget, _) in enumerate(takes):
        edge(2 + n_p + j, 1, budget)
    while True:  # Edmonds-Karp
        parent = {0: 0}
        todo = deque([0])
        while todo and 1 not in parent:
            x = todo.popleft()
            for y in adj[x]:
                if y not in parent and cap[(x, y)] > 0:
                    parent[y] = x
                    todo.append(y)
        if 1 not in parent:
            break
        path, y = [], 1
        while y != 0:
            path.append((parent[y], y))
            y = parent[y]
        push = min(cap[e] for e in path)
        for x, y in path:
            cap[(x, y)] -= push
            cap[(y, x)] += push
    unmatched = [
        (producer, b - cap[(0, 2 + i)] + 1, b) for i, (producer, a, b) in enumerate(pieces) if cap[(0, 2 + i)] > 0
    ]
    used = sum(1 for j in range(len(takes)) if cap[(1, 2 + n_p + j)] > 0)
    return unmatched, used


# -- Array lanes ----------------------------------------------------------------------------------
SUBSETS_MAX = 1 << 14  # distinct subset sums kept before falling back to a range


@dataclasses.dataclass(frozen=True)
class ArrayActorRecord:
    actor: int
    producer: bool  # a writer, adder or holder (else a reader, loader or observer)
    died: bool  # killed, or exited abnormally: its update in flight may or may not have landed
    killed: bool  # SIGKILLed by the supervisor
    killed_at: int  # CLOCK_MONOTONIC ns just before the SIGKILL (0: not killed)
    reaped_at: int  # ns just after waitpid saw it dead: it died in [killed_at, reaped_at]
    locking: bool  # it was in a lock()/write() call when it died (it may have held the lock)
    holding: bool  # it died held inside the block (an aimed kill): it surely held the lock
    died_seen: int  # its lock()/write() calls that returned holder_died=True
    done: tuple[int, ...]  # per counter: sum of updates done | update in flight << 56 (board.DONE_*)
    read_errors: tuple[tuple[int, int], ...]  # reader: (error time ns, write time ns of its last good copy; 0: none)


@dataclasses.dataclass(frozen=True)
class ArrayLaneRecord:
    lane: str
    kind: str  # "seqlock", "counter" or "lock"
    actors: tuple[ArrayActorRecord, ...]
    final: tuple[int, ...]  # the counters at the end (lock lane: the holders' counter)
    final_died: bool | None  # the supervisor's last lock() saw holder_died (None: not taken)


def _split(word: int) -> tuple[int, int]:
    """(sum done, update in flight) of a log word."""
    return word & DONE_MASK, word >> DONE_PENDING_SHIFT


def _subset_sums(values: list[int]) -> set[int] | None:
    """Every sum of a subset of ``values``; None if there are too many."""
    sums = {0}
    for x in values:
        sums |= {s + x for s in sums}
        if len(sums) > SUBSETS_MAX:
            return None
    return sums


def judge_array(lane: ArrayLaneRecord) -> Verdict:
    """The Array rules in the module docstring, for one lane."""
    v = Verdict()
    where = lane.lane
    producers = [a for a in lane.actors if a.producer]
    for counter, final in enumerate(lane.final):
        done = sum(_split(a.done[counter])[0] for a in producers)
        maybe = [p for a in producers if a.died and (p := _split(a.done[counter])[1])]
        extra = final - done
        sums = _subset_sums(maybe)
        fits = (extra in sums) if sums is not None else 0 <= extra <= sum(maybe)
        if fits:
            v.acceptable["in_flight_update"] += 1 if extra else 0
            continue
        what = "counter" if lane.kind == "counter" else "the holders' counter"
        detail = f"{what} {counter} is {final}; the actors logged {done} as done"
        if maybe:
            detail += f", and {len(maybe)} that died had {sorted(maybe)} in flight"
        if lane.kind == "lock" and extra < 0:
            v.violations.append(Violation("lock_broken", where, f"{-extra} increments lost: {detail}"))
        else:
            v.violations.append(Violation("miscounted", where, f"off by {extra:+d}: {detail}"))
    if lane.kind in ("seqlock", "lock"):
        seen = sum(a.died_seen for a in producers) + bool(lane.final_died)
        possible = sum(1 for a in producers if a.died and a.locking)
        surely = sum(1 for a in producers if a.killed and a.holding)
        call = "write()" if lane.kind == "seqlock" else "lock()"
        if seen > possible:
            detail = f"{seen} {call} calls saw holder_died, but only {possible} actors died inside one"
            v.violations.append(Violation("spurious_holder_died", where, detail))
        if seen < surely:
            detail = f"{surely} actors were SIGKILLed holding the lock, but only {seen} {call} calls saw holder_died"
            v.violations.append(Violation("holder_died_missed", where, detail))
        v.acceptable["holder_died"] += seen
    if lane.kind == "seqlock":
        deaths = [(a.killed_at, a.reaped_at) for a in producers if a.killed and a.locking]
        bad: list[str] = []
        for a in lane.actors:
            for at, last in a.read_errors:
                # The writer died before the error (killed_at <= at), and the
                # reader's last good copy is older than its death: a write that
                # began after the death repairs the data (readers then see it).
                if any(k <= at and last < r for k, r in deaths):
                    v.acceptable["died_part_way"] += 1
                else:
                    bad.append(f"reader {a.actor} at {at}")
        if bad:
            detail = (
                f"{len(bad)} read() calls raised 'died part-way' with no writer SIGKILLed inside write() "
                f"before them and after their last good copy ({', '.join(bad[:EXAMPLES])}; "
                f"writers killed inside write() at {[k for k, _ in deaths][:EXAMPLES] or 'none'})"
            )
            v.violations.append(Violation("spurious_read_error", where, detail))
    return v
