"""TensorDB's search modes (mode="vector"|"text"|"hybrid") against the real langchain-core, offline,
on the shared corpus of ``concept_corpus`` (lexical and dense signals that disagree)."""

from __future__ import annotations

import uuid

import pytest
from concept_corpus import DOCS, KEYWORD_QUERY, concept_vector
from langchain_core.embeddings import Embeddings

from tensordb.errors import IndexNotFoundError, SampleError
from tensordb.integrations.langchain import TensorDB
from tensordb.integrations.mmr import maximal_marginal_relevance


class ConceptEmbeddings(Embeddings):
    """The shared concept embedding as a LangChain model."""

    def embed_query(self, text: str) -> list[float]:
        return concept_vector(text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


EMBEDDINGS = ConceptEmbeddings()


def make_db(text_index: str | None = "english") -> TensorDB:
    extra = {} if text_index is None else {"text_index": text_index}
    return TensorDB.from_texts([t for t, _ in DOCS.values()], EMBEDDINGS,
                               metadatas=[{"topic": topic} for _, topic in DOCS.values()], ids=list(DOCS),
                               path=f"mem://langchain-modes-{uuid.uuid4().hex}", **extra)


@pytest.fixture(scope="module")
def db() -> TensorDB:
    return make_db()


def ids(docs) -> list[str]:
    return [d[0].id if isinstance(d, tuple) else d.id for d in docs]


# -- each mode finds what its signal sees ----------------------------------------------------------
def test_each_mode_finds_what_its_signal_sees(db):
    vector = ids(db.similarity_search(KEYWORD_QUERY, k=3))
    assert set(vector) == {"car", "car_dup", "truck"}  # the same as the default mode
    assert ids(db.similarity_search(KEYWORD_QUERY, k=3, mode="vector")) == vector
    assert ids(db.similarity_search(KEYWORD_QUERY, k=3, mode="text")) == ["synth"]  # no other text has a term
    # Top 2 of the fusion: the first of each ranking, which neither ranking has in its own top 2.
    assert set(ids(db.similarity_search(KEYWORD_QUERY, k=2, mode="hybrid"))) == {vector[0], "synth"}
    # A paraphrase: no stored text says "automobile" or "maintenance"; only the embedding finds car repair.
    assert db.similarity_search("automobile maintenance", k=3, mode="text") == []
    assert set(ids(db.similarity_search("automobile maintenance", k=3))) == {"car", "car_dup", "truck"}
    # The retriever passes the mode along.
    retriever = db.as_retriever(search_kwargs={"k": 2, "mode": "hybrid"})
    assert set(ids(retriever.invoke(KEYWORD_QUERY))) == {vector[0], "synth"}


def test_scores_are_the_modes_own(db):
    vs = db.vectorstore
    text = db.similarity_search_with_score("notes", k=4, mode="text")
    expected = vs.search(embedding_data="notes", k=4, mode="text")
    assert ids(text) == expected["id"] and [s for _, s in text] == pytest.approx(expected["score"])
    assert text[0][0].page_content == DOCS["piano"][0] and text[0][0].metadata == {"topic": "music"}
    hybrid = db.similarity_search_with_score("recipe notes", k=4, mode="hybrid", fusion="convex", alpha=0.3)
    expected = vs.search(embedding_data="recipe notes", k=4, mode="hybrid", fusion="convex", alpha=0.3)
    assert ids(hybrid) == expected["id"] and [s for _, s in hybrid] == pytest.approx(expected["score"])


@pytest.mark.parametrize("text", [KEYWORD_QUERY, "notes", "recipe notes", "car brakes notes"])
def test_alpha_one_is_the_vector_order_and_alpha_zero_the_text_order(db, text):
    everything = len(DOCS)
    vector = ids(db.similarity_search(text, k=everything))
    assert ids(db.similarity_search(text, k=everything, mode="hybrid", alpha=1.0)) == vector
    lexical = db.similarity_search_with_score(text, k=everything, mode="text")
    assert len({s for _, s in lexical}) == len(lexical)  # no ties: the order is the BM25 order
    # BM25's lowest hit scores 0 after min-max scaling, like the texts it did not find: compare above it.
    above_lowest = len(lexical) - 1
    text_only = ids(db.similarity_search(text, k=everything, mode="hybrid", alpha=0.0))
    assert text_only[:above_lowest] == ids(lexical)[:above_lowest]


def test_fusion_rrf_k_and_sparse_top_k_pass_through(db):
    vs = db.vectorstore
    for options in ({"fusion": "rrf", "rrf_k": 1}, {"sparse_top_k": 1}, {"fusion": "convex"}):
        got = db.similarity_search_with_score("recipe notes", k=5, mode="hybrid", **options)
        expected = vs.search(embedding_data="recipe notes", k=5, mode="hybrid", **options)
        assert ids(got) == expected["id"] and [s for _, s in got] == pytest.approx(expected["score"])
    # rrf_k changes the fused scores: it is not dropped on the way.
    a = db.similarity_search_with_score("recipe notes", k=3, mode="hybrid", rrf_k=1)
    b = db.similarity_search_with_score("recipe notes", k=3, mode="hybrid", fusion="rrf")
    assert a[0][1] > b[0][1]  # 1 / (rrf_k + rank) on each side: a smaller rrf_k gives larger scores
    with pytest.raises(SampleError, match="fusion, alpha and rrf_k apply to mode='hybrid'"):
        db.similarity_search("notes", mode="text", alpha=0.5)


def test_by_vector_in_hybrid_mode_takes_the_text_too(db):
    vector = EMBEDDINGS.embed_query(KEYWORD_QUERY)
    by_vector = db.similarity_search_by_vector(vector, k=2, mode="hybrid", query=KEYWORD_QUERY)
    assert ids(by_vector) == ids(db.similarity_search(KEYWORD_QUERY, k=2, mode="hybrid"))
    scored = db.similarity_search_by_vector_with_score(vector, k=2, mode="hybrid", query=KEYWORD_QUERY, alpha=0.5)
    assert ids(scored) == ids(db.similarity_search(KEYWORD_QUERY, k=2, mode="hybrid", alpha=0.5))
    with pytest.raises(SampleError, match="mode='hybrid' ranks by the query text; .* pass query='...'"):
        db.similarity_search_by_vector(vector, k=2, mode="hybrid")
    with pytest.raises(SampleError, match="mode='text' ranks by the query text"):
        db.similarity_search_by_vector(vector, k=2, mode="text")


# -- filters ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["vector", "text", "hybrid"])
@pytest.mark.parametrize("filter", [{"topic": "music"}, "metadata['topic'] == 'music'",
                                    lambda row: row["metadata"]["topic"] == "music"],
                         ids=["dict", "tql", "callable"])
def test_filters_apply_in_every_mode(db, mode, filter):
    found = ids(db.similarity_search("zx81 notes car", k=4, mode=mode, filter=filter))
    assert found and set(found) <= {"synth", "piano"}
    picked = ids(db.max_marginal_relevance_search("zx81 notes car", k=2, fetch_k=4, mode=mode, filter=filter))
    assert picked and set(picked) <= {"synth", "piano"}


# -- MMR -------------------------------------------------------------------------------------------
def test_mmr_keeps_working_and_skips_a_near_duplicate(db):
    text = "car brakes tires"
    assert ids(db.similarity_search(text, k=2)) == ["car", "car_dup"]
    assert ids(db.max_marginal_relevance_search(text, k=2, fetch_k=8, lambda_mult=1.0)) == ["car", "car_dup"]
    diverse = ids(db.max_marginal_relevance_search(text, k=2, fetch_k=8, lambda_mult=0.2))
    assert diverse[0] == "car" and diverse[1] != "car_dup"  # the near-duplicate adds nothing new
    assert ids(db.max_marginal_relevance_search(text, k=2, fetch_k=2, lambda_mult=0.0)) == ["car", "car_dup"]
    retriever = db.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 8, "lambda_mult": 0.2})
    assert ids(retriever.invoke(text)) == diverse
    # Hybrid candidates: the keyword match is among them, so MMR can pick it.
    assert "synth" in ids(db.max_marginal_relevance_search(KEYWORD_QUERY, k=3, fetch_k=4, mode="hybrid"))


def test_the_shared_mmr_function():
    query = [1.0, 1.0]
    near, duplicate, other = [1.0, 0.9], [1.0, 0.85], [0.0, 1.0]
    assert maximal_marginal_relevance(query, [near, duplicate, other], k=2, lambda_mult=1.0) == [0, 1]
    assert maximal_marginal_relevance(query, [near, duplicate, other], k=2, lambda_mult=0.3) == [0, 2]
    # A zero vector has cosine 0 with everything (not NaN): unlike all, it wins when diversity weighs most.
    assert maximal_marginal_relevance(query, [near, duplicate, other, [0.0, 0.0]], k=2, lambda_mult=0.3) == [0, 3]
    assert maximal_marginal_relevance(query, [near, duplicate, other], k=9, lambda_mult=1.0) == [0, 1, 2]
    assert maximal_marginal_relevance(query, [], k=3) == [] and maximal_marginal_relevance(query, [near], k=0) == []
    with pytest.raises(ValueError, match="lambda_mult must be in"):
        maximal_marginal_relevance(query, [near], lambda_mult=2)
    with pytest.raises(ValueError, match="the query has 3 dimensions, the candidates 2"):
        maximal_marginal_relevance([1.0, 0.0, 0.0], [near])


# -- errors ----------------------------------------------------------------------------------------
def test_text_mode_without_a_text_index_says_how_to_make_one():
    db = make_db(text_index=None)
    with pytest.raises(IndexNotFoundError, match=r"mode='text' needs a bm25 index on the store's text, and it has "
                                                 r"none; open the store with VectorStore\(path, ..., "
                                                 r"text_index='english'\)"):
        db.similarity_search("notes", mode="text")
    with pytest.raises(IndexNotFoundError, match="mode='hybrid' needs a bm25 index"):
        db.similarity_search("notes", mode="hybrid")
    assert ids(db.similarity_search("car brakes tires", k=1)) == ["car"]  # the vector search needs none


def test_bad_modes_are_refused(db):
    with pytest.raises(SampleError, match=r"mode must be one of \['vector', 'text', 'hybrid'\], got 'bm25'"):
        db.similarity_search("notes", mode="bm25")
    with pytest.raises(SampleError, match="a TQL query ranks itself"):
        db.similarity_search("notes", tql="select * limit 2", mode="text")
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        db.similarity_search("notes", mode="text", weight=0.5)
