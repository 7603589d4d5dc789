"""Conversion rules for put: numpy's safe rule for arrays, by value for Python
numbers, nothing ever wraps silently (shmring/_convert.py)."""

from __future__ import annotations

import decimal
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import shmring
from shmring._convert import CASTINGS, check_casting, coerce

NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"]
I32 = np.dtype(np.int32)


def one(item: Any, dtype: Any, shape: tuple[int, ...] = (), casting: str = "safe") -> np.ndarray[Any, Any]:
    return coerce(item, np.dtype(dtype), shape, batch=False, casting=casting)


def many(items: Any, dtype: Any, shape: tuple[int, ...] = (), casting: str = "safe") -> np.ndarray[Any, Any]:
    return coerce(items, np.dtype(dtype), shape, batch=True, casting=casting)


# -- arrays and numpy scalars: numpy's rule on the dtype ------------------------------


@pytest.mark.parametrize("dst", NUMERIC)
@pytest.mark.parametrize("src", NUMERIC)
def test_array_is_accepted_exactly_when_numpy_calls_the_cast_safe(src: str, dst: str) -> None:
    a = np.arange(4, dtype=src)
    if np.can_cast(src, dst, "safe"):
        out = one(a, dst, (4,))
        assert out.dtype == np.dtype(dst)
        np.testing.assert_array_equal(out, [0, 1, 2, 3])
    else:
        with pytest.raises(TypeError, match="casting='safe'") as info:
            one(a, dst, (4,))
        assert f"cannot put {src} data into a ring of {dst}" in str(info.value)


@pytest.mark.parametrize("dst", NUMERIC)
@pytest.mark.parametrize("src", NUMERIC)
def test_unsafe_casting_accepts_every_pair_of_numeric_dtypes(src: str, dst: str) -> None:
    out = one(np.arange(4, dtype=src), dst, (4,), casting="unsafe")
    assert out.dtype == np.dtype(dst)
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


@pytest.mark.parametrize("dst", NUMERIC)
@pytest.mark.parametrize("src", NUMERIC)
def test_same_kind_casting_follows_numpys_rule(src: str, dst: str) -> None:
    a = np.arange(4, dtype=src)
    if np.can_cast(src, dst, "same_kind"):
        assert one(a, dst, (4,), casting="same_kind").dtype == np.dtype(dst)
    else:
        with pytest.raises(TypeError, match=f"{src}.*{dst}.*casting='same_kind'"):
            one(a, dst, (4,), casting="same_kind")


@pytest.mark.parametrize("dst", NUMERIC)
@pytest.mark.parametrize("src", NUMERIC)
def test_no_casting_accepts_only_the_very_same_dtype(src: str, dst: str) -> None:
    a = np.arange(4, dtype=src)
    if src == dst:
        assert one(a, dst, (4,), casting="no") is a
    else:
        with pytest.raises(TypeError, match="casting='no'"):
            one(a, dst, (4,), casting="no")


def test_int64_array_too_wide_for_int32_ring_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError) as info:
        one(np.array(2**40 + 5), I32)
    assert str(info.value) == (
        "cannot put int64 data into a ring of int32 under casting='safe'"
        " (pass casting='same_kind' or 'unsafe' to allow it)"
    )


def test_float_array_into_int_ring_hints_at_unsafe_only() -> None:
    with pytest.raises(TypeError, match=r"\(pass casting='unsafe' to allow it\)$"):
        one(np.zeros(2), I32, (2,), casting="same_kind")


def test_same_kind_casting_wraps_an_int64_array_by_the_callers_choice() -> None:
    assert one(np.array(2**40 + 5), I32, casting="same_kind") == 5


def test_uint32_beyond_int32_is_refused_under_safe_casting() -> None:
    with pytest.raises(TypeError, match=r"uint32.*int32"):
        one(np.array(3_000_000_000, dtype=np.uint32), I32)


def test_float64_array_into_float32_ring_is_refused_under_safe_casting() -> None:
    with pytest.raises(TypeError, match=r"float64.*float32"):
        one(np.array([1e300]), np.float32, (1,))


def test_numpy_scalar_follows_the_dtype_rule_not_its_value() -> None:
    with pytest.raises(TypeError, match=r"int64.*int32"):
        one(np.int64(5), I32)
    out = one(np.int16(-5), I32)
    assert out.shape == () and out.dtype == I32 and out == -5


def test_numpy_float64_scalar_is_not_taken_for_a_python_float() -> None:
    # np.float64 subclasses float: it must still follow the dtype rule.
    with pytest.raises(TypeError, match=r"float64.*float32"):
        one(np.float64(0.5), np.float32)


def test_byte_swapped_array_comes_back_in_the_rings_exact_dtype() -> None:
    swapped = np.arange(3, dtype=">i4")
    out = one(swapped, "<i4", (3,), casting="equiv")
    assert out.dtype == np.dtype("<i4") and out.dtype.byteorder in "=<"
    np.testing.assert_array_equal(out, [0, 1, 2])
    with pytest.raises(TypeError, match="casting='no'"):
        one(swapped, "<i4", (3,), casting="no")


def test_bool_array_goes_into_an_int_ring() -> None:
    np.testing.assert_array_equal(one(np.array([True, False]), I32, (2,)), [1, 0])


# -- Python numbers: by value -------------------------------------------------------


def test_python_int_too_large_for_int32_is_an_overflow_error() -> None:
    with pytest.raises(OverflowError, match=r"1099511627781.*int32"):
        one(2**40 + 5, I32)


def test_python_int_3e9_does_not_fit_an_int32_ring() -> None:
    with pytest.raises(OverflowError, match="3000000000"):
        one(3_000_000_000, I32)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
def test_negative_python_int_into_an_unsigned_ring_is_an_overflow_error(dtype: str) -> None:
    with pytest.raises(OverflowError, match="-1"):
        one(-1, dtype)
    with pytest.raises(OverflowError, match="-1"):
        one([3, -1], dtype, (2,))


def test_256_inside_a_nested_list_does_not_fit_a_uint8_ring() -> None:
    with pytest.raises(OverflowError, match=r"256.*uint8"):
        one([[1, 2], [3, 256]], np.uint8, (2, 2))


def test_out_of_range_python_int_in_a_batch_list_is_an_overflow_error() -> None:
    with pytest.raises(OverflowError, match="2147483648"):
        many([1, 2, 2**31], I32)


@pytest.mark.parametrize("value", [2, -1, [0, 1, 2]])
def test_python_ints_other_than_0_and_1_do_not_fit_a_bool_ring(value: Any) -> None:
    shape = (3,) if isinstance(value, list) else ()
    with pytest.raises(OverflowError, match="bool"):
        one(value, np.bool_, shape)


def test_python_0_and_1_and_bools_fit_a_bool_ring() -> None:
    np.testing.assert_array_equal(one([0, 1, True, False], np.bool_, (4,)), [False, True, True, False])


@pytest.mark.parametrize("casting", CASTINGS)
def test_python_int_overflow_is_refused_whatever_the_casting(casting: str) -> None:
    with pytest.raises(OverflowError):
        one(2**40 + 5, I32, casting=casting)


@pytest.mark.parametrize("casting", CASTINGS)
def test_python_ints_that_fit_are_accepted_whatever_the_casting(casting: str) -> None:
    out = one([-128, 127], np.int8, (2,), casting=casting)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, [-128, 127])


def test_python_ints_at_the_edges_of_uint64_fit() -> None:
    out = one([0, 2**64 - 1], np.uint64, (2,))
    assert out.tolist() == [0, 2**64 - 1]


def test_mix_of_negative_ints_and_ints_beyond_int64_is_judged_by_value() -> None:
    # numpy turns [-1, 2**63] into float64; the values are still ints.
    with pytest.raises(OverflowError, match=r"-1.*uint64"):
        one([-1, 2**63], np.uint64, (2,))
    with pytest.raises(OverflowError, match=r"9223372036854775808.*int64"):
        one([-1, 2**63], np.int64, (2,))


def test_python_int_beyond_64_bits_is_an_overflow_error_for_int_rings() -> None:
    with pytest.raises(OverflowError, match=str(2**70)):
        one(2**70, np.int64)


@pytest.mark.parametrize("casting", ["no", "equiv", "safe", "same_kind"])
def test_python_float_into_an_int_ring_is_refused_short_of_unsafe(casting: str) -> None:
    with pytest.raises(TypeError, match=f"Python float data into a ring of int32 under casting='{casting}'"):
        one(1.5, I32, casting=casting)
    with pytest.raises(TypeError, match="Python float"):
        one([1, 2.0], I32, (2,), casting=casting)


def test_unsafe_casting_truncates_a_python_float_into_an_int_ring() -> None:
    assert one(2.75, I32, casting="unsafe") == 2


def test_python_float_into_a_bool_ring_is_refused() -> None:
    with pytest.raises(TypeError, match="Python float"):
        one(1.0, np.bool_)


@pytest.mark.parametrize(("value", "dtype"), [(1e300, "float32"), (-1e300, "float32"), (70000.0, "float16")])
def test_finite_python_float_that_would_become_inf_is_an_overflow_error(value: float, dtype: str) -> None:
    with pytest.raises(OverflowError, match="inf"):
        one(value, dtype)
    with pytest.raises(OverflowError, match="inf"):
        one([[0.5], [value]], dtype, (2, 1), casting="same_kind")


def test_python_int_that_would_become_inf_in_float16_is_an_overflow_error() -> None:
    with pytest.raises(OverflowError, match=r"70000.*float16"):
        one([1, 70000], np.float16, (2,))


def test_unsafe_casting_lets_a_python_float_become_inf() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "overflow encountered in cast"
        out = one(1e300, np.float32, casting="unsafe")
    assert np.isinf(out)


def test_python_inf_and_nan_stay_inf_and_nan_in_a_float32_ring() -> None:
    out = one([float("inf"), float("-inf"), float("nan")], np.float32, (3,))
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


def test_python_float_rounds_into_a_float32_ring_without_complaint() -> None:
    assert one(0.1, np.float32) == np.float32(0.1)


def test_python_ints_go_into_float_rings_by_value() -> None:
    assert one(2**70, np.float64) == 2.0**70
    np.testing.assert_array_equal(one([1, -2], np.float16, (2,)), [1.0, -2.0])


def test_python_int_too_large_for_any_float_is_an_overflow_error() -> None:
    with pytest.raises(OverflowError):
        one(10**400, np.float64)


@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_python_complex_into_a_real_ring_is_refused_short_of_unsafe(dtype: str) -> None:
    with pytest.raises(TypeError, match="Python complex"):
        one(1 + 2j, dtype, casting="same_kind")


def test_python_complex_into_a_complex_ring_is_accepted() -> None:
    assert one(1 + 2j, np.complex64) == np.complex64(1 + 2j)


def test_python_bools_go_into_int_and_float_rings() -> None:
    np.testing.assert_array_equal(one([True, False], I32, (2,)), [1, 0])
    assert one(True, np.float32) == 1.0


# -- things that are not numbers ----------------------------------------------------


@pytest.mark.parametrize("item", [None, {}, object(), decimal.Decimal(1), [1, None]])
def test_objects_that_are_not_numbers_are_type_errors(item: Any) -> None:
    shape = (2,) if isinstance(item, list) else ()
    with pytest.raises(TypeError, match="cannot put"):
        one(item, I32, shape)


@pytest.mark.parametrize("casting", CASTINGS)
def test_object_arrays_are_refused_even_under_unsafe_casting(casting: str) -> None:
    with pytest.raises(TypeError, match="object"):
        one(np.array([1, 2], dtype=object), I32, (2,), casting=casting)


@pytest.mark.parametrize("item", ["3", ["1", "2"], np.array(["1", "2"]), b"3", np.array([b"1", b"2"])])
def test_text_is_never_parsed_into_a_numeric_ring_even_under_unsafe(item: Any) -> None:
    shape = () if isinstance(item, (str, bytes)) else (2,)
    with pytest.raises(TypeError, match="text"):
        one(item, I32, shape, casting="unsafe")


def test_non_number_after_a_float_and_a_huge_int_is_still_found() -> None:
    # numpy makes an object array of [0.5, 2**70, None]; None must not become nan.
    with pytest.raises(TypeError, match="NoneType"):
        one([0.5, 2**70, None], np.float64, (3,))


def test_ragged_nested_list_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="regular"):
        one([[1, 2], [3]], I32, (2, 2))


def test_text_ring_takes_python_strings_and_refuses_truncation_under_safe() -> None:
    assert one("hi", "<U4") == "hi"
    with pytest.raises(TypeError, match=r"<U6.*<U4"):
        one("sixsix", "<U4")


# -- structured rings -----------------------------------------------------------------

PAIR = np.dtype([("a", "<i4"), ("b", "<f8")])


def test_structured_ring_takes_a_tuple() -> None:
    out = one((1, 2.5), PAIR)
    assert out.shape == () and out.dtype == PAIR and out["a"] == 1 and out["b"] == 2.5


def test_structured_ring_takes_a_list_of_tuples_as_a_batch() -> None:
    out = many([(1, 2.5), (3, 4.5)], PAIR)
    assert out.shape == (2,)
    np.testing.assert_array_equal(out["a"], [1, 3])


def test_structured_array_with_safely_castable_fields_is_accepted() -> None:
    narrow = np.zeros(2, dtype=[("a", "<i2"), ("b", "<f4")])
    narrow["a"] = [7, 8]
    np.testing.assert_array_equal(many(narrow, PAIR)["a"], [7, 8])


def test_structured_array_with_a_wider_field_is_refused_under_safe() -> None:
    wide = np.zeros(2, dtype=[("a", "<i8"), ("b", "<f8")])
    with pytest.raises(TypeError, match="casting='safe'"):
        many(wide, PAIR)
    assert many(wide, PAIR, casting="same_kind").dtype == PAIR


def test_python_int_too_large_for_a_structured_field_is_an_overflow_error() -> None:
    with pytest.raises(OverflowError):
        one((2**40, 1.0), PAIR)


# -- shapes -------------------------------------------------------------------------


def test_wrong_shape_is_a_value_error_naming_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"^item has shape \(3,\), expected \(4,\)$"):
        one(np.zeros(3, np.int32), I32, (4,))
    with pytest.raises(ValueError, match=r"item has shape \(3,\), expected \(4,\)"):
        one([1, 2, 3], I32, (4,))


def test_wrong_batch_shape_is_a_value_error_expecting_n_items() -> None:
    with pytest.raises(ValueError, match=r"^item has shape \(2, 3\), expected \(n, 4\)$"):
        many(np.zeros((2, 3), np.int32), I32, (4,))
    with pytest.raises(ValueError, match=r"expected \(n,\)"):
        many(np.zeros((2, 3), np.int32), I32)


def test_scalar_is_not_broadcast_to_the_item_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        one(5, I32, (1,))


def test_zero_d_items_stay_zero_d() -> None:
    for item in (5, np.int16(5), np.array(5, np.int8)):
        out = one(item, I32)
        assert out.shape == () and out.dtype == I32 and out == 5


# -- the result -----------------------------------------------------------------------


def test_exact_c_contiguous_item_comes_back_unchanged() -> None:
    item = np.arange(4, dtype=np.int32)
    assert one(item, I32, (4,)) is item
    batch = np.zeros((3, 4), np.int32)
    assert many(batch, I32, (4,)) is batch
    scalar = np.array(7, np.int32)
    assert one(scalar, I32) is scalar


def test_non_contiguous_item_is_copied_to_c_order() -> None:
    strided = np.arange(8, dtype=np.int32)[::2]
    out = one(strided, I32, (4,))
    assert out is not strided and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [0, 2, 4, 6])
    fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    out2 = many(fortran, I32, (3,))
    assert out2.flags.c_contiguous
    np.testing.assert_array_equal(out2, [[0, 1, 2], [3, 4, 5]])


def test_ndarray_subclass_comes_back_as_a_plain_ndarray() -> None:
    class Tagged(np.ndarray):  # type: ignore[type-arg]
        pass

    item = np.arange(4, dtype=np.int32).view(Tagged)
    out = one(item, I32, (4,))
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


# -- the casting keyword --------------------------------------------------------------


@pytest.mark.parametrize("casting", CASTINGS)
def test_check_casting_returns_each_allowed_value(casting: str) -> None:
    assert check_casting(casting) == casting


@pytest.mark.parametrize("bad", ["", "SAFE", "bogus", "safe "])
def test_unknown_casting_string_is_a_value_error_listing_the_allowed_ones(bad: str) -> None:
    with pytest.raises(ValueError, match="'no', 'equiv', 'safe', 'same_kind', 'unsafe'"):
        check_casting(bad)
    with pytest.raises(ValueError, match="casting"):
        one(5, I32, casting=bad)


@pytest.mark.parametrize("bad", [None, 1, b"safe", ["safe"]])
def test_non_string_casting_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="casting must be one of"):
        check_casting(bad)


def test_bad_casting_is_refused_even_for_an_item_on_the_fast_path() -> None:
    with pytest.raises(ValueError, match="casting"):
        one(np.arange(4, dtype=np.int32), I32, (4,), casting="bogus")


# -- batches --------------------------------------------------------------------------


def test_generator_of_arrays_is_stacked_in_order() -> None:
    gen = (np.full(3, i, dtype=np.int16) for i in range(4))
    out = many(gen, I32, (3,))
    assert out.shape == (4, 3) and out.dtype == I32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out[:, 0], [0, 1, 2, 3])


def test_list_of_arrays_of_mixed_dtypes_follows_the_rule_per_element() -> None:
    out = many([np.int8(1), np.int16(2), np.array(3, np.uint16)], I32)
    np.testing.assert_array_equal(out, [1, 2, 3])
    with pytest.raises(TypeError, match=r"^items\[1\]: cannot put int64 data"):
        many([np.int8(1), np.int64(2)], I32)
    assert many([np.int8(1), np.int64(2)], I32, casting="same_kind").tolist() == [1, 2]


def test_list_mixing_arrays_and_python_values_converts_each_by_its_own_rule() -> None:
    out = many([np.zeros(2, np.int16), [5, 6]], I32, (2,))
    np.testing.assert_array_equal(out, [[0, 0], [5, 6]])
    with pytest.raises(OverflowError, match=r"items\[1\]"):
        many([np.zeros(2, np.int16), [5, 2**40]], I32, (2,))


def test_batch_of_numpy_scalars_is_cast_per_element_without_promoting_them_together() -> None:
    # Stacking uint64 with int64 first would promote both to float64 and lose 2**64 - 1.
    out = many([np.uint64(2**64 - 1), np.int64(1)], np.uint64, casting="unsafe")
    assert out.tolist() == [2**64 - 1, 1]


def test_batch_element_of_the_wrong_shape_names_its_index() -> None:
    with pytest.raises(ValueError, match=r"items\[2\]: item has shape \(3,\), expected \(4,\)"):
        many([np.zeros(4, np.int32), np.zeros(4, np.int32), np.zeros(3, np.int32)], I32, (4,))


def test_generator_of_python_ints_is_converted_by_value() -> None:
    np.testing.assert_array_equal(many((i * 10 for i in range(3)), np.uint8), [0, 10, 20])
    with pytest.raises(OverflowError, match="300"):
        many((i * 100 for i in range(4)), np.uint8)


def test_range_is_a_batch_of_python_ints() -> None:
    np.testing.assert_array_equal(many(range(3), I32), [0, 1, 2])


@pytest.mark.parametrize("empty", [[], (), iter([]), np.empty((0, 4), np.int32)])
def test_empty_batch_is_an_array_of_zero_items(empty: Any) -> None:
    out = many(empty, I32, (4,))
    assert out.shape == (0, 4) and out.dtype == I32


def test_empty_float_array_batch_still_follows_the_dtype_rule() -> None:
    with pytest.raises(TypeError, match="float64"):
        many(np.empty((0, 4)), I32, (4,))


@pytest.mark.parametrize("items", [5, 1.5, None, object(), np.int32(5), "abc", b"abc"])
def test_non_iterable_batch_is_a_type_error(items: Any) -> None:
    with pytest.raises(TypeError, match=r"put_many\(\) takes an array of shape \(n,\) or an iterable of items"):
        many(items, I32)


def test_batch_of_things_that_cannot_be_stacked_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"items\[0\]: cannot put a dict"):
        many([{}, {}], I32)


# -- through a real ring ----------------------------------------------------------------


@pytest.fixture
def ring(name: str) -> Iterator[shmring.Ring]:
    with shmring.Ring(name, capacity=4, shape=(), dtype=np.int32) as r:
        yield r


def assert_round_trips(r: shmring.Ring) -> None:
    r.put(np.int32(41))
    assert r.get() == 41


def test_put_refuses_an_int64_array_beyond_int32_and_leaves_the_ring_untouched(ring: shmring.Ring) -> None:
    with pytest.raises(TypeError, match=r"int64.*int32.*casting='safe'"):
        ring.put(np.array(2**40 + 5, dtype=np.int64))
    assert ring.qsize() == 0
    assert_round_trips(ring)


def test_put_with_same_kind_casting_wraps_by_the_callers_choice(ring: shmring.Ring) -> None:
    ring.put(np.array(2**40 + 5, dtype=np.int64), casting="same_kind")
    assert ring.get() == 5


def test_put_refuses_a_python_int_beyond_int32_with_overflow_error(ring: shmring.Ring) -> None:
    with pytest.raises(OverflowError):
        ring.put(2**40 + 5)
    with pytest.raises(OverflowError):
        ring.put(3_000_000_000, casting="unsafe")
    assert ring.qsize() == 0
    assert_round_trips(ring)


def test_put_refuses_a_python_float_unless_casting_is_unsafe(ring: shmring.Ring) -> None:
    with pytest.raises(TypeError, match="Python float"):
        ring.put(2.5)
    assert ring.qsize() == 0
    ring.put(2.5, casting="unsafe")
    assert ring.get() == 2


def test_put_nowait_takes_casting(ring: shmring.Ring) -> None:
    with pytest.raises(TypeError, match="casting='safe'"):
        ring.put_nowait(np.uint32(7))
    ring.put_nowait(np.uint32(7), casting="same_kind")
    assert ring.get_nowait() == 7


def test_put_many_takes_casting(ring: shmring.Ring) -> None:
    batch = np.array([1, 2, 2**40 + 3], dtype=np.int64)
    with pytest.raises(TypeError, match="int64"):
        ring.put_many(batch)
    assert ring.qsize() == 0
    assert ring.put_many(batch, casting="unsafe") == 3
    np.testing.assert_array_equal(ring.get_many(3), [1, 2, 3])


def test_put_many_of_a_generator_of_arrays_puts_each_in_order(ring: shmring.Ring) -> None:
    assert ring.put_many(np.int16(i) for i in (5, 6, 7)) == 3
    np.testing.assert_array_equal(ring.get_many(4), [5, 6, 7])


def test_put_many_with_one_bad_element_writes_nothing(ring: shmring.Ring) -> None:
    with pytest.raises(OverflowError, match=r"items\[2\]"):
        ring.put_many([np.int32(1), np.int32(2), 2**40])
    assert ring.qsize() == 0
    assert_round_trips(ring)


@pytest.mark.parametrize("casting", CASTINGS)
def test_exact_item_goes_in_under_every_casting(ring: shmring.Ring, casting: str) -> None:
    ring.put(np.array(9, dtype=np.int32), casting=casting)
    ring.put_nowait(np.array(10, dtype=np.int32), casting=casting)
    np.testing.assert_array_equal(ring.get_many(2), [9, 10])


@pytest.mark.parametrize("method", ["put", "put_nowait"])
def test_bad_casting_through_put_is_a_value_error_even_for_an_exact_item(ring: shmring.Ring, method: str) -> None:
    with pytest.raises(ValueError, match="casting"):
        getattr(ring, method)(np.array(9, dtype=np.int32), casting="bogus")
    with pytest.raises(ValueError, match="casting"):
        ring.put_many(np.zeros(2, np.int32), casting="bogus")
    assert ring.qsize() == 0


def test_put_of_text_into_an_int_ring_is_a_type_error(ring: shmring.Ring) -> None:
    with pytest.raises(TypeError, match="text"):
        ring.put("5", casting="unsafe")
    assert ring.qsize() == 0
