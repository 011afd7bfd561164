"""Vectorized value helpers shared by the binder and the built-in functions.

A value is either per-row (see :mod:`query_lang.vtypes` for representations)
or a constant (a Python scalar, ``None`` or a 1-D ndarray for ``ARRAY[...]``).
Kernels receive a ``const`` flag per operand instead of materialising constants.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

from .vtypes import ValueType

_OPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NP_OPS = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def rows_iter(v: Any, const: bool, n: int) -> Iterable[Any]:
    """Iterate a value row by row (a constant repeats)."""
    return itertools.repeat(v, n) if const else v


def materialize(v: Any, t: ValueType, n: int) -> Any:
    """A constant as a per-row value of ``n`` rows."""
    if t.kind in ("number", "bool"):
        return np.full(n, v)
    if t.kind == "array":
        arr = np.asarray(v)
        return np.broadcast_to(arr, (n, *arr.shape)).copy()
    return [v] * n


def first(v: Any) -> Any:
    """Row 0 of a per-row value, as a constant (used for constant folding)."""
    out = v[0]
    if isinstance(out, np.generic):
        return out.item()
    return out


def normalize(v: Any, t: ValueType, n: int) -> Any:
    """Coerce a column's batch values to the representation ``t`` promises."""
    if t.kind in ("number", "bool"):
        arr = np.asarray(v) if not isinstance(v, list) else _scalars(v)
        return arr.reshape(n)
    if t.kind == "array":
        if t.fixed_shape:
            if isinstance(v, np.ndarray):
                return v
            return np.stack([np.asarray(x) for x in v]) if n else np.empty((0, *t.shape))
        return [np.asarray(x) for x in v]
    return list(v)


def _scalars(v: list[Any]) -> np.ndarray:
    try:
        return np.asarray([np.nan if x is None else x for x in v])
    except (TypeError, ValueError):
        return np.asarray(v, dtype=object)


def per_row_float(v: Any) -> np.ndarray:
    """Numbers/bools as float64 (ints convert exactly up to 2**53)."""
    return np.asarray(v, dtype=np.float64)


def align(a: Any, a_const: bool, b: Any, b_const: bool) -> tuple[Any, Any]:
    """Reshape per-row ndarrays so numpy broadcasting pairs rows with rows."""
    a_rank = np.ndim(a) - (0 if a_const else 1)
    b_rank = np.ndim(b) - (0 if b_const else 1)
    rank = max(a_rank, b_rank)
    if not a_const and a_rank < rank:
        a = a.reshape(a.shape[:1] + (1,) * (rank - a_rank) + a.shape[1:])
    if not b_const and b_rank < rank:
        b = b.reshape(b.shape[:1] + (1,) * (rank - b_rank) + b.shape[1:])
    return a, b


def numeric_binary(op: str, a: Any, ac: bool, b: Any, bc: bool, n: int) -> Any:
    """``a op b`` for numbers/bools/arrays, vectorized when representations allow."""
    fn = _NP_OPS[op]
    with np.errstate(all="ignore"):
        if (not ac and isinstance(a, list)) or (not bc and isinstance(b, list)):
            ra = rows_iter(a, ac, n)
            rb = rows_iter(b, bc, n)
            return [fn(np.asarray(x), np.asarray(y)) for x, y in zip(ra, rb, strict=False)]
        if op in ("+", "-", "*", "/") and (np.asarray(a).dtype == bool):
            a = np.asarray(a, dtype=np.int64)
        if op in ("+", "-", "*", "/") and (np.asarray(b).dtype == bool):
            b = np.asarray(b, dtype=np.int64)
        a, b = align(np.asarray(a), ac, np.asarray(b), bc)
        out = fn(a, b)
        if op == "!=":  # NaN compares false with everything, != included (two-valued NULL logic)
            for side in (a, b):
                if side.dtype.kind == "f":
                    out = out & ~np.isnan(side)
        return out


def _py_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def object_binary(op: str, a: Any, ac: bool, b: Any, bc: bool, n: int, cmp: bool) -> Any:
    """Row-by-row ``a op b`` on Python objects (JSON values, text).

    NULL or incompatible operands give ``False`` for comparisons and ``None`` for
    arithmetic, so missing JSON keys never raise.
    """
    fn = _OPS[op]
    out = []
    for x, y in zip(rows_iter(a, ac, n), rows_iter(b, bc, n), strict=False):
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(y, np.generic):
            y = y.item()
        out.append(_object_op(fn, op, x, y, cmp))
    return np.asarray(out, dtype=bool) if cmp else out


def _object_op(fn: Any, op: str, x: Any, y: Any, cmp: bool) -> Any:
    if x is None or y is None or (isinstance(x, float) and math.isnan(x)) or (
        isinstance(y, float) and math.isnan(y)
    ):
        return False if cmp else None
    if not cmp and not (_py_number(x) and _py_number(y)):
        return None
    if cmp and op not in ("==", "!=") and type(x) is not type(y):
        if not (_py_number(x) and _py_number(y)):
            return False
    try:
        r = fn(x, y)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return False if cmp else None
    if cmp:
        return bool(r) if isinstance(r, (bool, np.bool_)) else False
    return r


def truthy(v: Any, t: ValueType, const: bool, n: int) -> np.ndarray:
    """A per-row boolean mask from a value (NULL/NaN are false)."""
    if const:
        if t.kind == "null" or v is None:
            return np.zeros(n, dtype=bool)
        if isinstance(v, float) and math.isnan(v):
            return np.zeros(n, dtype=bool)
        return np.full(n, bool(v))
    if t.kind == "bool":
        return np.asarray(v, dtype=bool)
    if t.kind == "number":
        arr = np.asarray(v)
        if arr.dtype.kind == "f":
            return (arr != 0) & ~np.isnan(arr)
        return arr != 0
    return np.asarray([_py_truthy(x) for x in v], dtype=bool)


def _py_truthy(x: Any) -> bool:
    if x is None:
        return False
    if isinstance(x, float) and math.isnan(x):
        return False
    if isinstance(x, np.ndarray):
        return bool(x.size) and bool(np.all(x))
    return bool(x)


def is_null(v: Any, t: ValueType, const: bool, n: int) -> np.ndarray:
    """Per-row NULL test: NaN for numbers, ``None`` for objects."""
    if const:
        null = v is None or (isinstance(v, float) and math.isnan(v))
        return np.full(n, null)
    if t.kind == "number":
        arr = np.asarray(v)
        return np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(n, dtype=bool)
    if t.kind in ("bool", "array"):
        return np.zeros(n, dtype=bool)
    return np.asarray(
        [x is None or (isinstance(x, float) and math.isnan(x)) for x in v], dtype=bool
    )


def vectors(v: Any, const: bool) -> Any:
    """A vector operand as float ndarray: ``(n, d)`` per row, ``(d,)`` constant, or a list."""
    if isinstance(v, list):
        return [np.asarray(x, dtype=np.float64).reshape(-1) for x in v]
    arr = np.asarray(v)
    if arr.dtype.kind not in "fc":
        arr = arr.astype(np.float64)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if not const and arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    return arr
