"""Copy-on-write changes to one tensor's chunk list.

Nothing here modifies a chunk: appends add chunks, and updates or deletes
rewrite only the chunks they touch, under new keys. The old chunks stay valid
for every snapshot that still lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..format.envelope import Parts, header_checksum, parts_nbytes
from ..format.manifest import TensorMeta, TensorState
from .chunk_io import ChunkReader, chunk_items, concat_items, encode_chunks, locate, new_chunk_key, take_items
from .htypes import EncodedRows

#: Trailing chunks under 1/16 of the target size get merged, four of a size at a time.
SMALL_CHUNK_FRACTION = 16
MERGE_FANOUT = 4


class ChunkSink(Protocol):
    """Where new chunk files go; writes may still be in flight until ``wait`` returns."""

    def put(self, key: str, data: Parts) -> None: ...

    def wait(self) -> None: ...


class _Refs:
    """Chunk references being collected: keys, row counts, file sizes and header checksums."""

    def __init__(self, state: TensorState | None = None, start: int = 0, stop: int | None = None):
        picked = slice(start, stop)
        self.keys = list(state.chunk_keys[picked]) if state else []
        self.rows = list(state.chunk_rows[picked]) if state else []
        self.nbytes = list(state.chunk_nbytes[picked]) if state else []
        self.checksums = list(state.chunk_checksums[picked]) if state else []

    def __iadd__(self, other: _Refs) -> _Refs:
        self.keys += other.keys
        self.rows += other.rows
        self.nbytes += other.nbytes
        self.checksums += other.checksums
        return self

    def state(self, meta: TensorMeta) -> TensorState:
        return TensorState(meta, tuple(self.keys), tuple(self.rows), tuple(self.nbytes), tuple(self.checksums))


def _write_rows(sink: ChunkSink, meta: TensorMeta, rows: EncodedRows) -> _Refs:
    refs = _Refs()
    for data, nrows in encode_chunks(meta, rows):
        key = new_chunk_key()
        sink.put(key, data)
        refs.keys.append(key)
        refs.rows.append(nrows)
        refs.nbytes.append(parts_nbytes(data))
        refs.checksums.append(header_checksum(data[0]))
    return refs


def append(
    sink: ChunkSink, reader: ChunkReader, state: TensorState, meta: TensorMeta, rows: EncodedRows
) -> TensorState:
    """Add rows at the end; merges runs of small trailing chunks so append loops stay cheap."""
    refs = _Refs(state)
    refs += _write_rows(sink, meta, rows)
    return _merge_small_tail(sink, reader, refs.state(meta))


def _merge_small_tail(sink: ChunkSink, reader: ChunkReader, state: TensorState) -> TensorState:
    small = state.meta.chunk_bytes // SMALL_CHUNK_FRACTION
    while len(state.chunk_keys) >= MERGE_FANOUT:
        tail = state.chunk_nbytes[-MERGE_FANOUT:]
        # Size-tiered: only merge chunks of similar size, so each byte is rewritten O(log n) times.
        if max(tail) >= small or max(tail) > 2 * min(tail):
            break
        keys = state.chunk_keys[-MERGE_FANOUT:]
        sink.wait()  # the chunks to merge may have been written just now
        merged = concat_items([chunk_items(reader, state, k) for k in keys])
        refs = _Refs(state, stop=-MERGE_FANOUT)
        refs += _write_rows(sink, state.meta, merged)
        state = refs.state(state.meta)
    return state


def _rewrite_chunks(
    sink: ChunkSink,
    reader: ChunkReader,
    state: TensorState,
    meta: TensorMeta,
    rows: np.ndarray,
    edit: Callable[[EncodedRows, np.ndarray, np.ndarray], EncodedRows],
) -> TensorState:
    """Rewrite each chunk holding some of ``rows`` with ``edit(items, local rows, positions in rows)``."""
    chunk_no, local, _ = locate(state, rows)
    replaced: dict[int, _Refs] = {}
    for c in np.unique(chunk_no).tolist():
        positions = np.flatnonzero(chunk_no == c)
        items = edit(chunk_items(reader, state, state.chunk_keys[c]), local[positions], positions)
        replaced[c] = _write_rows(sink, meta, items) if len(items) else _Refs()
    out = _Refs()
    for c in range(len(state.chunk_keys)):
        out += replaced[c] if c in replaced else _Refs(state, c, c + 1)
    return out.state(meta)


def update(
    sink: ChunkSink, reader: ChunkReader, state: TensorState, meta: TensorMeta, rows: np.ndarray, values: EncodedRows
) -> TensorState:
    """Replace the rows at ``rows`` (unique) with ``values``, rewriting only their chunks."""

    def edit(items: EncodedRows, local: np.ndarray, positions: np.ndarray) -> EncodedRows:
        n = len(items)
        new_values = take_items(values, positions)
        order = np.full(n, -1, dtype=np.int64)
        order[local] = np.arange(len(local))
        keep_mask = order < 0
        parts, start = [], 0
        for i in np.flatnonzero(~keep_mask).tolist():
            parts.append(take_items(items, np.arange(start, i)))
            parts.append(take_items(new_values, np.array([order[i]])))
            start = i + 1
        parts.append(take_items(items, np.arange(start, n)))
        return concat_items(parts)

    return _rewrite_chunks(sink, reader, state, meta, rows, edit)


def delete(sink: ChunkSink, reader: ChunkReader, state: TensorState, rows: np.ndarray) -> TensorState:
    """Remove the rows at ``rows`` (unique), rewriting only the chunks that held them."""

    def edit(items: EncodedRows, local: np.ndarray, _positions: np.ndarray) -> EncodedRows:
        keep = np.ones(len(items), dtype=bool)
        keep[local] = False
        return take_items(items, np.flatnonzero(keep))

    return _rewrite_chunks(sink, reader, state, state.meta, rows, edit)

