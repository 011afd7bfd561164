"""TQL over real datasets (many small chunks, different boundaries per tensor) against numpy."""

from __future__ import annotations

import numpy as np
import pytest

import tensordb
from query_lang.derived import DERIVED_CACHE

DIM = 16
N = 600


def _data(start: int, stop: int) -> dict:
    rng = np.random.default_rng(start)
    emb = rng.standard_normal((stop - start, DIM)).astype(np.float32)
    emb[::7] /= np.linalg.norm(emb[::7], axis=1, keepdims=True)  # some unit rows, most not
    if start == 0:
        emb[5] = 0  # cosine with a zero vector is NaN: sorts last
    return {
        "metadata": [{"group": i % 5, "w": float(i) / 3} for i in range(start, stop)],
        "embedding": emb,
        "id": [f"row-{i}" for i in range(start, stop)],
        "label": np.arange(start, stop, dtype=np.int64),
    }


@pytest.fixture
def ds(path):
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("metadata", htype="json", max_chunk_size=1100)
    ds.create_tensor("embedding", htype="embedding", max_chunk_size=DIM * 4 * 19)
    ds.create_tensor("id", htype="text", max_chunk_size=1024)
    ds.create_tensor("label", htype="generic", dtype="int64", max_chunk_size=8 * 131)
    for lo in range(0, N, 170):  # several commits: chunk runs of different lengths
        ds.extend(_data(lo, min(N, lo + 170)))
        ds.commit(f"rows {lo}")
    return ds


def _reference(ds) -> dict:
    return {
        "emb": np.asarray(ds.embedding.numpy(), dtype=np.float64),
        "group": np.asarray([m["group"] for m in ds.metadata.numpy(aslist=True)]),
        "id": list(ds.id.numpy(aslist=True)),
        "label": np.asarray(ds.label.numpy()).reshape(-1),
    }


def _cosine(emb: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        denom = np.linalg.norm(emb, axis=1) * np.linalg.norm(q)
        return np.where(denom > 0, emb @ q / np.where(denom > 0, denom, 1), np.nan)


def _order(scores: np.ndarray, rows: np.ndarray, descending: bool = True) -> np.ndarray:
    """Rows sorted by score (NaN last), ties by row position."""
    s = scores[rows]
    key = np.where(np.isnan(s), np.inf, -s if descending else s)
    return rows[np.lexsort((rows, key))]


def _array(q: np.ndarray) -> str:
    return "ARRAY[" + ", ".join(repr(float(x)) for x in q) + "]"


def test_many_chunks_with_different_boundaries(ds):
    counts = {name: ds._state.tensors[name].chunk_rows for name in ("metadata", "embedding", "id", "label")}
    assert all(len(c) > 5 for c in counts.values())
    starts = {name: set(np.cumsum(c).tolist()) for name, c in counts.items()}
    assert starts["embedding"] != starts["metadata"] != starts["label"]


@pytest.mark.parametrize("unit_query", [False, True])
def test_filtered_ordered_limit_offset(ds, unit_query):
    ref = _reference(ds)
    q = np.random.default_rng(7).standard_normal(DIM)
    if unit_query:
        q /= np.linalg.norm(q)
    scores = _cosine(ref["emb"], q)
    for where, mask in [("metadata['group'] == 2", ref["group"] == 2),
                        ("metadata['group'] != 2 and label >= 40", (ref["group"] != 2) & (ref["label"] >= 40)),
                        (None, np.ones(N, dtype=bool))]:
        clause = f"where {where} " if where else ""
        for limit, offset in [(7, 0), (7, 3), (1000, 5)]:
            text = (f"select * {clause}order by cosine_similarity(embedding, {_array(q)}) desc "
                    f"limit {limit} offset {offset}")
            for _ in range(2):  # the second run reads derived values from the cache
                view = ds.query(text)
                expect = _order(scores, np.flatnonzero(mask))[offset: offset + limit]
                assert view.id.numpy(aslist=True) == [ref["id"][i] for i in expect]
                np.testing.assert_allclose(view.score.numpy(), scores[expect], rtol=1e-5, atol=1e-6)
                assert np.array_equal(np.asarray(view.label.numpy()).reshape(-1), ref["label"][expect])


def test_filter_scan_limit_offset(ds):
    ref = _reference(ds)
    view = ds.query("select id, metadata['w'] * 3 as w3 where metadata['group'] == 4 limit 9 offset 4")
    expect = np.flatnonzero(ref["group"] == 4)[4:13]
    assert view.id.numpy(aslist=True) == [ref["id"][i] for i in expect]
    np.testing.assert_allclose(np.asarray(view.w3.numpy(), dtype=float).reshape(-1), expect.astype(float))


def test_subquery_alias(ds):
    ref = _reference(ds)
    q = np.random.default_rng(3).standard_normal(DIM)
    scores = _cosine(ref["emb"], q)
    text = (f"select id, s from (select id, label, cosine_similarity(embedding, {_array(q)}) as s "
            f"where metadata['group'] != 1 order by s desc limit 40) where s > 0.2 and label >= 100 "
            f"order by s asc limit 6 offset 1")
    view = ds.query(text)
    inner = _order(scores, np.flatnonzero(ref["group"] != 1))[:40]
    outer = inner[(scores[inner] > 0.2) & (ref["label"][inner] >= 100)]
    expect = outer[np.argsort(scores[outer], kind="stable")][1:7]  # ties keep the inner order
    assert len(expect) == 6
    assert view.id.numpy(aslist=True) == [ref["id"][i] for i in expect]
    np.testing.assert_allclose(view.s.numpy(), scores[expect], rtol=1e-5)


def test_view_queried_again(ds):
    ref = _reference(ds)
    q = np.random.default_rng(11).standard_normal(DIM)
    scores = _cosine(ref["emb"], q)
    first = ds.query("select * where label >= 33 and metadata['group'] <= 2")
    base = np.flatnonzero((ref["label"] >= 33) & (ref["group"] <= 2))
    assert first.id.numpy(aslist=True) == [ref["id"][i] for i in base]
    second = first.query(f"select * where metadata['group'] == 1 order by "
                         f"cosine_similarity(embedding, {_array(q)}) desc limit 8 offset 2")
    expect = _order(scores, base[ref["group"][base] == 1])[2:10]
    assert len(expect) == 8
    assert second.id.numpy(aslist=True) == [ref["id"][i] for i in expect]
    np.testing.assert_allclose(second.score.numpy(), scores[expect], rtol=1e-5)
    # A third level: the score column of the view stays available and re-orderable.
    third = second.query("select id, score where score > -2 order by score asc limit 3")
    asc = expect[::-1][:3]
    assert third.id.numpy(aslist=True) == [ref["id"][i] for i in asc]
    np.testing.assert_allclose(third.score.numpy(), scores[asc], rtol=1e-5)


def test_l2_and_dot_scores(ds):
    ref = _reference(ds)
    q = np.random.default_rng(5).standard_normal(DIM)
    view = ds.query(f"select * where metadata['group'] >= 3 order by "
                    f"l2_norm(embedding - {_array(q)}) asc limit 5")
    d = np.linalg.norm(ref["emb"] - q, axis=1)
    expect = _order(d, np.flatnonzero(ref["group"] >= 3), descending=False)[:5]
    assert view.id.numpy(aslist=True) == [ref["id"][i] for i in expect]
    np.testing.assert_allclose(view.score.numpy(), d[expect], rtol=1e-5)
    view = ds.query(f"select * order by dot(embedding, {_array(q)}) desc limit 5")
    dots = ref["emb"] @ q
    expect = _order(dots, np.arange(N))[:5]
    assert view.id.numpy(aslist=True) == [ref["id"][i] for i in expect]


def test_derived_cache_is_hit_and_invalidated_by_new_data(ds):
    text = "select id where metadata['group'] == 0"
    before = ds.query(text).id.numpy(aslist=True)
    hits = DERIVED_CACHE.hits
    assert ds.query(text).id.numpy(aslist=True) == before
    assert DERIVED_CACHE.hits > hits
    ds.extend(_data(N, N + 20))
    ds.commit("more")
    after = ds.query(text).id.numpy(aslist=True)
    assert after == before + [f"row-{i}" for i in range(N, N + 20) if i % 5 == 0]


def test_run_queries_matches_one_by_one(ds):
    rng = np.random.default_rng(21)
    texts = []
    for j in range(5):
        q = rng.standard_normal(DIM)
        if j % 2:
            q /= np.linalg.norm(q)
        texts.append(f"select * order by cosine_similarity(embedding, {_array(q)}) desc limit 6 offset 1")
        texts.append(f"select * where metadata['group'] == 3 order by cosine_similarity(embedding, {_array(q)}) "
                     f"desc limit 4")
        texts.append(f"select id order by dot({_array(q)}, embedding) asc limit 3")
    texts.append("select id where label < 5")
    texts.append(f"select * order by cosine_similarity(embedding, {_array(rng.standard_normal(DIM))}) desc limit 0")
    texts.append(f"select * order by cosine_similarity(embedding, {_array(np.zeros(DIM))}) desc limit 2")
    batch = ds.query_batch(texts)
    assert len(batch) == len(texts)
    for text, got in zip(texts, batch):
        want = ds.query(text)
        assert got.id.numpy(aslist=True) == want.id.numpy(aslist=True), text
        assert list(got.tensors) == list(want.tensors)
        if "score" in want.virtual_columns:
            np.testing.assert_allclose(got.score.numpy(), want.score.numpy(), rtol=1e-5, equal_nan=True)
