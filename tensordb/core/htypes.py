"""htypes: what each kind of tensor accepts, and how its rows become storable items.

Validation happens here, before any byte is written, so a bad row anywhere in a
call leaves the dataset untouched. Every error names the tensor and the row and
says what was expected against what was given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import numpy as np

from query_lang.source import OBJECT_HTYPES

from ..errors import SampleError
from ..format.manifest import TensorMeta

HTYPES = ("generic", "text", "json", "list", "embedding", "class_label", "id")
# OBJECT_HTYPES (text, json, list, id: rows are Python objects) is defined once, in query_lang, which scans such
# columns and cannot import core; core modules take it from here.
EMBEDDING_DTYPES = ("float32", "float16")
DEFAULT_DTYPE = {"embedding": "float32", "class_label": "uint32"}
ENCODING = {"text": "utf8", "id": "utf8", "json": "msgpack", "list": "msgpack"}
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_PACK = msgpack.Packer(use_bin_type=True).pack


def _is_json_list(values: Sequence[Any]) -> bool:
    """Whether every value is a dict or list that JSON can represent (one C-speed pass)."""
    if not isinstance(values, list) or not all(isinstance(v, (dict, list)) for v in values):
        return False
    try:
        _JSON.encode(values)
    except (TypeError, ValueError, RecursionError):
        return False  # the row-by-row loop finds the culprit and says which row it is
    return True


@dataclass
class EncodedRows:
    """Validated rows, ready to be cut into chunks.

    Exactly one of ``array`` (numeric rows of one shape), ``arrays`` (numeric rows
    of varying shape) or ``blobs`` (serialised objects, ``None`` for empty) is set.
    """

    array: np.ndarray | None = None
    arrays: list[np.ndarray] | None = None
    blobs: list[bytes | None] | None = None

    def __len__(self) -> int:
        if self.array is not None:
            return len(self.array)
        return len(self.arrays if self.arrays is not None else self.blobs or [])


def _fail(meta: TensorMeta, row: int | None, message: str) -> SampleError:
    where = f"tensor {meta.name!r}" + ("" if row is None else f", row {row}")
    return SampleError(f"{where} (htype {meta.htype}): {message}")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def validate_meta(meta: TensorMeta) -> None:
    """Check a new tensor's settings; raise ``ValueError`` with what is allowed."""
    if meta.htype not in HTYPES:
        raise ValueError(f"tensor {meta.name!r}: unknown htype {meta.htype!r}; expected one of {list(HTYPES)}")
    if meta.htype in OBJECT_HTYPES and meta.dtype is not None:
        raise ValueError(f"tensor {meta.name!r}: htype {meta.htype} stores objects and takes no dtype")
    if meta.htype == "embedding" and meta.dtype not in EMBEDDING_DTYPES:
        raise ValueError(
            f"tensor {meta.name!r}: embedding dtype must be one of {list(EMBEDDING_DTYPES)}, got {meta.dtype!r}"
        )
    if meta.dtype is not None and meta.htype not in OBJECT_HTYPES:
        kind = np.dtype(meta.dtype).kind
        if kind not in "biuf":
            raise ValueError(f"tensor {meta.name!r}: dtype must be numeric or bool, got {meta.dtype!r}")
    if meta.chunk_bytes < 1024:
        raise ValueError(f"tensor {meta.name!r}: max_chunk_size must be at least 1024 bytes, got {meta.chunk_bytes}")


def encode_rows(meta: TensorMeta, values: Sequence[Any] | np.ndarray, first_row: int) -> tuple[EncodedRows, TensorMeta]:
    """Validate ``values`` (one per row) and return them encoded, with the updated schema.

    ``first_row`` is the row number the first value will get, for error messages.
    """
    if meta.htype in OBJECT_HTYPES:
        return _encode_objects(meta, values, first_row), meta
    if meta.htype == "class_label":
        return _encode_class_labels(meta, values, first_row)
    return _encode_numeric(meta, values, first_row)


def _encode_objects(meta: TensorMeta, values: Sequence[Any], first_row: int) -> EncodedRows:
    if isinstance(values, np.ndarray) and values.dtype.kind in "US":
        values = values.tolist()
    htype = meta.htype
    if htype in ("text", "id"):
        try:  # the common case, all str, at C speed; anything else takes the checking loop below
            return EncodedRows(blobs=[v.encode("utf-8", "surrogatepass") for v in values])
        except (AttributeError, TypeError):
            pass
    elif htype == "json" and _is_json_list(values):
        try:
            return EncodedRows(blobs=[_PACK(v) for v in values])
        except (TypeError, ValueError, OverflowError):
            pass  # e.g. an int msgpack cannot hold: the loop below says which row
    blobs: list[bytes | None] = []
    for i, value in enumerate(values):
        if value is None:
            if htype == "id":
                raise _fail(meta, first_row + i, "expected a str id, got None")
            blobs.append(None)
        elif htype in ("text", "id"):
            if not isinstance(value, str):
                raise _fail(meta, first_row + i, f"expected str or None, got {_describe(value)}")
            blobs.append(value.encode("utf-8", "surrogatepass"))
        else:
            expected = (dict, list) if htype == "json" else (list, tuple)
            if not isinstance(value, expected):
                names = " or ".join(t.__name__ for t in expected)
                raise _fail(meta, first_row + i, f"expected {names} or None, got {_describe(value)}")
            blobs.append(_to_json(meta, first_row + i, value))
    return EncodedRows(blobs=blobs)


def _to_json(meta: TensorMeta, row: int, value: Any) -> bytes:
    """Check that ``value`` is JSON, then store it as msgpack (compact, and fast to decode)."""
    try:
        _JSON.encode(value)
        return _PACK(value)
    except RecursionError:
        raise _fail(meta, row, "JSON value is nested too deeply") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise _fail(meta, row, f"value is not JSON-serialisable: {e}") from None


def _as_array(meta: TensorMeta, row: int, value: Any) -> np.ndarray:
    if isinstance(value, (str, bytes, dict)):
        raise _fail(meta, row, f"expected a number or numeric array, got {_describe(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise _fail(meta, row, f"cannot make an array of {_describe(value)}: {e}") from None
    if array.dtype.kind not in "biuf":
        raise _fail(meta, row, f"expected numeric or bool values, got {_describe(value)}")
    return array


def _cast(
    meta: TensorMeta, row: int | None, array: np.ndarray, dtype: np.dtype, batch_first_row: int | None = None
) -> np.ndarray:
    """``array`` as ``dtype``; ``row`` names a single row, ``batch_first_row`` the first row of a batch."""
    if array.dtype == dtype:
        return array
    if array.size == 0:  # e.g. [] (float64 to numpy): nothing can be lost
        return array.astype(dtype)
    if not np.can_cast(array.dtype, dtype, casting="same_kind") and not (
        array.dtype.kind in "iub" and dtype.kind in "iuf"
    ):
        where = row if row is not None else batch_first_row
        raise _fail(meta, where, f"expected dtype {dtype}, got {array.dtype} (would lose information)")
    if array.dtype.kind in "iu" and dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            if row is None and batch_first_row is not None:
                bad = ((array < info.min) | (array > info.max)).reshape(len(array), -1).any(axis=1)
                row = batch_first_row + int(np.argmax(bad))
            raise _fail(meta, row, f"values outside the range of dtype {dtype} ({info.min}..{info.max})")
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    if dtype.kind == "f" and array.dtype.kind == "f" and dtype.itemsize < array.dtype.itemsize:
        overflow = np.isfinite(array) & ~np.isfinite(cast)
        if overflow.any():
            if row is None and batch_first_row is not None:
                row = batch_first_row + int(np.argmax(overflow.reshape(len(array), -1).any(axis=1)))
            raise _fail(meta, row, f"values outside the range of dtype {dtype} (max {np.finfo(dtype).max})")
    return cast


def _encode_numeric(meta: TensorMeta, values: Any, first_row: int) -> tuple[EncodedRows, TensorMeta]:
    dtype = np.dtype(meta.dtype) if meta.dtype else None
    rows: list[np.ndarray] | None = None
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf" and values.ndim >= 1:
        dtype = dtype or values.dtype
        batch: np.ndarray | None = _cast(meta, None, values, dtype, batch_first_row=first_row)
        expected_ndim = len(meta.shape) if meta.shape is not None else batch.ndim - 1
        if batch.ndim - 1 != expected_ndim:
            raise _fail(meta, first_row, f"expected {expected_ndim}-dimensional rows, got {batch.ndim - 1}-dimensional")
    else:
        arrays = [None if v is None else _as_array(meta, first_row + i, v) for i, v in enumerate(values)]
        present = [a for a in arrays if a is not None]
        if meta.htype == "embedding" and len(present) != len(arrays):
            raise _fail(meta, first_row + [a is None for a in arrays].index(True), "an embedding cannot be None")
        dtype = dtype or (np.result_type(*present) if present else np.dtype("float32"))
        if meta.shape is not None:
            expected_ndim = len(meta.shape)
        else:
            expected_ndim = present[0].ndim if present else 1
        for i, a in enumerate(arrays):
            if a is not None and a.ndim != expected_ndim:
                raise _fail(meta, first_row + i, f"expected {expected_ndim}-dimensional rows, got {a.ndim}-dimensional")
        if expected_ndim == 0 and len(present) != len(arrays):
            # an empty row of scalars would read back as a made-up 0
            row = first_row + [a is None for a in arrays].index(True)
            raise _fail(meta, row, "None (an empty row) needs rows of at least 1 dimension; this tensor holds scalars")
        rows = [
            np.zeros((0,) * expected_ndim, dtype) if a is None else _cast(meta, first_row + i, a, dtype)
            for i, a in enumerate(arrays)
        ]
        batch = np.stack(rows) if rows and len({r.shape for r in rows}) == 1 else None
        if batch is not None:
            rows = None
    if meta.htype == "embedding":
        _check_embedding(meta, rows, batch, first_row)
    shapes = [batch.shape[1:]] if batch is not None else [r.shape for r in rows]
    shape = _merge_shapes(meta.shape, shapes)
    new_meta = replace(meta, dtype=dtype.str if meta.dtype is None else meta.dtype, shape=shape)
    if meta.htype == "embedding":
        new_meta = replace(new_meta, dim=shape[0])
    if batch is not None:
        return EncodedRows(array=batch), new_meta
    return EncodedRows(arrays=rows), new_meta


def _check_embedding(meta: TensorMeta, rows: list | None, batch: np.ndarray | None, first_row: int) -> None:
    lengths = [batch.shape[1]] * len(batch) if batch is not None else [len(r) for r in rows]
    if (batch is not None and batch.ndim != 2) or (rows is not None and rows and rows[0].ndim != 1):
        raise _fail(meta, first_row, "expected 1-dimensional vectors")
    expected = meta.dim if meta.dim is not None else (lengths[0] if lengths else None)
    for i, n in enumerate(lengths):
        if n != expected:
            raise _fail(meta, first_row + i, f"expected a vector of dimension {expected}, got {n}")
    finite = np.isfinite(batch).all(axis=1) if batch is not None else np.array([np.isfinite(r).all() for r in rows])
    if not finite.all():
        raise _fail(meta, first_row + int(np.argmin(finite)), "embedding contains NaN or Inf")


def _merge_shapes(known: tuple | None, shapes: list[tuple]) -> tuple | None:
    merged = known
    for shape in shapes:
        if merged is None:
            merged = tuple(shape)
        else:
            merged = tuple(a if a == b else None for a, b in zip(merged, shape))
    return merged


_MAX_LABEL = 2**32 - 1  # labels are stored as uint32


def _encode_class_labels(meta: TensorMeta, values: Any, first_row: int) -> tuple[EncodedRows, TensorMeta]:
    names = list(meta.class_names)
    index = {n: i for i, n in enumerate(names)}
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        if values.size and values.min() < 0:
            raise _fail(
                meta, first_row + int(np.argmin(values.reshape(len(values), -1).min(axis=1))), "labels must be >= 0"
            )
        if values.size and values.max() > _MAX_LABEL:
            row = first_row + int(np.argmax(values.reshape(len(values), -1).max(axis=1)))
            raise _fail(meta, row, f"labels must be <= {_MAX_LABEL}")
        array = values.reshape(len(values), -1).astype(np.uint32)
        return EncodedRows(array=array), replace(meta, dtype="<u4", shape=_merge_shapes(meta.shape, [array.shape[1:]]))
    rows = []
    for i, value in enumerate(values):
        items = [] if value is None else list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        labels = []
        for item in items:
            if isinstance(item, str):
                if item not in index:
                    index[item] = len(names)
                    names.append(item)
                labels.append(index[item])
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= item <= _MAX_LABEL:
                labels.append(int(item))
            else:
                raise _fail(
                    meta,
                    first_row + i,
                    f"expected a class name or an int label in 0..{_MAX_LABEL}, got {_describe(item)}",
                )
        rows.append(np.array(labels, dtype=np.uint32))
    shape = _merge_shapes(meta.shape, [r.shape for r in rows])
    new_meta = replace(meta, dtype="<u4", shape=shape, class_names=tuple(names))
    if rows and len({r.shape for r in rows}) == 1:
        return EncodedRows(array=np.stack(rows)), new_meta
    return EncodedRows(arrays=rows), new_meta
