"""Hostile argument types for VectorStore.search and add: a typed SampleError naming expected and got."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tensordb import VectorStore
from tensordb.errors import SampleError

DIM = 8


@pytest.fixture
def store() -> VectorStore:
    vs = VectorStore(f"mem://{uuid.uuid4().hex}", overwrite=True)
    rng = np.random.default_rng(0)
    vs.add(text=[f"t{i}" for i in range(6)], embedding=rng.standard_normal((6, DIM)).astype(np.float32),
           id=[f"d{i}" for i in range(6)])
    return vs


def snapshot(vs: VectorStore) -> tuple:
    ds = vs.dataset
    return ds.id.numpy(aslist=True), ds.text.numpy(aslist=True), ds.embedding.numpy().tobytes()


def test_a_matrix_query_is_not_flattened_into_one_vector(store: VectorStore) -> None:
    with pytest.raises(SampleError, match=r"expected one vector of dimension 8 \(shape \(8,\) or \(1, 8\)\), "
                                          r"got shape \(2, 4\)"):
        store.search(embedding=np.ones((2, 4)))


def test_a_one_row_matrix_query_is_one_vector(store: VectorStore) -> None:
    query = np.random.default_rng(1).standard_normal((1, DIM))
    assert store.search(embedding=query, k=2)["id"] == store.search(embedding=query[0], k=2)["id"]


@pytest.mark.parametrize("shape", [(DIM, 1), (2, DIM), (1, 1, DIM), ()])
def test_query_shapes_other_than_one_vector_are_refused(store: VectorStore, shape) -> None:
    with pytest.raises(SampleError, match="expected one vector of dimension 8"):
        store.search(embedding=np.ones(shape))


@pytest.mark.parametrize("metric", ["cos"])
def test_a_zero_query_has_no_cosine_ranking(store: VectorStore, metric: str) -> None:
    with pytest.raises(SampleError, match="query embedding is all zeros"):
        store.search(embedding=np.zeros(DIM), distance_metric=metric)


def test_a_zero_query_for_deep_memory_is_refused(store: VectorStore) -> None:
    with pytest.raises(SampleError, match="query embedding is all zeros"):
        store.search(embedding=[0.0] * DIM, deep_memory=True)


def test_a_zero_query_from_the_embedding_function_is_refused(store: VectorStore) -> None:
    with pytest.raises(SampleError, match="query embedding is all zeros"):
        store.search(embedding_data="nothing", embedding_function=lambda texts: np.zeros((len(texts), DIM)))


@pytest.mark.parametrize("metric", ["dot", "l2", "l1", "max"])
def test_a_zero_query_is_fine_for_dot_and_distances(store: VectorStore, metric: str) -> None:
    result = store.search(embedding=np.zeros(DIM), distance_metric=metric, k=3)
    assert len(result["id"]) == 3 and all(np.isfinite(result["score"]))


@pytest.mark.parametrize("bad", ["abc", b"abc", ["a"] * DIM, [None] * DIM, {"x": 1}, object()])
def test_a_query_that_is_not_numbers_is_a_sample_error(store: VectorStore, bad) -> None:
    with pytest.raises(SampleError, match="expected a vector of floats|expected one vector"):
        store.search(embedding=bad)


def test_a_string_query_names_its_type(store: VectorStore) -> None:
    with pytest.raises(SampleError, match="expected a vector of floats, got str"):
        store.search(embedding="abc")


@pytest.mark.parametrize("k", [np.int64(3), np.int32(3), 3])
def test_k_may_be_any_integer(store: VectorStore, k) -> None:
    assert len(store.search(embedding=np.ones(DIM), k=k)["id"]) == 3


@pytest.mark.parametrize("k", [True, False, 3.0, "3", 0, -1, np.int64(0), None])
def test_k_must_be_a_positive_non_bool_integer(store: VectorStore, k) -> None:
    with pytest.raises(SampleError, match="k must be a positive int"):
        store.search(embedding=np.ones(DIM), k=k)


BAD_ADD = {
    "matrix of the wrong dimension": (np.ones((1, 4)), "dimension 8, got 4"),
    "NaN": ([[np.nan] * DIM], "NaN"),
    "string": ("abc", "got str"),
    "string vector": (["abc"], "expected a vector of floats, got str"),
    "strings in a vector": ([["a"] * DIM], "expected one vector of floats per chunk, got list of str"),
    "Nones in a vector": ([[None] * DIM], "got list of NoneType"),
    "ragged": ([[1.0] * DIM, [1.0] * 4], "dimension 8, got 4"),
    "3-d": (np.ones((1, 2, DIM)), "embedding"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ADD))
def test_add_with_bad_embeddings_is_a_sample_error_and_changes_nothing(store: VectorStore, kind: str) -> None:
    embedding, message = BAD_ADD[kind]
    n = len(embedding) if not isinstance(embedding, str) else 1
    before = snapshot(store)
    with pytest.raises(SampleError, match=message):
        store.add(text=[f"x{i}" for i in range(n)], embedding=embedding, id=[f"x{i}" for i in range(n)])
    assert snapshot(store) == before
    assert store.dataset.verify().ok
