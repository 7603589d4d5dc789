"""Adapters: what the harness needs from each structure, and nothing more.

The actors, the supervisor and the arbiter never touch a structure's API;
they call an :class:`Adapter`.  Adding a structure (a multi-producer Ring, a
Queue, an Array) or a sync flavour to the matrix means writing one adapter
and listing it in :data:`ADAPTERS`:

* ``create``/``open``/``close``/``dispose``: lifetimes, in the supervisor
  (which creates and finally unlinks every instance, so a SIGKILLed actor
  never leaks a segment) and in the actors;
* ``send``/``receive``: move rows of raw message bytes (see message.py)
  with one of the operations in board.OPS, copying or zero-copy;
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
  windows the actors pass and to check that delay injection reaches them.

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
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .schedule import Call, LanePlan

Bytes = npt.NDArray[np.uint8]
Encode = Callable[[Bytes], None]  # writes len(rows) messages into rows
Visit = Callable[[Bytes], None]  # checks delivered rows (read-only, valid only during the call)


class _Abort(Exception):
    """Raised inside a reserve() block to drop the slot on purpose."""


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
        }
    )

    def create(self, name: str | None, backend: str, sync: str, plan: LanePlan) -> Any:
        import shmring

        return shmring.Ring(
            name, capacity=plan.capacity, shape=plan.shape, dtype=plan.dtype, sync=sync, backend=backend
        )

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
        if op == "copy":
            handle.put(items[0])
        elif op == "copy_nowait":
            handle.put_nowait(items[0])
        elif op == "copy_timeout":
            handle.put(items[0], timeout=call.timeout)
        else:
            raise ValueError(f"ring cannot send with {op!r}")
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
        if op == "copy":
            item = handle.get()
        elif op == "copy_nowait":
            item = handle.get_nowait()
        elif op == "copy_timeout":
            item = handle.get(timeout=call.timeout)
        else:
            raise ValueError(f"ring cannot receive with {op!r}")
        visit(self._rows(item, 1))
        return 1


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
    """A sequence word relative to its position: +0 free, +1 published, +2*capacity released."""
    hole = "hole " if word >> 63 else ""
    return f"{hole}{(word & ((1 << 63) - 1)) - 2 * pos:+d}"


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


ADAPTERS: dict[str, Adapter] = {"ring": RingAdapter(), "mpmc": MpmcAdapter(), "array": ArrayAdapter()}
STRUCTURES = tuple(ADAPTERS)
SYNCS = ("lockfree", "semaphore")
BACKENDS = ("shm", "anon", "file")
EXPECTED_EXCEPTIONS = (queue.Full, queue.Empty, EOFError, BrokenPipeError)
