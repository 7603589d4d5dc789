"""The endpoint table and the name's lifetime against a sequential model,
driven by hypothesis.

Handles are opened, pickled, unpickled, closed, made producers and
consumers; entries of dead processes are forged into the table at random.
After every step the name exists exactly while the model has a handle open
or in flight, the table names exactly the model's live holders, pending
handles, producers and consumers (dead ones are freed as they are met), and
a single-producer (single-consumer) role has at most one live owner.
"""

from __future__ import annotations

import os
import pickle
import queue
import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule

import shmring
from shmring import _core
from shmring import _endpoints as E
from shmring import _layout as L

DEAD_PID = 4_000_000  # above any real pid here: whatever start time it claims, it is dead


class LifetimeMachine(RuleBasedStateMachine):
    handles = Bundle("handles")
    in_flight = Bundle("in_flight")

    def __init__(self) -> None:
        super().__init__()
        self.name = f"shmring-model-{uuid.uuid4().hex[:12]}"
        self.open: list[shmring.Ring] = []
        self.pending = 0
        self.producer: shmring.Ring | None = None
        self.consumer: shmring.Ring | None = None
        self.gone = False

    @initialize(target=handles)
    def create(self) -> shmring.Ring:
        ring = shmring.Ring(self.name, capacity=4)
        self.open.append(ring)
        return ring

    def exists(self) -> bool:
        return os.path.exists(f"/dev/shm/{self.name}")

    def any_open(self) -> shmring.Ring | None:
        return self.open[0] if self.open else None

    @precondition(lambda self: not self.gone)
    @rule(target=handles)
    def attach(self) -> shmring.Ring:
        ring = shmring.Ring.attach(self.name)
        self.open.append(ring)
        return ring

    @precondition(lambda self: not self.gone)
    @rule(target=in_flight, ring=handles)
    def pickle_a_handle(self, ring: shmring.Ring) -> bytes:
        if ring.closed:
            try:
                pickle.dumps(ring)
            except ValueError:
                return b""
            raise AssertionError("a closed handle pickled")
        self.pending += 1
        return pickle.dumps(ring)

    @precondition(lambda self: not self.gone)
    @rule(target=handles, data=consumes(in_flight))
    def unpickle(self, data: bytes) -> shmring.Ring | None:
        if not data:
            return None
        ring: shmring.Ring = pickle.loads(data)
        self.pending -= 1
        self.open.append(ring)
        return ring

    @rule(ring=consumes(handles))
    def close(self, ring: shmring.Ring | None) -> None:
        if ring is None or ring.closed:
            return
        ring.close()
        self.open.remove(ring)
        if ring is self.producer:
            self.producer = None
        if ring is self.consumer:
            self.consumer = None
        if not self.open and not self.pending:
            self.gone = True

    @precondition(lambda self: not self.gone)
    @rule(ring=handles)
    def become_producer(self, ring: shmring.Ring | None) -> None:
        if ring is None or ring.closed:
            return
        try:
            ring.put_nowait(1)
        except queue.Full:
            pass
        except shmring.RoleError:
            assert self.producer is not None and self.producer is not ring
            return
        except BrokenPipeError:
            assert self.consumer is None
        assert self.producer in (None, ring)
        self.producer = ring

    @precondition(lambda self: not self.gone)
    @rule(ring=handles)
    def become_consumer(self, ring: shmring.Ring | None) -> None:
        if ring is None or ring.closed:
            return
        try:
            ring.get_nowait()
        except (queue.Empty, EOFError):
            pass
        except shmring.RoleError:
            assert self.consumer is not None and self.consumer is not ring
            return
        assert self.consumer in (None, ring)
        self.consumer = ring

    @precondition(lambda self: not self.gone)
    @rule(
        role=st.sampled_from([E.HOLDER, E.PENDING, E.PRODUCER, E.CONSUMER]),
        state=st.sampled_from([E.STATE_CLAIMING, E.STATE_ACTIVE, E.STATE_FREEING]),
        own_pid=st.booleans(),
        slot=st.integers(0, L.MAX_ENDPOINTS - 1),
    )
    def forge_a_dead_entry(self, role: int, state: int, own_pid: bool, slot: int) -> None:
        """What a SIGKILLed process leaves: an entry naming it, maybe holding a role."""
        ring = self.any_open()
        if ring is None:
            return
        assert ring._region is not None and ring._region.mapping is not None
        m = ring._region.mapping
        off = L.ENDPOINTS_OFF + slot * L.ENDPOINT_SIZE
        # own pid with another start time: a dead predecessor that had our pid
        pid, start = (os.getpid(), E.own_start_time() + 1) if own_pid else (DEAD_PID, 12345)
        if _core.cas64(m, off, 0, E.pack_word(pid, role, state, start)) == 0:
            _core.store64(m, off + L.ENDPOINT_TOKEN, 0xDEAD0001 + 2 * slot)
            if role in (E.PRODUCER, E.CONSUMER) and state == E.STATE_ACTIVE:
                owner = L.PRODUCER_OWNER_OFF if role == E.PRODUCER else L.CONSUMER_OWNER_OFF
                _core.cas64(m, owner, 0, 0xDEAD0001 + 2 * slot)  # as if it owned the role

    @rule()
    def reap(self) -> None:
        """A peer's liveness scan (always possible, even once the name is gone)."""
        ring = self.any_open()
        if ring is not None:
            ring._table.reap()

    @invariant()
    def the_name_lives_exactly_while_a_handle_is_open_or_in_flight(self) -> None:
        assert self.exists() == (not self.gone), (self.exists(), len(self.open), self.pending)

    @invariant()
    def the_table_names_exactly_the_live_handles(self) -> None:
        ring = self.any_open()
        if ring is None:
            return
        table = ring._table
        assert table.live(E.HOLDER) == len(self.open)
        assert table.live(E.PENDING) == self.pending
        assert table.live(E.PRODUCER) == (self.producer is not None)
        assert table.live(E.CONSUMER) == (self.consumer is not None)
        table.reap()
        assert all(e.alive for e in ring.endpoints())

    def teardown(self) -> None:
        for ring in list(self.open):
            ring.close()
        if self.exists():  # pickles never loaded: retire them as their sender would at exit
            os.unlink(f"/dev/shm/{self.name}")


LifetimeMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_lifetime_against_a_model = LifetimeMachine.TestCase
