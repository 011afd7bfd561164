"""LangChain and LlamaIndex stores: a replace is one atomic write; id lookups use the id index, not TQL."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters, VectorStoreQuery

from tensordb.errors import SampleError
from tensordb.integrations.langchain import TensorDB
from tensordb.integrations.llama_index import TensorDBVectorStore

DIM = 8


def vec(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    v[0] = abs(v[0]) + 0.5
    return v.tolist()


class ScriptedEmbeddings(Embeddings):
    """Embeds a text by its hash; 'NAN' in a text gives NaN, 'SHORT' a 4-d vector."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        if "NAN" in text:
            return [float("nan")] * DIM
        if "SHORT" in text:
            return vec(len(text))[:4]
        return vec(sum(map(ord, text)))


def snapshot(vs) -> list[tuple]:
    ds = vs.dataset
    return list(zip(ds.id.numpy(aslist=True), ds.text.numpy(aslist=True), ds.metadata.numpy(aslist=True),
                    [e.tobytes() for e in ds.embedding.numpy()], strict=True))


# -- LangChain add_texts ------------------------------------------------------------------------------
@pytest.fixture
def db() -> TensorDB:
    return TensorDB.from_texts([f"text {i}" for i in range(4)], ScriptedEmbeddings(),
                               metadatas=[{"i": i} for i in range(4)], ids=[f"d{i}" for i in range(4)],
                               path=f"mem://lc-{uuid.uuid4().hex}")


LANGCHAIN_BAD = {
    "non-JSON metadata": dict(metadatas=[{"v": 1}, {"bad": object()}]),
    "duplicate ids in the call": dict(ids=["d1", "d1"]),
    "NaN embedding": dict(texts=["fine", "NAN here"]),
    "wrong dimension": dict(texts=["fine", "SHORT one"]),
}


@pytest.mark.parametrize("kind", sorted(LANGCHAIN_BAD))
def test_langchain_failed_replace_keeps_the_old_documents(db: TensorDB, kind: str) -> None:
    before = snapshot(db.vectorstore)
    args = dict(texts=["new 1", "new 2"], metadatas=[{"v": 1}, {"v": 2}], ids=["d1", "d2"])
    args.update(LANGCHAIN_BAD[kind])
    with pytest.raises(SampleError):
        db.add_texts(**args)
    assert snapshot(db.vectorstore) == before
    assert db.vectorstore.dataset.verify().ok
    assert [d.page_content for d in db.get_by_ids(["d1", "d2"])] == ["text 1", "text 2"]


def test_langchain_replace_keeps_the_row_and_changes_the_document(db: TensorDB) -> None:
    assert db.add_texts(["text 2 again", "brand new"], [{"v": 2}, {"v": 9}], ids=["d2", "n"]) == ["d2", "n"]
    assert db.vectorstore.dataset.id.numpy(aslist=True) == ["d0", "d1", "d2", "d3", "n"]
    [doc] = db.get_by_ids(["d2"])
    assert doc.page_content == "text 2 again" and doc.metadata == {"v": 2}
    assert db.similarity_search("text 2 again", k=1)[0].id == "d2"


# -- LlamaIndex add -------------------------------------------------------------------------------------
def node(node_id: str, text: str, seed: int, **metadata) -> TextNode:
    return TextNode(id_=node_id, text=text, embedding=vec(seed), metadata=metadata)


@pytest.fixture
def store() -> TensorDBVectorStore:
    s = TensorDBVectorStore(f"mem://li-{uuid.uuid4().hex}")
    s.add([node(f"n{i}", f"text {i}", i, i=i) for i in range(4)])
    return s


def _bad_nodes(kind: str) -> list[TextNode]:
    first = node("n1", "new 1", 101)
    if kind == "non-JSON metadata":  # LlamaIndex itself refuses it, while serialising the node
        return [first, node("n2", "new 2", 102, bad=object())]
    if kind == "duplicate ids in the call":
        return [first, node("n1", "new 1 again", 103)]
    second = node("n2", "new 2", 102)
    second.embedding = [float("nan")] * DIM if kind == "NaN embedding" else vec(102)[:4]
    return [first, second]


@pytest.mark.parametrize("kind", ["non-JSON metadata", "duplicate ids in the call", "NaN embedding",
                                  "wrong dimension"])
def test_llama_index_failed_replace_keeps_the_old_nodes(store: TensorDBVectorStore, kind: str) -> None:
    before = snapshot(store.client)
    with pytest.raises(Exception) as raised:
        store.add(_bad_nodes(kind))
    assert isinstance(raised.value, SampleError) or kind == "non-JSON metadata"
    assert snapshot(store.client) == before
    assert store.client.dataset.verify().ok
    assert [n.get_content() for n in store.get_nodes(["n1", "n2"])] == ["text 1", "text 2"]


def test_llama_index_replace_keeps_the_row(store: TensorDBVectorStore) -> None:
    store.add([node("n3", "text 3 again", 303, i=33), node("n9", "new", 309, i=9)])
    assert store.client.dataset.id.numpy(aslist=True) == ["n0", "n1", "n2", "n3", "n9"]
    [again] = store.get_nodes(["n3"])
    assert again.get_content() == "text 3 again" and again.metadata["i"] == 33


# -- many ids ---------------------------------------------------------------------------------------------
MANY = 30_000


@pytest.fixture(scope="module")
def big_db() -> TensorDB:
    ids = [str(uuid.UUID(int=i)) for i in range(MANY + 100)]  # as 'id IN (...)' TQL: over 1,000,000 characters
    db = TensorDB(f"mem://lc-big-{uuid.uuid4().hex}", ScriptedEmbeddings())
    rng = np.random.default_rng(0)
    db.vectorstore.add(text=[f"t{i}" for i in range(len(ids))], metadata=[{"k": i % 3} for i in range(len(ids))],
                       embedding=rng.standard_normal((len(ids), DIM)).astype(np.float32), id=ids)
    return db


def test_langchain_get_by_ids_with_30k_ids(big_db: TensorDB) -> None:
    stored = big_db.vectorstore.dataset.id.numpy(aslist=True)
    wanted = stored[50:MANY + 50][::-1]
    asked = wanted[:10] + ["unknown-1"] + wanted[10:] + wanted[:5] + ["unknown-2"]
    docs = big_db.get_by_ids(asked)
    assert [d.id for d in docs] == wanted  # the order asked, each id once, unknown ids left out
    row = stored.index(wanted[0])
    assert docs[0].page_content == f"t{row}" and docs[0].metadata == {"k": row % 3}


def test_llama_index_get_and_delete_nodes_with_30k_ids() -> None:
    ids = [str(uuid.UUID(int=i)) for i in range(MANY + 100)]
    k_of = {doc_id: i % 3 for i, doc_id in enumerate(ids)}
    store = TensorDBVectorStore(f"mem://li-big-{uuid.uuid4().hex}")
    rng = np.random.default_rng(1)
    store.client.add(text=[f"t{i}" for i in range(len(ids))], metadata=[{"k": i % 3} for i in range(len(ids))],
                     embedding=rng.standard_normal((len(ids), DIM)).astype(np.float32), id=ids)
    wanted = ids[100:][::-1]
    nodes = store.get_nodes(wanted + ["unknown"])
    assert [n.node_id for n in nodes] == wanted
    assert nodes[-1].get_content() == "t100"

    only_k0 = MetadataFilters(filters=[MetadataFilter(key="k", value=0)])
    got = store.get_nodes(wanted, filters=only_k0)
    assert [n.node_id for n in got] == [i for i in wanted if k_of[i] == 0]

    result = store.query(VectorStoreQuery(query_embedding=vec(5), similarity_top_k=5, node_ids=ids[:3]))
    assert sorted(result.ids) == ids[:3]

    store.delete_nodes(wanted[:MANY - 10] + ["unknown"])
    assert store.client.dataset.id.numpy(aslist=True) == ids[:110]
    store.delete_nodes(ids, filters=only_k0)
    assert store.client.dataset.id.numpy(aslist=True) == [i for i in ids[:110] if k_of[i] != 0]
