"""LlamaIndex MetadataFilters reach the store as a query_lang expression, never as TQL text parsed back."""

from __future__ import annotations

import uuid

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters, VectorStoreQuery

from tensordb.integrations.llama_index import TensorDBVectorStore
from tensordb.vectorstore import HashingEmbedding, filters

DIM = 16


def _store() -> TensorDBVectorStore:
    embed = HashingEmbedding(DIM)
    store = TensorDBVectorStore(f"mem://li-{uuid.uuid4().hex}", overwrite=True)
    texts = [f"note {i}" for i in range(6)]
    vectors = embed.embed_documents(texts)
    store.add([TextNode(id_=f"n{i}", text=t, metadata={"n": i}, embedding=v)
               for i, (t, v) in enumerate(zip(texts, vectors, strict=True))])
    return store


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str) -> None:
        raise AssertionError(f"the filter was parsed from text: {text!r}")

    monkeypatch.setattr(filters, "parse", refuse)


def test_query_get_and_delete_with_metadata_filters_never_parse(no_parsing) -> None:
    store = _store()
    wanted = MetadataFilters(filters=[MetadataFilter(key="n", value=3, operator=FilterOperator.GTE)])
    query = VectorStoreQuery(query_embedding=HashingEmbedding(DIM).embed_query("note"), similarity_top_k=6,
                             filters=wanted)
    assert sorted(store.query(query).ids) == ["n3", "n4", "n5"]
    assert [node.node_id for node in store.get_nodes(filters=wanted)] == ["n3", "n4", "n5"]
    store.delete_nodes(filters=wanted)
    assert [node.node_id for node in store.get_nodes()] == ["n0", "n1", "n2"]
