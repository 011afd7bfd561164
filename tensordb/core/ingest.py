"""Bringing data in: Arrow tables and Parquet files (``from_arrow``) and JSON Lines files (``ingest_jsonl``).

This module imports neither pyarrow nor pandas, so ``import tensordb`` stays light.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import SampleError, TensorDBError

if TYPE_CHECKING:
    from .dataset import Dataset

DEFAULT_BATCH_ROWS = 1_000
DUPLICATE_POLICIES = ("skip", "error")
_TENSORS = {"text": "text", "metadata": "json", "embedding": "embedding", "id": "id"}


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


def _prepare(ds: Dataset, with_embedding: bool) -> None:
    wanted = {k: v for k, v in _TENSORS.items() if k != "embedding" or with_embedding}
    existing = ds._state.tensors
    if existing:
        extra = ", embedding" if with_embedding else ""
        mismatched = {k: existing[k].meta.htype for k, htype in wanted.items()
                      if k in existing and existing[k].meta.htype != htype}
        missing = sorted(set(wanted) - set(existing))
        unexpected = sorted(set(existing) - set(wanted))
        if mismatched or missing or unexpected:
            raise TensorDBError(
                f"{ds.path} cannot take these rows: it needs exactly tensors text, metadata, id{extra} "
                f"(missing {missing}, unexpected {unexpected}, wrong htypes {mismatched})"
            )
        return
    ds.create_tensor("text", htype="text")
    ds.create_tensor("metadata", htype="json")
    if with_embedding:
        ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("id", htype="id")


def ingest_jsonl(
    jsonl_path: str | os.PathLike,
    path: str,
    text_field: str = "text",
    id_field: str | None = "id",
    metadata_fields: Sequence[str] | None = None,
    embedding_function: Any = None,
    embedding_field: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
    overwrite: bool = False,
    progress: bool = True,
    on_duplicate: str = "skip",
) -> Dataset:
    """Stream a JSONL file (one JSON object per line) into a dataset shaped like a VectorStore.

    Each line becomes a row: ``text`` from ``text_field``; ``id`` from ``id_field``
    (a new uuid4 where the line has none); ``metadata`` a dict of
    ``metadata_fields`` (default: every other field); and ``embedding``, computed
    by ``embedding_function`` over each batch of texts (a callable on a list of
    str, or an object with ``embed_documents``) or read from ``embedding_field``.
    Without either there is no embedding tensor. Rows are written ``batch_size``
    at a time, with a progress bar over the file's bytes (``progress=False``
    turns it off). An existing dataset of the same shape is appended to unless
    ``overwrite``. Each batch is durable once written, so a bad line stops the
    import with the batches before it kept. Returns the dataset, open for writing.

    Ids are never stored twice. A line whose id is already stored, or came earlier
    in the file, is skipped with one warning at the end (``on_duplicate="skip"``,
    so rerunning an import that stopped at a bad line picks up where it stopped),
    or stops the import with a ``SampleError`` (``on_duplicate="error"``).
    """
    from .lifecycle import dataset

    if batch_size < 1:
        raise ValueError(f"ingest_jsonl: batch_size must be >= 1, got {batch_size}")
    if on_duplicate not in DUPLICATE_POLICIES:
        raise ValueError(f"ingest_jsonl: on_duplicate must be one of {DUPLICATE_POLICIES}, got {on_duplicate!r}")
    ds = dataset(path, overwrite=overwrite)
    try:
        return _ingest(ds, os.fspath(jsonl_path), text_field, id_field, metadata_fields, embedding_function,
                       embedding_field, batch_size, progress, on_duplicate)
    except BaseException:
        ds.close()  # release the writer lock now, not whenever the handle is collected
        raise


def _ingest(ds: Dataset, source: str, text_field: str, id_field: str | None, metadata_fields: Sequence[str] | None,
            embedding_function: Any, embedding_field: str | None, batch_size: int, progress: bool,
            on_duplicate: str) -> Dataset:
    from ..vectorstore.embeddings import embed_documents

    with_embedding = embedding_function is not None or embedding_field is not None
    reserved = {text_field, id_field, embedding_field} - {None}
    _prepare(ds, with_embedding)
    dim = ds.embedding.meta.dim if with_embedding else None
    batch: list[dict[str, Any]] = []
    seen_ids = set(ds.id.numpy(aslist=True)) if len(ds) else set()
    skipped: list[str] = []

    def flush() -> None:
        nonlocal dim
        if not batch:
            return
        texts = [r["text"] for r in batch]
        columns: dict[str, Any] = {"text": texts, "metadata": [r["metadata"] for r in batch],
                                   "id": [r["id"] for r in batch]}
        if embedding_function is not None:
            columns["embedding"] = embed_documents(embedding_function, [t or "" for t in texts], dim)
        elif embedding_field is not None:
            columns["embedding"] = np.asarray([r["embedding"] for r in batch], dtype=np.float32)
        ds.extend(columns)
        if with_embedding:
            dim = ds.embedding.meta.dim
        batch.clear()

    with open(source, "rb") as f, tqdm(
        total=os.path.getsize(source), desc="ingest_jsonl", unit="B", unit_scale=True, disable=not progress
    ) as bar:
        for lineno, line in enumerate(f, start=1):
            bar.update(len(line))
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SampleError(f"{source}, line {lineno}: not valid JSON: {e}") from None
            if not isinstance(record, dict):
                raise SampleError(f"{source}, line {lineno}: expected a JSON object, got {type(record).__name__}")
            text = record.get(text_field)
            if text is not None and not isinstance(text, str):
                raise SampleError(f"{source}, line {lineno}: field {text_field!r} must be a string, got {text!r:.60}")
            row_id = record.get(id_field) if id_field is not None else None
            if embedding_field is not None and record.get(embedding_field) is None:
                raise SampleError(f"{source}, line {lineno}: no embedding in field {embedding_field!r}")
            if metadata_fields is None:
                metadata = {k: v for k, v in record.items() if k not in reserved}
            else:
                metadata = {k: record[k] for k in metadata_fields if k in record}
            row_id = str(uuid.uuid4()) if row_id is None else str(row_id)
            if row_id in seen_ids:
                if on_duplicate == "error":
                    raise SampleError(
                        f"{source}, line {lineno}: id {row_id!r} is already stored or came earlier in the file; "
                        f"ids must be unique (pass on_duplicate='skip' to skip such lines)"
                    )
                skipped.append(row_id)
                continue
            seen_ids.add(row_id)
            batch.append({
                "text": text,
                "metadata": metadata,
                "id": row_id,
                "embedding": record.get(embedding_field) if embedding_field is not None else None,
            })
            if len(batch) >= batch_size:
                flush()
        flush()
    if skipped:
        warnings.warn(
            f"ingest_jsonl: skipped {len(skipped)} lines of {source} whose id was already stored or came earlier "
            f"in the file (first: {skipped[:5]})",
            stacklevel=3,
        )
    return ds
