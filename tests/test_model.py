"""Ring against a sequential model (collections.deque), driven by hypothesis.

Covers wraparound (small capacities, many steps), batch operations, and the
zero-copy reserve/borrow paths, including an aborted reservation.
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


class RingMachine(RuleBasedStateMachine):
    ring: shmring.Ring

    def __init__(self) -> None:
        super().__init__()
        self.model: deque[tuple[int, int]] = deque()
        self.counter = 0

    @initialize(capacity=st.integers(1, 6))
    def create(self, capacity: int) -> None:
        self.capacity = capacity
        self.ring = shmring.Ring(
            f"shmring-model-{uuid.uuid4().hex[:12]}", capacity=capacity, shape=SHAPE, dtype=np.int64
        )

    def next_item(self) -> np.ndarray:
        self.counter += 1
        return np.array([self.counter, -self.counter], dtype=np.int64)

    @rule()
    def put_nowait(self) -> None:
        item = self.next_item()
        if len(self.model) == self.capacity:
            try:
                self.ring.put_nowait(item)
            except queue.Full:
                return
            raise AssertionError("put_nowait on a full ring succeeded")
        self.ring.put_nowait(item)
        self.model.append((int(item[0]), int(item[1])))

    @rule()
    def get_nowait(self) -> None:
        if not self.model:
            try:
                self.ring.get_nowait()
            except queue.Empty:
                return
            raise AssertionError("get_nowait on an empty ring succeeded")
        assert tuple(self.ring.get_nowait()) == self.model.popleft()

    @rule(n=st.integers(0, 8))
    def put_many(self, n: int) -> None:
        items = np.array([self.next_item() for _ in range(n)], dtype=np.int64).reshape(n, *SHAPE)
        room = self.capacity - len(self.model)
        if n > 0 and room == 0:
            try:
                self.ring.put_many(items, block=False)
            except queue.Full:
                return
            raise AssertionError("put_many into a full ring succeeded")
        assert self.ring.put_many(items, block=False) == min(n, room)
        self.model.extend((int(a), int(b)) for a, b in items[: min(n, room)])

    @precondition(lambda self: bool(self.model))
    @rule(m=st.integers(1, 8))
    def get_many(self, m: int) -> None:
        out = self.ring.get_many(m, block=False)
        assert 1 <= len(out) <= m
        assert len(out) == min(m, len(self.model))  # everything ready is taken
        for row in out:
            assert tuple(row) == self.model.popleft()

    @precondition(lambda self: len(self.model) < self.capacity)
    @rule(commit=st.booleans())
    def reserve(self, commit: bool) -> None:
        item = self.next_item()
        try:
            with self.ring.reserve(timeout=0) as slot:
                slot[:] = item
                if not commit:
                    raise LookupError
        except LookupError:
            return
        self.model.append((int(item[0]), int(item[1])))

    @precondition(lambda self: bool(self.model))
    @rule()
    def borrow(self) -> None:
        with self.ring.borrow(timeout=0) as item:
            assert not item.flags.writeable
            assert tuple(item) == self.model.popleft()

    @precondition(lambda self: bool(self.model))
    @rule(m=st.integers(1, 8))
    def borrow_many(self, m: int) -> None:
        with self.ring.borrow_many(m, timeout=0) as items:
            assert 1 <= len(items) <= min(m, len(self.model))
            for row in items:
                assert tuple(row) == self.model.popleft()

    @invariant()
    def sizes_agree(self) -> None:
        if hasattr(self, "ring"):
            assert self.ring.qsize() == len(self.model)
            assert self.ring.empty() == (not self.model)
            assert self.ring.full() == (len(self.model) == self.capacity)

    def teardown(self) -> None:
        if hasattr(self, "ring"):
            self.ring.close()


RingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_ring_matches_a_deque = RingMachine.TestCase
