"""Behaviour of vector and key indexes at query time, through the public API.

Each test compares what an indexed query returns with the exact scan (``exact=True``) or with
scores computed here in numpy from the rows as they are now. A spy on ``VectorIndex.search``
says which vector index (if any) served a query.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tensordb
from tensordb.core.index_search import EXACT_FILTERED_ROWS
from tensordb.errors import IndexDefinitionError, IndexNotFoundError
from tensordb.indexes import vector as vector_indexes

from .helpers import mem_path

DIM = 16
N = 6000
K = 10


@pytest.fixture
def searches(monkeypatch):
    """Every vector index search made, as ``(kind, metric, build params)``."""
    calls: list[tuple[str, str, dict]] = []
    original = vector_indexes.VectorIndex.search

    def spy(self, queries, k, allowed=None, params=None):
        calls.append((self.spec.kind, self.spec.metric, dict(self.spec.params)))
        return original(self, queries, k, allowed, params)

    monkeypatch.setattr(vector_indexes.VectorIndex, "search", spy)
    return calls


def clustered(rng: np.random.Generator, n: int, clusters: int = 40) -> np.ndarray:
    centers = rng.standard_normal((clusters, DIM))
    return (centers[rng.integers(clusters, size=n)] + 0.15 * rng.standard_normal((n, DIM))).astype(np.float32)


def make_ds(n: int = N, seed: int = 0, path: str | None = None) -> tensordb.Dataset:
    """``embedding`` (clustered), ``metadata`` ({"group": 1% groups, "tenth": 10%, "third": ~33%}), ``year``."""
    rng = np.random.default_rng(seed)
    ds = tensordb.empty(path or mem_path("idx"), overwrite=True)
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("metadata", htype="json")
    ds.create_tensor("year", htype="generic", dtype="int64")
    ds.create_tensor("text", htype="text")
    i = np.arange(n)
    ds.extend({
        "embedding": clustered(rng, n),
        "metadata": [{"group": int(g), "tenth": int(t), "third": int(h)}
                     for g, t, h in zip(i % 100, (i * 7) % 10, i % 3, strict=True)],
        "year": 1990 + i % 30,
        "text": [f"doc {x}" for x in i],
    })
    return ds


def arr(q: np.ndarray) -> str:
    return "ARRAY[" + ", ".join(repr(float(x)) for x in q) + "]"


def topk(q: np.ndarray, metric: str = "cosine", k: int = K, where: str | None = None) -> str:
    clause = f"where {where} " if where else ""
    if metric == "l2":
        return f"select * {clause}order by l2_norm(embedding - {arr(q)}) asc limit {k}"
    fn = "cosine_similarity" if metric == "cosine" else "dot"
    return f"select * {clause}order by {fn}(embedding, {arr(q)}) desc limit {k}"


def scores_now(ds, rows: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Scores of ``rows`` computed here from the current embeddings."""
    emb = np.asarray(ds.embedding.numpy(), dtype=np.float64)[rows]
    q = np.asarray(q, dtype=np.float64)
    if metric == "cosine":
        return emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    if metric == "dot":
        return emb @ q
    return np.linalg.norm(emb - q, axis=1)


def result(view) -> tuple[list[int], np.ndarray]:
    return view.row_positions.tolist(), np.asarray(view.score.numpy(), dtype=np.float64)


def assert_same(view, expected) -> None:
    rows, scores = result(view)
    want_rows, want_scores = result(expected)
    assert rows == want_rows
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-7)


def queries(ds, count: int, seed: int) -> np.ndarray:
    """Query vectors near stored rows (in distribution), not equal to any."""
    rng = np.random.default_rng(seed)
    emb = ds.embedding.numpy()
    picks = rng.choice(len(emb), size=count, replace=False)
    return (emb[picks] + 0.05 * rng.standard_normal((count, DIM))).astype(np.float32)


# ------------------------------------------------------------------------------------------- results


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_flat_index_gives_the_exact_scan(metric, searches):
    ds = make_ds()
    ds.embedding.create_index("f", kind="flat", metric=metric)
    for q in queries(ds, 5, seed=1):
        searches.clear()
        view = ds.query(topk(q, metric))
        assert [(kind, m) for kind, m, _ in searches] == [("flat", metric)]
        searches.clear()
        exact = ds.query(topk(q, metric), exact=True)
        assert searches == []  # exact=True ignores vector indexes
        assert_same(view, exact)
        rows, scores = result(view)
        np.testing.assert_allclose(scores, scores_now(ds, np.array(rows), q, metric), rtol=1e-5, atol=1e-5)


def test_hnsw_recall_on_clustered_data(searches):
    ds = make_ds(n=20_000, seed=2)
    ds.embedding.create_index("h", kind="hnsw", metric="cosine", M=16, ef_construction=100, ef_search=64)
    hits = total = 0
    for q in queries(ds, 30, seed=3):
        got = set(ds.query(topk(q)).row_positions.tolist())
        want = set(ds.query(topk(q), exact=True).row_positions.tolist())
        hits, total = hits + len(got & want), total + len(want)
    assert {kind for kind, _, _ in searches} == {"hnsw"}
    assert hits / total >= 0.9


@pytest.mark.parametrize("kind", ["hnsw", "ivf_pq", "ivf_sq"])
def test_approximate_kinds_score_rows_exactly(kind, searches):
    ds = make_ds(seed=4)
    ds.embedding.create_index("v", kind=kind, metric="l2")
    for q in queries(ds, 3, seed=5):
        rows, scores = result(ds.query(topk(q, "l2")))
        assert len(rows) == K and len(set(rows)) == K
        assert np.all(np.diff(scores) >= 0)
        np.testing.assert_allclose(scores, scores_now(ds, np.array(rows), q, "l2"), rtol=1e-5, atol=1e-5)
    assert {k for k, _, _ in searches} == {kind}


def test_query_metric_picks_the_index_of_that_metric(searches):
    ds = make_ds(seed=6)
    ds.embedding.create_index("by_l2", kind="flat", metric="l2")
    ds.embedding.create_index("by_dot", kind="flat", metric="dot")
    q = queries(ds, 1, seed=7)[0]
    for metric in ("l2", "dot"):
        searches.clear()
        view = ds.query(topk(q, metric))
        assert [(kind, m) for kind, m, _ in searches] == [("flat", metric)]
        assert_same(view, ds.query(topk(q, metric), exact=True))


def test_metric_mismatch_scans_exactly(searches):
    ds = make_ds(seed=8)
    ds.embedding.create_index("cos", kind="hnsw", metric="cosine")
    for q in queries(ds, 3, seed=9):
        for metric in ("l2", "dot"):
            view = ds.query(topk(q, metric))
            assert searches == []
            assert_same(view, ds.query(topk(q, metric), exact=True))


def test_search_params_index_picks_among_two_indexes(searches):
    ds = make_ds(seed=10)
    ds.embedding.create_index("small", kind="hnsw", M=8)
    ds.embedding.create_index("big", kind="hnsw", M=24)
    q = queries(ds, 1, seed=11)[0]
    for name, m in (("small", 8), ("big", 24)):
        searches.clear()
        view = ds.query(topk(q), search_params={"index": name})
        assert [p["M"] for _, _, p in searches] == [m]
        rows, scores = result(view)
        np.testing.assert_allclose(scores, scores_now(ds, np.array(rows), q, "cosine"), rtol=1e-5)
    with pytest.raises(IndexNotFoundError):
        ds.query(topk(q), search_params={"index": "missing"})


def test_search_params_of_another_kind_is_an_index_error():
    ds = make_ds(seed=12)
    ds.embedding.create_index("h", kind="hnsw")
    q = queries(ds, 1, seed=13)[0]
    with pytest.raises(IndexDefinitionError, match="nprobe"):
        ds.query(topk(q), search_params={"nprobe": 8})
    with pytest.raises(IndexDefinitionError, match="bogus"):
        ds.query(topk(q), search_params={"bogus": 1})
    with pytest.raises(IndexDefinitionError):
        ds.query(topk(q), search_params={"ef_search": 0})
    rows, _ = result(ds.query(topk(q), search_params={"ef_search": 128, "refine": 2}))
    assert len(rows) == K


# ------------------------------------------------------------------------------ fresh, updated, deleted


def test_appended_rows_are_found(searches):
    ds = make_ds(seed=14)
    ds.embedding.create_index("h", kind="hnsw")
    q = queries(ds, 1, seed=15)[0]
    ds.extend({"embedding": (q + 1e-4)[None, :], "metadata": [{"group": 1}], "year": [2000], "text": ["near"]})
    info = ds.embedding.indexes["h"]
    assert (info["rows"], info["fresh_rows"], info["deleted_rows"]) == (N, 1, 0)
    rows, scores = result(ds.query(topk(q)))
    assert searches and rows[0] == N
    assert scores[0] > 0.999
    ds.embedding.rebuild_index("h")
    info = ds.embedding.indexes["h"]
    assert (info["rows"], info["fresh_rows"], info["deleted_rows"]) == (N + 1, 0, 0)
    assert result(ds.query(topk(q)))[0][0] == N


def test_flat_with_fresh_updated_and_deleted_rows_equals_exact(searches):
    ds = make_ds(seed=16)
    ds.embedding.create_index("f", kind="flat", metric="l2")
    qs = queries(ds, 4, seed=17)
    ds.extend({"embedding": clustered(np.random.default_rng(18), 50), "metadata": [{"group": 0}] * 50,
               "year": [2000] * 50, "text": ["new"] * 50})
    ds.pop([3, 4000])
    ds.embedding[10] = qs[0] + 1e-3
    info = ds.embedding.indexes["f"]
    assert info["fresh_rows"] > 50 and info["deleted_rows"] > 0
    assert info["rows"] + info["fresh_rows"] == len(ds)
    for q in qs:
        searches.clear()
        view = ds.query(topk(q, "l2"))
        assert searches
        assert_same(view, ds.query(topk(q, "l2"), exact=True))
    assert result(ds.query(topk(qs[0], "l2")))[0][0] == 10
    ds.embedding.rebuild_index("f")
    info = ds.embedding.indexes["f"]
    assert (info["rows"], info["fresh_rows"], info["deleted_rows"]) == (len(ds), 0, 0)
    for q in qs:
        assert_same(ds.query(topk(q, "l2")), ds.query(topk(q, "l2"), exact=True))


def test_updated_row_is_scored_with_its_new_vector():
    ds = make_ds(seed=19)
    ds.embedding.create_index("h", kind="hnsw")
    old = ds.embedding.numpy()[123].copy()
    assert result(ds.query(topk(old)))[0][0] == 123
    new = -old
    ds.embedding[123] = new
    rows, scores = result(ds.query(topk(old)))
    assert 123 not in rows  # its stale vector is never scored
    np.testing.assert_allclose(scores, scores_now(ds, np.array(rows), old, "cosine"), rtol=1e-5)
    rows, scores = result(ds.query(topk(new)))
    assert rows[0] == 123 and scores[0] > 0.9999


def test_deleted_rows_never_come_back():
    ds = make_ds(seed=20)
    ds.embedding.create_index("h", kind="hnsw")
    emb = ds.embedding.numpy()
    target = emb[500].copy()
    texts_before = ds.text.numpy(aslist=True)
    ds.pop(500)
    view = ds.query(topk(target))
    assert "doc 500" not in view.text.numpy(aslist=True)
    rows, scores = result(view)
    np.testing.assert_allclose(scores, scores_now(ds, np.array(rows), target, "cosine"), rtol=1e-5)
    assert texts_before[501] == ds.text.numpy(aslist=True)[500]


# ------------------------------------------------------------------------------------------- filters


FILTERED_N = 15_000


@pytest.mark.parametrize("key,value,passing", [("group", 7, FILTERED_N // 100), ("tenth", 3, FILTERED_N // 10),
                                               ("third", 1, FILTERED_N // 3)])
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filtered_search_with_json_index(kind, key, value, passing, searches):
    ds = make_ds(n=FILTERED_N, seed=21)
    ds.metadata.create_index("meta", kind="json", paths=["group", "tenth", "third"])
    ds.embedding.create_index("v", kind=kind)
    where = f"metadata['{key}'] == {value}"
    groups = [m[key] for m in ds.metadata.numpy(aslist=True)]
    assert sum(g == value for g in groups) == passing
    for q in queries(ds, 3, seed=22):
        searches.clear()
        view = ds.query(topk(q, where=where))
        # A third of the rows is more than the executor scores exactly: the index searches with a row filter.
        assert bool(searches) == (passing > EXACT_FILTERED_ROWS)
        rows, scores = result(view)
        assert len(rows) == K
        assert all(groups[r] == value for r in rows)
        np.testing.assert_allclose(scores, scores_now(ds, np.array(rows), q, "cosine"), rtol=1e-5)
        if kind == "flat":
            assert_same(view, ds.query(topk(q, where=where), exact=True))


@pytest.mark.parametrize("where", ["year == 1995", "metadata['third'] != 1", "text == 'doc 42'"])
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filter_on_unindexed_keys_is_applied(kind, where):
    # No key index on the filtered tensor or path: the WHERE is evaluated by scanning, and must still hold.
    ds = make_ds(seed=34)
    ds.embedding.create_index("v", kind=kind)
    expected = set(ds.query(f"select * where {where}").row_positions.tolist())
    assert 1 <= len(expected) < N
    texts = [topk(q, where=where) for q in queries(ds, 3, seed=35)]
    for text, batched in zip(texts, ds.query_batch(texts), strict=True):
        for view in (ds.query(text), batched):
            rows, scores = result(view)
            assert set(rows) <= expected, f"rows failing {where!r} came back: {sorted(set(rows) - expected)[:5]}"
            assert len(rows) == min(K, len(expected))
            if kind == "flat":
                assert_same(view, ds.query(text, exact=True))


def test_filter_with_fewer_rows_than_k_returns_exactly_those():
    ds = make_ds(seed=23)
    ds.extend({"embedding": clustered(np.random.default_rng(24), 3), "metadata": [{"group": 999}] * 3,
               "year": [1] * 3, "text": ["rare"] * 3})
    ds.metadata.create_index("meta", kind="json", paths=["group"])
    ds.embedding.create_index("h", kind="hnsw")
    q = queries(ds, 1, seed=25)[0]
    assert sorted(ds.query(topk(q, where="metadata['group'] == 999")).row_positions.tolist()) == [N, N + 1, N + 2]
    assert ds.query(topk(q, where="metadata['group'] == 12345")).row_positions.tolist() == []


def test_filter_sees_fresh_rows_that_pass():
    ds = make_ds(seed=26)
    ds.metadata.create_index("meta", kind="json", paths=["group"])
    ds.embedding.create_index("h", kind="hnsw")
    q = queries(ds, 1, seed=27)[0]
    ds.extend({"embedding": q[None, :], "metadata": [{"group": 5}], "year": [1], "text": ["fresh"]})
    ds.extend({"embedding": q[None, :], "metadata": [{"group": 6}], "year": [1], "text": ["other"]})
    view = ds.query(topk(q, where="metadata['group'] == 5"))
    assert view.text.numpy(aslist=True)[0] == "fresh"
    assert "other" not in view.text.numpy(aslist=True)


def test_exact_ignores_vector_indexes_but_key_indexes_give_right_where():
    ds = make_ds(seed=28)
    plain = ds.query("select * where metadata['group'] == 4 or year between 1992 and 1993").row_positions.tolist()
    ds.metadata.create_index("meta", kind="json", paths=["group"])
    ds.year.create_index("y", kind="scalar")
    ds.embedding.create_index("h", kind="hnsw")
    for exact in (False, True):
        got = ds.query("select * where metadata['group'] == 4 or year between 1992 and 1993", exact=exact)
        assert got.row_positions.tolist() == plain
        assert ds.query("select * where year > 2018", exact=exact).row_positions.tolist() == \
            np.flatnonzero(1990 + np.arange(N) % 30 > 2018).tolist()
        assert ds.query("select * where metadata['group'] in (1, 2)", exact=exact).row_positions.tolist() == \
            np.flatnonzero(np.isin(np.arange(N) % 100, [1, 2])).tolist()


# --------------------------------------------------------------------------------- batch and threads


def test_query_batch_equals_single_queries(searches):
    ds = make_ds(seed=29)
    ds.metadata.create_index("meta", kind="json", paths=["third"])
    ds.embedding.create_index("h", kind="hnsw")
    qs = queries(ds, 6, seed=30)
    for where in (None, "metadata['third'] == 2"):
        texts = [topk(q, where=where) for q in qs]
        batch = ds.query_batch(texts)
        assert searches
        assert len(batch) == len(texts)
        for text, view in zip(texts, batch, strict=True):
            assert_same(view, ds.query(text))


def test_queries_while_another_thread_appends_and_rebuilds():
    start = 3000
    ds = make_ds(n=start, seed=31)
    ds.embedding.create_index("f", kind="flat")
    qs = queries(ds, 4, seed=32)
    extra = clustered(np.random.default_rng(33), 600)
    batches = [extra[i: i + 100] for i in range(0, len(extra), 100)]
    lengths = [start + 100 * i for i in range(len(batches) + 1)]
    seen: list[tuple[int, list[int], np.ndarray]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader():
        try:
            i = 0
            while not done.is_set() or i < 8:
                view = ds.query(topk(qs[i % len(qs)]))
                seen.append((i % len(qs), *result(view)))
                i += 1
        except BaseException as e:  # noqa: BLE001 - any failure in the thread fails the test
            errors.append(e)

    def writer():
        try:
            for b, vectors in enumerate(batches):
                ds.extend({"embedding": vectors, "metadata": [{"group": 0}] * len(vectors),
                           "year": [1] * len(vectors), "text": ["t"] * len(vectors)})
                if b % 2:
                    ds.embedding.rebuild_index("f")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            done.set()

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(ds) == lengths[-1] and len(seen) >= 8
    final = np.asarray(ds.embedding.numpy(), dtype=np.float64)
    for qi, rows, scores in seen:
        q = qs[qi].astype(np.float64)
        exact = final @ q / (np.linalg.norm(final, axis=1) * np.linalg.norm(q))
        np.testing.assert_allclose(scores, exact[rows], rtol=1e-5)
        # The result is the exact top-k of one published snapshot (rows are only appended).
        tops = [np.argsort(-exact[:m], kind="stable")[:K].tolist() for m in lengths]
        assert rows in tops
