"""ingest_jsonl lives with the vector store and writes the vector store's one schema."""

from __future__ import annotations

import json

import tensordb
import tensordb.core
from tensordb.vectorstore import HashingEmbedding, VectorStore
from tensordb.vectorstore.ingest import ingest_jsonl
from tensordb.vectorstore.vector_store import SCHEMA, TENSORS


def test_ingest_jsonl_is_the_vector_stores_and_no_longer_cores() -> None:
    assert tensordb.ingest_jsonl is ingest_jsonl
    assert not hasattr(tensordb.core, "ingest_jsonl")


def test_an_ingested_file_has_the_vector_store_schema_and_opens_as_one(tmp_path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(json.dumps({"id": f"r{i}", "text": f"row {i}", "k": i}) for i in range(5)))
    path = str(tmp_path / "ds")
    ds = ingest_jsonl(source, path, embedding_function=HashingEmbedding(8), batch_size=2, progress=False)
    assert list(ds.tensors) == list(TENSORS)
    for name, arguments in SCHEMA.items():
        assert ds[name].meta.htype == arguments["htype"]
    assert str(ds.embedding.meta.dtype) == SCHEMA["embedding"]["dtype"]
    ds.close()
    vs = VectorStore(path, read_only=True)
    assert vs.get(ids=["r3"])["metadata"] == [{"k": 3}]
