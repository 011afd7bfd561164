"""Apache Arrow and pandas export: ``to_arrow`` and ``to_pandas`` (``arrow_import`` reads the same layout back).

Each tensor becomes one Arrow column; field metadata (``tensordb.*`` keys)
records what Arrow types cannot say, so ``from_arrow(ds.to_arrow())`` restores
the htypes, dtypes, row shapes and class names:

============  ======================================================  ==================
htype         Arrow type                                              metadata
============  ======================================================  ==================
embedding     ``fixed_size_list<float32>[dim]`` (float16 stays half)  htype
generic       scalar rows: the primitive type; fixed row shape:       htype, dtype,
              ``fixed_size_list<dtype>[prod(shape)]`` (flattened);    shape (fixed)
              ragged rows: ``list<dtype>`` nested once per dimension
text, id      ``string``                                              htype
json, list    ``string`` holding JSON                                 htype
class_label   ``list<uint32>``                                        htype, class_names
============  ======================================================  ==================

Without metadata (any Arrow table or Parquet file), htypes are inferred:
floating fixed-size lists become embeddings, other fixed-size lists and numeric
lists generic tensors, strings text, structs and maps JSON, dictionary-encoded
strings class labels, numbers and booleans scalar generic tensors, and other
lists the ``list`` htype.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .htypes import OBJECT_HTYPES

if TYPE_CHECKING:
    from .table import Table

#: Field metadata keys tensordb writes start with this, so other metadata passes through untouched.
META_PREFIX = "tensordb."
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# -- export ----------------------------------------------------------------------------------------
def _names(table: Table, tensors: Sequence[str] | str | None) -> list[str]:
    if tensors is None:
        return table.column_names()
    return [tensors] if isinstance(tensors, str) else list(tensors)


def _field_meta(**items: Any) -> dict[bytes, bytes]:
    return {
        (META_PREFIX + k).encode(): (v if isinstance(v, str) else json.dumps(v)).encode()
        for k, v in items.items()
        if v is not None
    }


def _nested_type(value_type: pa.DataType, depth: int) -> pa.DataType:
    for _ in range(depth):
        value_type = pa.list_(value_type)
    return value_type


def _ragged_array(rows: list[np.ndarray], dtype: np.dtype, ndim: int) -> pa.Array:
    value_type = pa.from_numpy_dtype(dtype)
    if ndim == 1:
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int32 if lengths.sum() < 2**31 else np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(rows).astype(dtype, copy=False) if rows else np.empty(0, dtype)
        cls = pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray
        return cls.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))
    return pa.array([np.asarray(r).tolist() for r in rows], type=_nested_type(value_type, ndim))


def _fixed_list(matrix: np.ndarray, value_type: pa.DataType | None = None) -> pa.Array:
    n = len(matrix)
    width = int(np.prod(matrix.shape[1:], dtype=np.int64))
    flat = np.ascontiguousarray(matrix).reshape(-1)
    values = pa.array(flat, type=value_type or pa.from_numpy_dtype(flat.dtype))
    if width == 0:
        return pa.FixedSizeListArray.from_arrays(values, 0) if n == 0 else pa.array([[]] * n, pa.list_(values.type, 0))
    return pa.FixedSizeListArray.from_arrays(values, width)


def tensor_column(table: Table, name: str) -> tuple[pa.Field, pa.Array]:
    """One tensor of ``table`` (restricted to its rows) as an Arrow field and array."""
    if name in table._virtual and name not in table._state.tensors:
        values = table._virtual[name]
        array = pa.array(values if isinstance(values, np.ndarray) else list(values))
        return pa.field(name, array.type), array
    tensor = table[name]
    meta = tensor.meta
    htype = meta.htype
    fixed = meta.shape is not None and None not in meta.shape
    if htype in ("text", "id"):
        array = pa.array(tensor.numpy(aslist=True), type=pa.string())
        return pa.field(name, pa.string(), metadata=_field_meta(htype=htype)), array
    if htype in ("json", "list"):
        values = [None if v is None else _JSON.encode(v) for v in tensor.numpy(aslist=True)]
        return pa.field(name, pa.string(), metadata=_field_meta(htype=htype)), pa.array(values, type=pa.string())
    extra = {"compression": meta.compression}
    if htype == "class_label":
        rows = tensor.numpy(aslist=True)
        rows = [np.asarray(r, dtype=np.uint32).reshape(-1) for r in rows]
        array = _ragged_array(rows, np.dtype(np.uint32), 1)
        metadata = _field_meta(htype=htype, class_names=list(meta.class_names), **extra)
        return pa.field(name, array.type, metadata=metadata), array
    dtype = np.dtype(meta.dtype) if meta.dtype is not None else np.dtype(np.float32)
    if htype == "embedding":
        matrix = tensor.numpy() if len(tensor) else np.empty((0, meta.dim or 0), dtype)
        array = _fixed_list(matrix)
        return pa.field(name, array.type, metadata=_field_meta(htype=htype, **extra)), array
    # generic
    if fixed and len(meta.shape) == 0:
        array = pa.array(tensor.numpy() if len(tensor) else np.empty(0, dtype))
        return pa.field(name, array.type, metadata=_field_meta(htype=htype, dtype=dtype.str, shape=[], **extra)), array
    if fixed:
        matrix = tensor.numpy() if len(tensor) else np.empty((0, *meta.shape), dtype)
        array = _fixed_list(matrix)
        metadata = _field_meta(htype=htype, dtype=dtype.str, shape=list(meta.shape), **extra)
        return pa.field(name, array.type, metadata=metadata), array
    rows = tensor.numpy(aslist=True)
    ndim = len(meta.shape) if meta.shape is not None else (rows[0].ndim if rows else 1)
    array = _ragged_array([np.asarray(r, dtype=dtype) for r in rows], dtype, ndim)
    return pa.field(name, array.type, metadata=_field_meta(htype=htype, dtype=dtype.str, ndim=ndim, **extra)), array


def to_arrow(table: Table, tensors: Sequence[str] | str | None = None) -> pa.Table:
    """The rows of ``table`` as a ``pyarrow.Table``, one column per tensor (and computed column)."""
    fields, arrays = [], []
    for name in _names(table, tensors):
        field, array = tensor_column(table, name)
        fields.append(field)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def to_pandas(table: Table, tensors: Sequence[str] | str | None = None) -> Any:
    """The rows of ``table`` as a ``pandas.DataFrame``.

    Scalar numeric tensors become numeric columns; everything else is an object
    column of per-row values: ndarrays for numeric rows, str, dicts and lists.
    """
    import pandas as pd

    columns: dict[str, Any] = {}
    for name in _names(table, tensors):
        if name in table._virtual and name not in table._state.tensors:
            columns[name] = table._virtual[name]
            continue
        tensor = table[name]
        meta = tensor.meta
        if meta.htype not in OBJECT_HTYPES and meta.shape == ():
            columns[name] = tensor.numpy()
        else:
            values = tensor.numpy(aslist=True)
            column = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                column[i] = v
            columns[name] = column
    return pd.DataFrame(columns, index=pd.RangeIndex(len(table)))
