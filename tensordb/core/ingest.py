"""Bringing data in: Arrow tables and Parquet files (``from_arrow``).

This module imports neither pyarrow nor pandas, so ``import tensordb`` stays light.
JSON Lines files come in through ``tensordb.vectorstore.ingest.ingest_jsonl`` (they make vector stores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dataset import Dataset


def from_arrow(
    source: Any,
    path: str,
    overwrite: bool = False,
    progress: bool = True,
    batch_size: int = 16_384,
    tensors: Sequence[str] | None = None,
) -> Dataset:
    """A new dataset at ``path`` from a pyarrow Table/RecordBatch/RecordBatchReader, a DataFrame or a Parquet path.

    The inverse of :meth:`Dataset.to_arrow`: htypes, dtypes, shapes and class names
    come from ``tensordb.*`` field metadata where present, else are inferred from
    the Arrow types (see :mod:`tensordb.core.arrow_export`). Rows are written
    ``batch_size`` at a time with a progress bar (``progress=False`` turns it
    off), as one atomic write. ``tensors`` picks columns (default: all).
    """
    from . import arrow_import

    return arrow_import.from_arrow(source, path, overwrite=overwrite, progress=progress, batch_size=batch_size,
                               tensors=tensors)


def from_ray(
    rds: Any,
    path: Any,
    creds: Mapping[str, str] | None = None,
    tensors: Sequence[str] | None = None,
    message: str | None = None,
) -> Dataset:
    """Write the rows of the ``ray.data.Dataset`` ``rds`` into the dataset at ``path`` (created if absent).

    Ray tasks convert the Arrow blocks as :func:`from_arrow` does (same htype inference and
    ``tensordb.*`` field metadata) and write their chunks straight into the store; the driver
    then appends them, in block order, as one atomic write, and records one commit (``message``).
    An existing dataset is appended to when its tensors are the columns, with matching htypes.
    If any block fails, nothing is published: an existing dataset keeps its rows, a new one is
    removed. Rows land in the order ``rds`` yields its blocks (``ds.ray()`` keeps row order).
    Needs ``pip install "tensordb[ray]"``.
    """
    from .ray_ingest import from_ray as write

    return write(rds, path, creds=creds, tensors=tensors, message=message)
