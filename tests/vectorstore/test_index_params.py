"""Deep Lake v3's ``index_params``: a vector store builds and renews its hnsw index by itself."""

from __future__ import annotations

import numpy as np
import pytest

from tensordb import VectorStore
from tensordb.errors import IndexDefinitionError
from tensordb.vectorstore.index_params import INDEX_NAME

DIM = 16


@pytest.fixture(autouse=True)
def one_faiss_thread(monkeypatch):
    monkeypatch.setenv("TENSORDB_NUM_THREADS", "1")


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def add(vs: VectorStore, start: int, n: int) -> np.ndarray:
    x = vectors(n, start)
    vs.add(text=[f"t{i}" for i in range(start, start + n)], embedding=x, id=[f"d{i}" for i in range(start, start + n)])
    return x


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_the_index_is_built_once_the_store_reaches_the_threshold(vs_path):
    vs = VectorStore(vs_path, index_params={"threshold": 300, "distance_metric": "COS",
                                            "additional_params": {"M": 8, "efConstruction": 40}})
    add(vs, 0, 200)
    assert vs.dataset.embedding.indexes == {}
    add(vs, 200, 200)
    info = vs.dataset.embedding.indexes[INDEX_NAME]
    assert info["kind"] == "hnsw" and info["metric"] == "cosine" and info["rows"] == 400
    assert info["params"]["M"] == 8 and info["params"]["ef_construction"] == 40
    query = vectors(1, 99)[0]
    found, exact = vs.search(embedding=query, k=5), vs.search(embedding=query, k=5, exact=True)
    assert found["id"] == exact["id"]


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_a_stale_index_is_rebuilt_and_a_fresh_one_kept(vs_path):
    vs = VectorStore(vs_path, index_params={"threshold": 100, "distance_metric": "L2"})
    add(vs, 0, 400)
    built = vs.dataset.embedding.indexes[INDEX_NAME]
    assert built["metric"] == "l2" and built["rows"] == 400
    add(vs, 400, 50)  # 50 fresh rows: an eighth of the index, under the rebuild share
    assert vs.dataset.embedding.indexes[INDEX_NAME]["fresh_rows"] == 50
    add(vs, 450, 100)  # 150 fresh rows: over a quarter of the index
    renewed = vs.dataset.embedding.indexes[INDEX_NAME]
    assert renewed["rows"] == 550 and renewed["fresh_rows"] == 0


def test_no_index_by_default_and_none_inside_a_batch(tmp_path):
    vs = VectorStore(str(tmp_path / "a"))
    add(vs, 0, 300)
    assert vs.dataset.embedding.indexes == {}
    batched = VectorStore(str(tmp_path / "b"), index_params={"threshold": 10})
    with batched.dataset:
        add(batched, 0, 50)
        assert batched.dataset.embedding.indexes == {}
    add(batched, 50, 1)  # the next write outside the batch builds it
    assert batched.dataset.embedding.indexes[INDEX_NAME]["rows"] == 51


@pytest.mark.parametrize("params, message", [
    ({"threshold": "many"}, "threshold"),
    ({"threshold": -2}, "threshold"),
    ({"distance_metric": "hamming"}, "distance_metric"),
    ({"additional_params": {"efSearh": 10}}, "efSearh"),
    ({"thresold": 10}, "thresold"),
    ("COS", "dict"),
])
def test_bad_index_params_are_refused_before_anything_is_written(tmp_path, params, message):
    path = tmp_path / "vs"
    with pytest.raises(IndexDefinitionError, match=message):
        VectorStore(str(path), index_params=params)
    assert not path.exists()
