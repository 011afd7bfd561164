"""VectorStore.search hands its float32 query vector to the scan as one array, with the same scores."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from query_lang import ast as A
from query_lang import to_sql
from tensordb import VectorStore
from tensordb.core.dataset import Dataset

DIM = 24
ROWS = 200


@pytest.fixture
def store() -> VectorStore:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    emb[::2] /= np.linalg.norm(emb[::2], axis=1, keepdims=True)  # unit and non-unit rows
    vs = VectorStore(f"mem://{uuid.uuid4().hex}", overwrite=True)
    vs.add(text=[f"t{i}" for i in range(ROWS)], embedding=emb, metadata=[{"g": i % 3} for i in range(ROWS)],
           id=[f"d{i}" for i in range(ROWS)])
    return vs


@pytest.fixture
def sent(monkeypatch) -> list[A.Query]:
    """The queries VectorStore.search hands to the dataset."""
    queries: list[A.Query] = []
    original = Dataset.query

    def spy(self, query, *args, **kwargs):
        queries.append(query)
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(Dataset, "query", spy)
    return queries


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def test_the_query_vector_reaches_the_scan_as_a_float32_array(store, sent):
    vector = _vector(1)
    store.search(embedding=vector, k=5)
    array = sent[-1].order_by[0].expr.args[1]
    assert isinstance(array.values, A.Float32Vector)
    assert np.array_equal(array.values.array, vector)


@pytest.mark.parametrize("metric", ["cos", "dot", "l2"])
def test_scores_equal_the_text_form_exactly(store, sent, metric):
    result = store.search(embedding=_vector(2), k=8, distance_metric=metric)
    text = to_sql(sent[-1])
    view = store.dataset.query(text)
    assert result["id"] == view.id.numpy(aslist=True)
    assert np.array_equal(np.asarray(result["score"]), np.asarray(view.score))


def test_cosine_scores_match_numpy_float32(store):
    vector = _vector(3)
    result = store.search(embedding=vector, k=ROWS)
    emb = store.dataset.embedding.numpy()
    cosine = (emb @ vector) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(vector))
    rows = [int(i[1:]) for i in result["id"]]
    np.testing.assert_allclose(result["score"], cosine[rows], rtol=1e-5, atol=1e-6)
