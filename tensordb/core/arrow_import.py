"""Apache Arrow import: ``from_arrow`` turns a Table, RecordBatch stream, DataFrame or Parquet file into a dataset.

It reads the layout ``arrow_export`` writes (field metadata under ``tensordb.*``) and infers
htypes for any other Arrow data; see ``arrow_export`` for the table of types.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from ..errors import SampleError
from .arrow_export import META_PREFIX
from .htypes import OBJECT_HTYPES

if TYPE_CHECKING:
    from .dataset import Dataset

DEFAULT_BATCH_ROWS = 16_384


# -- import ----------------------------------------------------------------------------------------
class ArrowColumn:
    """How one Arrow field becomes a tensor: its htype, create_tensor settings and a value converter."""

    def __init__(self, field: pa.Field):
        self.name = field.name
        self.type = field.type
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        self.meta = {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
        self.shape: tuple[int, ...] | None = None
        if "shape" in self.meta:
            self.shape = tuple(json.loads(self.meta["shape"]))
        self.htype = self.meta.get("htype") or _infer_htype(field)
        self.dtype: str | None = self.meta.get("dtype")
        if self.htype in OBJECT_HTYPES:
            self.dtype = None
        elif self.dtype is None:
            self.dtype = _infer_dtype(self.type, self.htype)
        self.class_names = json.loads(self.meta["class_names"]) if "class_names" in self.meta else None
        if self.class_names is None and self.htype == "class_label" and pa.types.is_dictionary(self.type):
            self.class_names = []  # names come from the values, in order of first appearance

    def create(self, ds: Dataset) -> None:
        kwargs: dict[str, Any] = {"htype": self.htype}
        if self.dtype is not None and self.htype != "class_label":
            kwargs["dtype"] = self.dtype
        if self.class_names:
            kwargs["class_names"] = self.class_names
        if self.meta.get("compression"):
            kwargs["chunk_compression"] = self.meta["compression"]
        ds.create_tensor(self.name, **kwargs)

    def values(self, array: pa.Array | pa.ChunkedArray) -> Any:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        htype, t = self.htype, array.type
        if htype in ("text", "id"):
            if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                array = array.cast(pa.string())
            return array.to_pylist()
        if htype in ("json", "list"):
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                return [None if v is None else json.loads(v) for v in array.to_pylist()]
            values = array.to_pylist()
            if pa.types.is_map(t):
                return [None if v is None else {str(k): x for k, x in v} for v in values]
            return values
        if htype == "class_label":
            return self._labels(array)
        dtype = np.dtype(self.dtype)
        if pa.types.is_fixed_size_list(t) and array.null_count == 0:
            width = t.list_size
            flat = array.flatten().to_numpy(zero_copy_only=False)
            shape = self.shape if self.shape is not None else (width,)
            return flat.reshape(len(array), *shape).astype(dtype, copy=False)
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and array.null_count == 0 and _is_numeric(t.value_type):
            offsets = array.offsets.to_numpy()
            flat = array.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            starts = offsets[:-1] - offsets[0]
            return [flat[a:b] for a, b in zip(starts.tolist(), (offsets[1:] - offsets[0]).tolist())]
        if _is_numeric(t):
            if array.null_count and pa.types.is_floating(t):
                array = array.fill_null(pa.scalar(float("nan"), t))
            elif array.null_count:
                raise SampleError(
                    f"from_arrow: column {self.name!r} ({t}) has nulls, which a tensor of scalars cannot hold; "
                    f"fill them first (e.g. pyarrow.compute.fill_null)"
                )
            return array.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        rows = array.to_pylist()
        if self.shape is not None:
            return [None if r is None else np.asarray(r, dtype=dtype).reshape(self.shape) for r in rows]
        ndim = int(self.meta["ndim"]) if "ndim" in self.meta else None
        return [None if r is None else _row(r, dtype, ndim) for r in rows]

    def _labels(self, array: pa.Array) -> Any:
        t = array.type
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and array.null_count == 0 and _is_numeric(t.value_type):
            lengths = np.diff(array.offsets.to_numpy())
            flat = array.flatten().to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths == lengths[0]).all() and flat.dtype.kind in "iu":
                return flat.reshape(len(array), int(lengths[0])).astype(np.int64)
        if _is_numeric(t) and array.null_count == 0:
            return array.to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, 1)
        return array.to_pylist()


def _row(value: Any, dtype: np.dtype, ndim: int | None) -> np.ndarray:
    row = np.asarray(value, dtype=dtype)
    if ndim is not None and row.ndim != ndim and row.size == 0:
        row = row.reshape((0,) * ndim)  # nested lists cannot say the shape of an empty row
    return row


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _leaf_type(t: pa.DataType) -> pa.DataType:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return t


def _infer_htype(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_dictionary(t):
        return "class_label" if pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type) else (
            "generic")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_null(t):
        return "json"
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type) and t.list_size > 0:
        return "embedding"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "generic" if _is_numeric(_leaf_type(t)) else "list"
    if _is_numeric(t):
        return "generic"
    raise TypeError(
        f"from_arrow: column {field.name!r} has Arrow type {t}, which has no tensordb htype; "
        f"cast it first (to string, a number, a list or a struct)"
    )


def _infer_dtype(t: pa.DataType, htype: str) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    leaf = _leaf_type(t)
    if htype == "embedding":
        return "float16" if pa.types.is_float16(leaf) else "float32"
    return np.dtype(leaf.to_pandas_dtype()).name


def _batches(source: Any, batch_rows: int) -> tuple[pa.Schema, int | None, Iterator[pa.RecordBatch]]:
    """The schema, row count (if known) and record batches of a table, batch, reader, DataFrame or Parquet path."""
    if isinstance(source, (str, os.PathLike)):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(os.fspath(source))
        return pf.schema_arrow, pf.metadata.num_rows, pf.iter_batches(batch_size=batch_rows)
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.RecordBatchReader):
        return source.schema, None, iter(source)
    if not isinstance(source, pa.Table):
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is optional
            pd = None
        if pd is not None and isinstance(source, pd.DataFrame):
            source = pa.Table.from_pandas(source, preserve_index=False)
        else:
            raise TypeError(
                "from_arrow expects a pyarrow Table, RecordBatch or RecordBatchReader, a pandas DataFrame, "
                f"or the path of a Parquet file; got {type(source).__name__}"
            )
    return source.schema, source.num_rows, iter(source.to_batches(max_chunksize=batch_rows))


def from_arrow(
    source: Any,
    path: str,
    overwrite: bool = False,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH_ROWS,
    tensors: Sequence[str] | None = None,
) -> Dataset:
    """A new dataset at ``path`` holding the rows of an Arrow table (or Parquet file, or DataFrame).

    htypes, dtypes, shapes and class names come from ``tensordb.*`` field
    metadata where present (tables made by :meth:`Table.to_arrow`), else are
    inferred from the Arrow types. Rows are written ``batch_size`` at a time
    with a progress bar (``progress=False`` turns it off); the import is one
    atomic write: if it fails, the new dataset is left empty.
    """
    from .lifecycle import empty

    schema, total, batches = _batches(source, batch_size)
    fields = [f for f in schema if tensors is None or f.name in tensors]
    columns = [ArrowColumn(f) for f in fields]
    ds = empty(path, overwrite=overwrite)
    try:
        with tqdm(total=total, desc="from_arrow", unit="row", disable=not progress) as bar, ds:
            for column in columns:
                column.create(ds)
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                ds.extend({c.name: c.values(batch.column(c.name)) for c in columns})
                bar.update(batch.num_rows)
    except BaseException:
        ds.close()  # release the writer lock now, not whenever the handle is collected
        raise
    return ds
