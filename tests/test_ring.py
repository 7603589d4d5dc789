"""Ring in one process: the contract of DESIGN.md, call by call."""

from __future__ import annotations

import os
import pickle
import queue
import time
from pathlib import Path

import numpy as np
import pytest

import shmring


@pytest.fixture
def ring(name: str) -> shmring.Ring:
    with shmring.Ring(name, capacity=4, shape=(3,), dtype=np.float64) as r:
        yield r


def test_put_then_get_returns_an_equal_copy(ring: shmring.Ring) -> None:
    item = np.array([1.0, 2.0, 3.0])
    ring.put(item)
    out = ring.get()
    assert out.shape == (3,) and out.dtype == np.float64
    np.testing.assert_array_equal(out, item)
    out[0] = 99.0  # a copy: writing to it touches neither the ring nor item
    assert item[0] == 1.0


def test_items_come_out_in_order_across_many_wraparounds(ring: shmring.Ring) -> None:
    for i in range(50):
        ring.put(np.full(3, i, dtype=np.float64))
        ring.put(np.full(3, i + 0.5))
        assert ring.get()[0] == i
        assert ring.get()[0] == i + 0.5


def test_scalar_ring_gives_zero_dimensional_arrays(name: str) -> None:
    with shmring.Ring(name, capacity=2, dtype=np.int32) as r:
        r.put(7)
        r.put(np.int32(8))
        a = r.get()
        assert a.shape == () and a.dtype == np.int32 and a == 7
        assert r.get() == 8


def test_lists_and_other_sequences_are_converted(ring: shmring.Ring) -> None:
    ring.put([1, 2, 3])
    ring.put((4.5, 5.5, 6.5))
    np.testing.assert_array_equal(ring.get(), [1, 2, 3])
    np.testing.assert_array_equal(ring.get(), [4.5, 5.5, 6.5])


def test_non_contiguous_and_castable_arrays_are_accepted(ring: shmring.Ring) -> None:
    ring.put(np.arange(6.0)[::2])
    ring.put(np.array([1, 2, 3], dtype=np.float32))
    np.testing.assert_array_equal(ring.get(), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(ring.get(), [1.0, 2.0, 3.0])


def test_structured_and_multidimensional_dtypes_round_trip(name: str) -> None:
    dt = np.dtype([("t", "<f8"), ("xy", "<i4", (2,))])
    with shmring.Ring(name, capacity=3, shape=(2, 2), dtype=dt) as r:
        item = np.zeros((2, 2), dtype=dt)
        item["t"] = [[1, 2], [3, 4]]
        item["xy"][1, 1] = [5, 6]
        r.put(item)
        out = r.get()
        assert out.dtype == dt
        np.testing.assert_array_equal(out, item)


def test_full_and_empty_raise_queue_exceptions(ring: shmring.Ring) -> None:
    with pytest.raises(queue.Empty):
        ring.get_nowait()
    with pytest.raises(queue.Empty):
        ring.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        ring.get(block=False)
    for i in range(4):
        ring.put_nowait(np.full(3, i))
    assert ring.full() and ring.qsize() == 4
    with pytest.raises(queue.Full):
        ring.put_nowait(np.zeros(3))
    with pytest.raises(queue.Full):
        ring.put(np.zeros(3), timeout=0.01)
    with pytest.raises(queue.Full):
        ring.put(np.zeros(3), False)
    assert [ring.get()[0] for _ in range(4)] == [0, 1, 2, 3]
    assert ring.empty()


def test_negative_timeout_is_a_value_error(ring: shmring.Ring) -> None:
    with pytest.raises(ValueError):
        ring.get(timeout=-1)
    with pytest.raises(ValueError):
        ring.put(np.zeros(3), timeout=-0.5)
    ring.put(np.zeros(3))
    assert ring.qsize() == 1


def test_keyword_arguments_are_accepted(ring: shmring.Ring) -> None:
    ring.put(item=np.ones(3), block=True, timeout=1.0)
    np.testing.assert_array_equal(ring.get(block=True, timeout=1.0), np.ones(3))
    with pytest.raises(TypeError):
        ring.put(np.ones(3), blocking=True)  # type: ignore[call-arg]


def test_put_many_puts_all_and_get_many_takes_what_is_ready(ring: shmring.Ring) -> None:
    items = np.arange(9.0).reshape(3, 3)
    assert ring.put_many(items) == 3
    out = ring.get_many(10)
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out, items)


def test_put_many_without_blocking_returns_how_many_fit(ring: shmring.Ring) -> None:
    items = np.arange(18.0).reshape(6, 3)
    assert ring.put_many(items, block=False) == 4
    with pytest.raises(queue.Full):
        ring.put_many(items, block=False)
    np.testing.assert_array_equal(ring.get_many(2), items[:2])
    assert ring.put_many(items[4:], timeout=0.01) == 2
    np.testing.assert_array_equal(ring.get_many(4), items[2:6])


def test_put_many_with_a_timeout_returns_the_partial_count(ring: shmring.Ring) -> None:
    assert ring.put_many(np.zeros((7, 3)), timeout=0.02) == 4


def test_put_many_of_nothing_is_zero(ring: shmring.Ring) -> None:
    assert ring.put_many(np.zeros((0, 3))) == 0
    assert ring.empty()


def test_get_many_wraps_around_the_end_of_the_ring(ring: shmring.Ring) -> None:
    ring.put_many(np.zeros((3, 3)))
    ring.get_many(3)
    items = np.arange(12.0).reshape(4, 3)  # starts at slot 3: wraps after one item
    ring.put_many(items)
    np.testing.assert_array_equal(ring.get_many(4), items)


def test_get_many_rejects_a_bad_count(ring: shmring.Ring) -> None:
    with pytest.raises(ValueError):
        ring.get_many(0)
    with pytest.raises(TypeError):
        ring.get_many(1.5)  # type: ignore[arg-type]


def test_reserve_publishes_on_normal_exit(ring: shmring.Ring) -> None:
    with ring.reserve() as slot:
        assert slot.shape == (3,) and slot.flags.writeable
        slot[:] = [7, 8, 9]
        assert ring.empty()  # not visible until the block ends
    np.testing.assert_array_equal(ring.get(), [7, 8, 9])


def test_reserve_drops_the_slot_when_the_block_raises(ring: shmring.Ring) -> None:
    with pytest.raises(KeyError):
        with ring.reserve() as slot:
            slot[:] = 1
            raise KeyError
    assert ring.empty()
    ring.put(np.full(3, 2.0))
    np.testing.assert_array_equal(ring.get(), [2, 2, 2])


def test_reserve_on_a_full_ring_times_out(ring: shmring.Ring) -> None:
    ring.put_many(np.zeros((4, 3)))
    with pytest.raises(queue.Full):
        with ring.reserve(timeout=0.01):
            pass


def test_put_inside_reserve_is_refused_and_leaves_the_ring_intact(ring: shmring.Ring) -> None:
    with ring.reserve() as slot:
        slot[:] = 1
        with pytest.raises(RuntimeError):
            ring.put(np.zeros(3))
    np.testing.assert_array_equal(ring.get(), [1, 1, 1])
    ring.put(np.zeros(3))
    assert ring.qsize() == 1


def test_borrow_gives_a_read_only_view_and_consumes_on_exit(ring: shmring.Ring) -> None:
    ring.put(np.array([1.0, 2.0, 3.0]))
    ring.put(np.array([4.0, 5.0, 6.0]))
    with ring.borrow() as item:
        assert not item.flags.writeable
        np.testing.assert_array_equal(item, [1, 2, 3])
        with pytest.raises(ValueError):
            item[0] = 0
        with pytest.raises(RuntimeError):
            ring.get()
    assert ring.qsize() == 1
    np.testing.assert_array_equal(ring.get(), [4, 5, 6])


def test_borrow_consumes_even_when_the_block_raises(ring: shmring.Ring) -> None:
    ring.put(np.ones(3))
    with pytest.raises(KeyError):
        with ring.borrow():
            raise KeyError
    assert ring.empty()


def test_borrow_many_is_contiguous_and_stops_at_the_wrap(ring: shmring.Ring) -> None:
    ring.put_many(np.zeros((3, 3)))
    ring.get_many(3)
    ring.put_many(np.arange(9.0).reshape(3, 3))  # slots 3, 0, 1
    with ring.borrow_many(10) as items:
        assert items.shape == (1, 3)
        np.testing.assert_array_equal(items[0], [0, 1, 2])
    with ring.borrow_many(10) as items:
        assert items.shape == (2, 3)
        np.testing.assert_array_equal(items, [[3, 4, 5], [6, 7, 8]])
    assert ring.empty()


def test_borrow_on_an_empty_ring_times_out(ring: shmring.Ring) -> None:
    with pytest.raises(queue.Empty):
        with ring.borrow(timeout=0.01):
            pass


def test_nested_views_on_one_handle_are_refused(ring: shmring.Ring) -> None:
    ring.put_many(np.zeros((2, 3)))
    with ring.borrow():
        with pytest.raises(RuntimeError):
            with ring.borrow():
                pass
    assert ring.qsize() == 1


def test_geometry_properties(name: str) -> None:
    with shmring.Ring(name, capacity=5, shape=(2, 3), dtype="<i2") as r:
        assert (r.capacity, r.shape, r.dtype, r.name, r.backend) == (5, (2, 3), np.dtype("<i2"), name, "shm")
        assert "shape=(2, 3)" in repr(r)


def test_int_shape_means_one_dimension(name: str) -> None:
    with shmring.Ring(name, capacity=2, shape=4) as r:
        assert r.shape == (4,) and r.dtype == np.uint8


def test_default_name_is_generated_and_unlinked_by_close() -> None:
    r = shmring.Ring(capacity=2)
    assert r.name and os.path.exists(f"/dev/shm/{r.name}")
    r.close()
    assert not os.path.exists(f"/dev/shm/{r.name}")


def test_segment_is_created_with_mode_0600(name: str) -> None:
    with shmring.Ring(name, capacity=2):
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
    with shmring.Ring(name, capacity=2, mode=0o640):
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o640


def test_attach_sees_the_same_ring(ring: shmring.Ring) -> None:
    ring.put(np.array([1.0, 2.0, 3.0]))
    with shmring.Ring.attach(ring.name or "") as other:
        assert (other.capacity, other.shape, other.dtype) == (4, (3,), np.float64)
        assert other.qsize() == 1
    # an attached handle's close never unlinks
    assert os.path.exists(f"/dev/shm/{ring.name}")


def test_create_over_an_existing_name_is_file_exists(ring: shmring.Ring) -> None:
    with pytest.raises(FileExistsError):
        shmring.Ring(ring.name, capacity=4)
    ring.put(np.zeros(3))
    assert ring.qsize() == 1


def test_attach_to_a_missing_name_is_file_not_found(name: str) -> None:
    with pytest.raises(FileNotFoundError):
        shmring.Ring.attach(name)


def test_unlink_keeps_open_handles_working(ring: shmring.Ring) -> None:
    other = shmring.Ring.attach(ring.name or "")
    ring.unlink()
    ring.unlink()  # twice is fine
    with pytest.raises(FileNotFoundError):
        shmring.Ring.attach(ring.name or "")
    ring.put(np.ones(3))
    np.testing.assert_array_equal(other.get(), np.ones(3))
    other.close()


def test_close_is_idempotent_and_later_calls_raise(name: str) -> None:
    r = shmring.Ring(name, capacity=2)
    r.close()
    r.close()
    assert r.closed
    for call in (lambda: r.put(1), lambda: r.get(), r.qsize, lambda: r.get_many(1), lambda: r.put_many([1])):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_close_with_a_live_view_defers_the_unmap(name: str) -> None:
    r = shmring.Ring(name, capacity=2, shape=(4,))
    r.put(np.arange(4, dtype=np.uint8))
    with r.borrow() as item:
        kept = item
    r.close()
    assert kept.sum() == 6  # the mapping lives as long as the view
    del kept, item


def test_anon_ring_works_in_one_process_and_refuses_pickling() -> None:
    with shmring.Ring(capacity=3, shape=(2,), backend="anon") as r:
        assert r.name is None
        r.put([1, 2])
        np.testing.assert_array_equal(r.get(), [1, 2])
        with pytest.raises(TypeError, match="anon"):
            pickle.dumps(r)
    with pytest.raises(ValueError):
        shmring.Ring.attach("x", backend="anon")


def test_file_ring_persists_and_is_deleted_only_by_unlink(tmp_path: Path) -> None:
    path = str(tmp_path / "ring.bin")
    with shmring.Ring(path, capacity=3, shape=(2,), dtype=np.int64, backend="file") as r:
        r.put([5, 6])
        r.flush()
    assert os.path.exists(path)
    with shmring.Ring.attach(path, backend="file") as r:
        np.testing.assert_array_equal(r.get(), [5, 6])
        r.unlink()
    assert not os.path.exists(path)


def test_pickle_round_trip_attaches_by_name(ring: shmring.Ring) -> None:
    ring.put(np.ones(3))
    clone = pickle.loads(pickle.dumps(ring))
    assert clone is not ring and clone.name == ring.name
    np.testing.assert_array_equal(clone.get(), np.ones(3))
    clone.close()


def test_get_raises_eof_after_the_producer_closes_and_the_ring_drains(name: str) -> None:
    with shmring.Ring(name, capacity=4) as consumer:
        producer = shmring.Ring.attach(name)
        producer.put(1)
        producer.put(2)
        producer.close()
        assert consumer.get() == 1
        assert consumer.get() == 2
        with pytest.raises(EOFError):
            consumer.get(timeout=5)
        with pytest.raises(EOFError):
            consumer.get_nowait()


def test_get_waits_rather_than_eof_before_any_producer_came(ring: shmring.Ring) -> None:
    with pytest.raises(queue.Empty):
        ring.get(timeout=0.02)


def test_put_fills_the_ring_before_any_consumer_came(name: str) -> None:
    with shmring.Ring(name, capacity=2) as r:
        r.put(1)
        r.put(2)
        with pytest.raises(queue.Full):
            r.put_nowait(3)


def test_put_raises_broken_pipe_after_the_consumer_closes(name: str) -> None:
    with shmring.Ring(name, capacity=4) as producer:
        consumer = shmring.Ring.attach(name)
        producer.put(1)
        assert consumer.get() == 1
        consumer.close()
        with pytest.raises(BrokenPipeError):
            producer.put(2)
        with pytest.raises(BrokenPipeError):
            producer.put_many(np.zeros((2,), dtype=np.uint8))


def test_a_second_producer_on_a_single_producer_ring_is_refused(name: str) -> None:
    with shmring.Ring(name, capacity=4) as first:
        first.put(1)
        with shmring.Ring.attach(name) as second:
            with pytest.raises(shmring.RoleError):
                second.put(2)
            assert second.get() == 1  # consuming is still fine
            first.put(3)  # the refused attempt left nothing behind
            assert second.get() == 3
            assert [e.role for e in first.endpoints()].count("producer") == 1


def test_a_producer_slot_frees_when_its_handle_closes(name: str) -> None:
    with shmring.Ring(name, capacity=4) as consumer:
        for i in range(3):
            with shmring.Ring.attach(name) as producer:
                producer.put(i)
            assert consumer.get() == i


def test_endpoints_lists_holders_producers_and_consumers(ring: shmring.Ring) -> None:
    assert [e.role for e in ring.endpoints()] == ["holder"]  # every open handle is visible
    ring.put(np.zeros(3))
    ring.get()
    roles = sorted(e.role for e in ring.endpoints())
    assert roles == ["consumer", "holder", "producer"]
    assert all(e.pid == os.getpid() and e.alive for e in ring.endpoints())


def test_an_unknown_sync_flavour_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="sync must be one of"):
        shmring.Ring(name, capacity=2, sync="spinlock")
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_thread_blocked_in_get_lets_another_thread_put_on_the_same_handle(ring: shmring.Ring) -> None:
    import threading

    got: list[np.ndarray] = []
    t = threading.Thread(target=lambda: got.append(ring.get(timeout=30)))
    t.start()
    time.sleep(0.05)
    ring.put(np.full(3, 9.0))
    t.join(30)
    assert not t.is_alive()
    np.testing.assert_array_equal(got[0], [9, 9, 9])


def test_closing_from_another_thread_wakes_a_blocked_get(name: str) -> None:
    import threading

    r = shmring.Ring(name, capacity=2)
    r.put(1)
    r.get()
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            r.get(timeout=30)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.05)
    r.close()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (ValueError, EOFError))


def test_a_forgotten_creator_handle_unlinks_when_collected(name: str) -> None:
    import gc

    r = shmring.Ring(name, capacity=2)
    assert os.path.exists(f"/dev/shm/{name}")
    del r
    gc.collect()
    assert not os.path.exists(f"/dev/shm/{name}")


# -- indices a stream cannot reach --------------------------------------------------------


def _set_indices(ring: shmring.Ring, value: int) -> None:
    from shmring import _core
    from shmring import _layout as L

    assert ring._region is not None and ring._region.mapping is not None
    for off in (L.HEAD_OFF, L.TAIL_OFF, L.CACHED_TAIL_OFF, L.CACHED_HEAD_OFF):
        _core.store64(ring._region.mapping, off, value)


def test_indices_near_the_limit_still_map_to_consecutive_slots(name: str) -> None:
    with shmring.Ring(name, capacity=3, dtype=np.int64) as ring:
        _set_indices(ring, (1 << 62) - 4)
        for i in (10, 11, 12):
            ring.put(i)
        assert [int(x) for x in ring.get_many(3)] == [10, 11, 12]


@pytest.mark.parametrize("index", [1 << 62, (1 << 64) - 2])
def test_an_index_no_stream_can_reach_is_a_layout_error(name: str, index: int) -> None:
    """The review's recipe: indices at 2**64 - 2 on a capacity-3 ring used to
    deliver 10, 12, 12; such a header can only be corrupt."""
    with shmring.Ring(name, capacity=3, dtype=np.int64) as ring:
        _set_indices(ring, index)
        with pytest.raises(shmring.LayoutError):
            ring.put(10)
        with pytest.raises(shmring.LayoutError):
            ring.put_many(np.array([10, 11]))
        with pytest.raises(shmring.LayoutError):
            ring.get_nowait()
        with pytest.raises(shmring.LayoutError):
            ring.qsize()


def test_qsize_refuses_a_tail_ahead_of_head(name: str) -> None:
    from shmring import _core
    from shmring import _layout as L

    with shmring.Ring(name, capacity=4) as ring:
        assert ring._region is not None and ring._region.mapping is not None
        _core.store64(ring._region.mapping, L.TAIL_OFF, 5)  # head is 0
        with pytest.raises(shmring.LayoutError):
            ring.qsize()
