"""Adapters: what the harness needs from each structure, and nothing more.

The actors, the supervisor and the arbiter never touch a structure's API;
they call an :class:`Adapter`.  Adding a structure (a multi-producer Ring, a
Queue, an Array) or a sync flavour to the matrix means writing one adapter
and listing it in :data:`ADAPTERS`:

* ``create``/``open``/``close``/``dispose``: lifetimes, in the supervisor
  (which creates and finally unlinks every instance, so a SIGKILLed actor
  never leaks a segment) and in the actors;
* ``send``/``receive``: move messages with one of the operations in
  board.OPS, copying or zero-copy: rows of raw message bytes (message.py),
  made by the adapter's ``encoder`` and checked by its ``verify`` (a Queue's
  are Python objects: queue_message.py);
* ``entries``/``dump``: what must be gone after ``dispose`` (the leak check),
  and the header state printed when a lane deadlocks;
* ``order`` and ``max_producers``/``max_consumers``: which ordering rule the
  arbiter applies, and how many actors share one instance.  Single-producer,
  single-consumer structures get one instance (a *lane*) per producer/consumer
  pair, and replacements after kills follow one another in it; structures
  with many producers and consumers (``max_producers=None``) get lanes of a
  crowd drawn from ``--producers``/``--consumers`` (default ``crowd``), all
  side by side, judged per producer (``order = "per_producer"``);
* ``travels``/``export``/``adopt``/``peek``/``release``: handles that travel
  pickled to other processes (travel lanes, where a creator process makes the
  instance and leaves, and the supervisor holds nothing), and
  ``last_out_unlinks``: the backends whose last handle out removes the name;
* ``instrument``/``delay_armed``: the structure's test hooks, to count the
  windows the actors pass and to check that delay injection reaches them;
  ``copying``: whether a copy runs inside a claim right now (a Queue's puts
  and gets have no reserve()/borrow() block to hold an aimed kill in).

A structure that holds state instead of moving messages (``order =
"array"``: shmring.Array) has no ``send``/``receive``; its lanes come in
``lane_kinds`` that run side by side, its actors (array_actors.py) call the
operations ``write``/``read``/``lock``/``add``/``compare_exchange``/``load``
of the adapter, and arbiter.judge_array judges them.
"""

from __future__ import annotations

import abc
import contextlib
import os
import pickle
import queue
import random
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from . import message, queue_message
from .config import CellConfig
from .message import Corrupt
from .schedule import Call, Crowd, LanePlan, plan_lane, plan_queue_lane

Bytes = npt.NDArray[np.uint8]
# Writes len(out) messages into out: rows of slots (a ring), or a list of objects (a Queue).
Encode = Callable[[Any], None]
# Checks delivered messages: rows (read-only, valid only during the call), or a Queue's objects.
Visit = Callable[[Any], None]


class Maker(Protocol):
    """A producer's messages (message.Encoder, queue_message.QueueEncoder)."""

    def fill(self, out: Any, first: int) -> None:
        """Make messages ``first``, ``first + 1``, ... into ``out``."""


class _Abort(Exception):
    """Raised inside a reserve() block to drop the slot on purpose."""


class ContractError(Exception):
    """A call broke the structure's contract in a way the actor sees at once
    (a timed get raising EOFError, an oversize put going in): actor_error."""


class Adapter(abc.ABC):
    """One structure under test."""

    name: ClassVar[str]
    syncs: ClassVar[tuple[str, ...]]
    backends: ClassVar[tuple[str, ...]]
    # "total": one producer and one consumer at a time per instance, so the
    # instance delivers in one total order (arbiter.judge_total_order).
    # "per_producer": many of each side by side; each consumer sees each
    # producer's messages in that producer's order (arbiter.judge_per_producer).
    order: ClassVar[str] = "total"
    max_producers: ClassVar[int | None] = 1
    max_consumers: ClassVar[int | None] = 1
    crowd: ClassVar[str] = "2"  # default --producers/--consumers (N or MIN:MAX)
    # Structures whose lanes come in kinds (Array): one lane of each kind runs
    # at a time, side by side; a finished lane is followed by one of its kind.
    lane_kinds: ClassVar[tuple[str, ...]] = ()
    aim_at_consumers: ClassVar[bool] = True  # crowded lanes: may a kill be aimed at a consumer?
    forbidden: ClassVar[frozenset[str]]  # outcomes this structure's rules can produce
    travels: ClassVar[tuple[str, ...]] = ()  # backends whose handles can be pickled to another process
    last_out_unlinks: ClassVar[tuple[str, ...]] = ()  # backends whose last handle out removes the name
    # A producer's zero_copy call writes inside its claim (reserve()), where an
    # aimed kill is held; else aimed kills meet copies (actors._watch_copies).
    producer_in_place: ClassVar[bool] = True
    timed_batches: ClassVar[bool] = False  # batch calls take a timeout (schedule.Schedule)

    def plan(self, rng: random.Random, cfg: CellConfig, first: bool, crowd: Crowd | None) -> LanePlan:
        """A new lane's plan (Array lanes: schedule.plan_array_lane)."""
        return plan_lane(rng, cfg, first=first, crowd=crowd)

    def encoder(self, producer: int, plan: LanePlan, seed: int) -> Maker:
        """What makes a producer's messages."""
        return message.Encoder(producer, plan.slot_bytes, seed)

    def scratch(self, plan: LanePlan, rows: int) -> Bytes:
        """Room for a producer's messages before a copying call."""
        return np.empty((rows, plan.slot_bytes), dtype=np.uint8)

    def verify(self, plan: LanePlan, item: Any, borrowed: bool) -> tuple[int, int, int]:
        """Check one delivered message (``borrowed``: a zero-copy view);
        (producer, seq, bytes moved), or Corrupt."""
        producer, seq, _ = message.verify(item)
        return producer, seq, int(item.nbytes)

    def copying(self, handle: Any) -> bool:
        """Is a copy running inside a claim (between claim and publish, or
        claim and release) right now, in another thread of this process?"""
        return False

    def leftover(self, owner: Any, kills: int) -> str:
        """What an instance drained to its final EOF, every actor gone, still
        counts as in it (a Queue's qsize and admissions), or statistics that
        do not add up, in words; "" if nothing.  ``kills``: actors of the
        lane SIGKILLed, each of which may leave a count one short."""
        return ""

    @abc.abstractmethod
    def create(self, name: str | None, backend: str, sync: str, plan: LanePlan) -> Any:
        """Create an instance in the supervisor; raise NotImplementedError if
        this flavour is not built."""

    @abc.abstractmethod
    def open(self, owner: Any, name: str | None, backend: str) -> Any:
        """The handle an actor (a fork child of the supervisor) uses."""

    @abc.abstractmethod
    def close(self, handle: Any) -> None:
        """An actor leaves (peers see EOF / EPIPE)."""

    @abc.abstractmethod
    def dispose(self, owner: Any) -> None:
        """The supervisor closes and unlinks an instance."""

    @abc.abstractmethod
    def entries(self, name: str | None, backend: str) -> list[str]:
        """Filesystem paths the instance uses; none may exist after dispose."""

    @abc.abstractmethod
    def dump(self, owner: Any) -> dict[str, Any]:
        """Header state for a deadlock report."""

    @abc.abstractmethod
    def producers_ever(self, owner: Any) -> bool:
        """Has any producer ever registered?  Until one has, a consumer waits
        instead of seeing EOF (pipe semantics), so a lane cannot end."""

    # -- handles that travel (only for the backends in ``travels``) --------------------------
    def export(self, handle: Any) -> bytes:
        """Pickle ``handle`` for another process (it counts as in flight until adopted)."""
        raise NotImplementedError

    def adopt(self, data: bytes) -> Any:
        """Unpickle a handle exported by any process."""
        raise NotImplementedError

    def peek(self, name: str | None, backend: str) -> Any:
        """A view of an instance that holds nothing: it neither keeps nor
        removes the name (for ``dump`` and ``producers_ever``)."""
        raise NotImplementedError

    def release(self, view: Any) -> None:
        """Drop a ``peek`` view."""
        raise NotImplementedError

    # -- test hooks ---------------------------------------------------------------------
    def instrument(self, hit: Callable[[str], None]) -> None:
        """Call ``hit(point)`` at each window the structure's test hooks name."""
        return None

    def delay_armed(self) -> dict[str, bool]:
        """Per layer of the structure, whether delay injection is armed in this process."""
        return {}

    def preempt_scans(self, probability: float, max_seconds: float) -> None:
        """Make that share of the structure's scans of shared state pause up
        to ``max_seconds`` at a random point, as a preemption would."""
        return None

    @abc.abstractmethod
    def send(self, handle: Any, call: Call, scratch: Bytes, encode: Encode) -> int:
        """Put ``call.count`` messages; returns how many went in.  Raises
        queue.Full (none went in) or BrokenPipeError."""

    @abc.abstractmethod
    def receive(self, handle: Any, call: Call, visit: Visit) -> int:
        """Take up to ``call.count`` messages, visiting their rows before they
        are released; returns how many.  Raises queue.Empty or EOFError."""


class _ShmringAdapter(Adapter):
    """What every shmring structure's adapter does alike: an actor closes its
    handle; the supervisor unlinks (a file region's file too: only unlink()
    removes it) and closes; the region's name is its one path."""

    def close(self, handle: Any) -> None:
        handle.close()

    def dispose(self, owner: Any) -> None:
        owner.unlink()
        owner.close()

    def entries(self, name: str | None, backend: str) -> list[str]:
        if name is None:
            return []
        return [name] if backend == "file" else [os.path.join("/dev/shm", name)]


class RingAdapter(_ShmringAdapter):
    """shmring.Ring: single producer, single consumer, fixed-size slots."""

    name = "ring"
    syncs = ("lockfree", "semaphore")
    backends = ("shm", "anon", "file")
    travels: ClassVar[tuple[str, ...]] = ("shm", "file")  # an anon ring only crosses fork
    last_out_unlinks = ("shm",)  # a file ring's file stays until unlink()
    forbidden = frozenset(
        {
            "lost",
            "duplicated",
            "reordered",
            "corrupted",
            "phantom",
            "deadlock",
            "leaked",
            "busy_wait",
            "spurious_eof",
            "spurious_epipe",
            "actor_error",
            "miscounted",
        }
    )

    def create(self, name: str | None, backend: str, sync: str, plan: LanePlan) -> Any:
        import shmring

        return shmring.Ring(
            name, capacity=plan.capacity, shape=plan.shape, dtype=plan.dtype, sync=sync, backend=backend
        )

    def leftover(self, owner: Any, kills: int) -> str:
        """Drained: statistics() must say nothing is in it, and as many
        messages came out as went in, give or take one per SIGKILLed actor
        (a count is bumped just after the operation it counts)."""
        s = owner.statistics()
        wrong = []
        if s.fill:
            wrong.append(f"fill {s.fill}")
        if abs(s.messages_in - s.messages_out) > kills:
            wrong.append(f"{s.messages_in} messages in but {s.messages_out} out ({kills} actors killed)")
        return f"drained, every producer and consumer gone, statistics() says {', '.join(wrong)}" if wrong else ""

    def open(self, owner: Any, name: str | None, backend: str) -> Any:
        import shmring

        if backend == "anon":
            return owner  # inherited across fork; the child registers on its first call
        return shmring.Ring.attach(name, backend=backend)  # type: ignore[arg-type]

    def dump(self, owner: Any) -> dict[str, Any]:
        from shmring import _core
        from shmring import _layout as L

        mapping = owner._region.mapping
        head, tail = owner._indices()
        words = {
            "consumer_waiters": L.CONSUMER_WAITERS_OFF,
            "producer_waiters": L.PRODUCER_WAITERS_OFF,
            "producers_ever": L.PRODUCERS_EVER_OFF,
            "producers_live_hint": L.PRODUCERS_LIVE_OFF,
            "consumers_ever": L.CONSUMERS_EVER_OFF,
            "consumers_live_hint": L.CONSUMERS_LIVE_OFF,
        }
        out: dict[str, Any] = {"name": owner.name, "capacity": owner.capacity, "head": head, "tail": tail}
        out["qsize"] = head - tail
        out.update({key: _core.load32(mapping, off) for key, off in words.items()})
        for key in ("consumer_waiters", "producer_waiters"):  # epoch << 16 | count
            out[key] = f"{out[key] & 0xFFFF} (epoch {out[key] >> 16})"
        out["endpoints"] = [
            f"slot {e.slot}: pid {e.pid} {e.role} {e.state} {'alive' if e.alive else 'DEAD'}" for e in owner.endpoints()
        ]
        return out

    def producers_ever(self, owner: Any) -> bool:
        from shmring import _core
        from shmring import _layout as L

        return bool(_core.load32(owner._region.mapping, L.PRODUCERS_EVER_OFF))

    def export(self, handle: Any) -> bytes:
        return pickle.dumps(handle)  # Ring.__reduce__: a pending entry of this process, with a ticket

    def adopt(self, data: bytes) -> Any:
        return pickle.loads(data)  # shmring.ring._attach: attach by name, then retire the pending entry

    def peek(self, name: str | None, backend: str) -> Any:
        import shmring

        view = shmring.Ring.attach(name, backend=backend)  # type: ignore[arg-type]
        assert view._holder_slot is not None
        view._table.unregister(view._holder_slot)  # from here on, like a fork child's inherited copy
        view._holder_slot = None
        return view

    def release(self, view: Any) -> None:
        view.close()  # holds nothing: never unlinks

    def instrument(self, hit: Callable[[str], None]) -> None:
        from shmring import _endpoints

        _endpoints.pause = hit

    def preempt_scans(self, probability: float, max_seconds: float) -> None:
        # The endpoint table is read by one core call, word by word: "a scan,
        # not a snapshot".  A scheduler may preempt it between any two words;
        # this makes that happen in ``probability`` of the scans, for up to
        # ``max_seconds``, without changing what is read or in which order.
        import random
        import time
        import types

        from shmring import _core, _endpoints
        from shmring import _layout as L

        real = _core.load64_many
        per = L.ENDPOINT_SIZE // 8

        def load64_many(buf: Any, off: int, count: int) -> list[int]:
            if count < 2 or random.random() >= probability:
                return real(buf, off, count)
            # Mostly between two of the first entries, where the live ones are:
            # after entry 1, 2, 3, ... with chances 1/2, 1/4, 1/8, ...
            if random.random() < 0.75:
                split = per
                while random.random() < 0.5 and split + per < count:
                    split += per
            else:
                split = random.randrange(1, count)
            head = real(buf, off, split)
            time.sleep(random.random() * max_seconds)
            return head + real(buf, off + 8 * split, count - split)

        proxy = types.SimpleNamespace(**{k: getattr(_core, k) for k in dir(_core) if not k.startswith("__")})
        proxy.load64_many = load64_many
        setattr(_endpoints, "_core", proxy)  # noqa: B010 - the module's own name for the core

    def delay_armed(self) -> dict[str, bool]:
        from shmring import _core, _endpoints

        return {
            "core (claim/copy/publish)": _core._test_config()["delay_permille"] > 0,
            "endpoints (register/unregister)": _endpoints._DELAY_P > 0,
        }

    @staticmethod
    def _rows(items: np.ndarray[Any, Any], k: int) -> Bytes:
        return items.reshape(k, -1).view(np.uint8)

    def send(self, handle: Any, call: Call, scratch: Bytes, encode: Encode) -> int:
        op, k = call.op, call.count
        if op in ("zero_copy", "zero_copy_abort"):
            try:
                with handle.reserve() as slot:
                    encode(self._rows(slot, 1))
                    if op == "zero_copy_abort":
                        raise _Abort
            except _Abort:
                return 0
            return 1
        rows = scratch[:k]
        encode(rows)
        items = rows.view(handle.dtype).reshape((k, *handle.shape))
        if op == "copy_many":
            return int(handle.put_many(items))
        _put_one(handle, call, items[0])
        return 1

    def receive(self, handle: Any, call: Call, visit: Visit) -> int:
        op = call.op
        if op == "zero_copy":
            with handle.borrow() as item:
                visit(self._rows(item, 1))
            return 1
        if op == "zero_copy_many":
            with handle.borrow_many(call.count) as items:
                k = len(items)
                visit(self._rows(items, k))
            return k
        if op == "copy_many":
            items = handle.get_many(call.count)
            visit(self._rows(items, len(items)))
            return len(items)
        visit(self._rows(_get_one(handle, call), 1))
        return 1


def _put_one(handle: Any, call: Call, item: Any) -> None:
    """Put ``item`` with the copying operation ``call.op`` names (a Ring's or a Queue's)."""
    if call.op == "copy":
        handle.put(item)
    elif call.op == "copy_nowait":
        handle.put_nowait(item)
    elif call.op == "copy_timeout":
        handle.put(item, timeout=call.timeout)
    else:
        raise ValueError(f"cannot send one item with {call.op!r}")


def _get_one(handle: Any, call: Call) -> Any:
    """Get an item with the copying operation ``call.op`` names (a Ring's or a Queue's)."""
    if call.op == "copy":
        return handle.get()
    if call.op == "copy_nowait":
        return handle.get_nowait()
    if call.op == "copy_timeout":
        return handle.get(timeout=call.timeout)
    raise ValueError(f"cannot receive one item with {call.op!r}")


class MpmcAdapter(RingAdapter):
    """shmring.Ring(multi_producer=True, multi_consumer=True): many producers
    and many consumers per ring, side by side.  A producer SIGKILLed between
    claiming a slot and publishing it, or a reserve() block that raises,
    leaves a *hole* that consumers skip; the arbiter accepts a missing
    message only where such a producer died (or a consumer died holding it)."""

    name = "mpmc"
    order = "per_producer"
    max_producers = None
    max_consumers = None
    crowd = "2:6"
    # Travel lanes hand one producer and one consumer their handles; a crowd
    # needs its own rules (who pickles for each replacement, who may close
    # while one is on its way), so mpmc lanes attach by name or inherit.
    travels = ()

    def create(self, name: str | None, backend: str, sync: str, plan: LanePlan) -> Any:
        import shmring

        return shmring.Ring(
            name,
            capacity=plan.capacity,
            shape=plan.shape,
            dtype=plan.dtype,
            multi_producer=True,
            multi_consumer=True,
            sync=sync,
            backend=backend,
        )

    def dump(self, owner: Any) -> dict[str, Any]:
        from shmring import _core
        from shmring import _layout as L

        out = super().dump(owner)
        # Sequence words at the claim points, minus 2p: +0 free, +1 published, +2*capacity released.
        geo, mapping = owner._geo, owner._region.mapping
        if geo.seq_offset:
            words = _core.load64_many(mapping, geo.seq_offset, geo.capacity)
            cap = geo.capacity
            for key in ("tail", "head"):
                pos = out[key]
                out[f"seq words from {key}"] = " ".join(
                    f"{p}:{_seq_word(words[p % cap], p)}" for p in range(pos, pos + min(cap, 4))
                )
        per = L.ENDPOINT_SIZE // 8
        table = _core.load64_many(mapping, L.ENDPOINTS_OFF, L.MAX_ENDPOINTS * per)
        s_at, e_at = L.ENDPOINT_CLAIM_START // 8, L.ENDPOINT_CLAIM_END // 8
        claims = [
            f"slot {i}: [{table[i * per + s_at]}, {table[i * per + e_at]})"
            for i in range(L.MAX_ENDPOINTS)
            if table[i * per] and table[i * per + s_at] != L.NO_CLAIM
        ]
        out["announced claims"] = claims or ["none"]
        return out


def _seq_word(word: int, pos: int) -> str:
    """A sequence word relative to its position: +0 free, +1 published, +2*capacity released
    (flags: a hole; a Queue record's body slot)."""
    flags = ("hole " if word >> 63 else "") + ("body " if word >> 62 & 1 else "")
    return f"{flags}{(word & ((1 << 62) - 1)) - 2 * pos:+d}"


class ArrayAdapter(_ShmringAdapter):
    """shmring.Array: state shared by a crowd, not a stream.  Three kinds of
    lanes run side by side (array_actors.py): ``seqlock`` (writers fill the
    whole array with one value per write(), readers check every read() is
    uniform), ``counter`` (adders use add()/compare_exchange(), the totals
    must add up) and ``lock`` (holders increment a counter non-atomically
    under lock(): a lost update means two holders at once).  Writers, adders
    and holders are the lane's "producers", readers and loaders/observers its
    "consumers"; kills are aimed inside write()/lock() blocks and after add().

    The harness's own broken variants (``--broken``, read from
    SHMRING_BROKEN, which the core ignores) live here, in the operations the
    actors call: ``array_no_lock`` (writers fill ``.array`` without write()),
    ``array_plain_add`` (``add`` is a plain read-modify-write of ``.array``),
    ``array_skip_lock`` (``lock()`` takes no lock)."""

    name = "array"
    syncs = ("lockfree", "semaphore")
    backends = ("shm", "anon", "file")
    order = "array"
    max_producers = None
    max_consumers = None
    crowd = "2:3"
    lane_kinds = ("seqlock", "counter", "lock")
    aim_at_consumers = False  # a reader or loader holds nothing: aim at writers, adders, holders
    forbidden = frozenset(
        {
            "torn",
            "stale_read",
            "spurious_read_error",
            "miscounted",
            "lock_broken",
            "holder_died_missed",
            "spurious_holder_died",
            "deadlock",
            "leaked",
            "busy_wait",
            "actor_error",
        }
    )
    BROKEN = ("array_no_lock", "array_plain_add", "array_skip_lock")

    @property
    def broken(self) -> str:
        return os.environ.get("SHMRING_BROKEN", "")

    def create(self, name: str | None, backend: str, sync: str, plan: LanePlan) -> Any:
        import shmring

        return shmring.Array(name, shape=plan.shape, dtype=plan.dtype, sync=sync, backend=backend)

    def open(self, owner: Any, name: str | None, backend: str) -> Any:
        import shmring

        if backend == "anon":
            return owner  # inherited across fork
        return shmring.Array.attach(name, backend=backend)  # type: ignore[arg-type]

    def dump(self, owner: Any) -> dict[str, Any]:
        from shmring import _core
        from shmring import _layout as L

        mapping = owner._region.mapping
        data = owner.array
        out: dict[str, Any] = {"name": owner.name, "shape": owner.shape, "dtype": str(owner.dtype)}
        out["lock holder word"] = hex(_core.load64(mapping, L.ARRAY_LOCK_OFF))
        out["seq"] = _core.load64(mapping, L.ARRAY_SEQ_OFF)
        if owner.sync == "lockfree":
            out["lock wake word"] = _core.load32(mapping, L.ARRAY_LOCK_WAKE_OFF)
            out["lock waiters"] = _core.load32(mapping, L.ARRAY_LOCK_WAITERS_OFF)
        out["data (first elements)"] = data.reshape(-1)[:4].tolist()
        out["endpoints"] = [
            f"slot {e.slot}: pid {e.pid} {e.role} {e.state} {'alive' if e.alive else 'DEAD'}" for e in owner.endpoints()
        ]
        return out

    def producers_ever(self, owner: Any) -> bool:
        return True  # no pipe semantics: a lane may end whenever its writers are gone

    def send(self, handle: Any, call: Call, scratch: Bytes, encode: Encode) -> int:
        raise TypeError("an Array moves no messages (see array_actors.py)")

    def receive(self, handle: Any, call: Call, visit: Visit) -> int:
        raise TypeError("an Array moves no messages (see array_actors.py)")

    # -- the operations the Array actors call ----------------------------------------------
    @contextlib.contextmanager
    def write(self, handle: Any) -> Iterator[tuple[np.ndarray[Any, Any], bool]]:
        """``with write(handle) as (view, holder_died)``: a seqlock write."""
        if self.broken == "array_no_lock":
            yield handle.array, False  # plain stores: readers may copy half of them
            return
        with handle.write() as view:
            yield view, handle.holder_died

    def read(self, handle: Any, out: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return handle.read(out)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def lock(self, handle: Any) -> Iterator[bool]:
        """``with lock(handle) as holder_died``."""
        if self.broken == "array_skip_lock":
            yield False
            return
        with handle.lock() as died:
            yield died

    def add(self, handle: Any, index: Any, value: int) -> int:
        if self.broken == "array_plain_add":
            data = handle.array
            at = index if isinstance(index, tuple) else np.unravel_index(index, data.shape)
            old = int(data[at])  # another process may add here: its update is lost
            data[at] = old + value
            return old
        return int(handle.add(index, value))

    def compare_exchange(self, handle: Any, index: Any, expected: int, new: int) -> tuple[bool, int]:
        ok, seen = handle.compare_exchange(index, expected, new)
        return bool(ok), int(seen)

    def load(self, handle: Any, index: Any) -> int:
        return int(handle.load(index))


class QueueAdapter(MpmcAdapter):
    """shmring.Queue: any number of producers and consumers side by side,
    messages of any size and kind (queue_message.py), in both sync flavours.

    Lanes are crowds (1-4 x 1-4 by default) judged per producer, like the
    mpmc ring's: a producer SIGKILLed inside a put leaves a hole that
    consumers skip; a consumer SIGKILLed inside a get's copy or a borrow()
    block takes its record with it.  The operations, by name:

    * producer: ``copy`` put(), ``copy_many`` put_many() (timed in the
      non-blocking share: part of the batch may go in), ``copy_nowait``,
      ``copy_timeout``; ``zero_copy`` puts the message as a view the Queue
      must copy out itself (a memoryview, strided half the time; an array in
      Fortran order or strided); ``zero_copy_abort`` puts a message larger
      than the queue can ever hold, which must raise ValueError at once;
    * consumer: ``copy`` get(), ``copy_many`` get_many() (timed likewise),
      ``copy_nowait``, ``copy_timeout``; ``zero_copy`` a borrow() block,
      ``zero_copy_many`` up to B of them in a row (the first blocking, the
      rest not).  What get() returns must be private and writable, what
      borrow() gives read-only; checks run inside the block.

    Anything a take raises but queue.Empty and the queue's own EOFError is a
    record that would not decode: ``corrupted`` (so is an EOFError out of
    unpickling).  A timed or non-blocking call raising EOFError or
    BrokenPipeError breaks the contract (they raise Empty, Full)."""

    name = "queue"
    crowd = "1:4"
    forbidden = MpmcAdapter.forbidden | {"miscounted"}
    producer_in_place = False  # a put copies whole objects: no block to write in
    timed_batches = True

    def plan(self, rng: random.Random, cfg: CellConfig, first: bool, crowd: Crowd | None) -> LanePlan:
        assert crowd is not None
        return plan_queue_lane(rng, cfg, crowd)

    def create(self, name: str | None, backend: str, sync: str, plan: LanePlan) -> Any:
        import shmring

        return shmring.Queue(plan.maxsize, name=name, capacity=plan.capacity, sync=sync, backend=backend)

    def open(self, owner: Any, name: str | None, backend: str) -> Any:
        import shmring

        if backend == "anon":
            return owner  # inherited across fork
        return shmring.Queue.attach(name, backend=backend)  # type: ignore[arg-type]

    def dump(self, owner: Any) -> dict[str, Any]:
        from shmring import _core
        from shmring import _layout as L

        out = super().dump(owner)
        out["qsize"], out["admitted"] = owner._q_count()
        out["maxsize"] = owner.maxsize
        out["room word"] = _core.load64(owner._region.mapping, L.QUEUE_ROOM_OFF)
        out["slots"] = owner._geo.capacity
        return out

    def encoder(self, producer: int, plan: LanePlan, seed: int) -> Maker:
        return queue_message.QueueEncoder(producer, plan, seed)

    def scratch(self, plan: LanePlan, rows: int) -> Bytes:
        return np.empty((0, 0), dtype=np.uint8)  # messages are objects, made per call

    def verify(self, plan: LanePlan, item: Any, borrowed: bool) -> tuple[int, int, int]:
        return queue_message.check(plan, item, borrowed)

    def copying(self, handle: Any) -> bool:
        return bool(handle._busy)  # a record of 64 KiB or more is copied without the GIL

    def leftover(self, owner: Any, kills: int) -> str:
        counted = super().leftover(owner, kills)
        if counted:
            return counted
        messages, _ = owner._q_count()
        owner._heal_admissions(force=True)  # what a refused producer (or full()) does: dead producers' admissions
        counts = {"messages": messages, "admitted": owner._q_count()[1]}
        if not owner.maxsize:
            del counts["admitted"]
        if not any(counts.values()):
            return ""
        said = ", ".join(f"{v} {k}" for k, v in counts.items())
        return f"drained, every producer and consumer gone, the queue (maxsize {owner.maxsize}) still counts {said}"

    def send(self, handle: Any, call: Call, scratch: Bytes, encode: Encode) -> int:
        op, k = call.op, call.count
        objs: list[Any] = [None] * k
        encode(objs)
        try:
            if op == "zero_copy_abort":
                try:
                    handle.put(objs[0])
                except ValueError:
                    return 0
                raise ContractError(f"a put of {len(objs[0])} bytes into a queue of {handle.capacity} went in")
            if op == "copy_many":
                return int(handle.put_many(objs, timeout=call.timeout))
            if op == "zero_copy":
                handle.put(_as_view(objs[0]))
            else:
                _put_one(handle, call, objs[0])
        except BrokenPipeError:
            if _timed(call):
                raise ContractError(f"{op} (timeout {call.timeout}) raised BrokenPipeError, not queue.Full") from None
            raise
        return 1

    def receive(self, handle: Any, call: Call, visit: Visit) -> int:
        try:
            return self._take(handle, call, visit)
        except queue.Empty:
            raise
        except EOFError as exc:
            if _raised_in(exc) != "_get_wait":
                raise Corrupt(f"{call.op}: a record that does not decode: EOFError: {exc}") from exc
            if _timed(call):
                raise ContractError(f"{call.op} (timeout {call.timeout}) raised EOFError, not queue.Empty") from None
            raise
        except Exception as exc:  # a take raises nothing else for a sound record
            raise Corrupt(f"{call.op}: a record that does not decode: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _take(handle: Any, call: Call, visit: Visit) -> int:
        op, k = call.op, call.count
        if op in ("zero_copy", "zero_copy_many"):
            n = 0
            while n < (k if op == "zero_copy_many" else 1):
                try:
                    with handle.borrow(block=n == 0) as obj:
                        visit([obj])
                except queue.Empty:
                    if n == 0:
                        raise
                    break
                n += 1
            return n
        items = handle.get_many(k, timeout=call.timeout) if op == "copy_many" else [_get_one(handle, call)]
        visit(items)
        return len(items)


def _timed(call: Call) -> bool:
    """A call that waits at most a while: it raises queue.Full/Empty, never EOF/EPIPE."""
    return call.timeout is not None or call.op == "copy_nowait"


def _raised_in(exc: BaseException) -> str:
    """The function whose frame raised ``exc`` (the innermost Python frame)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name if tb is not None else ""


def _as_view(obj: Any) -> Any:
    """The message as a view the Queue must copy out contiguous itself: bytes
    as a memoryview (of every other byte of a wider buffer, when its length
    is even), an array in Fortran order (2-D and up) or strided (1-D)."""
    if type(obj) is bytes:
        if len(obj) % 2:
            return memoryview(obj)
        wide: Bytes = np.empty(2 * len(obj), dtype=np.uint8)
        wide[::2] = np.frombuffer(obj, dtype=np.uint8)
        return wide[::2].data
    if type(obj) is np.ndarray and obj.size:
        if obj.ndim > 1:
            return np.asfortranarray(obj)
        strided = np.empty((obj.shape[0], 2), dtype=obj.dtype)
        strided[:, 0] = obj
        return strided[:, 0]
    return obj


ADAPTERS: dict[str, Adapter] = {
    "ring": RingAdapter(),
    "mpmc": MpmcAdapter(),
    "array": ArrayAdapter(),
    "queue": QueueAdapter(),
}
STRUCTURES = tuple(ADAPTERS)
SYNCS = ("lockfree", "semaphore")
BACKENDS = ("shm", "anon", "file")
EXPECTED_EXCEPTIONS = (queue.Full, queue.Empty, EOFError, BrokenPipeError)
