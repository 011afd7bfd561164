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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ..errors import DataCorruptionError
from . import envelope

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


def decode_blob(raw: bytes, encoding: str) -> Any:
    """Turn one stored object back into its Python value."""
    if encoding == "msgpack":
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)  # JSON allows int, float, bool, None keys
    text = raw.decode("utf-8", "surrogatepass")  # text is encoded with surrogatepass too
    return json.loads(text) if encoding == "json" else text


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
        return self.array[local]


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

    @property
    def nrows(self) -> int:
        return len(self.offsets) - 1

    def take(self, local: np.ndarray) -> list[Any]:
        out: list[Any] = []
        data, offsets, nulls = self.data, self.offsets, self.nulls
        for i in local.tolist():
            if nulls is not None and nulls[i]:
                out.append(None)
            else:
                out.append(decode_blob(bytes(data[offsets[i] : offsets[i + 1]]), self.encoding))
        return out


Chunk = FixedChunk | RaggedChunk | BlobChunk


def _array(buf: memoryview, dtype: Any, what: str, name: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if len(buf) % dtype.itemsize:
        raise DataCorruptionError(f"{what}: buffer {name!r} size {len(buf)} is not a multiple of {dtype}")
    return np.frombuffer(buf, dtype=dtype)


def decode_chunk(data: memoryview, what: str, verify: bool = True) -> Chunk:
    """Decode a chunk file held in memory (or memory-mapped), verifying checksums unless told not to."""
    meta, buffers = envelope.unpack(data, what, envelope.MAGIC_CHUNK, verify=verify)
    try:
        kind, nrows = meta["kind"], int(meta["nrows"])
        if kind == FIXED:
            shape = tuple(int(s) for s in meta["shape"])
            array = _array(buffers["data"], meta["dtype"], what, "data").reshape((nrows, *shape))
            norms = buffers.get("l2_norms")
            return FixedChunk(array, None if norms is None else _array(norms, np.float32, what, "l2_norms"))
        if kind == RAGGED:
            flat = _array(buffers["data"], meta["dtype"], what, "data")
            shapes = _array(buffers["shapes"], np.int64, what, "shapes").reshape(nrows, int(meta["ndim"]))
            offsets = np.zeros(nrows + 1, dtype=np.int64)
            np.cumsum(np.prod(shapes, axis=1), out=offsets[1:])
            if offsets[-1] != len(flat):
                raise DataCorruptionError(f"{what}: shape table does not match the data length")
            return RaggedChunk(flat, shapes, offsets)
        if kind == BLOB:
            offsets = _array(buffers["offsets"], np.uint64, what, "offsets").astype(np.int64)
            nulls = buffers.get("nulls")
            if len(offsets) != nrows + 1 or (nrows and offsets[-1] != len(buffers["data"])):
                raise DataCorruptionError(f"{what}: offsets do not match the data length")
            if nrows and np.any(np.diff(offsets) < 0):
                raise DataCorruptionError(f"{what}: offsets are not ascending")
            mask = None if nulls is None else _array(nulls, np.uint8, what, "nulls").astype(bool)
            return BlobChunk(buffers["data"], offsets, mask, str(meta["encoding"]))
    except DataCorruptionError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise DataCorruptionError(f"{what}: chunk header is inconsistent: {e}") from e
    raise DataCorruptionError(f"{what}: unknown chunk kind {kind!r}")
