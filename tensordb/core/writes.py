"""Copy-on-write changes to one tensor's chunk list.

Nothing here modifies a chunk: appends add chunks, and updates or deletes
rewrite only the chunks they touch, under new keys. The old chunks stay valid
for every snapshot that still lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..format.envelope import Parts, parts_nbytes
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


def _write_rows(sink: ChunkSink, meta: TensorMeta, rows: EncodedRows) -> tuple[list[str], list[int], list[int]]:
    keys, counts, sizes = [], [], []
    for data, nrows in encode_chunks(meta, rows):
        key = new_chunk_key()
        sink.put(key, data)
        keys.append(key)
        counts.append(nrows)
        sizes.append(parts_nbytes(data))
    return keys, counts, sizes


def append(
    sink: ChunkSink, reader: ChunkReader, state: TensorState, meta: TensorMeta, rows: EncodedRows
) -> TensorState:
    """Add rows at the end; merges runs of small trailing chunks so append loops stay cheap."""
    keys, counts, sizes = _write_rows(sink, meta, rows)
    new = TensorState(
        meta, state.chunk_keys + tuple(keys), state.chunk_rows + tuple(counts), state.chunk_nbytes + tuple(sizes)
    )
    return _merge_small_tail(sink, reader, new)


def _merge_small_tail(sink: ChunkSink, reader: ChunkReader, state: TensorState) -> TensorState:
    small = state.meta.chunk_bytes // SMALL_CHUNK_FRACTION
    while len(state.chunk_keys) >= MERGE_FANOUT:
        tail = state.chunk_nbytes[-MERGE_FANOUT:]
        # Size-tiered: only merge chunks of similar size, so each byte is rewritten O(log n) times.
        if max(tail) >= small or max(tail) > 2 * min(tail):
            break
        keys = state.chunk_keys[-MERGE_FANOUT:]
        sink.wait()  # the chunks to merge may have been written just now
        merged = concat_items([chunk_items(reader, state.meta, k) for k in keys])
        new_keys, counts, sizes = _write_rows(sink, state.meta, merged)
        state = TensorState(
            state.meta,
            state.chunk_keys[:-MERGE_FANOUT] + tuple(new_keys),
            state.chunk_rows[:-MERGE_FANOUT] + tuple(counts),
            state.chunk_nbytes[:-MERGE_FANOUT] + tuple(sizes),
        )
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
    keys, counts, sizes = list(state.chunk_keys), list(state.chunk_rows), list(state.chunk_nbytes)
    replaced: dict[int, tuple[list[str], list[int], list[int]]] = {}
    for c in np.unique(chunk_no).tolist():
        positions = np.flatnonzero(chunk_no == c)
        items = edit(chunk_items(reader, state.meta, keys[c]), local[positions], positions)
        replaced[c] = _write_rows(sink, meta, items) if len(items) else ([], [], [])
    out_keys, out_counts, out_sizes = [], [], []
    for c in range(len(keys)):
        k, n, b = replaced.get(c, ([keys[c]], [counts[c]], [sizes[c]]))
        out_keys += k
        out_counts += n
        out_sizes += b
    return TensorState(meta, tuple(out_keys), tuple(out_counts), tuple(out_sizes))


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

