"""shmring.Queue against models, driven by hypothesis: round trips of
arbitrary nested objects with arrays of every dtype, and a state machine
whose model tracks the ring's slots (records, pads at the wrap, maxsize) so
that it predicts exactly when a put finds no room."""

from __future__ import annotations

import collections
import pickle
import queue
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import shmring
from shmring import _layout as L
from shmring import queue as Q

# -- round trips ---------------------------------------------------------------------------

dtypes = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(max_len=5),
    hnp.unicode_string_dtypes(max_len=5),
    hnp.scalar_dtypes().map(lambda d: d.newbyteorder(">") if d.byteorder != "|" else d),
    hnp.array_dtypes(hnp.scalar_dtypes(), max_size=3),  # structured
)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    a = draw(hnp.arrays(draw(dtypes), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
    if a.ndim and draw(st.booleans()):
        a = a[:: draw(st.integers(1, 2))]  # not contiguous
    if a.ndim > 1 and draw(st.booleans()):
        a = a.T  # F-ordered
    return a


leaves = st.one_of(
    arrays(), st.binary(max_size=64), st.integers(), st.text(max_size=8), st.none(), st.floats(allow_nan=False)
)
objects = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    """Equal objects, arrays compared by dtype, shape and bytes."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def arrays_in(obj: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [a for x in obj for a in arrays_in(x)]
    if isinstance(obj, dict):
        return [a for x in obj.values() for a in arrays_in(x)]
    return []


@pytest.fixture(scope="module")
def shared_queue() -> Any:
    with shmring.Queue(capacity=1 << 20) as q:
        yield q


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=objects)
def test_any_object_round_trips_by_get_and_borrow(shared_queue: shmring.Queue, obj: Any) -> None:
    q = shared_queue
    # A bare array travels as dtype, shape and bytes; anything else as pickle
    # does it (numpy's own pickling drops the byte order of a datetime64, say).
    want = obj if isinstance(obj, np.ndarray) else pickle.loads(pickle.dumps(obj, protocol=5))
    q.put(obj)
    got = q.get()
    assert same(want, got)
    assert all(a.flags.writeable for a in arrays_in(got))
    q.put(obj)
    assert q._data_ro is not None
    lo = q._data_ro.__array_interface__["data"][0]
    with q.borrow() as lent:
        assert same(want, lent)
        # Arrays in the ring are read-only views; numpy pickles some in-band
        # (datetime64 inside a container, say): those are private copies.
        for a in arrays_in(lent):
            if lo <= a.__array_interface__["data"][0] < lo + q.capacity:
                assert not a.flags.writeable
    assert q.qsize() == 0


# -- a state machine with an exact model of the slots ------------------------------------------

SLOT = L.QUEUE_SLOT
CAPACITY_SLOTS = 24


class Model:
    """The ring as one process sees it: head and tail positions in slots,
    records in order (pads are freed by the get that meets them)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.head = self.tail = 0
        self.items: collections.deque[tuple[int, Any, int]] = collections.deque()  # (first slot, obj, slots)
        self.pads: dict[int, int] = {}  # first slot -> slots

    def put(self, obj: Any) -> bool:
        _, parts = Q.encode(obj)
        k = -(-(16 + Q.payload_len(parts)) // SLOT)
        if self.maxsize and len(self.items) >= self.maxsize:
            return False
        left = CAPACITY_SLOTS - self.head % CAPACITY_SLOTS
        if k > left:  # the record would wrap: a pad to the end first, if it has room
            if self.head + left - self.tail > CAPACITY_SLOTS:
                return False
            self.pads[self.head] = left
            self.head += left
        if self.head + k - self.tail > CAPACITY_SLOTS:
            return False
        self.items.append((self.head, obj, k))
        self.head += k
        return True

    def get(self) -> Any:
        while self.tail in self.pads:
            self.tail += self.pads.pop(self.tail)
        if not self.items:
            return None
        first, obj, k = self.items.popleft()
        assert first == self.tail
        self.tail += k
        return obj


small_objects = st.one_of(
    st.binary(max_size=700),
    st.builds(lambda n, v: np.full(n, v, np.int16), st.integers(0, 300), st.integers(-5, 5)),
    st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=3),
)


class QueueMachine(RuleBasedStateMachine):
    @initialize(maxsize=st.sampled_from([0, 3]), sync=st.sampled_from(["lockfree", "semaphore"]))
    def start(self, maxsize: int, sync: str) -> None:
        self.q = shmring.Queue(maxsize, capacity=CAPACITY_SLOTS * SLOT, sync=sync)
        self.model = Model(maxsize)

    @rule(obj=small_objects)
    def put(self, obj: Any) -> None:
        fits = self.model.put(obj)
        try:
            self.q.put_nowait(obj)
            assert fits, "put went in where the model has no room"
        except queue.Full:
            assert not fits, "put found no room where the model has some"

    @rule(objs=st.lists(small_objects, max_size=4))
    def put_many(self, objs: list[Any]) -> None:
        n = 0
        for obj in objs:
            if not self.model.put(obj):
                break
            n += 1
        try:
            assert self.q.put_many(objs, block=False) == n
        except queue.Full:
            assert n == 0 and objs

    @rule()
    def get(self) -> None:
        want = self.model.get()
        try:
            got = self.q.get_nowait()
        except queue.Empty:
            assert want is None
            return
        assert same(want, got)

    @rule(k=st.integers(1, 4))
    def get_many(self, k: int) -> None:
        want = []
        while len(want) < k and (obj := self.model.get()) is not None:
            want.append(obj)
        try:
            got = self.q.get_many(k, block=False)
        except queue.Empty:
            assert want == []
            return
        assert len(got) == len(want) and all(same(a, b) for a, b in zip(want, got, strict=True))

    @rule()
    def borrow(self) -> None:
        want = self.model.get()
        try:
            with self.q.borrow(block=False) as got:
                assert same(want, got)
        except queue.Empty:
            assert want is None

    @invariant()
    def sizes_agree(self) -> None:
        if hasattr(self, "q"):
            assert self.q.qsize() == len(self.model.items)
            assert self.q.full() == bool(self.model.maxsize and len(self.model.items) >= self.model.maxsize)

    def teardown(self) -> None:
        if hasattr(self, "q"):
            self.q.close()


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
