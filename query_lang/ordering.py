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
    """Streaming top-k: memory stays at k rows plus a bounded candidate buffer and one batch.

    With a single float key, each batch is first cut down to the rows that can
    still enter the result (at least as good as the current k-th best key: ties
    stay, because rows break ties). Survivors are buffered and merged only when
    the buffer fills, so a batch usually costs one comparison pass.
    """

    #: Buffered candidates that trigger a merge (besides the k kept rows).
    BUFFER_ROWS = 4096

    def __init__(self, k: int, descending: list[bool]) -> None:
        self.k = k
        self.descending = descending
        self.rows = np.empty(0, dtype=np.int64)
        self.keys: list[np.ndarray] | None = None
        self._pending: list[tuple[np.ndarray, list[np.ndarray]]] = []
        self._pending_rows = 0
        #: The k-th best float key once k rows are kept (None: no bar yet, or NaN).
        self._bar: float | None = None

    def push(self, rows: np.ndarray, keys: list[np.ndarray]) -> None:
        """Offer a batch of rows with their keys; only the best ``k`` seen so far are kept."""
        if self._bar is not None and keys[0].dtype.kind == "f":
            key = keys[0]
            keep = np.flatnonzero(key >= self._bar if self.descending[0] else key <= self._bar)
            if not len(keep):
                return
            if len(keep) < len(key):
                rows, keys = rows[keep], [key[keep]]
        self._pending.append((rows, keys))
        self._pending_rows += len(rows)
        if self._pending_rows > max(self.BUFFER_ROWS, self.k):
            self._merge()

    def _merge(self) -> None:
        parts = self._pending
        if not parts:
            return
        if self.keys is not None:
            parts = [(self.rows, self.keys), *parts]
        all_rows = np.concatenate([r for r, _ in parts]) if len(parts) > 1 else parts[0][0]
        all_keys = [join_keys([p[1][i] for p in parts]) for i in range(len(parts[0][1]))]
        if len(all_rows) > self.k:
            keep = self._select(all_rows, all_keys)
            all_rows = all_rows[keep]
            all_keys = [k[keep] for k in all_keys]
        self.rows, self.keys = all_rows, all_keys
        self._pending, self._pending_rows = [], 0
        self._bar = None
        key = all_keys[0]
        if len(all_keys) == 1 and len(all_rows) >= self.k and key.dtype.kind == "f":
            bar = float(key.min() if self.descending[0] else key.max())
            self._bar = None if np.isnan(bar) else bar

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
        self._merge()
        if self.keys is None:
            return self.rows, []
        order = sort_order(self.keys, self.descending, self.rows)
        return self.rows[order], [k[order] for k in self.keys]


def join_keys(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate per-batch sort keys (object keys stay object arrays)."""
    if len(parts) == 1:
        return parts[0]
    if any(p.dtype == object for p in parts):
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        i = 0
        for p in parts:
            out[i : i + len(p)] = p
            i += len(p)
        return out
    return np.concatenate(parts)
