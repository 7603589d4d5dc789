"""Conversion of the items given to ``Ring.put``, ``put_nowait`` and ``put_many``.

A ring usually joins programs written separately, by different people, so a
mismatch between what the producer hands over and what the ring holds must be
loud, never a silent wrap: numpy's ``same_kind`` rule would store an int64
2**40+5 into an int32 ring as 5 and 1e300 into a float32 ring as inf.  So:

* arrays and numpy scalars are cast only when numpy's ``safe`` rule allows
  it, or the rule the caller names with ``casting=`` (numpy's vocabulary);
* Python numbers, and lists and tuples of them, have no dtype: they are
  converted by value, and one the ring's dtype cannot hold raises
  ``OverflowError``;
* objects, and text into numeric rings, are always refused.

Everything here runs before anything is written to the ring.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np

__all__ = ["CASTINGS", "Casting", "check_casting", "coerce"]

Casting = Literal["no", "equiv", "safe", "same_kind", "unsafe"]

CASTINGS: tuple[str, ...] = ("no", "equiv", "safe", "same_kind", "unsafe")

_PY_NUMBERS = (bool, int, float, complex)
_NUMERIC = "biufc"  # dtype kinds holding numbers
_TEXT = "SU"
_RANK = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}  # a Python value may go up this ladder, not down
_PY_KIND_NAME = {"b": "Python bool", "i": "Python int", "u": "Python int", "f": "Python float", "c": "Python complex"}


def check_casting(casting: object) -> Casting:
    """``casting`` itself if it is one of :data:`CASTINGS`; ``TypeError`` for
    a non-string, ``ValueError`` for any other string."""
    if isinstance(casting, str) and casting in CASTINGS:
        return cast(Casting, casting)
    allowed = ", ".join(repr(c) for c in CASTINGS)
    if not isinstance(casting, str):
        raise TypeError(f"casting must be one of {allowed}, not {type(casting).__name__}")
    raise ValueError(f"casting must be one of {allowed}, not {casting!r}")


def coerce(
    item: Any,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    *,
    batch: bool,
    casting: str = "safe",
) -> np.ndarray[Any, Any]:
    """``item`` as a C-contiguous array of exactly ``dtype``, of shape
    ``shape`` (or ``(n, *shape)`` when ``batch``), ready to copy into a ring.

    A C-contiguous ndarray that already is exactly that comes back unchanged
    (no copy).  Otherwise:

    * ndarrays, numpy scalars and other array-likes are cast when
      ``np.can_cast(src.dtype, dtype, casting)``, else ``TypeError``;
    * Python bool/int/float/complex values, and (nested) lists and tuples of
      them, are converted by value: an int the dtype cannot hold, or a finite
      float that would become inf, raises ``OverflowError`` (the latter only
      unless ``casting="unsafe"``); a float into a bool or integer ring, or a
      complex into a real one, is a ``TypeError`` unless ``casting="unsafe"``;
    * structured rings take tuples and lists as numpy converts them;
    * object data, and text into a numeric ring, are a ``TypeError`` whatever
      ``casting`` says;
    * a wrong shape is a ``ValueError``.

    With ``batch``, ``item`` may also be any iterable of items (a generator,
    say); each element follows the rules above on its own.  An empty batch
    gives an array of shape ``(0, *shape)``.
    """
    if (
        type(item) is np.ndarray
        and item.dtype == dtype
        and ((item.ndim == len(shape) + 1 and item.shape[1:] == shape) if batch else item.shape == shape)
        and item.flags.c_contiguous
        and casting in CASTINGS
    ):
        return item
    rule = check_casting(casting)
    if batch:
        return _coerce_batch(item, dtype, shape, rule)
    return _coerce_whole(item, dtype, shape, rule, batch=False)


# -- helpers -------------------------------------------------------------------------


def _is_python_value(x: object) -> bool:
    """Converted by value: a Python number (numpy's float64 and complex128
    subclass float and complex, and are not) or a list or tuple."""
    return isinstance(x, (list, tuple)) or (isinstance(x, _PY_NUMBERS) and not isinstance(x, np.generic))


def _expected(shape: tuple[int, ...], batch: bool) -> str:
    return str(("n", *shape)).replace("'n'", "n") if batch else str(shape)


def _check_shape(got: tuple[int, ...], shape: tuple[int, ...], batch: bool) -> None:
    ok = (len(got) == len(shape) + 1 and got[1:] == shape) if batch else got == shape
    if not ok:
        raise ValueError(f"item has shape {got}, expected {_expected(shape, batch)}")


def _refusal(what: str, dtype: np.dtype[Any], casting: Casting, looser: list[str]) -> str:
    msg = f"cannot put {what} data into a ring of {dtype} under casting={casting!r}"
    if looser:
        names = [repr(c) for c in looser]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        msg += f" (pass casting={listed} to allow it)"
    return msg


def _check_array_rule(src: np.ndarray[Any, Any], dtype: np.dtype[Any], casting: Casting) -> None:
    """TypeError unless an array of ``src``'s dtype may go into a ring of ``dtype``."""
    if src.dtype.hasobject:
        if src.ndim == 0:
            raise TypeError(f"cannot put a {type(src.item()).__name__} into a ring of {dtype}: it is not numeric data")
        raise TypeError(
            f"cannot put object data into a ring of {dtype}: rings hold plain numpy data, not Python objects"
        )
    if src.dtype.kind in _TEXT and dtype.kind in _NUMERIC:
        raise TypeError(f"cannot put text ({src.dtype}) into a ring of {dtype}: strings are never parsed as numbers")
    if not np.can_cast(src.dtype, dtype, casting):
        later = CASTINGS[CASTINGS.index(casting) + 1 :]
        looser = [c for c in later if np.can_cast(src.dtype, dtype, cast(Casting, c))]
        raise TypeError(_refusal(str(src.dtype), dtype, casting, looser))


def _coerce_whole(
    item: Any, dtype: np.dtype[Any], shape: tuple[int, ...], casting: Casting, *, batch: bool
) -> np.ndarray[Any, Any]:
    """One item (or, with ``batch``, a whole ``(n, *shape)`` array-like or list)."""
    if _is_python_value(item):
        return _from_python(item, dtype, shape, casting, batch=batch)
    src = np.asarray(item)
    _check_array_rule(src, dtype, casting)
    _check_shape(src.shape, shape, batch)
    return np.asarray(src, dtype=dtype, order="C")  # (ascontiguousarray would make 0-d items 1-d)


def _coerce_batch(items: Any, dtype: np.dtype[Any], shape: tuple[int, ...], casting: Casting) -> np.ndarray[Any, Any]:
    if isinstance(items, np.ndarray) or (
        not isinstance(items, (np.generic, str, bytes))
        and (
            hasattr(items, "__array__")
            or hasattr(items, "__array_interface__")
            or hasattr(items, "__array_struct__")
            or isinstance(items, memoryview)
        )
    ):
        return _coerce_whole(items, dtype, shape, casting, batch=True)
    not_a_batch = TypeError(
        f"put_many() takes an array of shape {_expected(shape, True)} or an iterable of items,"
        f" not {type(items).__name__}"
    )
    if isinstance(items, (np.generic, str, bytes, *_PY_NUMBERS)):
        raise not_a_batch
    if isinstance(items, (list, tuple)):
        seq: list[Any] | tuple[Any, ...] = items
    else:
        try:
            it = iter(items)
        except TypeError:
            raise not_a_batch from None
        seq = list(it)
    if not seq:
        return np.empty((0, *shape), dtype=dtype)
    if all(_is_python_value(e) for e in seq):
        return _from_python(seq, dtype, shape, casting, batch=True)
    # Some elements are arrays: each follows its own dtype's rule, then one
    # copy stacks them (every cast below has been vetted already).
    parts: list[np.ndarray[Any, Any]] = []
    for i, e in enumerate(seq):
        try:
            if _is_python_value(e):
                parts.append(_from_python(e, dtype, shape, casting, batch=False))
            else:
                src = np.asarray(e)
                _check_array_rule(src, dtype, casting)
                _check_shape(src.shape, shape, False)
                parts.append(src)
        except (OverflowError, TypeError, ValueError) as exc:
            for cls in (OverflowError, TypeError, ValueError):
                if isinstance(exc, cls):
                    raise cls(f"items[{i}]: {exc}") from exc
            raise  # pragma: no cover (unreachable)
    return np.stack(parts, dtype=dtype, casting="unsafe")


def _leaf_kind(leaves: np.ndarray[Any, Any], dtype: np.dtype[Any], *, stop_at_float: bool) -> str:
    """The highest numeric kind ('b' < 'i' < 'f' < 'c') among the scalars of
    an object array (or 'f' at the first float, with ``stop_at_float``);
    TypeError naming the first leaf that is no number."""
    rank = 0
    for x in leaves.flat:
        if isinstance(x, (bool, np.bool_)):
            r = 0
        elif isinstance(x, (int, np.integer)):
            r = 1
        elif isinstance(x, (float, np.floating)):
            r = 2
        elif isinstance(x, (complex, np.complexfloating)):
            r = 3
        else:
            raise TypeError(f"cannot put a {type(x).__name__} into a ring of {dtype}: it is not a number")
        rank = max(rank, r)
        if stop_at_float and rank == 2:
            break
    return "bifc"[rank]


def _int_range(dtype: np.dtype[Any]) -> tuple[int, int]:
    if dtype.kind == "b":
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _from_python(
    item: Any, dtype: np.dtype[Any], shape: tuple[int, ...], casting: Casting, *, batch: bool
) -> np.ndarray[Any, Any]:
    """Python numbers and (nested) lists/tuples, converted by value."""
    if dtype.names is not None:  # structured: numpy maps tuples onto fields
        arr = np.asarray(item, dtype=dtype, order="C")
        _check_shape(arr.shape, shape, batch)
        return arr
    try:
        probe = np.asarray(item)
    except ValueError as exc:
        raise ValueError(f"item is not a regular array (nested sequences of unequal lengths?): {exc}") from exc
    _check_shape(probe.shape, shape, batch)
    if dtype.kind not in _NUMERIC or probe.dtype.kind not in _NUMERIC + "O":
        # A text, datetime or raw-bytes ring, or text data: numpy's rule on
        # the dtype numpy gives the value.
        _check_array_rule(probe, dtype, casting)
        return probe.astype(dtype, order="C", copy=False)
    if probe.size == 0:
        return probe.astype(dtype, order="C")
    kind: str = probe.dtype.kind
    if kind == "O" or (kind == "f" and dtype.kind in "biu"):
        # numpy made objects (ints beyond 64 bits, or things that are not
        # numbers), or floats out of a mix of negative ints and ints beyond
        # int64 ([-1, 2**63] is float64): judge the values themselves.
        leaves = np.array(item, dtype=object)
        kind = _leaf_kind(leaves, dtype, stop_at_float=kind == "f")
        if kind in "bi":
            probe = leaves  # exact Python ints
        elif probe.dtype.kind == "O":
            try:
                probe = np.asarray(item, dtype=np.float64 if kind == "f" else np.complex128)
            except OverflowError as exc:
                raise OverflowError(f"a Python int in the item is too large for a ring of {dtype}") from exc
    if kind in "biu":
        if dtype.kind in "biu" and kind != "b":
            lo, hi = _int_range(dtype)
            low, high = int(probe.min()), int(probe.max())
            if low < lo or high > hi:
                bad = low if low < lo else high
                raise OverflowError(f"Python int {bad} does not fit in a ring of {dtype} (range {lo} to {hi})")
    elif _RANK[kind] > _RANK[dtype.kind] and casting != "unsafe":
        raise TypeError(_refusal(_PY_KIND_NAME[kind], dtype, casting, ["unsafe"]))
    if dtype.kind in "fc" and casting != "unsafe":
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = probe.astype(dtype, order="C", copy=False)
        except OverflowError as exc:  # float(int) beyond any float
            raise OverflowError(f"a Python int in the item is too large for a ring of {dtype}") from exc
        grew = np.isinf(arr)
        if probe.dtype.kind in "fc":
            grew &= ~np.isinf(probe)
        if grew.any():
            bad_value = probe.ravel()[int(np.argmax(grew.ravel()))]
            if isinstance(bad_value, np.generic):
                bad_value = bad_value.item()
            raise OverflowError(
                f"{bad_value!r} is too large for a ring of {dtype} (it would become inf;"
                " pass casting='unsafe' to allow it)"
            )
        return arr
    return probe.astype(dtype, order="C", copy=False)
