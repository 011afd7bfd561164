"""``ingest_jsonl``: stream a JSON Lines file into a dataset shaped like a VectorStore."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from tqdm.auto import tqdm

from ..core import Dataset, dataset
from ..errors import SampleError, TensorDBError
from .embeddings import embed_documents
from .vector_store import SCHEMA, TENSORS, create_tensors

DEFAULT_BATCH_ROWS = 1_000
DUPLICATE_POLICIES = ("skip", "error")


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
    if batch_size < 1:
        raise ValueError(f"ingest_jsonl: batch_size must be >= 1, got {batch_size}")
    if on_duplicate not in DUPLICATE_POLICIES:
        raise ValueError(f"ingest_jsonl: on_duplicate must be one of {DUPLICATE_POLICIES}, got {on_duplicate!r}")
    fields = _Fields(text_field, id_field, metadata_fields, embedding_field)
    ds = dataset(path, overwrite=overwrite)
    try:
        return _ingest(ds, os.fspath(jsonl_path), fields, embedding_function, batch_size, progress, on_duplicate)
    except BaseException:
        ds.close()  # release the writer lock now, not whenever the handle is collected
        raise


@dataclass(frozen=True)
class _Fields:
    """Which fields of a line give a row's text, id, metadata and embedding."""

    text: str
    id: str | None
    metadata: Sequence[str] | None
    embedding: str | None

    def reserved(self) -> set[str]:
        """Fields that are not metadata when ``metadata`` lists none."""
        return {self.text, self.id, self.embedding} - {None}


def _ingest(ds: Dataset, source: str, fields: _Fields, embedding_function: Any, batch_size: int, progress: bool,
            on_duplicate: str) -> Dataset:
    with_embedding = embedding_function is not None or fields.embedding is not None
    _prepare(ds, with_embedding)
    writer = _BatchWriter(ds, embedding_function, with_embedding, batch_size)
    seen_ids = set(ds.id.numpy(aslist=True)) if len(ds) else set()
    skipped: list[str] = []
    with open(source, "rb") as f, tqdm(
        total=os.path.getsize(source), desc="ingest_jsonl", unit="B", unit_scale=True, disable=not progress
    ) as bar:
        for lineno, record in _records(source, f, bar):
            row = _row(source, lineno, record, fields)
            if row["id"] in seen_ids:
                _refuse_duplicate(source, lineno, row["id"], on_duplicate)
                skipped.append(row["id"])
                continue
            seen_ids.add(row["id"])
            writer.add(row)
        writer.flush()
    if skipped:
        warnings.warn(
            f"ingest_jsonl: skipped {len(skipped)} lines of {source} whose id was already stored or came earlier "
            f"in the file (first: {skipped[:5]})",
            stacklevel=3,  # the caller of ingest_jsonl
        )
    return ds


def _prepare(ds: Dataset, with_embedding: bool) -> None:
    """Create the store's tensors in an empty dataset; check that a non-empty one has exactly them."""
    wanted = {name: SCHEMA[name]["htype"] for name in TENSORS if name != "embedding" or with_embedding}
    existing = ds.tensors
    if not existing:
        create_tensors(ds, list(wanted))
        return
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


def _records(source: str, f: IO[bytes], bar: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of ``f`` as ``(line number, JSON object)``, advancing the progress bar."""
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
        yield lineno, record


def _row(source: str, lineno: int, record: dict[str, Any], fields: _Fields) -> dict[str, Any]:
    """The row one line gives: text, metadata, id (a new uuid4 where it has none) and embedding."""
    text = record.get(fields.text)
    if text is not None and not isinstance(text, str):
        raise SampleError(f"{source}, line {lineno}: field {fields.text!r} must be a string, got {text!r:.60}")
    row_id = record.get(fields.id) if fields.id is not None else None
    if fields.embedding is not None and record.get(fields.embedding) is None:
        raise SampleError(f"{source}, line {lineno}: no embedding in field {fields.embedding!r}")
    if fields.metadata is None:
        reserved = fields.reserved()
        metadata = {k: v for k, v in record.items() if k not in reserved}
    else:
        metadata = {k: record[k] for k in fields.metadata if k in record}
    return {
        "text": text,
        "metadata": metadata,
        "id": str(uuid.uuid4()) if row_id is None else str(row_id),
        "embedding": record.get(fields.embedding) if fields.embedding is not None else None,
    }


def _refuse_duplicate(source: str, lineno: int, row_id: str, on_duplicate: str) -> None:
    """Stop at a line whose id is taken, unless such lines are skipped."""
    if on_duplicate == "error":
        raise SampleError(
            f"{source}, line {lineno}: id {row_id!r} is already stored or came earlier in the file; "
            f"ids must be unique (pass on_duplicate='skip' to skip such lines); the batches written before "
            f"this line stay stored"
        )


class _BatchWriter:
    """Rows gathered ``batch_size`` at a time, each batch embedded (when asked) and written with one extend."""

    def __init__(self, ds: Dataset, embedding_function: Any, with_embedding: bool, batch_size: int) -> None:
        self.ds = ds
        self.embedding_function = embedding_function
        self.with_embedding = with_embedding
        self.batch_size = batch_size
        self.dim = ds.embedding.meta.dim if with_embedding else None
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        texts = [r["text"] for r in self.rows]
        columns: dict[str, Any] = {"text": texts, "metadata": [r["metadata"] for r in self.rows],
                                   "id": [r["id"] for r in self.rows]}
        if self.embedding_function is not None:
            columns["embedding"] = embed_documents(self.embedding_function, [t or "" for t in texts], self.dim)
        elif self.with_embedding:
            columns["embedding"] = np.asarray([r["embedding"] for r in self.rows], dtype=np.float32)
        self.ds.extend(columns)
        if self.with_embedding:
            self.dim = self.ds.embedding.meta.dim
        self.rows.clear()
