"""VectorStore.search(mode="text" | "hybrid"): BM25 alone, and BM25 fused with the embedding ranking.

The embedding is a lookup table, so each test knows both rankings: "star" is best on both sides,
"lex" matches the query word but its embedding points away from the query, "vec" has no query
word but the nearest embedding, "mid" is a weak match on both sides, and fillers match neither.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tensordb.deep_memory.fusion import FusionChoice, Ranking
from tensordb.deep_memory.metrics import evaluate_rankings
from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.errors import IndexDefinitionError, IndexNotFoundError, SampleError, TensorDBError
from tensordb.vectorstore import VectorStore
from tensordb.vectorstore.index_params import TEXT_INDEX_NAME

DIM = 6
QUERY = "flock"


class TableEmbedding:
    """A deterministic embedding function: each known text's vector, from a table."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.table]
        if missing:
            raise KeyError(f"TableEmbedding has no vector for {missing[:3]}")
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def unit(*parts: tuple[int, float], seed: int | None = None) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    if seed is not None:  # a little noise in the last three axes, so no two fillers tie
        v[3:] = np.random.default_rng(seed).uniform(0.1, 1.0, DIM - 3)
    for axis, value in parts:
        v[axis] += value
    return v / np.linalg.norm(v)


DOCS = {
    "star": ("flock flock flock", unit((0, 1.0)), "special"),
    "lex": ("a flock of starlings", unit((0, -1.0)), "doc"),
    "vec": ("birds gathering at dusk", unit((0, 0.95), (1, 0.3)), "doc"),
    "mid": ("the flock rests at noon in the long grass by the river", unit((0, 0.5), (2, 0.8)), "doc"),
    **{f"f{i}": (f"notes about topic number{i} and more words", unit((0, 0.3), seed=i), "doc") for i in range(10)},
}
TABLE = {text: vec for text, vec, _ in DOCS.values()} | {QUERY: unit((0, 1.0)), "": unit((1, 1.0)),
                                                          "   ": unit((1, 1.0))}


def make_store(text_index="english", embedding_function=True, explicit=False, path=None) -> VectorStore:
    fn = TableEmbedding(TABLE) if embedding_function else None
    vs = VectorStore(path or f"mem://hybrid-{uuid.uuid4().hex}", embedding_function=fn, text_index=text_index,
                     overwrite=True)
    texts = [t for t, _, _ in DOCS.values()]
    extra = {"embedding": np.stack([v for _, v, _ in DOCS.values()])} if explicit or fn is None else {}
    vs.add(text=texts, id=list(DOCS), metadata=[{"kind": kind, "n": i} for i, (_, _, kind) in enumerate(DOCS.values())],
           **extra)
    return vs


@pytest.fixture
def store(vs_path) -> VectorStore:
    return make_store(path=vs_path)


def bm25_ranking(vs: VectorStore, text: str) -> list[tuple[str, float]]:
    """BM25 through TQL, chunks with no query term left out."""
    view = vs.dataset.query(f"select * order by bm25_similarity(text, '{text}') desc limit 1000")
    pairs = zip(view.id.numpy(aslist=True), view.score.numpy().tolist(), strict=True)
    return [(i, s) for i, s in pairs if s > 0]


def restricted(ids: list[str], to) -> list[str]:
    allowed = set(to)
    return [i for i in ids if i in allowed]


# -- text mode -----------------------------------------------------------------------------------
def test_text_mode_ranks_by_bm25_and_leaves_out_chunks_without_a_query_term(store):
    found = store.search(embedding_data=QUERY, k=10, mode="text")
    expected = bm25_ranking(store, QUERY)
    assert found["id"] == [i for i, _ in expected] and set(found["id"]) == {"star", "lex", "mid"}
    assert found["id"][0] == "star" and found["id"][-1] == "mid"  # term frequency 3, then the long doc last
    assert found["score"] == pytest.approx([s for _, s in expected])
    assert found["text"][0] == "flock flock flock" and found["metadata"][0]["kind"] == "special"


def test_text_mode_needs_no_embedding_function():
    vs = make_store(embedding_function=False)
    assert vs.search(embedding_data="starlings", k=3, mode="text")["id"] == ["lex"]


def test_text_mode_with_k_above_the_matches_returns_the_matches(store):
    assert len(store.search(embedding_data=QUERY, k=50, mode="text")["id"]) == 3
    assert store.search(embedding_data="zebra", k=5, mode="text")["id"] == []


# -- hybrid mode --------------------------------------------------------------------------------------
def test_hybrid_finds_chunks_either_side_finds(store):
    vector = store.search(embedding_data=QUERY, k=4)["id"]
    text = store.search(embedding_data=QUERY, k=4, mode="text")["id"]
    assert "lex" not in vector and "vec" not in text
    hybrid = store.search(embedding_data=QUERY, k=4, mode="hybrid", fusion="rrf")
    assert hybrid["id"][0] == "star" and {"lex", "vec"} <= set(hybrid["id"])
    assert np.all(np.diff(hybrid["score"]) <= 0)
    # RRF with rank constant 60: star is first on both sides.
    assert hybrid["score"][0] == pytest.approx(2 / 61)


def test_hybrid_default_fusion_keeps_the_best_of_both(store):
    hybrid = store.search(embedding_data=QUERY, k=len(store), mode="hybrid")
    assert hybrid["id"][0] == "star" and sorted(hybrid["id"]) == sorted(DOCS)


def test_convex_alpha_one_is_the_vector_order_and_zero_the_text_order(store):
    n = len(store)
    vector = store.search(embedding_data=QUERY, k=n)["id"]
    text = store.search(embedding_data=QUERY, k=n, mode="text")["id"]
    dense_only = store.search(embedding_data=QUERY, k=n, mode="hybrid", fusion="convex", alpha=1.0)["id"]
    text_only = store.search(embedding_data=QUERY, k=n, mode="hybrid", fusion="convex", alpha=0.0)["id"]
    assert dense_only == vector
    # Every chunk BM25 found comes first, in BM25's order (its weakest too: above those it did not find).
    assert text_only[: len(text)] == text
    # alpha alone means convex fusion.
    assert store.search(embedding_data=QUERY, k=n, mode="hybrid", alpha=1.0)["id"] == vector


@pytest.mark.parametrize("metric", ["l2", "dot", "l1", "max"])
def test_distances_are_turned_into_similarities_before_fusion(store, metric):
    n = len(store)
    vector = store.search(embedding_data=QUERY, k=n, distance_metric=metric)["id"]
    assert store.search(embedding_data=QUERY, k=n, distance_metric=metric, mode="hybrid", alpha=1.0)["id"] == vector


def test_deleted_chunks_are_gone_from_both_sides(store):
    store.delete(ids=["star"])
    assert store.search(embedding_data=QUERY, k=5, mode="text")["id"] == ["lex", "mid"]
    assert "star" not in store.search(embedding_data=QUERY, k=20, mode="hybrid")["id"]


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_a_read_only_store_searches_in_every_mode(vs_path):
    vs = VectorStore(vs_path, embedding_function=TableEmbedding(TABLE), text_index="english", overwrite=True)
    vs.add(text=[t for t, _, _ in DOCS.values()], id=list(DOCS))
    expected = {mode: vs.search(embedding_data=QUERY, k=4, mode=mode)["id"] for mode in ("text", "hybrid")}
    vs.close()
    again = VectorStore(vs_path, embedding_function=TableEmbedding(TABLE), read_only=True)
    assert {mode: again.search(embedding_data=QUERY, k=4, mode=mode)["id"] for mode in expected} == expected


def test_hybrid_with_k_above_the_store_returns_every_chunk_once(store):
    found = store.search(embedding_data=QUERY, k=100, mode="hybrid")["id"]
    assert len(found) == len(set(found)) == len(store)


def test_sparse_top_k_limits_the_text_candidates(store):
    # BUG: the text side fetches max(k, sparse_top_k) rows (vector_store._text_or_hybrid_search), so a sparse_top_k
    # below k is silently ignored, though search's docstring says it "sets how many text candidates are fused".
    one = store.search(embedding_data=QUERY, k=len(store), mode="hybrid", fusion="rrf", sparse_top_k=1)
    scores = dict(zip(one["id"], one["score"], strict=True))
    # Only BM25's best (star) gets a text share; lex, second by BM25, is ranked by its embedding alone (last).
    assert scores["star"] == pytest.approx(2 / 61) and one["id"][-1] == "lex"
    assert scores["lex"] == pytest.approx(1 / (60 + len(store)))


def test_return_view_in_hybrid_mode_matches_the_dict(store):
    found = store.search(embedding_data=QUERY, k=6, mode="hybrid")
    view = store.search(embedding_data=QUERY, k=6, mode="hybrid", return_view=True)
    assert view.id.numpy(aslist=True) == found["id"]
    assert view.text.numpy(aslist=True) == found["text"]
    assert view.score.numpy().tolist() == pytest.approx(found["score"])  # the fused scores come along


def test_search_params_choose_the_text_index_and_leave_the_vector_side_alone(store):
    store.dataset.text.create_index("plain", kind="bm25", stemming=False, stop_words=False)
    by_name = {name: store.search(embedding_data="flocks", k=3, mode="text", search_params={"index": name})["id"]
               for name in (TEXT_INDEX_NAME, "plain")}
    assert by_name[TEXT_INDEX_NAME][0] == "star" and by_name["plain"] == []  # unstemmed, "flocks" is no word here
    hybrid = store.search(embedding_data=QUERY, k=4, mode="hybrid", search_params={"index": "plain"})
    assert hybrid["id"] == store.search(embedding_data=QUERY, k=4, mode="hybrid")["id"]


def test_hybrid_with_an_explicit_embedding(store):
    by_text = store.search(embedding_data=QUERY, k=5, mode="hybrid")
    by_vector = store.search(embedding_data=QUERY, embedding=TABLE[QUERY], k=5, mode="hybrid")
    assert by_vector["id"] == by_text["id"]


# -- filters apply to both sides before fusion ------------------------------------------------------------
@pytest.mark.parametrize("how", ["dict", "tql", "ids", "callable"])
def test_a_filtered_out_chunk_never_appears_and_ranks_close_up(store, how):
    others = [i for i in DOCS if i != "star"]
    kwargs = {"dict": {"filter": {"kind": "doc"}}, "tql": {"filter": "metadata['kind'] == 'doc'"},
              "ids": {"ids": others}, "callable": {"filter": lambda row: row["metadata"]["kind"] == "doc"}}[how]
    n = len(store)
    text = store.search(embedding_data=QUERY, k=n, mode="text", **kwargs)
    assert text["id"] == ["lex", "mid"]
    hybrid = store.search(embedding_data=QUERY, k=n, mode="hybrid", fusion="rrf", **kwargs)
    assert "star" not in hybrid["id"] and sorted(hybrid["id"]) == sorted(others)
    scores = dict(zip(hybrid["id"], hybrid["score"], strict=True))
    # With star gone before fusion, vec is 1st by embedding and lex 1st by BM25 (last by embedding).
    assert scores["vec"] == pytest.approx(1 / 61)
    assert scores["lex"] == pytest.approx(1 / 61 + 1 / (60 + len(others)))
    convex = store.search(embedding_data=QUERY, k=n, mode="hybrid", fusion="convex", alpha=0.5, **kwargs)
    assert "star" not in convex["id"]
    assert dict(zip(convex["id"], convex["score"], strict=True))["lex"] == pytest.approx(0.5)


def test_ids_and_filter_together(store):
    found = store.search(embedding_data=QUERY, k=10, mode="hybrid", ids=["star", "lex", "vec", "f1"],
                         filter={"kind": "doc"})
    assert sorted(found["id"]) == ["f1", "lex", "vec"]


# -- the text index policy -----------------------------------------------------------------------------------
def test_the_text_index_is_built_on_first_add_and_rebuilt_when_stale():
    fn = TableEmbedding(TABLE | {f"new{i} flock": unit((0, 0.1), (1, 1.0)) for i in range(10)} | {
        "new0": unit((1, 1.0))})
    vs = VectorStore(f"mem://hybrid-{uuid.uuid4().hex}", embedding_function=fn, text_index="english", overwrite=True)
    assert TEXT_INDEX_NAME not in vs.dataset.indexes  # nothing to index yet
    texts = [t for t, _, _ in DOCS.values()]
    vs.add(text=texts, id=list(DOCS))
    info = vs.dataset.indexes[TEXT_INDEX_NAME]
    assert info["kind"] == "bm25" and info["tensor"] == "text" and info["rows"] == len(DOCS)

    vs.add(text=["new0 flock"], id=["new0"])  # 1 fresh row of 14: below the stale share, searched beside the index
    info = vs.dataset.indexes[TEXT_INDEX_NAME]
    assert info["fresh_rows"] == 1 and info["rows"] == len(DOCS)
    assert "new0" in vs.search(embedding_data=QUERY, k=10, mode="text")["id"]
    assert "new0" in vs.search(embedding_data="new0", k=3, mode="hybrid")["id"][:1]

    vs.add(text=[f"new{i} flock" for i in range(1, 6)], id=[f"new{i}" for i in range(1, 6)])  # 6 of 14: stale
    info = vs.dataset.indexes[TEXT_INDEX_NAME]
    assert info["fresh_rows"] == 0 and info["rows"] == len(DOCS) + 6
    assert set(vs.search(embedding_data=QUERY, k=20, mode="text")["id"]) == {"star", "lex", "mid"} | {
        f"new{i}" for i in range(6)}


def test_rows_added_after_the_index_are_found(store):
    store.add(text=["starlings flock at dusk"], id=["late"], embedding=[unit((0, 0.2), (1, 1.0))])
    assert store.dataset.indexes[TEXT_INDEX_NAME]["fresh_rows"] == 1
    text = store.search(embedding_data="starlings", k=5, mode="text")["id"]
    assert sorted(text) == ["late", "lex"]
    assert "late" in store.search(embedding_data=QUERY, k=len(store), mode="hybrid")["id"]
    assert bm25_ranking(store, "starlings") == list(zip(text, store.search(
        embedding_data="starlings", k=5, mode="text")["score"], strict=True))


def test_a_bm25_index_made_by_hand_serves_text_search():
    vs = make_store(text_index=None)
    vs.dataset.text.create_index("mine", kind="bm25")
    assert vs.search(embedding_data=QUERY, k=3, mode="text")["id"][0] == "star"


# -- errors leave the store as it was -------------------------------------------------------------------------
def state(vs: VectorStore) -> tuple:
    return (len(vs), vs.dataset.indexes, vs.dataset.commit_id,
            vs.search(embedding_data=QUERY, k=5, mode="hybrid", fusion="convex", alpha=0.5))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mode": "fuzzy"}, SampleError, "mode must be one of"),
    ({"mode": "hybrid", "alpha": 1.5}, SampleError, "1.5"),
    ({"mode": "hybrid", "alpha": -0.1}, SampleError, "-0.1"),
    ({"mode": "hybrid", "fusion": "sum"}, SampleError, "'sum'"),
    ({"mode": "hybrid", "fusion": "rrf", "alpha": 0.3}, SampleError, "takes no alpha"),
    ({"mode": "hybrid", "rrf_k": 0}, SampleError, "rrf_k must be a positive integer"),
    ({"fusion": "rrf"}, SampleError, "apply to mode='hybrid'"),
    ({"mode": "vector", "alpha": 0.5}, SampleError, "apply to mode='hybrid'"),
    ({"mode": "text", "fusion": "convex"}, SampleError, "apply to mode='hybrid'"),
    ({"mode": "hybrid", "sparse_top_k": 0}, SampleError, "sparse_top_k must be a positive integer"),
    ({"mode": "hybrid", "sparse_top_k": True}, SampleError, "sparse_top_k must be a positive integer"),
    ({"mode": "text", "embedding_data": ""}, SampleError, "need the query text"),
    ({"mode": "text", "embedding_data": "   "}, SampleError, "need the query text"),
    ({"mode": "hybrid", "embedding_data": "   "}, SampleError, "need the query text"),
    ({"mode": "text", "embedding_data": None}, SampleError, "need the query text"),
    ({"mode": "text", "embedding": TABLE[QUERY]}, SampleError, "takes no embedding"),
    ({"mode": "text", "deep_memory": True}, SampleError, "deep_memory"),
    ({"mode": "hybrid", "k": 0}, SampleError, "k must be a positive integer"),
    ({"mode": "hybrid", "query": "select * limit 1", "embedding_data": None}, SampleError, "ranks itself"),
])
def test_bad_arguments_are_refused_and_change_nothing(store, kwargs, error, message):
    before = state(store)
    call = {"embedding_data": QUERY, "k": 3, **kwargs}
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        store.search(**call)
    assert str(e.value)
    assert state(store) == before


@pytest.mark.parametrize("mode", ["text", "hybrid"])
def test_no_text_index_says_how_to_make_one(mode):
    vs = make_store(text_index=None)
    before = (len(vs), vs.dataset.indexes, vs.search(embedding_data=QUERY, k=3)["id"])
    with pytest.raises(IndexNotFoundError) as e:
        vs.search(embedding_data=QUERY, k=3, mode=mode)
    assert "text_index=" in str(e.value) and "create_index" in str(e.value)
    assert (len(vs), vs.dataset.indexes, vs.search(embedding_data=QUERY, k=3)["id"]) == before


def test_hybrid_without_text_index_or_embedding_function_names_both():
    vs = make_store(text_index=None, embedding_function=False)
    with pytest.raises(IndexNotFoundError) as e:
        vs.search(embedding_data=QUERY, k=3, mode="hybrid")
    message = str(e.value)
    assert "bm25 index" in message and "embedding_function" in message and "embedding=" in message


def test_hybrid_with_a_text_index_but_no_embedding_function_asks_for_one():
    vs = make_store(embedding_function=False)
    with pytest.raises(TensorDBError, match="embedding_function"):
        vs.search(embedding_data=QUERY, k=3, mode="hybrid")
    assert vs.search(embedding_data=QUERY, embedding=TABLE[QUERY], k=1, mode="hybrid")["id"] == ["star"]


@pytest.mark.parametrize("text_index, message", [("klingon", "klingon"), (5, "5"), ({"k1": -1}, "k1")])
def test_a_bad_text_index_is_refused_at_construction(text_index, message):
    path = f"mem://hybrid-{uuid.uuid4().hex}"
    with pytest.raises(IndexDefinitionError, match=message):
        VectorStore(path, embedding_function=TableEmbedding(TABLE), text_index=text_index)


# -- Deep Memory ----------------------------------------------------------------------------------------------
N_DOCS, N_QUERIES, DM_DIM = 80, 60, 16


def _dm_corpus(seed: int = 0):
    """Docs of random pseudo-words with random embeddings; each query: one of its document's words and two
    random ones (BM25 alone ranks it first about half the time), embedded as a rotated, noisy copy of the
    document's vector (so training has something to learn)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    vocab = sorted({"".join(rng.choice(letters, 6)) for _ in range(400)})
    docs = [" ".join(rng.choice(vocab, 8, replace=False)) for _ in range(N_DOCS)]
    vectors = rng.standard_normal((N_DOCS, DM_DIM)).astype(np.float32)
    rot, _ = np.linalg.qr(rng.standard_normal((DM_DIM, DM_DIM)))
    mix = 0.5 * np.eye(DM_DIM) + 0.5 * rot
    table = dict(zip(docs, vectors, strict=True))
    queries, relevance = [], []
    while len(queries) < N_QUERIES:
        target = int(rng.integers(N_DOCS))
        words = [str(rng.choice(docs[target].split()))] + list(rng.choice(vocab, 2))
        text = " ".join(words)
        if text in table:
            continue
        table[text] = (vectors[target] @ mix.T + 0.8 * rng.standard_normal(DM_DIM)).astype(np.float32)
        queries.append(text)
        relevance.append([(f"d{target}", 1.0)])
    return docs, table, queries, relevance


@pytest.fixture(scope="module")
def trained():
    docs, table, queries, relevance = _dm_corpus()
    vs = VectorStore(f"mem://hybrid-dm-{uuid.uuid4().hex}", embedding_function=TableEmbedding(table),
                     text_index="english", overwrite=True)
    vs.add(text=docs, id=[f"d{i}" for i in range(N_DOCS)])
    job = vs.deep_memory.train(queries, relevance, max_seconds=30)
    status = vs.deep_memory.wait(job, timeout=120)
    assert status["status"] == "completed", status
    return vs, job, queries, relevance


def test_a_blank_training_question_trains_beside_a_text_index():
    docs, table, queries, relevance = _dm_corpus(seed=1)
    table["   "] = table[queries[0]]
    vs = VectorStore(f"mem://hybrid-dm-{uuid.uuid4().hex}", embedding_function=TableEmbedding(table),
                     text_index="english", overwrite=True)
    vs.add(text=docs, id=[f"d{i}" for i in range(N_DOCS)])
    job = vs.deep_memory.train(["   ", *queries[1:]], relevance, max_seconds=30)
    status = vs.deep_memory.wait(job, timeout=120)
    assert status["status"] == "completed", status  # it failed: the blank question had no BM25 ranking
    assert status["fusion"]


def test_status_shows_the_hybrid_fusion(trained, capsys):
    vs, job, _, _ = trained
    info = vs.deep_memory.status(job)
    printed = capsys.readouterr().out
    learned = FusionChoice.from_dict(vs.deep_memory.model().metadata["fusion"])
    assert info["fusion"] == learned.describe()
    assert "hybrid fusion" in printed and learned.describe()[:30] in printed


def _recomposed(vs: VectorStore, question: str, choice: FusionChoice, k: int) -> list[str]:
    """Hybrid search with Deep Memory rebuilt from its parts: the model's ranking and BM25's, fused as chosen."""
    dense = vs.search(embedding_data=question, k=100, deep_memory=True)
    text = vs.search(embedding_data=question, k=100, mode="text")
    fused = choice.apply(Ranking(dense["id"], np.asarray(dense["score"])), Ranking(text["id"],
                                                                                   np.asarray(text["score"])))
    return [str(i) for i in fused.keys[:k]]


def test_hybrid_deep_memory_search_uses_the_learned_fusion(trained):
    vs, _, queries, _ = trained
    learned = FusionChoice.from_dict(vs.deep_memory.model().metadata["fusion"])
    for question in queries[:8]:
        found = vs.search(embedding_data=question, k=10, mode="hybrid", deep_memory=True)["id"]
        assert found == _recomposed(vs, question, learned, 10)
        if learned.method in ("rrf", "convex"):  # the same fusion, given explicitly
            explicit = {"fusion": learned.method, "rrf_k": learned.rrf_k}
            if learned.method == "convex":
                explicit["alpha"] = learned.alpha
            assert vs.search(embedding_data=question, k=10, mode="hybrid", deep_memory=True, **explicit)["id"] == found


def test_a_learned_convex_fusion_is_what_hybrid_deep_memory_applies(trained, monkeypatch):
    # Whatever training chose, swap in a learned convex fusion at alpha 0.2: search must apply exactly that.
    vs, _, queries, _ = trained
    real = vs.deep_memory.model()
    swapped = DeepMemoryModel(real.query_matrix, real.memory_ids, real.memory_vectors,
                              {**real.metadata, "fusion": FusionChoice("convex", 0.2, 60, {}).to_dict()})
    monkeypatch.setattr(type(vs.deep_memory), "model", lambda self: swapped)
    for question in queries[:5]:
        learned = vs.search(embedding_data=question, k=10, mode="hybrid", deep_memory=True)
        explicit = vs.search(embedding_data=question, k=10, mode="hybrid", deep_memory=True, alpha=0.2)
        assert learned["id"] == explicit["id"] and learned["score"] == pytest.approx(explicit["score"])
    # fusion/alpha given beat the learned one.
    question = queries[0]
    assert vs.search(embedding_data=question, k=10, mode="hybrid", deep_memory=True, alpha=1.0)["id"] == vs.search(
        embedding_data=question, k=10, deep_memory=True)["id"]


def test_evaluate_hybrid_equals_what_hybrid_search_ranks(trained):
    vs, _, queries, relevance = trained
    ks = (1, 5, 10)
    out = vs.deep_memory.evaluate(queries, relevance, top_k=ks, show=False, mode="hybrid")
    assert set(out) == {"without model", "with model"}
    judged = [dict(r) for r in relevance]
    for label, deep_memory in (("without model", False), ("with model", True)):
        ranked = [vs.search(embedding_data=q, k=10, mode="hybrid", deep_memory=deep_memory)["id"] for q in queries]
        metrics = evaluate_rankings(ranked, judged, ks)
        for k in ks:
            assert out[label][f"recall@{k}"] == pytest.approx(metrics[f"recall@{k}"]), (label, k)
        assert out[label]["ndcg@10"] == pytest.approx(metrics["ndcg@10"]), label
    # And differs from the vector-mode evaluation where BM25 changes the rankings.
    vector = vs.deep_memory.evaluate(queries, relevance, top_k=ks, show=False)
    plain = [vs.search(embedding_data=q, k=10)["id"] for q in queries]
    assert vector["without model"]["recall@10"] == pytest.approx(evaluate_rankings(plain, judged, ks)["recall@10"])


def test_evaluate_refuses_an_unknown_mode(trained):
    vs, _, queries, relevance = trained
    with pytest.raises(SampleError, match="mode must be 'vector' or 'hybrid'"):
        vs.deep_memory.evaluate(queries, relevance, show=False, mode="text")


def test_evaluate_hybrid_without_a_text_index_is_refused():
    docs, table, queries, relevance = _dm_corpus(seed=1)
    vs = VectorStore(f"mem://hybrid-dm-{uuid.uuid4().hex}", embedding_function=TableEmbedding(table), overwrite=True)
    vs.add(text=docs, id=[f"d{i}" for i in range(N_DOCS)])
    job = vs.deep_memory.train(queries[:20], relevance[:20], max_seconds=5)
    status = vs.deep_memory.wait(job, timeout=60)
    assert status["status"] == "completed" and not status["fusion"], status  # no text index: no fusion learned
    with pytest.raises(SampleError, match="text index"):
        vs.deep_memory.evaluate(queries, relevance, show=False, mode="hybrid")
    assert set(vs.deep_memory.evaluate(queries, relevance, show=False)) == {"without model", "with model"}
