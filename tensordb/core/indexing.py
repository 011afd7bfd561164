"""Turning user indexes (int, slice, list, bool mask) into arrays of row numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IndexOutOfRangeError


def take_values(values: Any, rows: np.ndarray) -> Any:
    """The entries at ``rows`` of an ndarray or a list (computed columns are either)."""
    if isinstance(values, np.ndarray):
        return values[rows]
    return [values[i] for i in rows.tolist()]


def normalize_index(index: Any, length: int, what: str) -> tuple[np.ndarray, bool]:
    """Row numbers selected by ``index`` from ``length`` rows, and whether it picked a single row."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        i = int(index)
        if not -length <= i < length:
            raise IndexOutOfRangeError(f"{what}: index {i} is out of range for {length} rows")
        return np.array([i % length if length else i], dtype=np.int64), True
    if isinstance(index, slice):
        return np.arange(length, dtype=np.int64)[index], False
    if isinstance(index, tuple) and len(index) == 1:
        return normalize_index(index[0], length, what)
    try:
        array = np.asarray(index)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1 or (array.size and array.dtype.kind not in "biu"):
        raise IndexOutOfRangeError(
            f"{what}: expected an int, slice, list of ints or bool mask as index, got {type(index).__name__}"
        )
    if array.dtype.kind == "b":
        if len(array) != length:
            raise IndexOutOfRangeError(f"{what}: bool mask has {len(array)} entries, expected {length}")
        return np.flatnonzero(array).astype(np.int64), False
    # Compared before any cast: 2**64 - 1 as uint64 would wrap to -1, the last row.
    out_of_range = (array >= length) if array.dtype.kind == "u" else (array < -length) | (array >= length)
    if array.size and out_of_range.any():
        bad = int(array[out_of_range][0])
        raise IndexOutOfRangeError(f"{what}: index {bad} is out of range for {length} rows")
    rows = array.astype(np.int64)
    return np.where(rows < 0, rows + length, rows), False
