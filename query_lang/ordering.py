"""Deterministic multi-key ordering: NULL/NaN last in both directions, ties by row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def key_array(v: Any, n: int) -> np.ndarray:
    """A per-row sort key as a 1-D ndarray (numeric, or object for text/JSON)."""
    if isinstance(v, np.ndarray):
        if v.ndim == 1:
            return v.astype(np.int64) if v.dtype == bool else v
        return v.reshape(n, -1)[:, 0] if v.size else np.zeros(n)
    out = np.empty(len(v), dtype=object)
    out[:] = list(v)
    return out


def _rank(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(null flag, dense rank) per row; equal values share a rank."""
    n = len(v)
    if v.dtype != object:
        null = np.isnan(v) if v.dtype.kind == "f" else np.zeros(n, dtype=bool)
        rank = np.zeros(n, dtype=np.int64)
        ok = ~null
        if ok.any():
            rank[ok] = np.unique(v[ok], return_inverse=True)[1].reshape(-1)
        return null.astype(np.int8), rank
    keys: list[tuple[int, Any] | None] = []
    for x in v:
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)):
            keys.append((0, float(x)))
        elif isinstance(x, str):
            keys.append((1, x))
        else:
            keys.append(None)
    distinct = {k: i for i, k in enumerate(sorted({k for k in keys if k is not None}))}
    null = np.asarray([k is None for k in keys], dtype=np.int8)
    rank = np.asarray([0 if k is None else distinct[k] for k in keys], dtype=np.int64)
    return null, rank


def sort_order(keys: list[np.ndarray], descending: list[bool], rows: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by ``keys``; NULL/NaN last, ties by row position."""
    parts: list[np.ndarray] = [rows]
    for v, desc in zip(reversed(keys), reversed(descending), strict=False):
        null, rank = _rank(v)
        parts += [-rank if desc else rank, null]
    return np.lexsort(parts)


class TopK:
    """Streaming top-k: memory stays at k rows plus one batch."""

    def __init__(self, k: int, descending: list[bool]) -> None:
        self.k = k
        self.descending = descending
        self.rows = np.empty(0, dtype=np.int64)
        self.keys: list[np.ndarray] | None = None

    def push(self, rows: np.ndarray, keys: list[np.ndarray]) -> None:
        if self.keys is None:
            all_rows, all_keys = rows, keys
        else:
            all_rows = np.concatenate([self.rows, rows])
            all_keys = [_concat(a, b) for a, b in zip(self.keys, keys, strict=False)]
        if len(all_rows) > self.k:
            keep = self._select(all_rows, all_keys)
            all_rows = all_rows[keep]
            all_keys = [k[keep] for k in all_keys]
        self.rows, self.keys = all_rows, all_keys

    def _select(self, rows: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
        k = self.k
        if len(keys) == 1 and keys[0].dtype.kind == "f":
            # argpartition fast path; NaN sorts after every number, as required.
            v = keys[0] if not self.descending[0] else -keys[0]
            kth = np.partition(v, k - 1)[k - 1]
            if not np.isnan(kth):
                cand = np.flatnonzero(v <= kth)
                order = np.lexsort((rows[cand], v[cand]))
                return cand[order[:k]]
        return sort_order(keys, self.descending, rows)[:k]

    def result(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Rows and keys in final order."""
        if self.keys is None:
            return self.rows, []
        order = sort_order(self.keys, self.descending, self.rows)
        return self.rows[order], [k[order] for k in self.keys]


def _concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype == object or b.dtype == object:
        out = np.empty(len(a) + len(b), dtype=object)
        out[: len(a)] = a
        out[len(a):] = b
        return out
    return np.concatenate([a, b])
