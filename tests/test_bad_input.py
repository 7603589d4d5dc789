"""Bad input gets a clear exception and leaves the ring intact."""

from __future__ import annotations

import os

import numpy as np
import pytest

import shmring


@pytest.fixture
def ring(name: str) -> shmring.Ring:
    with shmring.Ring(name, capacity=3, shape=(2,), dtype=np.int32) as r:
        yield r


def assert_still_usable(r: shmring.Ring) -> None:
    before = r.qsize()
    r.put(np.array([41, 42], dtype=np.int32))
    assert r.qsize() == before + 1
    items = r.get_many(r.capacity)
    np.testing.assert_array_equal(items[-1], [41, 42])


@pytest.mark.parametrize("item", [np.zeros(3, np.int32), np.zeros((2, 1), np.int32), [1, 2, 3], 5])
def test_wrong_shape_is_a_value_error(ring: shmring.Ring, item: object) -> None:
    with pytest.raises(ValueError, match="shape"):
        ring.put(item)
    assert_still_usable(ring)


def test_wrong_batch_shape_is_a_value_error(ring: shmring.Ring) -> None:
    with pytest.raises(ValueError, match="shape"):
        ring.put_many(np.zeros((4, 3), np.int32))
    with pytest.raises(ValueError, match="shape"):
        ring.put_many(np.zeros(2, np.int32))
    assert_still_usable(ring)


@pytest.mark.parametrize("item", [np.zeros(2, np.float64), np.zeros(2, np.complex64), [1.5, 2.5], np.array(["a", "b"])])
def test_uncastable_dtype_is_a_type_error(ring: shmring.Ring, item: object) -> None:
    with pytest.raises(TypeError):
        ring.put(item)
    assert_still_usable(ring)


def test_out_of_range_python_ints_are_refused(ring: shmring.Ring) -> None:
    with pytest.raises(OverflowError):
        ring.put([1, 2**40])
    assert_still_usable(ring)


def test_same_kind_casts_are_accepted_only_when_asked_for(ring: shmring.Ring) -> None:
    with pytest.raises(TypeError, match="casting"):
        ring.put(np.array([1, 2], dtype=np.int64))  # int64 -> int32 is same_kind, not safe
    assert ring.qsize() == 0
    ring.put(np.array([1, 2], dtype=np.int64), casting="same_kind")
    ring.put(np.array([True, False]))  # bool -> int32 is safe
    np.testing.assert_array_equal(ring.get_many(2), [[1, 2], [1, 0]])


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_a_value_error(name: str, capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        shmring.Ring(name, capacity=capacity)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_capacity_must_be_an_int(name: str) -> None:
    with pytest.raises(TypeError):
        shmring.Ring(name, capacity=2.5)


def test_absurd_capacity_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=1 << 50, shape=(1024,))
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("bad", ["/leading", "a/b", "", "x" * 300, "nul\0byte"])
def test_bad_names_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        shmring.Ring(bad, capacity=2)
    with pytest.raises(ValueError):
        shmring.Ring.attach(bad)


def test_bad_shape_and_dtype(name: str) -> None:
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=2, shape=(-1,))
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=2, shape=(0,))  # items of no bytes
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=2, shape=(1,) * 9)
    with pytest.raises(TypeError):
        shmring.Ring(name, capacity=2, dtype=object)
    with pytest.raises(TypeError):
        shmring.Ring(name, capacity=2, dtype=[("a", "O")])
    with pytest.raises(TypeError):
        shmring.Ring(name, capacity=2, dtype="not a dtype")
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=2, backend="nowhere")
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=2, sync="spinlock")
    assert not os.path.exists(f"/dev/shm/{name}")


def test_anon_rings_take_no_name(name: str) -> None:
    with pytest.raises(ValueError):
        shmring.Ring(name, capacity=2, backend="anon")
