"""Streaming a dataset or view into PyTorch: an ``IterableDataset`` that reads chunk by chunk.

The iterable holds only picklable things: the store path, the snapshot's
:class:`TensorState` of each tensor it reads, the selected rows (for views) and
settings. Each process (the main one, or every DataLoader worker) opens its own
:class:`ChunkReader` on first use. Nothing reads the whole dataset at once.

Rows are read in *blocks*: runs of rows cut at chunk boundaries, so a block
lies in one chunk of every tensor where the layouts allow. Fixed-shape numeric
tensors come out of a block as one ndarray (zero-copy from the chunk), text and
JSON are decoded a block at a time, and batches are slices of those columns:
there is no per-row Python work for numbers.

Work is split between DataLoader workers by rows: the block sequence (shuffled
per epoch when asked) is cut into ``num_workers`` contiguous shares whose sizes
are whole batches, so every batch but the very last of an epoch is full and
``len(loader)`` is exact whatever the number of workers.

Shuffling is two-level: the order of blocks is shuffled, then rows pass through
a shuffle buffer of ``shuffle_buffer`` rows (vectorised: the pool is permuted
and all but half a buffer of it emitted, the rest mixes with the next blocks).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..format import chunk as chunkfmt
from ..format.manifest import TensorState
from ..storage import MEMORY_SCHEME, Store, open_store
from .chunk_io import ChunkReader, read_rows
from .htypes import OBJECT_HTYPES

if TYPE_CHECKING:
    from .table import Table

DEFAULT_SHUFFLE_BUFFER = 16_384
MIN_BLOCK_ROWS = 1_024
MAX_BLOCK_ROWS = 32_768

Column = np.ndarray  # numeric (nrows, *shape), or a 1-d object array of Python values / ragged rows

_WIDEN = {np.dtype("uint16"), np.dtype("uint32"), np.dtype("uint64")}  # torch has little support for these


# -- reading columns -------------------------------------------------------------------------------
def _objects(values: Any, n: int) -> np.ndarray:
    """A 1-d object array of ``values`` (lists inside stay lists: no broadcasting)."""
    return np.fromiter(values, dtype=object, count=n)


def _decode_blob_range(c: chunkfmt.BlobChunk, lo: int, hi: int) -> list[Any]:
    """Rows ``lo:hi`` of a blob chunk, decoded with one copy and one pass."""
    offsets = c.offsets
    base = int(offsets[lo])
    raw = bytes(c.data[base : int(offsets[hi])])
    starts = (offsets[lo:hi] - base).tolist()
    ends = (offsets[lo + 1 : hi + 1] - base).tolist()
    nulls = None if c.nulls is None or not c.nulls[lo:hi].any() else c.nulls[lo:hi].tolist()
    out: list[Any] | None = None
    try:
        if c.encoding == "utf8":
            out = [raw[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends)]
        elif c.encoding == "msgpack" and nulls is None:
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(raw), 1 << 20))
            unpacker.feed(raw)
            out = list(unpacker)
    except Exception:  # a forged row: the row-by-row path below names the chunk in its error
        out = None
    if out is None or len(out) != hi - lo:
        out = [None if nulls and nulls[i] else chunkfmt.decode_blob(raw[a:b], c.encoding, c.what)
               for i, (a, b) in enumerate(zip(starts, ends))]
    if nulls is not None:
        out = [None if null else v for v, null in zip(out, nulls)]
    return out


def read_range(reader: ChunkReader, state: TensorState, lo: int, hi: int) -> Column:
    """Base rows ``lo:hi`` of one tensor as a column (a zero-copy chunk view when it can be)."""
    starts = np.zeros(len(state.chunk_rows) + 1, dtype=np.int64)
    np.cumsum(state.chunk_rows, out=starts[1:])
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    pieces: list[Any] = []
    for k in range(first, len(state.chunk_keys)):
        c_lo, c_hi = int(starts[k]), int(starts[k + 1])
        if c_lo >= hi:
            break
        a, b = max(lo, c_lo) - c_lo, min(hi, c_hi) - c_lo
        c = reader.chunk(state, state.chunk_keys[k])
        if isinstance(c, chunkfmt.FixedChunk):
            pieces.append(c.array[a:b])
        elif isinstance(c, chunkfmt.RaggedChunk):
            pieces.append([c.row(i) for i in range(a, b)])
        else:
            pieces.append(_decode_blob_range(c, a, b))
    return _join(pieces, hi - lo)


def _join(pieces: list[Any], n: int) -> Column:
    if pieces and all(isinstance(p, np.ndarray) for p in pieces) and len({(p.shape[1:], p.dtype) for p in pieces}) == 1:
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return _objects((v for p in pieces for v in p), n)


def read_positions(reader: ChunkReader, state: TensorState, rows: np.ndarray) -> Column:
    """Base rows ``rows`` (any order) of one tensor as a column."""
    values = read_rows(reader, state, rows)
    if isinstance(values, np.ndarray):
        return values
    return _objects(values, len(rows))


# -- cutting the work into blocks ------------------------------------------------------------------
def _split_block(lo: int, hi: int, out: list[tuple[int, int]]) -> None:
    pieces = max(1, -(-(hi - lo) // MAX_BLOCK_ROWS))
    cuts = np.linspace(lo, hi, pieces + 1).round().astype(np.int64).tolist()
    out.extend((a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a)


def plan_blocks(states: Sequence[TensorState], rows: np.ndarray | None, n: int) -> list[tuple[int, int]]:
    """Ranges of positions (base rows, or indexes into ``rows``) that cut at chunk boundaries."""
    bounds = {0, n}
    for state in states:
        bounds.update(np.cumsum(state.chunk_rows).tolist())
    cuts = np.array(sorted(bounds), dtype=np.int64)
    if rows is not None:
        if len(rows) > 1 and np.all(rows[1:] >= rows[:-1]):  # sorted: cut where the base chunks change
            cuts = np.unique(np.searchsorted(rows, cuts))
        else:
            cuts = np.arange(0, n + MIN_BLOCK_ROWS * 8, MIN_BLOCK_ROWS * 8)
    cuts = np.unique(np.clip(cuts, 0, n))
    merged: list[int] = [0]
    for cut in cuts.tolist()[1:]:
        if cut - merged[-1] >= MIN_BLOCK_ROWS or cut == n:
            merged.append(cut)
    if len(merged) > 2 and merged[-1] - merged[-2] < MIN_BLOCK_ROWS:
        del merged[-2]  # fold a small last block into the one before
    blocks: list[tuple[int, int]] = []
    for a, b in zip(merged[:-1], merged[1:]):
        _split_block(a, b, blocks)
    return blocks


def worker_share(blocks: list[tuple[int, int]], n: int, batch: int, worker: int, workers: int) -> list[tuple[int, int]]:
    """Worker ``worker``'s contiguous share of the block sequence, cut on whole batches."""
    nbatches = -(-n // batch)
    start = min(n, nbatches * worker // workers * batch)
    stop = min(n, nbatches * (worker + 1) // workers * batch)
    share: list[tuple[int, int]] = []
    seen = 0
    for a, b in blocks:
        lo, hi = max(a, a + start - seen), min(b, a + stop - seen)
        if hi > lo:
            share.append((lo, hi))
        seen += b - a
        if seen >= stop:
            break
    return share


# -- columns -> torch ------------------------------------------------------------------------------
def _to_torch(array: np.ndarray) -> torch.Tensor:
    if array.dtype in _WIDEN:
        array = array.astype(np.int64)
    elif not array.flags.owndata or not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C")  # own memory: views of chunks are read-only and shared
    return torch.from_numpy(array)


def _column_out(column: Column, htype: str) -> Any:
    """A batch column as the default collate would make it."""
    if column.dtype != object:
        return _to_torch(column)
    if htype in OBJECT_HTYPES:
        return column.tolist()
    rows = [_to_torch(np.asarray(r)) for r in column.tolist()]
    return _stack_or_list(rows)


def _stack_or_list(values: list[Any]) -> Any:
    if values and all(isinstance(v, torch.Tensor) for v in values) and len({(v.shape, v.dtype) for v in values}) == 1:
        return torch.stack(values)
    return values


def default_collate(samples: list[Any]) -> Any:
    """Stack numeric tensors of one shape per key; keep lists for everything else.

    Samples that are not dicts (a ``transform`` may return anything) go to
    ``torch.utils.data.default_collate``.
    """
    if samples and all(isinstance(s, dict) for s in samples):
        keys = list(samples[0])
        return {k: _stack_or_list([s.get(k) for s in samples]) for k in keys}
    from torch.utils.data import default_collate as torch_collate

    return torch_collate(samples)


def _rows_out(columns: dict[str, Column], htypes: dict[str, str]) -> list[dict[str, Any]]:
    """A batch of columns as per-row sample dicts."""
    n = len(next(iter(columns.values())))
    per_name: dict[str, list[Any]] = {}
    for name, column in columns.items():
        if column.dtype != object:
            per_name[name] = list(_to_torch(column).unbind(0)) if n else []
        elif htypes[name] in OBJECT_HTYPES:
            per_name[name] = column.tolist()
        else:
            per_name[name] = [_to_torch(np.asarray(r)) for r in column.tolist()]
    names = list(per_name)
    return [dict(zip(names, values)) for values in zip(*(per_name[k] for k in names))]


def _take(columns: dict[str, Column], index: Any) -> dict[str, Column]:
    return {k: v[index] for k, v in columns.items()}


def _concat(a: dict[str, Column], b: dict[str, Column]) -> dict[str, Column]:
    out = {}
    for k in a:
        x, y = a[k], b[k]
        if x.dtype == object or y.dtype == object or x.shape[1:] != y.shape[1:] or x.dtype != y.dtype:
            out[k] = np.concatenate([_as_objects(x), _as_objects(y)])
        else:
            out[k] = np.concatenate([x, y])
    return out


def _as_objects(column: Column) -> np.ndarray:
    return column if column.dtype == object else _objects(iter(column), len(column))


def _length(columns: dict[str, Column]) -> int:
    return len(next(iter(columns.values())))


# -- the iterable ----------------------------------------------------------------------------------
class TensorDBIterable(IterableDataset):
    """Streams rows of a snapshot; yields collated batches (or samples when ``batch_size`` is None)."""

    def __init__(
        self,
        path: str,
        states: dict[str, TensorState],
        rows: np.ndarray | None,
        nrows: int,
        batch_size: int | None,
        shuffle: bool,
        shuffle_buffer: int,
        seed: int | None,
        transform: Callable[[dict[str, Any]], Any] | None,
        collate_fn: Callable[[list[Any]], Any] | None,
        drop_last: bool,
        reader: ChunkReader | None = None,
        store: Store | None = None,
    ):
        self.path = path
        self.store = store  # given when workers cannot open the path themselves: it travels to them pickled
        self.states = states
        self.rows = rows
        self.nrows = nrows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.seed = seed if seed is not None else random.SystemRandom().getrandbits(63)
        self.transform = transform
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.blocks = plan_blocks(list(states.values()), rows, nrows)
        self.epoch = 0
        self._reader = reader  # the main process's reader; never pickled, never used in another process
        self._reader_pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None
        return state

    def __len__(self) -> int:
        if self.batch_size is None:
            return self.nrows
        return self.nrows // self.batch_size if self.drop_last else -(-self.nrows // self.batch_size)

    def _open(self) -> ChunkReader:
        # A forked worker inherits the parent's reader (its lock, cache and maps): open a fresh one.
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = ChunkReader(self.store if self.store is not None else open_store(self.path))
            self._reader_pid = os.getpid()
        return self._reader

    def _read(self, reader: ChunkReader, lo: int, hi: int) -> dict[str, Column]:
        if self.rows is None:
            return {k: read_range(reader, s, lo, hi) for k, s in self.states.items()}
        positions = self.rows[lo:hi]
        return {k: read_positions(reader, s, positions) for k, s in self.states.items()}

    def _epoch_seed(self) -> int:
        """A seed equal in every worker of one epoch and new each epoch."""
        info = get_worker_info()
        # In workers, the DataLoader draws a base seed per epoch (from its generator when ``seed`` is given);
        # the epoch count separates epochs of persistent workers.
        base = self.seed if info is None else (info.seed - info.id) % (1 << 63)
        self.epoch += 1
        return int(np.random.SeedSequence([base, self.epoch]).generate_state(2, np.uint64)[0] >> 1)

    def _columns(self) -> Iterator[dict[str, Column]]:
        """This worker's rows as column runs, shuffled if asked."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        seed = self._epoch_seed()
        blocks = list(self.blocks)
        if self.shuffle:
            order = np.random.default_rng(seed).permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        share = worker_share(blocks, self.nrows, self.batch_size or 1, worker, workers)
        reader = self._open()
        if not self.shuffle:
            for lo, hi in share:
                yield self._read(reader, lo, hi)
            return
        rng = np.random.default_rng([seed, worker])
        batch = self.batch_size or 1
        keep = self.shuffle_buffer // 2
        pool: dict[str, Column] | None = None
        for lo, hi in share:
            cols = self._read(reader, lo, hi)
            pool = cols if pool is None else _concat(pool, cols)
            n = _length(pool)
            if n >= self.shuffle_buffer:
                emit = (n - keep) // batch * batch
                if emit > 0:
                    mixed = _take(pool, rng.permutation(n))
                    yield _take(mixed, slice(0, emit))
                    pool = _take(mixed, slice(emit, n))
        if pool is not None and _length(pool):
            yield _take(pool, rng.permutation(_length(pool)))

    def _batches(self) -> Iterator[dict[str, Column]]:
        """Columns of exactly ``batch_size`` rows (the last may be short)."""
        batch = self.batch_size
        carry: dict[str, Column] | None = None
        for cols in self._columns():
            n, start = _length(cols), 0
            if carry is not None:
                start = min(n, batch - _length(carry))
                carry = _concat(carry, _take(cols, slice(0, start)))
                if _length(carry) < batch:
                    continue
                yield carry
                carry = None
            while start + batch <= n:
                yield _take(cols, slice(start, start + batch))
                start += batch
            if start < n:
                carry = _take(cols, slice(start, n))
        if carry is not None and _length(carry) and not self.drop_last:
            yield carry

    def __iter__(self) -> Iterator[Any]:
        htypes = {k: s.meta.htype for k, s in self.states.items()}
        if self.batch_size is None:
            for cols in self._columns():
                for sample in _rows_out(cols, htypes):
                    yield sample if self.transform is None else self.transform(sample)
            return
        if self.transform is None and self.collate_fn is None:
            for cols in self._batches():
                yield {k: _column_out(v, htypes[k]) for k, v in cols.items()}
            return
        collate = self.collate_fn or default_collate
        for cols in self._batches():
            samples = _rows_out(cols, htypes)
            if self.transform is not None:
                samples = [self.transform(s) for s in samples]
            yield collate(samples)


def make_dataloader(
    table: Table,
    tensors: Sequence[str] | None = None,
    batch_size: int | None = 1,
    shuffle: bool = False,
    num_workers: int = 0,
    transform: Callable[[dict[str, Any]], Any] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    drop_last: bool = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: int | None = None,
    **loader_kwargs: Any,
) -> Any:
    """A ``torch.utils.data.DataLoader`` streaming ``table``; see :meth:`Table.pytorch`."""
    names = list(table._state.tensors) if tensors is None else [tensors] if isinstance(tensors, str) else list(tensors)
    if not names:
        raise ValueError("pytorch: no tensors to load")
    states = {name: table._tensor_state(name) for name in names}
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"pytorch: batch_size must be a positive int or None, got {batch_size!r}")
    if num_workers < 0:
        raise ValueError(f"pytorch: num_workers must be >= 0, got {num_workers}")
    root = table._root
    path = root.path
    if num_workers > 0 and path.startswith(MEMORY_SCHEME):
        raise ValueError(
            f"pytorch: {path} is an in-memory dataset, which worker processes cannot open; "
            f"use num_workers=0, or a dataset on disk"
        )
    selected = table._selected_rows()
    if selected is not None:
        rows: np.ndarray | None = np.asarray(selected, dtype=np.int64)
        nrows = len(rows)
    else:
        rows, nrows = None, min(s.nrows for s in states.values())
    store = root._store
    iterable = TensorDBIterable(
        path, states, rows, nrows, batch_size, shuffle, shuffle_buffer, seed, transform, collate_fn, drop_last,
        reader=table._reader, store=None if store.fork_safe else store,
    )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    if num_workers > 0:
        loader_kwargs.setdefault("persistent_workers", False)
        if not store.fork_safe:
            # Forked workers would hang in the store's client: start them from a clean process instead.
            loader_kwargs.setdefault("multiprocessing_context", "forkserver")
    return DataLoader(iterable, batch_size=None, num_workers=num_workers, generator=generator, **loader_kwargs)
