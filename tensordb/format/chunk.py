"""Chunks: the immutable files that hold a run of rows of one tensor.

Three layouts, chosen per chunk by what its rows look like:

* ``fixed``: rows of one shape and dtype, one contiguous C-order array that
  numpy reads (or memory-maps) directly; embeddings also carry row L2 norms.
* ``ragged``: numeric rows of varying shape: one flat array plus a shape table.
* ``blob``: text, JSON and lists: concatenated UTF-8 bytes plus an offsets array
  and, when needed, a null mask.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ..errors import DataCorruptionError
from . import envelope
from .manifest import numeric_dtype

FIXED = "fixed"
RAGGED = "ragged"
BLOB = "blob"


def encode_fixed(array: np.ndarray, codec: str | None, with_norms: bool = False) -> envelope.Parts:
    """A chunk of same-shape numeric rows (``array`` is ``(nrows, *row_shape)``)."""
    array = np.ascontiguousarray(array)
    meta = {"kind": FIXED, "nrows": len(array), "dtype": array.dtype.str, "shape": list(array.shape[1:])}
    buffers: dict[str, Any] = {"data": array.reshape(-1).view(np.uint8)}
    if with_norms:
        flat = array.reshape(len(array), -1).astype(np.float32, copy=False)
        buffers["l2_norms"] = np.sqrt(np.einsum("ij,ij->i", flat, flat)).astype(np.float32)
    return envelope.pack_parts(envelope.MAGIC_CHUNK, meta, buffers, codec)


def encode_ragged(arrays: Sequence[np.ndarray], dtype: np.dtype, ndim: int, codec: str | None) -> envelope.Parts:
    """A chunk of numeric rows whose shapes differ."""
    shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(len(arrays), ndim)
    flat = (
        np.concatenate([np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrays])
        if arrays
        else np.empty(0, dtype)
    )
    meta = {"kind": RAGGED, "nrows": len(arrays), "dtype": np.dtype(dtype).str, "ndim": ndim}
    return envelope.pack_parts(envelope.MAGIC_CHUNK, meta, {"data": flat.view(np.uint8), "shapes": shapes}, codec)


def encode_blobs(blobs: Sequence[bytes | None], encoding: str, codec: str | None) -> envelope.Parts:
    """A chunk of serialised objects; ``None`` marks an empty row."""
    lengths = blob_lengths(blobs)
    offsets = np.zeros(len(blobs) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    has_nulls = None in blobs
    buffers: dict[str, Any] = {
        "offsets": offsets,
        "data": b"".join(b for b in blobs if b is not None) if has_nulls else b"".join(blobs),
    }
    if has_nulls:
        buffers["nulls"] = np.fromiter((b is None for b in blobs), dtype=bool, count=len(blobs)).view(np.uint8)
    meta = {"kind": BLOB, "nrows": len(blobs), "encoding": encoding}
    return envelope.pack_parts(envelope.MAGIC_CHUNK, meta, buffers, codec)


def blob_lengths(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Byte length of each blob (0 for ``None``)."""
    if None in blobs:
        return np.fromiter((0 if b is None else len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    return np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))


ENCODINGS = ("utf8", "json", "msgpack")


def decode_blob(raw: bytes | memoryview, encoding: str, what: str = "blob chunk") -> Any:
    """Turn one stored object back into its Python value; a row that cannot be decoded is corruption."""
    try:
        if encoding == "msgpack":
            # JSON allows int, float, bool, None keys; tensordb writes no msgpack extension types
            return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_no_ext)
        text = str(raw, "utf-8", "surrogatepass")  # text is encoded with surrogatepass too
        return json.loads(text) if encoding == "json" else text
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as e:  # forged: too deep, bad bytes
        raise DataCorruptionError(f"{what}: a row cannot be decoded: {type(e).__name__}: {e}"[:500]) from None


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} in a row")


@dataclass
class FixedChunk:
    """Rows of one shape: ``array`` may be a read-only memory map."""

    array: np.ndarray
    l2_norms: np.ndarray | None

    @property
    def nrows(self) -> int:
        return len(self.array)

    @functools.cached_property
    def norm_range(self) -> tuple[float, float] | None:
        """The smallest and largest row L2 norm (None without stored norms or rows)."""
        norms = self.l2_norms
        if norms is None or not len(norms):
            return None
        return float(norms.min()), float(norms.max())

    def take(self, local: np.ndarray) -> np.ndarray:
        # np.take copies whole rows in one pass: several times faster than fancy indexing on wide rows.
        return np.take(self.array, local, axis=0)


@dataclass
class RaggedChunk:
    """Numeric rows of varying shape."""

    flat: np.ndarray
    shapes: np.ndarray
    offsets: np.ndarray

    @property
    def nrows(self) -> int:
        return len(self.shapes)

    def row(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]].reshape(tuple(self.shapes[i]))

    def take(self, local: np.ndarray) -> list[np.ndarray]:
        return [self.row(int(i)) for i in local]


@dataclass
class BlobChunk:
    """Serialised objects (text, JSON, lists) with an offsets array."""

    data: memoryview
    offsets: np.ndarray
    nulls: np.ndarray | None
    encoding: str
    what: str = "blob chunk"  # how errors name the chunk

    @property
    def nrows(self) -> int:
        return len(self.offsets) - 1

    def take(self, local: np.ndarray) -> list[Any]:
        data, encoding, what = self.data, self.encoding, self.what
        local = np.asarray(local, dtype=np.int64)
        starts, ends = self.offsets[local].tolist(), self.offsets[local + 1].tolist()
        if self.nulls is None:
            return [decode_blob(data[a:b], encoding, what) for a, b in zip(starts, ends)]
        nulls = self.nulls[local].tolist()
        return [None if null else decode_blob(data[a:b], encoding, what)
                for a, b, null in zip(starts, ends, nulls)]


Chunk = FixedChunk | RaggedChunk | BlobChunk


def _array(buf: memoryview, dtype: Any, what: str, name: str, count: int | None = None) -> np.ndarray:
    """Buffer ``name`` as a flat array; ``count`` items exactly, when given."""
    dtype = np.dtype(dtype)
    if len(buf) % dtype.itemsize or (count is not None and len(buf) != count * dtype.itemsize):
        expected = f"{count} x {dtype}" if count is not None else f"a multiple of {dtype}"
        raise DataCorruptionError(f"{what}: buffer {name!r} holds {len(buf)} bytes, expected {expected}")
    return np.frombuffer(buf, dtype=dtype)


def _buffer(buffers: dict[str, memoryview], name: str, what: str) -> memoryview:
    if name not in buffers:
        raise DataCorruptionError(f"{what}: chunk has no {name!r} buffer")
    return buffers[name]


def _count(value: Any, what: str, field: str) -> int:
    if type(value) is not int or value < 0:
        raise DataCorruptionError(f"{what}: chunk header field {field!r} is {value!r:.80}, expected an integer >= 0")
    return value


def decode_chunk(data: memoryview, what: str, verify: bool = True) -> Chunk:
    """Decode a chunk file held in memory (or memory-mapped), verifying checksums unless told not to.

    Every size the header declares is checked against the buffers before it sizes
    anything, so a forged header with valid checksums gives ``DataCorruptionError``.
    """
    meta, buffers = envelope.unpack(data, what, envelope.MAGIC_CHUNK, verify=verify)
    kind, nrows = meta.get("kind"), _count(meta.get("nrows"), what, "nrows")
    try:
        if kind == FIXED:
            return _decode_fixed(meta, buffers, nrows, what)
        if kind == RAGGED:
            return _decode_ragged(meta, buffers, nrows, what)
        if kind == BLOB:
            return _decode_blob_chunk(meta, buffers, nrows, what)
    except ValueError as e:  # a dtype that is no numeric dtype
        raise DataCorruptionError(f"{what}: chunk header is inconsistent: {e}") from e
    raise DataCorruptionError(f"{what}: unknown chunk kind {kind!r:.80}")


def _decode_fixed(meta: dict[str, Any], buffers: dict[str, memoryview], nrows: int, what: str) -> FixedChunk:
    dtype = numeric_dtype(meta.get("dtype"))
    shape = meta.get("shape")
    if not isinstance(shape, list):
        raise DataCorruptionError(f"{what}: chunk row shape {shape!r:.80} is not a list")
    shape = tuple(_count(s, what, "shape") for s in shape)
    array = _array(_buffer(buffers, "data", what), dtype, what, "data", nrows * math.prod(shape))
    norms = buffers.get("l2_norms")
    return FixedChunk(
        array.reshape((nrows, *shape)), None if norms is None else _array(norms, np.float32, what, "l2_norms", nrows)
    )


def _decode_ragged(meta: dict[str, Any], buffers: dict[str, memoryview], nrows: int, what: str) -> RaggedChunk:
    flat = _array(_buffer(buffers, "data", what), numeric_dtype(meta.get("dtype")), what, "data")
    ndim = _count(meta.get("ndim"), what, "ndim")
    shapes = _array(_buffer(buffers, "shapes", what), np.int64, what, "shapes", nrows * ndim).reshape(nrows, ndim)
    if np.any(shapes < 0):
        raise DataCorruptionError(f"{what}: the shape table holds a negative dimension")
    # float64 first: an int64 product of forged dimensions could overflow to a plausible size
    if np.prod(shapes.astype(np.float64), axis=1).sum() != len(flat):
        raise DataCorruptionError(f"{what}: shape table does not match the data length")
    offsets = np.zeros(nrows + 1, dtype=np.int64)
    np.cumsum(np.prod(shapes, axis=1), out=offsets[1:])
    return RaggedChunk(flat, shapes, offsets)


def _decode_blob_chunk(meta: dict[str, Any], buffers: dict[str, memoryview], nrows: int, what: str) -> BlobChunk:
    encoding = meta.get("encoding")
    if encoding not in ENCODINGS:
        raise DataCorruptionError(f"{what}: unknown blob encoding {encoding!r:.80}")
    data = _buffer(buffers, "data", what)
    stored = _array(_buffer(buffers, "offsets", what), np.uint64, what, "offsets", nrows + 1)
    if stored[0] != 0 or stored[-1] != len(data) or np.any(stored[1:] < stored[:-1]):
        raise DataCorruptionError(f"{what}: offsets do not match the data length")
    nulls = buffers.get("nulls")
    mask = None if nulls is None else _array(nulls, np.uint8, what, "nulls", nrows).astype(bool)
    return BlobChunk(data, stored.astype(np.int64), mask, encoding, what)
