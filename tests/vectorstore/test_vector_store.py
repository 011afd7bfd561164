"""VectorStore: add, search (filters, metrics, TQL), delete, update, and bad input."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tensordb import HashingEmbedding, VectorStore
from tensordb.errors import TensorDBError

DOCS = [
    "how to connect object storage to the database",
    "python dataset api for tensors and views",
    "deep memory training improves retrieval recall",
    "crash safe commits with fsync and rename",
    "the query language supports order by and limit",
    "branches and time travel over commits",
]


@pytest.fixture
def store(vs_path) -> VectorStore:
    vs = VectorStore(vs_path, embedding_function=HashingEmbedding(64), overwrite=True)
    vs.add(text=DOCS, metadata=[{"source": f"{i % 3}.md", "i": i} for i in range(len(DOCS))],
           id=[f"d{i}" for i in range(len(DOCS))])
    return vs


def brute_force(vs: VectorStore, query: str, k: int) -> list[str]:
    emb = vs.dataset.embedding.numpy()
    q = HashingEmbedding(64).embed([query])[0]
    scores = emb @ q / np.maximum(np.linalg.norm(emb, axis=1), 1e-12)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return [f"d{i}" for i in order]


def test_search_matches_brute_force_cosine(store: VectorStore) -> None:
    result = store.search(embedding_data="connect my storage", k=3)
    assert result["id"] == brute_force(store, "connect my storage", 3)
    assert set(result) == {"text", "metadata", "id", "score"}
    assert result["score"] == sorted(result["score"], reverse=True)
    assert result["text"][0] == DOCS[int(result["id"][0][1:])]


@pytest.mark.parametrize("flt", [{"source": "1.md"}, "metadata['source'] == '1.md'",
                                 lambda row: row["metadata"]["source"] == "1.md"])
def test_filters_of_every_kind_agree(store: VectorStore, flt) -> None:
    result = store.search(embedding_data="commits and storage", k=10, filter=flt)
    assert sorted(result["id"]) == ["d1", "d4"]


@pytest.mark.parametrize("metric,sign", [("cos", -1), ("dot", -1), ("l2", 1), ("l1", 1), ("max", 1)])
def test_distance_metrics_order_by_the_right_direction(store: VectorStore, metric: str, sign: int) -> None:
    result = store.search(embedding_data="deep memory recall", k=6, distance_metric=metric)
    scores = result["score"]
    assert scores == sorted(scores, reverse=sign < 0)
    assert result["id"][0] == "d2"


def test_return_tensors_and_tql_query(store: VectorStore) -> None:
    result = store.search(embedding_data="branches", k=2, return_tensors=["id", "embedding"])
    assert set(result) == {"id", "embedding", "score"} and len(result["embedding"][0]) == 64
    tql = store.search(query="select * where metadata['i'] >= 4")
    assert sorted(tql["id"]) == ["d4", "d5"]


def test_delete_and_update_embedding(store: VectorStore) -> None:
    store.delete(ids=["d0", "d3"])
    assert len(store) == 4 and "d0" not in store.search(embedding_data="storage", k=10)["id"]
    store.delete(filter={"source": "2.md"})
    assert sorted(store.dataset.id.numpy(aslist=True)) == ["d1", "d4"]
    before = store.dataset.embedding.numpy().copy()
    store.update_embedding(ids=["d4"], embedding_function=lambda texts: np.ones((len(texts), 64)))
    after = store.dataset.embedding.numpy()
    assert np.allclose(after[1], 1.0) and np.array_equal(after[0], before[0])
    store.delete(delete_all=True)
    assert len(store) == 0


def test_explicit_embeddings_and_generated_ids(vs_path) -> None:
    vs = VectorStore(vs_path, overwrite=True)
    ids = vs.add(text=["a", "b"], embedding=np.eye(2, 4, dtype=np.float32))
    assert len(set(ids)) == 2 and all(isinstance(i, str) for i in ids)
    assert vs.search(embedding=[0, 1, 0, 0], k=1)["text"] == ["b"]


def snapshot(vs: VectorStore) -> tuple:
    ds = vs.dataset
    return len(ds), ds.id.numpy(aslist=True), ds.embedding.numpy().tolist(), ds._checkout.state_key


@pytest.mark.parametrize("call,message", [
    (lambda vs: vs.add(text=["x", "y"], metadata=[{}]), "different lengths"),
    (lambda vs: vs.add(text=["x"], embedding=np.ones((1, 63))), "dimension 64"),
    (lambda vs: vs.add(text=["x"], embedding_function=lambda t: np.ones((1, 5))), "dimension 5"),
    (lambda vs: vs.add(text=["x"], embedding=np.full((1, 64), np.nan)), "NaN"),
    (lambda vs: vs.add(text=["x"], id=["d1"]), "already in the store"),
    (lambda vs: vs.add(text=["x"], metadata=[{"bad": object()}]), "JSON"),
    (lambda vs: vs.delete(ids=["nope"]), "not in the store"),
    (lambda vs: vs.search(embedding=np.ones(3), k=1), "dimension 3"),
    (lambda vs: vs.search(embedding_data="x", k=0), "positive int"),
    (lambda vs: vs.search(embedding_data="x", distance_metric="cosine"), "distance_metric"),
    (lambda vs: vs.search(embedding_data="x", filter=42), "filter must be"),
])
def test_bad_input_raises_clearly_and_changes_nothing(store: VectorStore, call, message: str) -> None:
    before = snapshot(store)
    with pytest.raises(TensorDBError, match=message):
        call(store)
    assert snapshot(store) == before


def test_search_on_empty_store_is_a_clear_error() -> None:
    vs = VectorStore(f"mem://{uuid.uuid4().hex}", embedding_function=HashingEmbedding(16), overwrite=True)
    with pytest.raises(TensorDBError, match="empty"):
        vs.search(embedding_data="anything")


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_reopen_store_keeps_data(vs_path) -> None:
    vs = VectorStore(vs_path, embedding_function=HashingEmbedding(32), overwrite=True)
    vs.add(text=DOCS[:3], id=["a", "b", "c"])
    vs.close()
    again = VectorStore(vs_path, embedding_function=HashingEmbedding(32), read_only=True)
    assert again.dataset.id.numpy(aslist=True) == ["a", "b", "c"]
    with pytest.raises(TensorDBError):
        again.add(text=["z"])


def test_hashing_embedding_is_deterministic_and_normalised() -> None:
    emb = HashingEmbedding(128)
    a, b = emb.embed(["Storage engine!", "storage engine"]), emb.embed(["storage engine"])
    assert np.allclose(a[1], b[0]) and np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert a[0] @ a[1] > 0.9 and emb.embed([""])[0].tolist() == [0.0] * 128
    with pytest.raises(TensorDBError, match="no embedding_function"):
        VectorStore(f"mem://{uuid.uuid4().hex}", overwrite=True).add(text=["x"])
