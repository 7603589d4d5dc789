"""A multi-producer/multi-consumer Ring against a sequential model, driven
by hypothesis: two handles, each producing and consuming, every method,
aborted reservations leaving holes that every kind of get skips (the
lock-free flavour); the same for the semaphore flavour, which leaves none.

The model is a deque of entries, an item or a hole (None).  A hole holds
its slot (qsize counts it) until a consumer passes it.
"""

from __future__ import annotations

import queue
import uuid
from collections import deque

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shmring

SHAPE = (2,)
Entry = tuple[int, int] | None
HANDLE = st.integers(0, 1)


class MpmcMachine(RuleBasedStateMachine):
    SYNC = "lockfree"
    HOLES = True  # an aborted reserve() leaves a hole (the lock-free flavour's claim is taken)

    def __init__(self) -> None:
        super().__init__()
        self.model: deque[Entry] = deque()
        self.taken = 0  # positions consumed so far (for where the data area wraps)
        self.counter = 0
        self.handles: list[shmring.Ring] = []

    @initialize(capacity=st.integers(1, 6))
    def create(self, capacity: int) -> None:
        self.capacity = capacity
        name = f"shmring-model-{uuid.uuid4().hex[:12]}"
        first = shmring.Ring(
            name,
            capacity=capacity,
            shape=SHAPE,
            dtype=np.int64,
            multi_producer=True,
            multi_consumer=True,
            sync=self.SYNC,
        )
        self.handles = [first, shmring.Ring.attach(name)]

    def next_item(self) -> np.ndarray:
        self.counter += 1
        return np.array([self.counter, -self.counter], dtype=np.int64)

    def pop(self) -> Entry:
        self.taken += 1
        return self.model.popleft()

    def items_ahead(self) -> bool:
        return any(e is not None for e in self.model)

    @rule(h=HANDLE)
    def put_nowait(self, h: int) -> None:
        item = self.next_item()
        if len(self.model) == self.capacity:
            try:
                self.handles[h].put_nowait(item)
            except queue.Full:
                return
            raise AssertionError("put_nowait on a full ring succeeded")
        self.handles[h].put_nowait(item)
        self.model.append((int(item[0]), int(item[1])))

    @rule(h=HANDLE, n=st.integers(0, 8))
    def put_many(self, h: int, n: int) -> None:
        items = np.array([self.next_item() for _ in range(n)], dtype=np.int64).reshape(n, *SHAPE)
        room = self.capacity - len(self.model)
        if n > 0 and room == 0:
            try:
                self.handles[h].put_many(items, block=False)
            except queue.Full:
                return
            raise AssertionError("put_many into a full ring succeeded")
        assert self.handles[h].put_many(items, block=False) == min(n, room)
        self.model.extend((int(a), int(b)) for a, b in items[: min(n, room)])

    @precondition(lambda self: len(self.model) < self.capacity)
    @rule(h=HANDLE, commit=st.booleans())
    def reserve(self, h: int, commit: bool) -> None:
        item = self.next_item()
        try:
            with self.handles[h].reserve(timeout=0) as slot:
                slot[:] = item
                if not commit:
                    raise LookupError
        except LookupError:
            if self.HOLES:
                self.model.append(None)  # claimed, never published: a hole
            return
        self.model.append((int(item[0]), int(item[1])))

    @rule(h=HANDLE)
    def get_nowait(self, h: int) -> None:
        while self.model and self.model[0] is None:
            self.pop()  # holes are passed on the way
        if not self.model:
            try:
                self.handles[h].get_nowait()
            except queue.Empty:
                return
            raise AssertionError("get_nowait on a ring of holes succeeded")
        assert tuple(self.handles[h].get_nowait()) == self.pop()

    @precondition(lambda self: self.items_ahead())
    @rule(h=HANDLE, m=st.integers(1, 8))
    def get_many(self, h: int, m: int) -> None:
        out = self.handles[h].get_many(m, block=False)
        # A claim takes the first m entries; one of holes only is freed and
        # the next m are claimed.
        while True:
            claim = [self.pop() for _ in range(min(m, len(self.model)))]
            expected = [e for e in claim if e is not None]
            if expected:
                break
        assert [tuple(row) for row in out] == expected

    @precondition(lambda self: self.items_ahead())
    @rule(h=HANDLE, m=st.integers(1, 8))
    def borrow_many(self, h: int, m: int) -> None:
        with self.handles[h].borrow_many(m, timeout=0) as items:
            assert not items.flags.writeable
            while self.model[0] is None:
                self.pop()  # runs of holes are freed, never shown
            room = self.capacity - self.taken % self.capacity  # a view never wraps
            run = []
            while self.model and self.model[0] is not None and len(run) < min(m, room):
                run.append(self.pop())
            assert [tuple(row) for row in items] == run

    @invariant()
    def sizes_agree(self) -> None:
        if self.handles:
            ring = self.handles[0]
            assert ring.qsize() == len(self.model)
            assert ring.empty() == (not self.model)
            assert ring.full() == (len(self.model) == self.capacity)

    def teardown(self) -> None:
        for ring in self.handles:
            ring.close()


MpmcMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_multi_ring_matches_a_deque_with_holes = MpmcMachine.TestCase


class SemaphoreMachine(MpmcMachine):
    """The semaphore flavour: each side serialised by its lock; an aborted
    reserve() publishes nothing and leaves no hole."""

    SYNC = "semaphore"
    HOLES = False


SemaphoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_semaphore_ring_matches_a_deque = SemaphoreMachine.TestCase
