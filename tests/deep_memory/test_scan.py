"""``deepmemory_distance`` inside the scan: folded blocks, the sparse path, and invalidation."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tensordb
from query_lang.errors import TQLExecutionError
from tensordb import VectorStore
from tensordb.deep_memory import folding
from tensordb.deep_memory.folding import FoldedBlocks
from tensordb.deep_memory.jobs import COMPLETED, JobRecord, new_job_id
from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.deep_memory.tql import jobs_of

DIM = 16
N_DOCS = 90


def _model(ids: list[str], rng: np.random.Generator) -> DeepMemoryModel:
    a = np.eye(DIM, dtype=np.float32) + 0.4 * rng.standard_normal((DIM, DIM)).astype(np.float32)
    memory_ids = ids[::4]
    memory = 0.5 * rng.standard_normal((len(memory_ids), DIM)).astype(np.float32)
    return DeepMemoryModel(a, memory_ids, memory)


def _install(dataset: tensordb.Dataset, model: DeepMemoryModel) -> str:
    """Store ``model`` as the latest completed job, as a finished training would."""
    jobs = jobs_of(dataset)
    job_id = new_job_id()
    jobs.save_model(job_id, model)
    now = time.time()
    jobs.save(JobRecord(id=job_id, status=COMPLETED, created=now, commit_id=None, n_queries=0, finished=now))
    return job_id


def _store(path: str, docs: np.ndarray, ids: list[str]) -> VectorStore:
    """A vector store whose embeddings span several chunks of 20 rows."""
    ds = tensordb.empty(path, overwrite=True)
    with ds:
        ds.create_tensor("text", htype="text")
        ds.create_tensor("metadata", htype="json")
        ds.create_tensor("embedding", htype="embedding", dtype="float32", max_chunk_size=20 * DIM * 4)
        ds.create_tensor("id", htype="id", max_chunk_size=1024)
    ds.close()
    vs = VectorStore(path)
    vs.add(text=[f"t{i}" for i in range(len(ids))], embedding=docs, id=ids)
    return vs


def _expected(model: DeepMemoryModel, q: np.ndarray, docs: np.ndarray, ids: list[str]) -> tuple[list[str], np.ndarray]:
    scores = model.score_block(model.transform_queries(q), docs, None, model.memory_index(ids))
    order = np.argsort(-scores, kind="stable")
    return [ids[i] for i in order], scores[order]


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> FoldedBlocks:
    cache = FoldedBlocks()
    monkeypatch.setattr(folding, "FOLDED_BLOCKS", cache)
    monkeypatch.setattr("tensordb.deep_memory.tql.FOLDED_BLOCKS", cache)
    return cache


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
@pytest.mark.parametrize("unit_rows", [False, True])
def test_search_ranks_and_scores_like_the_model(vs_path, fresh_cache: FoldedBlocks, unit_rows: bool) -> None:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32) * rng.uniform(0.3, 3, (N_DOCS, 1)).astype(np.float32)
    if unit_rows:
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    ids = [f"doc{i}" for i in range(N_DOCS)]
    vs = _store(vs_path, docs, ids)
    model = _model(ids, rng)
    _install(vs.dataset, model)
    for q in rng.standard_normal((5, DIM)).astype(np.float32):
        got = vs.search(embedding=q, k=N_DOCS, deep_memory=True)
        want_ids, want_scores = _expected(model, q, docs, ids)
        np.testing.assert_allclose(got["score"], want_scores, rtol=1e-5, atol=1e-5)
        assert got["id"][:10] == want_ids[:10]
    # Every chunk was folded once and then reused.
    assert len(fresh_cache) == -(-N_DOCS // 20)


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_sparse_path_gives_the_folded_results(vs_path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    ids = [f"doc{i}" for i in range(N_DOCS)]
    vs = _store(vs_path, docs, ids)
    _install(vs.dataset, _model(ids, rng))
    queries = rng.standard_normal((4, DIM)).astype(np.float32)
    folded_cache = FoldedBlocks()
    monkeypatch.setattr("tensordb.deep_memory.tql.FOLDED_BLOCKS", folded_cache)
    folded = [vs.search(embedding=q, k=15, deep_memory=True) for q in queries]
    assert len(folded_cache) > 0
    no_room = FoldedBlocks(max_bytes=0)
    monkeypatch.setattr("tensordb.deep_memory.tql.FOLDED_BLOCKS", no_room)
    sparse = [vs.search(embedding=q, k=15, deep_memory=True) for q in queries]
    assert len(no_room) == 0
    for a, b in zip(folded, sparse, strict=True):
        assert a["id"] == b["id"]
        np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_changed_rows_and_a_new_model_are_never_served_stale(vs_path, fresh_cache: FoldedBlocks) -> None:
    rng = np.random.default_rng(2)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    ids = [f"doc{i}" for i in range(N_DOCS)]
    vs = _store(vs_path, docs, ids)
    model = _model(ids, rng)
    _install(vs.dataset, model)
    q = rng.standard_normal(DIM).astype(np.float32)
    before = vs.search(embedding=q, k=5, deep_memory=True)  # folds every chunk
    # Move a memory document onto the transformed query: it must now rank near the top.
    target = next(i for i in model.memory_ids if i not in before["id"])
    new_vector = model.transform_queries(q)
    vs.update_embedding(ids=[target], embedding_function=lambda texts: np.stack([new_vector] * len(texts)))
    docs[ids.index(target)] = new_vector
    got = vs.search(embedding=q, k=5, deep_memory=True)
    want_ids, want_scores = _expected(model, q, docs, ids)
    assert got["id"] == want_ids[:5] and target in got["id"]
    np.testing.assert_allclose(got["score"], want_scores[:5], rtol=1e-5, atol=1e-5)
    # Deleting rows shifts the ones after them.
    vs.delete(ids=["doc1"])
    keep = [i for i in range(N_DOCS) if ids[i] != "doc1"]
    got = vs.search(embedding=q, k=N_DOCS, deep_memory=True)
    want_ids, want_scores = _expected(model, q, docs[keep], [ids[i] for i in keep])
    assert got["id"][:10] == want_ids[:10]
    np.testing.assert_allclose(got["score"], want_scores, rtol=1e-5, atol=1e-5)
    # A newer model takes over at once.
    newer = _model(ids, np.random.default_rng(3))
    _install(vs.dataset, newer)
    got = vs.search(embedding=q, k=5, deep_memory=True)
    assert got["id"] == _expected(newer, q, docs[keep], [ids[i] for i in keep])[0][:5]


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_a_tensor_without_stored_norms_scores_like_the_model(vs_path, fresh_cache: FoldedBlocks) -> None:
    """A generic float tensor has no stored row norms: the fold must not score with its own."""
    rng = np.random.default_rng(4)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32) * rng.uniform(0.3, 3, (N_DOCS, 1)).astype(np.float32)
    ids = [f"doc{i}" for i in range(N_DOCS)]
    ds = tensordb.empty(vs_path, overwrite=True)
    with ds:
        ds.create_tensor("vec", dtype="float32", max_chunk_size=20 * DIM * 4)
        ds.create_tensor("id", htype="id")
        ds.extend({"vec": docs, "id": ids})
    model = _model(ids, rng)
    _install(ds, model)
    q = rng.standard_normal(DIM).astype(np.float32)
    literal = ", ".join(repr(float(x)) for x in q)
    view = ds.query(f"select * order by deepmemory_distance(vec, ARRAY[{literal}]) desc limit 8")
    assert view["id"].numpy(aslist=True) == _expected(model, q, docs, ids)[0][:8]
    assert len(fresh_cache) > 0


def test_a_column_of_another_dimension_gets_a_clear_error(tmp_path) -> None:
    ds = tensordb.empty(str(tmp_path / "ds"), overwrite=True)
    with ds:
        ds.create_tensor("vec", dtype="float32")
        ds.create_tensor("id", htype="id")
        ds.extend({"vec": np.ones((5, 8), np.float32), "id": [f"doc{i}" for i in range(5)]})
    _install(ds, _model([f"doc{i}" for i in range(5)], np.random.default_rng(5)))
    before = ds["vec"].numpy().copy()
    with pytest.raises(TQLExecutionError, match=r"expects 16-d vectors, got vec with rows of shape \(8,\)"):
        ds.query("select * order by deepmemory_distance(vec, ARRAY[1, 2, 3, 4, 5, 6, 7, 8]) desc limit 2")
    assert np.array_equal(ds["vec"].numpy(), before) and len(ds) == 5


def _block(n: int) -> np.ndarray:
    return np.zeros((n, 4), dtype=np.float32)  # 16 bytes per row


def test_folded_blocks_keep_a_stable_set_under_scans_larger_than_the_budget() -> None:
    cache = FoldedBlocks(max_bytes=2 * 160)
    folds: list[str] = []

    def scan(keys: list[str]) -> list[bool]:
        in_use: set[str] = set()
        served = []
        for key in keys:
            block = cache.get_or_fold(key, 160, lambda key=key: folds.append(key) or _block(10), in_use)
            served.append(block is not None)
            in_use.add(key)
        return served

    assert scan(["a", "b", "c"]) == [True, True, False]
    assert scan(["a", "b", "c"]) == [True, True, False]
    assert folds == ["a", "b"]  # no refolding: "c" goes the sparse way instead
    # Blocks the running query does not use make room for the ones it does.
    assert scan(["c", "d"]) == [True, True]
    assert folds == ["a", "b", "c", "d"] and cache.nbytes == 320 and len(cache) == 2


def test_folded_blocks_refuse_a_block_over_the_budget() -> None:
    cache = FoldedBlocks(max_bytes=100)
    called = []
    assert cache.get_or_fold("big", 160, lambda: called.append(1) or _block(10), set()) is None
    assert called == [] and len(cache) == 0
