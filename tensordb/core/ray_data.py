"""Ray Data, reading: a table as a ``ray.data.Dataset`` (``Table.ray``); ``ray_ingest`` writes one into a dataset.

The driver cuts the rows into runs of whole chunks and sends each read task a
:class:`~.snapshot_address.SnapshotAddress`; the task opens the snapshot itself and returns
its rows as one Arrow block, exactly as ``to_arrow`` lays them out. No chunk passes
through the driver.

``tensordb.core`` registers :func:`read_table` as a Ray entry point, so this module imports
neither Ray nor pyarrow until it is used.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..format import manifest as mf
from .engines import import_ray
from .htypes import OBJECT_HTYPES
from .snapshot_address import SnapshotAddress, snapshot_address

if TYPE_CHECKING:
    import pyarrow as pa

    from .table import Table

#: A read block spans at most this many chunks of the widest tensor read, and about this many bytes
#: (under Ray's default 128 MiB target block size, which would otherwise split it).
BLOCK_CHUNKS = 8
BLOCK_BYTES = 64 << 20


# -- reading: Table.ray ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowRange:
    """Rows ``start`` to ``stop`` of a table (positions in it, not dataset row numbers), as one block."""

    start: int
    stop: int
    size_bytes: int


def read_table(table: Table, tensors: Sequence[str] | str | None = None) -> Any:
    """``table``'s rows as a ``ray.data.Dataset``: one Arrow block per run of whole chunks, read by Ray tasks."""
    from .arrow_export import to_arrow

    ray = import_ray("ds.ray()", "data")
    table = table.snapshot() if table is table._root else table  # the blocks and their schema: one snapshot
    names = table.column_names() if tensors is None else [tensors] if isinstance(tensors, str) else list(tensors)
    schema = to_arrow(table[0:0], names).schema  # also refuses unknown names, before any task starts
    address = snapshot_address(table, "ds.ray()")
    ranges = row_ranges(table, names)
    source = _datasource_class()(address, names, ranges, schema if _declares_schema(table, names) else None)
    dataset = ray.data.read_datasource(source, override_num_blocks=len(ranges))
    # Blocks come out in row order, so that iterating (or from_ray) sees the rows as the table holds them.
    dataset.context.execution_options.preserve_order = True
    return dataset


def row_ranges(table: Table, names: Sequence[str]) -> list[RowRange]:
    """The blocks of ``table``: runs of up to ``BLOCK_CHUNKS`` whole chunks of the widest tensor read.

    A view's rows lie anywhere in the chunks, so its blocks are runs of as many rows as such a
    run of chunks holds on average. An empty table is one empty block.
    """
    states = [table._state.tensors[n] for n in names if n in table._state.tensors]
    row_bytes = sum(_row_nbytes(t) for t in states)
    widest = max(states, key=_row_nbytes, default=None)
    total = len(table)
    if widest is None or not widest.chunk_rows or total == 0:
        return [RowRange(0, total, int(total * row_bytes))]
    if table._scanned_rows() is None:
        chunk_rows = list(widest.chunk_rows)  # past ``total`` (rows not all tensors have yet), ranges are cut off
    else:
        per_chunk = max(1, widest.nrows // len(widest.chunk_rows))
        chunk_rows = [per_chunk] * (total // per_chunk) + ([total % per_chunk] if total % per_chunk else [])
    ranges, start, count, stop = [], 0, 0, 0
    for rows in chunk_rows:
        if count and (count == BLOCK_CHUNKS or (stop + rows - start) * row_bytes > BLOCK_BYTES):
            ranges.append(RowRange(start, stop, int((stop - start) * row_bytes)))
            start, count = stop, 0
        stop, count = min(stop + rows, total), count + 1
    ranges.append(RowRange(start, stop, int((stop - start) * row_bytes)))
    return [r for r in ranges if r.stop > r.start]


def _row_nbytes(state: mf.TensorState) -> float:
    """Stored bytes per row of a tensor (its chunks' size over its rows)."""
    return sum(state.chunk_nbytes) / state.nrows if state.nrows else 0.0


def _declares_schema(table: Table, names: Sequence[str]) -> bool:
    """Whether the schema of no rows is that of every block: not for computed columns of Python values (Arrow
    infers their type from the values), nor for numeric tensors whose rows differ in rank."""
    for name in names:
        state = table._state.tensors.get(name)
        if state is None:
            if not isinstance(table._virtual.get(name), np.ndarray):
                return False
        elif state.meta.htype not in OBJECT_HTYPES and state.meta.shape is None and state.nrows:
            return False
    return True


def _read_block(address: SnapshotAddress, names: list[str], start: int, stop: int) -> list[pa.Table]:
    """Run in a Ray worker: rows ``start`` to ``stop`` of the snapshot, read from its store."""
    from .arrow_export import to_arrow

    return [to_arrow(address.open()[start:stop], names)]


@functools.lru_cache(maxsize=1)
def _datasource_class() -> type:
    """The ``ray.data.Datasource`` of a snapshot's rows (a class made on first use: Ray is imported only then)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class TensordbDatasource(Datasource):
        """Rows of one tensordb snapshot, one read task per row range."""

        def __init__(self, address: SnapshotAddress, names: list[str], ranges: list[RowRange],
                     schema: pa.Schema | None):
            super().__init__()
            self._address, self._names, self._ranges, self._schema = address, names, ranges, schema

        def get_name(self) -> str:
            return "tensordb"

        def estimate_inmemory_data_size(self) -> int:
            return sum(r.size_bytes for r in self._ranges)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            # One task per range whatever ``parallelism`` asks: a block never cuts a chunk.
            return [
                ReadTask(
                    functools.partial(_read_block, self._address, self._names, r.start, r.stop),
                    BlockMetadata(num_rows=r.stop - r.start, size_bytes=r.size_bytes, exec_stats=None,
                                  input_files=None),
                    schema=self._schema,
                    per_task_row_limit=per_task_row_limit,
                )
                for r in self._ranges
            ]

    return TensordbDatasource
