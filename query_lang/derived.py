"""The process-wide cache of derived values: per-batch results of pure expressions."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from .cache import BoundedCache


class _Packed:
    """A per-row list of plain numbers (and NULLs) stored as a numpy array."""

    __slots__ = ("data", "nulls")

    def __init__(self, data: np.ndarray, nulls: np.ndarray | None) -> None:
        self.data = data
        self.nulls = nulls

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (0 if self.nulls is None else self.nulls.nbytes)

    def unpack(self) -> list[Any]:
        out = self.data.tolist()
        if self.nulls is not None:
            for i in np.flatnonzero(self.nulls).tolist():
                out[i] = None
        return out


_PACK_DTYPES = {int: np.int64, float: np.float64, bool: np.bool_}


def _pack(v: Any) -> Any:
    """Compact form of a cached value: lists of one numeric Python type become arrays."""
    if not isinstance(v, list) or not v:
        return v
    kinds = set(map(type, v))
    has_null = type(None) in kinds
    kinds.discard(type(None))
    if len(kinds) != 1:
        return v
    dtype = _PACK_DTYPES.get(kinds.pop())
    if dtype is None:
        return v
    try:
        if not has_null:
            return _Packed(np.array(v, dtype=dtype), None)
        nulls = np.fromiter((x is None for x in v), dtype=bool, count=len(v))
        return _Packed(np.array([0 if x is None else x for x in v], dtype=dtype), nulls)
    except (OverflowError, TypeError, ValueError):  # e.g. an int beyond int64
        return v


def _size(v: Any) -> int:
    if isinstance(v, (np.ndarray, _Packed)):
        return int(v.nbytes) + 64
    if isinstance(v, list):
        return 8 * len(v) + 64 + (8 * len(v) if v and isinstance(v[0], str) else 0)
    return 64


class DerivedCache:
    """Bounded LRU of per-batch values of pure expressions, keyed by data identity.

    Numeric per-row lists (e.g. ``metadata['group']``) are stored as numpy arrays
    and turned back into lists on a hit, so entries stay compact; masks and other
    ndarrays are stored as they are. Both the entry count and an estimate of the
    bytes held are bounded (a :class:`~query_lang.cache.BoundedCache`, so it is thread-safe).
    """

    def __init__(self, maxsize: int = 256, max_bytes: int = 256 << 20) -> None:
        self.entries: BoundedCache[Hashable, Any] = BoundedCache(max_bytes, max_entries=maxsize)

    def get(self, key: Hashable) -> Any:
        """The cached value of ``key`` (lists come back as lists), or None."""
        value = self.entries.get(key)
        return value.unpack() if isinstance(value, _Packed) else value

    def put(self, key: Hashable, value: Any) -> None:
        """Cache ``value`` (None is never cached; an entry over the byte budget is refused)."""
        if value is None:
            return
        packed = _pack(value)
        self.entries.put(key, packed, _size(packed))

    @property
    def hits(self) -> int:
        return self.entries.hits

    @property
    def misses(self) -> int:
        return self.entries.misses

    @property
    def nbytes(self) -> int:
        """Estimated bytes held."""
        return self.entries.used_bytes

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()


#: Shared by all executions so a repeated query does not re-decode JSON.
DERIVED_CACHE = DerivedCache()
