"""Key indexes: the distinct values of a scalar tensor or of JSON paths, and each row's code.

A predicate on an indexed key is evaluated once per *distinct* value, by the query
engine's own kernels, and spread to the rows through their codes; so an indexed
WHERE gives exactly what the scan would, for any predicate on that key
(``==``, ``IN``, ranges, ``IS NULL``, ``LIKE``, functions), at the cost of one
gather over the rows. A row whose value cannot be represented (a list or object at
a JSON path) gets code -1 and is evaluated by the scan instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ..errors import DataCorruptionError

#: The code of a row whose value the index does not hold.
UNINDEXED = -1
#: A path into a JSON value; the empty path is the tensor's own value.
Path = tuple[str, ...]


@dataclass(frozen=True)
class KeyColumn:
    """One indexed key: its distinct values (an ndarray for numbers, else a list) and a code per index entry."""

    path: Path
    values: np.ndarray | list[Any]
    codes: np.ndarray


class KeyIndex:
    """Distinct values and codes for each indexed key of one tensor."""

    def __init__(self, columns: Sequence[KeyColumn]) -> None:
        self.columns = {c.path: c for c in columns}

    def column(self, path: Path) -> KeyColumn | None:
        return self.columns.get(tuple(path))

    @property
    def nbytes(self) -> int:
        return sum(c.codes.nbytes + (c.values.nbytes if isinstance(c.values, np.ndarray) else 0)
                   for c in self.columns.values())

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Header fields and arrays for the index file; object dictionaries are stored as msgpack."""
        meta: dict[str, Any] = {"keys": []}
        arrays: dict[str, np.ndarray] = {}
        for i, column in enumerate(self.columns.values()):
            numeric = isinstance(column.values, np.ndarray)
            meta["keys"].append({"path": list(column.path), "values": "array" if numeric else "msgpack"})
            arrays[f"codes_{i}"] = column.codes
            arrays[f"values_{i}"] = column.values if numeric else np.frombuffer(
                msgpack.packb(list(column.values), use_bin_type=True), dtype=np.uint8)
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], entries: int,
                    what: str) -> KeyIndex:
        """The index an index file holds; ``DataCorruptionError`` naming ``what`` unless it is consistent."""
        try:
            columns = [_column(i, spec, arrays, entries) for i, spec in enumerate(meta["keys"])]
        except (KeyError, TypeError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise DataCorruptionError(f"{what}: key index is malformed: {type(e).__name__}: {e}") from e
        return cls(columns)


def _column(i: int, spec: Any, arrays: Mapping[str, np.ndarray], entries: int) -> KeyColumn:
    path = tuple(spec["path"])
    if not all(isinstance(p, str) for p in path):
        raise TypeError(f"key {i}: path {path!r:.80} is not a list of names")
    codes, stored = arrays[f"codes_{i}"], arrays[f"values_{i}"]
    if spec["values"] == "msgpack":
        values = msgpack.unpackb(stored.tobytes(), raw=False, strict_map_key=False)
        if not isinstance(values, list) or any(_identity(v) is None for v in values):
            raise TypeError(f"key {i}: the dictionary is not a list of JSON scalars")
    elif spec["values"] == "array":
        values = stored
        if values.ndim != 1:
            raise ValueError(f"key {i}: the dictionary has shape {values.shape}, expected one dimension")
    else:
        raise ValueError(f"key {i}: unknown dictionary encoding {spec['values']!r:.40}")
    if codes.shape != (entries,) or codes.dtype.kind not in "iu":
        raise ValueError(f"key {i}: {codes.shape} codes of {codes.dtype}, expected {entries} integers")
    if len(codes) and (int(codes.min()) < UNINDEXED or int(codes.max()) >= len(values)):
        raise ValueError(f"key {i}: a code lies outside the {len(values)} distinct values")
    return KeyColumn(path, values, codes)


def value_at(value: Any, path: Path) -> Any:
    """The value at ``path`` inside a JSON value, as TQL's ``x['a']['b']`` reads it (None when absent)."""
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def build_key_column(path: Path, values: Iterable[Any] | np.ndarray) -> KeyColumn:
    """The distinct values and codes of one key, from every covered row's value (already at ``path``)."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim != 1:
            raise ValueError(f"a key index needs one value per row, got rows of shape {values.shape[1:]}")
        distinct, codes = np.unique(values, return_inverse=True)
        return KeyColumn(path, distinct, _narrow(codes.reshape(-1), len(distinct)))
    code_of: dict[tuple[str, Any], int] = {}
    distinct_objects: list[Any] = []
    codes = []
    for value in values:
        key = _identity(value)
        if key is None:
            codes.append(UNINDEXED)
            continue
        code = code_of.get(key)
        if code is None:
            code = code_of[key] = len(distinct_objects)
            distinct_objects.append(value)
        codes.append(code)
    return KeyColumn(path, distinct_objects, _narrow(np.asarray(codes, dtype=np.int64), len(distinct_objects)))


def _identity(value: Any) -> tuple[str, Any] | None:
    """A hashable identity that keeps 1, 1.0 and True apart (TQL may treat them differently); None: unindexable."""
    if value is None or isinstance(value, (bool, int, str)):
        return type(value).__name__, value
    if isinstance(value, float):
        return ("float", "nan") if math.isnan(value) else ("float", value)
    return None  # lists and objects: the scan evaluates these rows


def _narrow(codes: np.ndarray, distinct: int) -> np.ndarray:
    return codes.astype(np.int32) if distinct < 2**31 - 1 else codes.astype(np.int64)
