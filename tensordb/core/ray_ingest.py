"""Ray Data, writing: ``tensordb.from_ray`` turns a ``ray.data.Dataset`` into a dataset, in parallel, with one commit.

One Ray task per block converts the block as ``from_arrow`` does, writes its chunk files
straight into the target store and returns only the chunk references. The driver appends
them, block after block, in one atomic write and records one commit. If a task fails,
nothing is published: an existing dataset keeps its rows and commits, a new one is removed
again, and the chunks written so far are deleted (a worker that dies leaves its chunks as
orphans, which ``vacuum`` removes).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import SampleError, TensorDBError
from ..format import manifest as mf
from ..storage import Store
from . import writes
from .arrow_export import META_PREFIX
from .arrow_import import ArrowColumn
from .chunk_io import ChunkReader, ChunkWriter
from .engines import import_ray
from .htypes import encode_rows

if TYPE_CHECKING:
    from .dataset import Dataset


def from_ray(rds: Any, path: str | Store, creds: Mapping[str, str] | None = None,
             tensors: Sequence[str] | None = None, message: str | None = None) -> Dataset:
    """Write the rows of the ``ray.data.Dataset`` ``rds`` into the dataset at ``path``; returns it, open.

    See ``tensordb.from_ray``: Ray tasks write the chunks, the driver publishes them at once.
    """
    ray = import_ray("from_ray", "data")
    blocks = rds.to_arrow_refs()  # runs the Ray pipeline first: a failure there leaves ``path`` untouched
    schema = _first_schema(ray, rds, blocks)
    unknown = [n for n in tensors or () if n not in schema.names]
    if unknown:
        raise SampleError(f"from_ray: tensors {unknown} are not columns of the Ray dataset; they are {schema.names}")
    fields = [f for f in schema if tensors is None or f.name in tensors]
    columns = [ArrowColumn(f) for f in fields]
    target, created = _open_target(path, creds)
    try:
        with target:
            metas = _tensor_metas(target, columns)
            pieces = [p for p in _write_blocks(ray, target._store, blocks, fields, metas) if p]
            try:
                target.append_chunks(pieces, operation="from_ray")  # checks the blocks' schemas agree
            except BaseException:
                _delete_chunks(target._store, pieces)  # in the batch: refused, so nothing refers to them
                raise
            total = sum(next(iter(p.values())).nrows for p in pieces)
    except BaseException:
        if created:
            _remove_new_dataset(target)
        else:
            target.close()
        raise
    target.commit(message if message is not None else f"from_ray: {total} rows")
    return target


def _first_schema(ray: Any, rds: Any, blocks: list[Any]) -> pa.Schema:
    """The schema of the first block, with its field metadata (read in a task: the block stays where it is)."""
    if blocks:
        return ray.get(_remote(_block_schema).remote(blocks[0]))
    schema = rds.schema()
    base = getattr(schema, "base_schema", schema)
    if not isinstance(base, pa.Schema):
        raise TypeError(f"from_ray: the Ray dataset has no Arrow schema (got {schema!r}); it holds no rows to infer "
                        f"tensors from")
    return pa.schema([plain_field(f) for f in base])


def _block_schema(block: pa.Table) -> pa.Schema:
    return pa.schema([plain_field(f) for f in block.schema])


def plain_field(field: pa.Field) -> pa.Field:
    """``field`` with a fixed-shape tensor extension type (Ray's for ndarray columns, Arrow's
    ``fixed_shape_tensor``) as the ``fixed_size_list`` that ``from_arrow`` reads, its shape in the metadata."""
    shape = _tensor_shape(field)
    if shape is None:
        return field
    value_type = field.type.storage_type.value_type
    metadata = dict(field.metadata or {})
    if len(shape) != 1:  # a vector stays a fixed-size list (an embedding if floating); others keep their shape
        metadata.update({f"{META_PREFIX}htype".encode(): b"generic",
                         f"{META_PREFIX}shape".encode(): json.dumps(list(shape)).encode()})
    return pa.field(field.name, pa.list_(value_type, math.prod(shape)), metadata=metadata or None)


def _tensor_shape(field: pa.Field) -> tuple[int, ...] | None:
    """The row shape of a tensor extension column, or None for any other column."""
    if not isinstance(field.type, pa.ExtensionType) or not hasattr(field.type, "shape"):
        return None
    shape, storage = field.type.shape, field.type.storage_type
    listed = pa.types.is_list(storage) or pa.types.is_large_list(storage) or pa.types.is_fixed_size_list(storage)
    if shape is None or not listed or any(d is None or d < 0 for d in shape):
        raise TypeError(f"from_ray: column {field.name!r} holds tensors of varying shape ({field.type}); "
                        f"tensordb reads fixed-shape tensor columns, or lists")
    return tuple(int(d) for d in shape)


def plain_block(block: pa.Table) -> pa.Table:
    """``block`` with its tensor extension columns as ``plain_field`` describes them."""
    if not any(_tensor_shape(f) is not None for f in block.schema):
        return block
    fields, arrays = [], []
    for field, column in zip(block.schema, block.columns):
        shape = _tensor_shape(field)
        if shape is not None:
            plain = plain_field(field)
            rows = [_ndarray(c) for c in column.chunks]
            matrix = np.concatenate(rows) if rows else np.empty((0, *shape))
            flat = pa.array(np.ascontiguousarray(matrix).reshape(-1), type=plain.type.value_type)
            column = pa.FixedSizeListArray.from_arrays(flat, plain.type.list_size)
            field = plain
        fields.append(field)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=block.schema.metadata))


def _ndarray(array: pa.ExtensionArray) -> np.ndarray:
    """A tensor extension array as an ndarray of its rows (Arrow's type and Ray's name the call differently)."""
    if hasattr(array, "to_numpy_ndarray"):
        return array.to_numpy_ndarray()
    return np.asarray(array.to_numpy(zero_copy_only=False))


@functools.cache
def _remote(function: Any) -> Any:
    import ray

    return ray.remote(function)


def _open_target(path: str | Store, creds: Mapping[str, str] | None) -> tuple[Dataset, bool]:
    """The dataset at ``path`` open for writing, and whether this call created it."""
    from .lifecycle import empty, exists, load

    if exists(path, creds):
        return load(path, creds=creds), False
    return empty(path, creds=creds), True


def _tensor_metas(target: Dataset, columns: list[ArrowColumn]) -> dict[str, mf.TensorMeta]:
    """The schema each column is encoded with: the tensor's, created from the column if the dataset has none."""
    existing = target._state.tensors
    if not existing:
        for column in columns:
            column.create(target)
        return {c.name: target._state.tensors[c.name].meta for c in columns}
    names = [c.name for c in columns]
    if set(names) != set(existing):
        raise SampleError(f"from_ray: {target.path} has tensors {sorted(existing)}; the Ray dataset's columns are "
                          f"{sorted(names)} (every tensor needs a value per row)")
    for column in columns:
        meta = existing[column.name].meta
        if column.htype != meta.htype:
            raise SampleError(f"from_ray: column {column.name!r} holds {column.htype} values; tensor "
                              f"{column.name!r} of {target.path} has htype {meta.htype}")
        common = min(len(column.class_names or ()), len(meta.class_names))
        if tuple(column.class_names or ())[:common] != meta.class_names[:common]:
            raise SampleError(f"from_ray: column {column.name!r} names its classes {column.class_names}; tensor "
                              f"{column.name!r} of {target.path} names them {list(meta.class_names)}")
    return {c.name: existing[c.name].meta for c in columns}


def _write_blocks(ray: Any, store: Store, blocks: list[Any], fields: list[pa.Field],
                  metas: dict[str, mf.TensorMeta]) -> list[dict[str, mf.TensorState]]:
    """Every block written by its own Ray task, in block order; on any failure, the written chunks are deleted."""
    task = _remote(write_block)
    futures = [task.remote(store, block, number, fields, metas) for number, block in enumerate(blocks)]
    pieces: list[dict[str, mf.TensorState]] = []
    failure: BaseException | None = None
    for future in futures:  # wait for every task, so that none still writes once this returns
        try:
            pieces.append(ray.get(future))
        except Exception as e:
            failure = failure or _cause(e)
    if failure is not None:
        _delete_chunks(store, pieces)
        raise failure
    return pieces


def _cause(error: Exception) -> BaseException:
    """The worker's own error for a failed task (Ray wraps it with the worker's traceback)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error


def write_block(store: Store, block: pa.Table, number: int, fields: list[pa.Field],
                metas: dict[str, mf.TensorMeta]) -> dict[str, mf.TensorState]:
    """Run in a Ray worker: encode one block as ``from_arrow`` would and write its chunks into ``store``.

    Returns each tensor's new chunk references with the schema they were encoded with (an empty
    dict for an empty block); on failure its own chunks are deleted again.
    """
    if block.num_rows == 0:
        return {}
    block = plain_block(block)
    where = f"from_ray: block {number}"
    names = [f.name for f in fields]
    missing = [n for n in names if n not in block.column_names]
    if missing:
        raise SampleError(f"{where} has no column {missing}; its columns are {block.column_names}")
    sink, reader = ChunkWriter(store), ChunkReader(store)
    out: dict[str, mf.TensorState] = {}
    try:
        for field in fields:
            column = ArrowColumn(field)  # the schema of the first block: every block is read as that one
            try:
                values = column.values(block.column(field.name))
                encoded, meta = encode_rows(metas[field.name], values, 0)
            except (TensorDBError, ValueError, TypeError, pa.ArrowException) as e:
                raise SampleError(f"{where} (its row numbers count from 0), column {field.name!r}: {e}") from None
            out[field.name] = writes.append(sink, reader, mf.TensorState(meta), meta, encoded)
        sink.wait()
    except BaseException:
        sink.discard()
        raise
    return out


def _delete_chunks(store: Store, pieces: list[dict[str, mf.TensorState]]) -> None:
    """Delete the chunks of blocks that will not be published (best effort: vacuum takes any left)."""
    keys = [key for piece in pieces for t in piece.values() for key in t.chunk_keys]
    try:
        store.delete_many(keys)
    except TensorDBError:
        pass


def _remove_new_dataset(target: Dataset) -> None:
    """Undo the creation of a dataset by a failed from_ray, unless another writer wrote to it meanwhile."""
    try:
        untouched = target._versions.refs().get(target.branch) == mf.BranchRef(None, target._checkout.state_key)
        if untouched and not target._head.tensors:
            target._store.clear()
    except TensorDBError:
        pass  # it stays, empty: nothing of the failed import was published
    finally:
        target.close()
