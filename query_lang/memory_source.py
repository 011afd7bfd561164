"""An in-memory :class:`ScanSource` over plain Python/numpy columns."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .source import OBJECT_HTYPES, Batch, ColumnInfo, unit_norm_range

_ids = itertools.count()


def _infer_htype(values: Any) -> str:
    if isinstance(values, np.ndarray):
        return "generic"
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, str):
        return "text"
    if isinstance(sample, dict):
        return "json"
    if isinstance(sample, list):
        return "list"
    if isinstance(sample, np.ndarray):
        return "generic"
    return "generic" if sample is not None else "json"


class MemorySource:
    """Columns held in memory, scanned in fixed-size batches (like storage chunks).

    ``columns`` maps names to equal-length lists or ndarrays; ``htypes`` gives each
    column's htype (inferred when missing). Embedding columns get precomputed
    ``l2_norms`` and every full batch gets ``cache_keys``. ``owner`` is handed to
    functions as :attr:`ScanSource.owner`.
    """

    def __init__(
        self,
        columns: dict[str, Any],
        htypes: dict[str, str] | None = None,
        batch_size: int = 1024,
        owner: object | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        htypes = dict(htypes or {})
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns have different lengths: {sorted(lengths)}")
        self._len = lengths.pop() if lengths else 0
        self.batch_size = batch_size
        self.owner = owner
        self._id = next(_ids)
        self._data: dict[str, Any] = {}
        self._info: dict[str, ColumnInfo] = {}
        self._norms: dict[str, np.ndarray] = {}
        for name, values in columns.items():
            htype = htypes.get(name) or _infer_htype(values)
            data, info = self._prepare(name, htype, values)
            self._data[name] = data
            self._info[name] = info
            if htype == "embedding":
                self._norms[name] = np.linalg.norm(data.astype(np.float32), axis=1)

    def _prepare(self, name: str, htype: str, values: Any) -> tuple[Any, ColumnInfo]:
        if htype in OBJECT_HTYPES:
            return list(values), ColumnInfo(name, htype, None, None)
        if htype == "embedding":
            arr = np.asarray(values)
            if arr.dtype not in (np.float16, np.float32):
                arr = arr.astype(np.float32)
            arr = arr.reshape(self._len, -1) if arr.size or arr.ndim == 2 else arr
            return arr, ColumnInfo(name, htype, arr.dtype, arr.shape[1:])
        if isinstance(values, np.ndarray) and values.dtype != object:
            return values, ColumnInfo(name, htype, values.dtype, values.shape[1:])
        arrays = [np.asarray(v) for v in values]
        if not arrays:
            return np.empty((0,)), ColumnInfo(name, htype, np.dtype(np.float64), ())
        shapes = {a.shape for a in arrays}
        dtype = np.result_type(*arrays)
        if len(shapes) == 1:
            arr = np.stack(arrays).astype(dtype)
            return arr, ColumnInfo(name, htype, dtype, arr.shape[1:])
        ranks = {len(s) for s in shapes}
        shape = None
        if len(ranks) == 1:
            dims = list(zip(*shapes, strict=False))
            shape = tuple(d[0] if len(set(d)) == 1 else None for d in dims)
        return arrays, ColumnInfo(name, htype, dtype, shape)

    def __len__(self) -> int:
        return self._len

    def column_names(self) -> list[str]:
        """Column names in insertion order."""
        return list(self._data)

    def column_info(self, name: str) -> ColumnInfo:
        """Metadata of ``name``; ``KeyError`` when unknown."""
        return self._info[name]

    def take(self, column: str, rows: np.ndarray) -> Any:
        """Values of ``column`` at ``rows`` (any order)."""
        data = self._data[column]
        rows = np.asarray(rows, dtype=np.int64)
        if isinstance(data, np.ndarray):
            return data[rows]
        return [data[i] for i in rows]

    def scan(self, columns: Sequence[str], rows: np.ndarray | None = None) -> Iterator[Batch]:
        """Yield one batch per chunk that holds any of ``rows``."""
        bs = self.batch_size
        for name in columns:
            if name not in self._data:
                raise KeyError(name)
        if rows is None:
            for start in range(0, self._len, bs):
                part = np.arange(start, min(start + bs, self._len), dtype=np.int64)
                yield self._batch(columns, part, start // bs)
            return
        rows = np.asarray(rows, dtype=np.int64)
        chunks = rows // bs
        bounds = np.flatnonzero(np.diff(chunks)) + 1
        for part in np.split(rows, bounds):
            if len(part):
                full = len(part) == min(bs, self._len - part[0] // bs * bs)
                yield self._batch(columns, part, int(part[0] // bs) if full else None)

    def _batch(self, columns: Sequence[str], part: np.ndarray, chunk: int | None) -> Batch:
        values = {c: self.take(c, part) for c in columns}
        norms = {c: self._norms[c][part] for c in columns if c in self._norms}
        unit = frozenset(c for c, v in norms.items() if len(v) and unit_norm_range(v.min(), v.max()))
        keys = {} if chunk is None else {c: (self._id, c, chunk) for c in columns}
        return Batch(rows=part, values=values, l2_norms=norms, cache_keys=keys, unit_norm=unit)
