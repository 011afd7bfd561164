"""The core's side of query_lang's scan interface: datasets and views as a ScanSource.

query_lang sees rows, batches and column metadata; it never sees chunks or
stores. Batches follow the chunk boundaries of the widest column read, so an
embedding batch is a zero-copy slice of one (memory-mapped) chunk, and other
columns are decoded only when the executor actually asks for them.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from query_lang import QueryResult, execute, execute_many
from query_lang.ast import Query
from query_lang.errors import TQLError
from query_lang.source import Batch, ColumnInfo, KeyDictionary, VectorCandidates, VectorSearch, unit_norm_range

from ..errors import DataCorruptionError, IndexDefinitionError, IndexNotFoundError, MissingExtraError, StorageError
from ..format import chunk as chunkfmt
from ..format.manifest import DatasetState, TensorState
from .chunk_io import locate, read_rows
from .htypes import OBJECT_HTYPES
from .index_search import IndexAccess, check_search_params
from .indexing import take_values

if TYPE_CHECKING:
    from .table import Table

VIEW_BATCH_ROWS = 16384
#: Batches (chunks of the widest tensor read) per unit of a divided scan: a part of a query running
#: on a Ray worker covers whole units, and filtered rows are merged into batches within a unit only.
UNIT_BATCHES = 8


class _LazyColumns(Mapping):
    """Column values of one batch, read on first access."""

    def __init__(self, loaders: dict[str, Any]):
        self._loaders = loaders
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = self._loaders[name]()
        return self._values[name]

    def __iter__(self):
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


class TableSource:
    """A dataset or view, seen through query_lang's ``ScanSource`` protocol (and its index methods).

    ``exact`` keeps vector indexes out of the query (key indexes still serve the WHERE);
    ``search_params`` tune the vector index search.
    """

    def __init__(self, table: Table, exact: bool = False, search_params: Mapping[str, Any] | None = None):
        self._table = table
        # One read of the snapshot: another thread may publish a new one while the query runs.
        self._state: DatasetState = table._state
        self._reader = table._reader
        self._base = table._scanned_rows()
        self._length = len(self._base) if self._base is not None else self._state.nrows
        self._virtual = table._virtual
        self._starts: dict[str, list[int]] = {}
        #: The dataset behind the table (``ScanSource.owner``), for functions that need dataset-level records.
        self.owner = table._root
        # Indexes number rows as the dataset does. A view (rows picked or reordered) scans instead, but for
        # text scores, which are exact: those of the dataset's rows, taken at the view's.
        self._indexes = IndexAccess(table._root._store, self._state, self._state.nrows, exact,
                                    check_search_params(search_params))

    def key_dictionary(self, column: str, path: tuple[str, ...]) -> KeyDictionary | None:
        if self._base is not None or column in self._virtual:
            return None
        return self._indexes.key_dictionary(column, path)

    def vector_candidates(self, search: VectorSearch) -> VectorCandidates | None:
        if self._base is not None or search.column in self._virtual:
            return None
        return self._indexes.vector_candidates(search)

    def text_scores(self, column: str, text: str) -> np.ndarray:
        if column in self._virtual:
            raise IndexNotFoundError(f"bm25_similarity needs a text tensor with a bm25 index; {column!r} is computed")
        tensor = self._state.tensors[column]
        scores = self._indexes.text_scores(column, text, lambda rows: read_rows(self._reader, tensor, rows))
        return scores if self._base is None else scores[self._base]

    def serves_vector_search(self, column: str, metric: str) -> bool:
        if self._base is not None or column in self._virtual:
            return False
        return self._indexes.serves_vector_search(column, metric)

    def split_points(self, columns: Sequence[str]) -> np.ndarray:
        """Every ``UNIT_BATCHES``-th batch start of a scan of ``columns``, then the row count (see ``scan``)."""
        tensors = [c for c in columns if c not in self._virtual]
        if self._base is not None or not tensors:
            starts = np.arange(0, self._length, VIEW_BATCH_ROWS, dtype=np.int64)
        else:
            starts = np.asarray(self._chunk_starts(self._primary(tensors))[:-1], dtype=np.int64)
            starts = starts[starts < self._length]
        return np.append(starts[::UNIT_BATCHES], self._length) if self._length else np.zeros(1, dtype=np.int64)

    def substring_candidates(self, column: str, needles: Sequence[str]) -> np.ndarray | None:
        if column in self._virtual:
            return None
        mask = self._indexes.substring_candidates(column, needles)
        return mask if mask is None or self._base is None else mask[self._base]

    def __len__(self) -> int:
        return self._length

    def column_names(self) -> list[str]:
        return list(self._state.tensors) + [v for v in self._virtual if v not in self._state.tensors]

    def column_info(self, name: str) -> ColumnInfo:
        if name in self._virtual:
            values = self._virtual[name]
            if isinstance(values, np.ndarray):
                return ColumnInfo(name, "generic", values.dtype, tuple(values.shape[1:]))
            return ColumnInfo(name, "json", None, None)
        meta = self._state.tensors[name].meta
        dtype = None if meta.htype in OBJECT_HTYPES or meta.dtype is None else np.dtype(meta.dtype)
        shape = None if meta.htype in OBJECT_HTYPES else meta.shape
        if meta.htype == "embedding" and meta.dim is not None:
            shape = (meta.dim,)
        return ColumnInfo(name, meta.htype, dtype, shape)

    def take(self, column: str, rows: np.ndarray) -> Any:
        rows = np.asarray(rows, dtype=np.int64)
        if column in self._virtual:
            return take_values(self._virtual[column], rows)
        base = rows if self._base is None else self._base[rows]
        return read_rows(self._reader, self._state.tensors[column], base)

    def scan(self, columns: Sequence[str], rows: np.ndarray | None = None) -> Iterator[Batch]:
        tensors = [c for c in columns if c not in self._virtual]
        if self._base is None and tensors and rows is None:
            # Whole table: walk the primary tensor's chunks without a per-row position array.
            primary = self._primary(tensors)
            # A remote store streams the chunks, several requests in flight, while the first ones are scanned.
            self._reader.store.prefetch([k for c in tensors for k in self._state.tensors[c].chunk_keys])
            start = 0
            for count in self._state.tensors[primary].chunk_rows:
                stop = min(start + int(count), self._length)
                if stop > start:
                    yield self._batch(columns, np.arange(start, stop, dtype=np.int64))
                start += int(count)
            return
        positions = np.arange(self._length, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if self._base is not None or not tensors:
            for start in range(0, len(positions), VIEW_BATCH_ROWS):
                group = positions[start : start + VIEW_BATCH_ROWS]
                yield self._gathered_batch(columns, group)
            return
        primary = self._primary(tensors)
        chunk_no, _, _ = locate(self._state.tensors[primary], positions)
        keys = self._state.tensors[primary].chunk_keys
        self._reader.store.prefetch([keys[int(c)] for c in np.unique(chunk_no)])
        bounds = np.flatnonzero(np.diff(chunk_no)) + 1
        for group in np.split(positions, bounds) if len(positions) else []:
            yield self._batch(columns, group)

    def _primary(self, tensors: Sequence[str]) -> str:
        """The tensor whose chunks cut a scan into batches: the widest (an embedding batch is then one slice)."""
        return max(tensors, key=lambda c: self._row_bytes(self._state.tensors[c]))

    @staticmethod
    def _row_bytes(t: TensorState) -> int:
        if t.meta.htype in OBJECT_HTYPES or t.meta.shape is None or None in t.meta.shape:
            return 0
        return int(np.prod(t.meta.shape, dtype=np.int64)) * np.dtype(t.meta.dtype).itemsize + 1

    def _chunk_starts(self, name: str) -> list[int]:
        starts = self._starts.get(name)
        if starts is None:
            counts = self._state.tensors[name].chunk_rows
            starts = [0, *itertools.accumulate(int(n) for n in counts)]
            self._starts[name] = starts
        return starts

    def _gathered_batch(self, columns: Sequence[str], group: np.ndarray) -> Batch:
        loaders = {c: (lambda c=c: self.take(c, group)) for c in columns}
        return Batch(rows=group, values=_LazyColumns(loaders))

    def _batch(self, columns: Sequence[str], group: np.ndarray) -> Batch:
        contiguous = len(group) and group[-1] - group[0] + 1 == len(group)
        loaders, norms, keys, unit = {}, {}, {}, set()
        for c in columns:
            if c in self._virtual:
                loaders[c] = lambda c=c: self.take(c, group)
                continue
            t = self._state.tensors[c]
            pieces = _pieces(t, group, self._chunk_starts(c)) if contiguous else None
            if pieces is not None and len(pieces) == 1:
                key, lo, hi = pieces[0]
                chunk = self._reader.chunk(t, key)
                keys[c] = (key, lo, hi)
                if isinstance(chunk, chunkfmt.FixedChunk):
                    loaders[c] = lambda chunk=chunk, lo=lo, hi=hi: chunk.array[lo:hi]
                    if chunk.l2_norms is not None:
                        norms[c] = chunk.l2_norms[lo:hi]
                        if chunk.norm_range is not None and unit_norm_range(*chunk.norm_range):
                            unit.add(c)
                    continue
                loaders[c] = lambda chunk=chunk, lo=lo, hi=hi: _chunk_range(chunk, lo, hi)
                continue
            if pieces is not None:
                keys[c] = tuple(pieces)
            loaders[c] = lambda t=t: read_rows(self._reader, t, group)
        return Batch(rows=group, values=_LazyColumns(loaders), l2_norms=norms, cache_keys=keys,
                     unit_norm=frozenset(unit))


def _chunk_range(chunk: chunkfmt.Chunk, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of one chunk; a msgpack run is decoded in one streaming pass."""
    if isinstance(chunk, chunkfmt.BlobChunk) and chunk.encoding == "msgpack" and hi > lo:
        nulls = None if chunk.nulls is None else np.asarray(chunk.nulls[lo:hi], dtype=bool)
        expected = hi - lo - (0 if nulls is None else int(nulls.sum()))
        raw = bytes(chunk.data[int(chunk.offsets[lo]) : int(chunk.offsets[hi])])
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(raw), 1))
        unpacker.feed(raw)
        try:
            values = list(unpacker)
        except Exception:  # noqa: BLE001 - let the per-row decoder report the bad row
            values = None
        if values is not None and len(values) == expected:
            if nulls is None or expected == hi - lo:
                return values
            out: list[Any] = [None] * (hi - lo)
            for pos, value in zip(np.flatnonzero(~nulls).tolist(), values, strict=True):
                out[pos] = value
            return out
    return chunk.take(np.arange(lo, hi))


def _pieces(t: TensorState, group: np.ndarray, starts: list[int]) -> list[tuple[str, int, int]] | None:
    """The (chunk, start, stop) runs that hold the contiguous rows ``group``.

    ``starts`` are the tensor's chunk start rows followed by its row count.
    """
    first, last = int(group[0]), int(group[-1])
    if last >= t.nrows:
        return None
    c0 = bisect.bisect_right(starts, first) - 1
    c1 = bisect.bisect_right(starts, last) - 1
    out = []
    for c in range(c0, c1 + 1):
        lo = first - starts[c] if c == c0 else 0
        hi = last - starts[c] + 1 if c == c1 else t.chunk_rows[c]
        out.append((t.chunk_keys[c], lo, hi))
    return out


@dataclass(frozen=True)
class Selection:
    """A query's answer as rows of the very snapshot it scanned (a writer may have moved on since)."""

    rows: np.ndarray  # dataset row numbers, in result order
    state: DatasetState  # the scanned snapshot, narrowed to the selected tensors
    virtual: dict[str, Any]  # computed columns (score, ...), one value per row


def run_query(table: Table, text: str | Query, exact: bool = False,
              search_params: Mapping[str, Any] | None = None) -> Selection:
    """Execute TQL (text or a parsed ``Query``) over ``table``."""
    source = TableSource(table, exact, search_params)
    with storage_errors_surface():
        return selection_of(source, execute(text, source))


#: tensordb errors that surface from inside a query as what they are, not as a TQLError.
SURFACING_ERRORS = (DataCorruptionError, StorageError, IndexDefinitionError, IndexNotFoundError, MissingExtraError)


class storage_errors_surface:
    """query_lang turns every failure inside a function into a TQLError; damaged or unreadable
    files met during a query, and misused indexes, must surface as what they are."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        cause = exc.__cause__ if exc is not None else None
        if isinstance(exc, TQLError) and isinstance(cause, SURFACING_ERRORS):
            raise cause


def selection_of(source: TableSource, result: QueryResult) -> Selection:
    """A query's result over ``source`` as dataset rows of the scanned snapshot, with its computed columns."""
    state = source._state
    rows = result.rows if source._base is None else source._base[result.rows]
    selected = [c for c in result.columns if c in state.tensors]
    virtual = {k: take_values(v, result.rows) for k, v in source._virtual.items() if k in result.columns}
    virtual.update(result.virtual)
    narrowed = state.with_tensors({n: state.tensors[n] for n in selected})
    return Selection(np.asarray(rows, dtype=np.int64), narrowed, virtual)


def run_queries(table: Table, texts: Sequence[str | Query], exact: bool = False,
                search_params: Mapping[str, Any] | None = None) -> list[Selection]:
    """Execute several TQL queries over ``table`` (see ``query_lang.execute_many``).

    Top-k vector searches that differ only in their query vector share one scan (or one index search).
    """
    source = TableSource(table, exact, search_params)
    with storage_errors_surface():
        return [selection_of(source, r) for r in execute_many(list(texts), source)]
