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
  pair, and replacements after kills follow one another in it.
"""

from __future__ import annotations

import abc
import os
import queue
from collections.abc import Callable
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
    order: ClassVar[str] = "total"
    max_producers: ClassVar[int | None] = 1
    max_consumers: ClassVar[int | None] = 1
    forbidden: ClassVar[frozenset[str]]  # outcomes this structure's rules can produce

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

    @abc.abstractmethod
    def send(self, handle: Any, call: Call, scratch: Bytes, encode: Encode) -> int:
        """Put ``call.count`` messages; returns how many went in.  Raises
        queue.Full (none went in) or BrokenPipeError."""

    @abc.abstractmethod
    def receive(self, handle: Any, call: Call, visit: Visit) -> int:
        """Take up to ``call.count`` messages, visiting their rows before they
        are released; returns how many.  Raises queue.Empty or EOFError."""


class RingAdapter(Adapter):
    """shmring.Ring: single producer, single consumer, fixed-size slots."""

    name = "ring"
    syncs = ("lockfree", "semaphore")
    backends = ("shm", "anon", "file")
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

    def close(self, handle: Any) -> None:
        handle.close()

    def dispose(self, owner: Any) -> None:
        owner.unlink()  # a file ring's file is removed only by unlink()
        owner.close()

    def entries(self, name: str | None, backend: str) -> list[str]:
        if name is None:
            return []
        return [name] if backend == "file" else [os.path.join("/dev/shm", name)]

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
        out["endpoints"] = [
            f"slot {e.slot}: pid {e.pid} {e.role} {e.state} {'alive' if e.alive else 'DEAD'}" for e in owner.endpoints()
        ]
        return out

    def producers_ever(self, owner: Any) -> bool:
        from shmring import _core
        from shmring import _layout as L

        return bool(_core.load32(owner._region.mapping, L.PRODUCERS_EVER_OFF))

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


ADAPTERS: dict[str, Adapter] = {"ring": RingAdapter()}
STRUCTURES = tuple(ADAPTERS)
SYNCS = ("lockfree", "semaphore")
BACKENDS = ("shm", "anon", "file")
EXPECTED_EXCEPTIONS = (queue.Full, queue.Empty, EOFError, BrokenPipeError)
