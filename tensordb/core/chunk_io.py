"""Reading and writing the chunks of one tensor, with a shared cache of decoded chunks.

Chunks are immutable, so a decoded chunk can be cached by its key for as long
as memory allows, and a chunk verified once need not be verified again.

Every read names the :class:`TensorState` it reads for, and the chunk must be
the one that state references: its header checksum (which covers every buffer
checksum), row count and file size are compared with the reference, so a
genuine chunk file copied over another is ``DataCorruptionError``, never wrong rows.
"""

from __future__ import annotations

import mmap
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from query_lang.cache import BoundedCache

from ..errors import DataCorruptionError, KeyNotFoundError, TensorDBError
from ..format import chunk as chunkfmt
from ..format import envelope
from ..format.manifest import CHUNK_PREFIX, ChunkRef, TensorMeta, TensorState
from ..storage import Store
from .htypes import ENCODING, EncodedRows

DEFAULT_CACHE_BYTES = 512 << 20
#: Each cached memory map holds a file descriptor, and small chunks cost little of the byte budget.
DEFAULT_CACHE_CHUNKS = 256


def chunk_label(meta: TensorMeta, key: str) -> str:
    """How errors name a chunk: the tensor and the chunk file."""
    return f"tensor {meta.name!r}, chunk {key!r}"


def check_reference(ref: ChunkRef, what: str, nrows: int, checksum: int, nbytes: int | None = None) -> None:
    """Raise ``DataCorruptionError`` unless a chunk with these header facts is the one ``ref`` names."""
    if nrows != ref.nrows or (ref.checksum is not None and checksum != ref.checksum):
        expected = "" if ref.checksum is None else f", header checksum {ref.checksum:#018x}"
        raise DataCorruptionError(
            f"{what}: the chunk file is not the one the manifest names: it holds {nrows} rows, header checksum "
            f"{checksum:#018x}; the manifest says {ref.nrows} rows{expected} (a chunk copied over another?)"
        )
    if nbytes is not None and nbytes != ref.nbytes:
        raise DataCorruptionError(f"{what}: file is {nbytes} bytes, manifest says {ref.nbytes}")


class ChunkReader:
    """Decodes chunks from a store, caching them by key (the shared bounded, thread-safe cache)."""

    def __init__(self, store: Store, cache_bytes: int = DEFAULT_CACHE_BYTES, cache_chunks: int = DEFAULT_CACHE_CHUNKS):
        self.store = store
        self.cache_bytes = cache_bytes
        #: chunk key -> (decoded chunk, header checksum, file size)
        self._cache: BoundedCache[str, tuple[chunkfmt.Chunk, int, int]] = BoundedCache(cache_bytes, cache_chunks)
        self._verified: set[str] = set()  # chunks whose checksums passed once (they never change)
        self._verified_lock = threading.Lock()

    def chunk(self, state: TensorState, key: str) -> chunkfmt.Chunk:
        """The decoded, verified chunk ``key`` of the tensor ``state``, checked against the state's reference."""
        ref = state.reference(key)
        what = chunk_label(state.meta, key)
        hit = self._cache.get(key)
        decoded, checksum, nbytes = hit if hit is not None else self._load(key, what)
        check_reference(ref, what, decoded.nrows, checksum, nbytes)
        return decoded

    def _load(self, key: str, what: str) -> tuple[chunkfmt.Chunk, int, int]:
        try:
            data = self.store.map(key)
        except KeyNotFoundError:
            raise DataCorruptionError(f"{what}: chunk file is missing") from None
        decoded = chunkfmt.decode_chunk(data, what, verify=key not in self._verified)
        checksum = envelope.header_checksum(data)
        with self._verified_lock:
            self._verified.add(key)
        # A memory map costs page cache, not heap: count it lightly so hot chunks stay mapped.
        cost = len(data) // 8 + 1 if isinstance(data.obj, mmap.mmap) else len(data)
        self._cache.put(key, (decoded, checksum, len(data)), cost)
        return decoded, checksum, len(data)

    def read_fixed_into(self, state: TensorState, key: str, out: np.ndarray) -> None:
        """Read a fixed-layout chunk of ``state`` straight into ``out`` (one copy, then a checksum)."""
        ref = state.reference(key)
        what = chunk_label(state.meta, key)
        try:
            header = envelope.read_header(_prefetching_reader(self.store, key), what, envelope.MAGIC_CHUNK)
        except KeyNotFoundError:
            raise DataCorruptionError(f"{what}: chunk file is missing") from None
        nrows = header.meta.get("nrows")
        check_reference(ref, what, nrows if type(nrows) is int else -1, header.checksum)
        data = header.buffers.get("data")
        if (
            header.meta.get("kind") != chunkfmt.FIXED
            or data is None
            or data.codec is not None
            or data.nbytes != out.nbytes
            or header.meta.get("dtype") != out.dtype.str
            or header.meta.get("shape") != list(out.shape[1:])
        ):
            self._copy_decoded(state, key, out, what)
            return
        view = memoryview(out.reshape(-1).view(np.uint8))
        try:
            self.store.read_into(key, data.offset, view)
        except KeyNotFoundError:
            raise DataCorruptionError(f"{what}: chunk file is missing") from None
        except DataCorruptionError as e:  # a truncated file: say which tensor and chunk
            raise DataCorruptionError(f"{what}: {e}") from e
        envelope.check_buffer(view, data, what, "data")

    def _copy_decoded(self, state: TensorState, key: str, out: np.ndarray, what: str) -> None:
        """The slow path of ``read_fixed_into``: the chunk's rows must have exactly ``out``'s shape (no broadcast)."""
        c = self.chunk(state, key)
        array = getattr(c, "array", None)
        if array is None or array.shape != out.shape or array.dtype != out.dtype:
            got = "rows of varying shape" if array is None else f"shape {array.shape}, dtype {array.dtype}"
            raise DataCorruptionError(f"{what}: chunk holds {got}, the manifest says {out.shape}, {out.dtype}")
        out[...] = array


def _prefetching_reader(store: Store, key: str, prefetch: int = 4096) -> Callable[[int, int], bytes]:
    """A ``read(start, length)`` that serves a file's head from one read (headers are small)."""
    head = store.get_range(key, 0, prefetch)

    def read(start: int, length: int) -> bytes:
        if start + length <= len(head) or len(head) < prefetch:
            return head[start : start + length]
        return store.get_range(key, start, length)

    return read


class ChunkWriter:
    """Writes new chunk files on background threads, so fsyncs overlap with encoding.

    It remembers every key written since ``take_written`` was last called, so a
    failed operation can delete what it wrote. ``wait`` re-raises the first error.
    """

    def __init__(self, store: Store, workers: int = 4, max_pending: int = 8):
        self.store = store
        self.written: list[str] = []
        self._pool: ThreadPoolExecutor | None = None
        self._workers = workers
        self._max_pending = max_pending
        self._pending: list[Future] = []

    def put(self, key: str, data: envelope.Parts) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="tensordb-write")
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()
        self.written.append(key)
        self._pending.append(self._pool.submit(self.store.put, key, data))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        error: BaseException | None = None
        for future in pending:
            try:
                future.result()
            except BaseException as e:  # keep waiting: no write may still run after we return
                error = error or e
        if error is not None:
            raise error

    def discard(self, since: int = 0, until: int | None = None) -> None:
        """Delete the chunks at positions ``since`` to ``until`` of ``written`` (best effort)."""
        self.wait_quietly()
        for key in self.written[since:until]:
            try:
                self.store.delete(key)
            except TensorDBError:
                pass  # an orphan is harmless; vacuum() removes it
        del self.written[since:until]

    def wait_quietly(self) -> None:
        try:
            self.wait()
        except BaseException:
            pass


def new_chunk_key() -> str:
    return f"{CHUNK_PREFIX}{uuid.uuid4().hex}"


def _split_points(sizes: np.ndarray, target: int) -> list[int]:
    """Row boundaries that cut rows with byte ``sizes`` into runs of about ``target`` bytes."""
    ends = np.cumsum(sizes)
    bounds = [0]
    while bounds[-1] < len(sizes):
        start = bounds[-1]
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + target, side="right"))
        bounds.append(max(stop, start + 1))
    return bounds


def _encode_piece(meta: TensorMeta, rows: EncodedRows, start: int, stop: int) -> envelope.Parts:
    codec = meta.compression
    if rows.array is not None:
        return chunkfmt.encode_fixed(rows.array[start:stop], codec, with_norms=meta.htype == "embedding")
    if rows.arrays is not None:
        piece = rows.arrays[start:stop]
        if len({a.shape for a in piece}) == 1:
            return chunkfmt.encode_fixed(np.stack(piece), codec, with_norms=meta.htype == "embedding")
        return chunkfmt.encode_ragged(piece, np.dtype(meta.dtype), piece[0].ndim, codec)
    return chunkfmt.encode_blobs(rows.blobs[start:stop], ENCODING[meta.htype], codec)


def encode_chunks(meta: TensorMeta, rows: EncodedRows) -> Iterator[tuple[envelope.Parts, int]]:
    """Cut ``rows`` into chunk files of about ``meta.chunk_bytes``; yields (file parts, row count)."""
    n = len(rows)
    if n == 0:
        return
    if rows.array is not None:
        row_bytes = max(1, rows.array[0].nbytes)
        per_chunk = max(1, meta.chunk_bytes // row_bytes)
        bounds = list(range(0, n, per_chunk)) + [n]
    elif rows.arrays is not None:
        bounds = _split_points(np.fromiter((a.nbytes for a in rows.arrays), np.int64, n), meta.chunk_bytes)
    else:
        sizes = chunkfmt.blob_lengths(rows.blobs) + 8
        bounds = _split_points(sizes, meta.chunk_bytes)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        yield _encode_piece(meta, rows, start, stop), stop - start


def chunk_items(reader: ChunkReader, state: TensorState, key: str) -> EncodedRows:
    """A chunk's rows as encoded items, so they can be spliced and written again."""
    c = reader.chunk(state, key)
    if isinstance(c, chunkfmt.FixedChunk):
        return EncodedRows(array=np.asarray(c.array))
    if isinstance(c, chunkfmt.RaggedChunk):
        return EncodedRows(arrays=[c.row(i) for i in range(c.nrows)])
    data, bounds = bytes(c.data), c.offsets.tolist()
    blobs: list[bytes | None] = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if c.nulls is not None:
        for i in np.flatnonzero(c.nulls).tolist():
            blobs[i] = None
    return EncodedRows(blobs=blobs)


def concat_items(parts: list[EncodedRows]) -> EncodedRows:
    """Join encoded runs of rows of one tensor."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return EncodedRows(blobs=[])
    if parts[0].blobs is not None:
        return EncodedRows(blobs=[b for p in parts for b in p.blobs])
    if all(p.array is not None for p in parts) and len({p.array.shape[1:] for p in parts}) == 1:
        return EncodedRows(array=np.concatenate([p.array for p in parts]))
    return EncodedRows(arrays=[a for p in parts for a in (list(p.array) if p.array is not None else p.arrays)])


def take_items(items: EncodedRows, keep: np.ndarray) -> EncodedRows:
    """The rows of ``items`` at positions ``keep``."""
    if items.array is not None:
        return EncodedRows(array=items.array[keep])
    source = items.arrays if items.arrays is not None else items.blobs
    picked = [source[i] for i in keep.tolist()]
    return EncodedRows(arrays=picked) if items.arrays is not None else EncodedRows(blobs=picked)


def locate(state: TensorState, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row: its chunk number and position in the chunk; also the chunk start rows."""
    starts = np.zeros(len(state.chunk_rows) + 1, dtype=np.int64)
    np.cumsum(state.chunk_rows, out=starts[1:])
    chunk_no = np.searchsorted(starts, rows, side="right") - 1
    return chunk_no, rows - starts[chunk_no], starts


def read_rows(reader: ChunkReader, state: TensorState, rows: np.ndarray) -> Any:
    """Values of ``rows`` (any order, repeats allowed): an ndarray when all rows share a shape, else a list."""
    meta = state.meta
    if len(rows) == 0:
        if meta.htype not in ENCODING and meta.shape is not None and None not in meta.shape:
            return np.empty((0, *meta.shape), dtype=np.dtype(meta.dtype))
        return []
    chunk_no, local, _ = locate(state, rows)
    if _consecutive(rows):
        run = _fixed_run(reader, state, chunk_no, local)
        if run is not None:
            return run
    order = np.argsort(chunk_no, kind="stable")
    pieces: list[tuple[np.ndarray, Any]] = []
    sorted_chunks = chunk_no[order]
    bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
    for group in np.split(order, bounds):
        c = reader.chunk(state, state.chunk_keys[int(chunk_no[group[0]])])
        pieces.append((group, c.take(local[group])))
    if all(isinstance(v, np.ndarray) for _, v in pieces) and len({v.shape[1:] for _, v in pieces}) == 1:
        first = pieces[0][1]
        out = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
        for group, values in pieces:
            out[group] = values
        return out
    result: list[Any] = [None] * len(rows)
    for group, values in pieces:
        for pos, value in zip(group.tolist(), values):
            result[pos] = value
    return result


def _consecutive(rows: np.ndarray) -> bool:
    return len(rows) > 1 and int(rows[-1]) - int(rows[0]) + 1 == len(rows) and bool(np.all(np.diff(rows) == 1))


def _fixed_run(reader: ChunkReader, state: TensorState, chunk_no: np.ndarray, local: np.ndarray) -> np.ndarray | None:
    """Consecutive rows of fixed-shape chunks, sliced from each chunk straight into the result (one copy,
    where gathering row by row copies twice); None when a chunk holds rows of varying shape."""
    first, last = int(chunk_no[0]), int(chunk_no[-1])
    chunks = [reader.chunk(state, state.chunk_keys[c]) for c in range(first, last + 1)]
    if not all(isinstance(c, chunkfmt.FixedChunk) for c in chunks) or len({c.array.shape[1:] for c in chunks}) != 1:
        return None
    out = np.empty((len(local), *chunks[0].array.shape[1:]), dtype=chunks[0].array.dtype)
    start, at = int(local[0]), 0
    for chunk in chunks:
        stop = min(chunk.nrows, start + len(local) - at)
        out[at : at + stop - start] = chunk.array[start:stop]
        at += stop - start
        start = 0
    return out


#: Above this many bytes, a whole-column read checks the chunk files' sizes before it allocates.
CHECK_SIZES_ABOVE = 64 << 20


def _check_declared_sizes(reader: ChunkReader, state: TensorState) -> None:
    """Refuse a snapshot that declares more bytes than its chunk files hold, before allocating for it.

    A forged snapshot can declare a huge tensor consistently (rows and sizes in agreement); one
    ``stat`` per chunk is nothing beside reading it, and it is only done for large reads.
    """
    if sum(state.chunk_nbytes) <= CHECK_SIZES_ABOVE:
        return
    for ref in (state.reference(key) for key in state.chunk_keys):
        what = chunk_label(state.meta, ref.key)
        try:
            actual = reader.store.size(ref.key)
        except KeyNotFoundError:
            raise DataCorruptionError(f"{what}: chunk file is missing") from None
        if actual != ref.nbytes:
            raise DataCorruptionError(f"{what}: file is {actual} bytes, manifest says {ref.nbytes}")


def read_all_fixed(reader: ChunkReader, state: TensorState, threads: int = 4) -> np.ndarray:
    """A whole fixed-shape tensor as one array, reading chunks in parallel threads."""
    meta = state.meta
    reader.store.prefetch(state.chunk_keys)  # remote stores: whole chunks, several in flight
    _check_declared_sizes(reader, state)
    out = np.empty((state.nrows, *meta.shape), dtype=np.dtype(meta.dtype))
    starts = np.concatenate([[0], np.cumsum(state.chunk_rows)]).astype(np.int64)
    jobs = [(k, int(a), int(b)) for k, a, b in zip(state.chunk_keys, starts[:-1], starts[1:]) if b > a]
    if len(jobs) <= 1 or threads <= 1:
        for key, a, b in jobs:
            reader.read_fixed_into(state, key, out[a:b])
        return out
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(reader.read_fixed_into, state, key, out[a:b]) for key, a, b in jobs]:
            f.result()
    return out
