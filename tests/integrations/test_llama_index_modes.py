"""TensorDBVectorStore's query modes (hybrid, text search, sparse, MMR) against the real llama-index-core, offline,
on the shared corpus of ``concept_corpus`` (lexical and dense signals that disagree)."""

from __future__ import annotations

import uuid

import pytest
from concept_corpus import DOCS, KEYWORD_QUERY, concept_vector
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_models import HashEmbedding, global_embed_model

from tensordb.errors import IndexNotFoundError, SampleError
from tensordb.integrations.llama_index import TensorDBVectorStore


class ConceptEmbedding(BaseEmbedding):
    def _get_query_embedding(self, query: str) -> list[float]:
        return concept_vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return concept_vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return concept_vector(text)




@pytest.fixture(scope="module")
def embed_model():
    with global_embed_model(ConceptEmbedding()) as model:
        yield model


def build(embed_model, text_index: str | None = "english") -> tuple[TensorDBVectorStore, VectorStoreIndex]:
    store = TensorDBVectorStore(f"mem://llama-modes-{uuid.uuid4().hex}", overwrite=True, embed_model=embed_model,
                                text_index=text_index)
    nodes = [TextNode(id_=i, text=t, metadata={"topic": topic}) for i, (t, topic) in DOCS.items()]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=embed_model)
    return store, index


@pytest.fixture(scope="module")
def built(embed_model):
    return build(embed_model)


def ask(store: TensorDBVectorStore, text: str, mode: VectorStoreQueryMode, k: int = 2, **fields) -> list[str]:
    query = VectorStoreQuery(query_str=text, query_embedding=concept_vector(text), similarity_top_k=k, mode=mode,
                             **fields)
    return store.query(query).ids


def retrieved(index: VectorStoreIndex, text: str, **kwargs) -> list[str]:
    return [r.node.node_id for r in index.as_retriever(**kwargs).retrieve(text)]


# -- each mode finds what its signal sees ----------------------------------------------------------
def test_text_search_finds_the_keyword_the_embedding_misses(built):
    store, index = built
    assert set(ask(store, KEYWORD_QUERY, VectorStoreQueryMode.DEFAULT, k=3)) == {"car", "car_dup", "truck"}
    assert ask(store, KEYWORD_QUERY, VectorStoreQueryMode.TEXT_SEARCH) == ["synth"]  # no other text has a term
    assert ask(store, KEYWORD_QUERY, VectorStoreQueryMode.SPARSE) == ["synth"]
    # A paraphrase: no stored text says "automobile" or "maintenance", but the embedding knows they mean car repair.
    assert ask(store, "automobile maintenance", VectorStoreQueryMode.TEXT_SEARCH) == []
    assert set(ask(store, "automobile maintenance", VectorStoreQueryMode.DEFAULT, k=3)) == {"car", "car_dup", "truck"}
    # Through the retriever: no embedding is computed for the text modes, and the nodes come back whole.
    results = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=3).retrieve(KEYWORD_QUERY)
    assert [r.node.node_id for r in results] == ["synth"] and results[0].node.text == DOCS["synth"][0]
    assert results[0].node.metadata == {"topic": "music"} and results[0].score > 0


def test_hybrid_returns_both_the_keyword_and_the_paraphrase_match(built):
    store, index = built
    closest = ask(store, KEYWORD_QUERY, VectorStoreQueryMode.DEFAULT, k=1)[0]
    assert closest in {"car", "car_dup", "truck"}
    # Top 2 of the fusion: the first of each ranking, which neither ranking has in its own top 2.
    assert set(ask(store, KEYWORD_QUERY, VectorStoreQueryMode.HYBRID)) == {closest, "synth"}
    both = retrieved(index, KEYWORD_QUERY, vector_store_query_mode="hybrid", similarity_top_k=2)
    assert set(both) == {closest, "synth"}
    # The same as the VectorStore's own hybrid search (reciprocal rank fusion when no alpha is given).
    found = store.client.search(embedding_data=KEYWORD_QUERY, k=4, mode="hybrid")
    assert ask(store, KEYWORD_QUERY, VectorStoreQueryMode.HYBRID, k=4) == found["id"]


@pytest.mark.parametrize("text", [KEYWORD_QUERY, "notes", "recipe notes", "car brakes notes"])
def test_alpha_one_is_the_vector_order_and_alpha_zero_the_text_order(built, text):
    store, _ = built
    everything = len(DOCS)
    vector = ask(store, text, VectorStoreQueryMode.DEFAULT, k=everything)
    assert ask(store, text, VectorStoreQueryMode.HYBRID, k=everything, alpha=1.0) == vector
    # alpha=0: only BM25 counts. Its lowest hit scores 0 after min-max scaling, like the texts it did not
    # find, so the order is compared above it.
    lexical = store.query(VectorStoreQuery(query_str=text, similarity_top_k=everything,
                                           mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert len(set(lexical.similarities)) == len(lexical.similarities)  # no ties: the order is the BM25 order
    above_lowest = len(lexical.ids) - 1
    text_only = ask(store, text, VectorStoreQueryMode.HYBRID, k=everything, alpha=0.0)
    assert text_only[:above_lowest] == lexical.ids[:above_lowest]


def test_alpha_between_weighs_the_two_sides(built):
    store, _ = built
    # "notes" appears most in "piano"; the dense side sees little in the word. Half and half keeps piano first,
    # and the retriever's alpha is the query's alpha.
    query = VectorStoreQuery(query_str="recipe notes", query_embedding=concept_vector("recipe notes"),
                             similarity_top_k=3, mode=VectorStoreQueryMode.HYBRID, alpha=0.5)
    result = store.query(query)
    expected = store.client.search(embedding_data="recipe notes", k=3, mode="hybrid", fusion="convex", alpha=0.5)
    assert result.ids == expected["id"] and result.similarities == pytest.approx(expected["score"])


def test_hybrid_sparse_top_k_and_hybrid_top_k(built):
    store, _ = built
    # sparse_top_k sets the result count of a text search, and the text candidates of a hybrid one.
    three = ask(store, "notes", VectorStoreQueryMode.TEXT_SEARCH, k=1, sparse_top_k=3)
    assert three == store.client.search(embedding_data="notes", k=3, mode="text")["id"] and three[0] == "piano"
    assert ask(store, "notes", VectorStoreQueryMode.HYBRID, k=5, sparse_top_k=1) == store.client.search(
        embedding_data="notes", k=5, mode="hybrid", sparse_top_k=1)["id"]
    assert len(ask(store, "notes", VectorStoreQueryMode.HYBRID, k=5, hybrid_top_k=2)) == 2


# -- filters apply in every mode -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hybrid", "text_search", "sparse", "mmr", "default"])
def test_filters_apply_in_every_mode(built, mode):
    store, index = built
    music = MetadataFilters(filters=[MetadataFilter(key="topic", value="music")])
    ids = retrieved(index, "zx81 notes car", vector_store_query_mode=mode, similarity_top_k=4, filters=music)
    assert ids and set(ids) <= {"synth", "piano"}
    # A filter TQL cannot express is evaluated in Python; it applies as well.
    food = MetadataFilters(filters=[MetadataFilter(key="topic", value="FOOD",
                                                   operator=FilterOperator.TEXT_MATCH_INSENSITIVE)])
    ids = retrieved(index, "zx81 notes car", vector_store_query_mode=mode, similarity_top_k=4, filters=food)
    assert ids and set(ids) <= {"bread", "pasta"}
    # node ids restrict every mode too.
    query = VectorStoreQuery(query_str="notes", query_embedding=concept_vector("notes"), similarity_top_k=4,
                             mode=VectorStoreQueryMode(mode), node_ids=["pasta", "dog"])
    assert set(store.query(query).ids) <= {"pasta", "dog"} and "pasta" in store.query(query).ids


# -- MMR -------------------------------------------------------------------------------------------
def test_mmr_skips_a_near_duplicate(built):
    store, index = built
    text = "car brakes tires"
    assert ask(store, text, VectorStoreQueryMode.DEFAULT) == ["car", "car_dup"]
    assert ask(store, text, VectorStoreQueryMode.MMR, mmr_threshold=1.0) == ["car", "car_dup"]  # relevance only
    diverse = ask(store, text, VectorStoreQueryMode.MMR, mmr_threshold=0.2)
    assert diverse[0] == "car" and diverse[1] != "car_dup"  # the near-duplicate adds nothing new
    # mmr_threshold also comes as a keyword (what LlamaIndex's own stores read), through the retriever.
    ids = retrieved(index, text, vector_store_query_mode="mmr", similarity_top_k=2,
                    vector_store_kwargs={"mmr_threshold": 0.2})
    assert ids == diverse
    # The default threshold is LlamaIndex's 0.5; the scores are the picks' similarities to the query.
    result = store.query(VectorStoreQuery(query_embedding=concept_vector(text), similarity_top_k=2,
                                          mode=VectorStoreQueryMode.MMR))
    plain = store.client.search(embedding=concept_vector(text), k=len(DOCS))
    assert result.similarities == pytest.approx([plain["score"][plain["id"].index(i)] for i in result.ids])


def test_mmr_picks_only_among_the_prefetched_candidates(built):
    store, _ = built
    query = VectorStoreQuery(query_embedding=concept_vector("car brakes tires"), similarity_top_k=2,
                             mode=VectorStoreQueryMode.MMR, mmr_threshold=0.0)
    # With a factor of 1 the candidates are the two closest, and both come back however diverse.
    assert store.query(query, mmr_prefetch_factor=1).ids == ["car", "car_dup"]
    assert store.query(query, mmr_prefetch_factor=4).ids[1] != "car_dup"
    with pytest.raises(SampleError, match="mmr_prefetch_factor must be a number >= 1, got 0"):
        store.query(query, mmr_prefetch_factor=0)


def test_mmr_threshold_out_of_range_is_refused(built):
    store, _ = built
    query = VectorStoreQuery(query_embedding=concept_vector("car"), mode=VectorStoreQueryMode.MMR)
    with pytest.raises(SampleError, match=r"mmr_threshold must be a number in \[0, 1\], got 1.5"):
        store.query(query, mmr_threshold=1.5)
    # The query's own threshold wins over the keyword.
    query.mmr_threshold = 1.0
    assert store.query(query, mmr_threshold=1.5).ids == ["truck"]  # "a truck": the closest to "car" alone


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["semantic_hybrid", "svm", "logistic_regression", "linear_regression"])
def test_unsupported_modes_say_which_are_supported(built, mode):
    store, index = built
    with pytest.raises(NotImplementedError, match=f"query mode .*{mode}.*it supports default, hybrid, text_search, "
                                                  "sparse, mmr"):
        retrieved(index, "car", vector_store_query_mode=mode)
    assert store.is_embedding_query is True and store.stores_text is True  # the retriever embeds the query


@pytest.mark.parametrize("mode", [VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.TEXT_SEARCH,
                                  VectorStoreQueryMode.SPARSE])
@pytest.mark.parametrize("text", [None, "", "   "])
def test_text_modes_need_the_query_text(built, mode, text):
    store, _ = built
    with pytest.raises(SampleError, match=f"mode '{mode.value}' ranks by the query text, so query.query_str"):
        store.query(VectorStoreQuery(query_str=text, query_embedding=concept_vector("car"), mode=mode))


def test_vector_modes_need_the_query_embedding(built):
    store, _ = built
    for mode in (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.MMR, VectorStoreQueryMode.DEFAULT):
        with pytest.raises(ValueError, match=f"mode '{mode.value}' needs query.query_embedding"):
            store.query(VectorStoreQuery(query_str="car", mode=mode))


def test_text_modes_need_a_text_index(embed_model):
    store, index = build(embed_model, text_index=None)
    with pytest.raises(IndexNotFoundError, match="needs a bm25 index on the store's text"):
        retrieved(index, "car", vector_store_query_mode="hybrid")
    with pytest.raises(IndexNotFoundError, match="text_index='english'"):
        retrieved(index, "car", vector_store_query_mode="text_search")
    assert retrieved(index, "car brakes tires", vector_store_query_mode="mmr", similarity_top_k=1) == ["car"]


def test_an_empty_store_answers_nothing_in_every_mode(embed_model):
    store = TensorDBVectorStore(f"mem://llama-modes-{uuid.uuid4().hex}", embed_model=embed_model,
                                text_index="english")
    for mode in ("default", "hybrid", "text_search", "sparse", "mmr"):
        result = store.query(VectorStoreQuery(query_str="car", query_embedding=concept_vector("car"),
                                              similarity_top_k=2, mode=VectorStoreQueryMode(mode)))
        assert result.ids == [] and result.nodes == []


# -- Deep Memory in hybrid mode --------------------------------------------------------------------
def test_hybrid_retriever_with_deep_memory_end_to_end(corpus):
    model = HashEmbedding()
    store = TensorDBVectorStore(f"mem://llama-modes-{uuid.uuid4().hex}", overwrite=True, embed_model=model,
                                text_index="english")
    nodes = [TextNode(id_=i, text=t, metadata=m) for i, t, m in zip(corpus.ids[:60], corpus.texts[:60],
                                                                    corpus.metadata[:60])]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=model)
    kwargs = {"vector_store_query_mode": "hybrid", "alpha": 0.5, "similarity_top_k": 10,
              "vector_store_kwargs": {"deep_memory": True}, "embed_model": model}
    with pytest.raises(Exception, match="no trained Deep Memory model"):  # deep_memory reaches the store
        index.as_retriever(**kwargs).retrieve("anything")

    in_store = set(corpus.ids[:60])
    questions = [q for q in corpus.questions if q["split"] == "train" and q["relevant"][0][0] in in_store][:30]
    assert len(questions) == 30
    job = store.deep_memory.train([q["question"] for q in questions],
                                  [[(q["relevant"][0][0], 1.0)] for q in questions], max_seconds=3)
    status = store.deep_memory.wait(job, timeout=120)
    assert status["status"] == "completed", status
    assert status.get("fusion"), status  # the job learned a fusion, since the store has a text index

    vs = store.client
    for question in ("how do I undo a commit?", questions[0]["question"]):
        vector = model.get_query_embedding(question)
        # alpha given: convex fusion with that alpha over the Deep Memory ranking and BM25.
        expected = vs.search(embedding_data=question, embedding=vector, k=10, mode="hybrid", alpha=0.5,
                             deep_memory=True)
        results = index.as_retriever(**kwargs).retrieve(question)
        assert [r.node.node_id for r in results] == expected["id"]
        assert [r.score for r in results] == pytest.approx(expected["score"])
        # No alpha: the fusion training chose.
        learned = vs.search(embedding_data=question, embedding=vector, k=10, mode="hybrid", deep_memory=True)
        no_alpha = {**kwargs, "alpha": None}
        assert [r.node.node_id for r in index.as_retriever(**no_alpha).retrieve(question)] == learned["id"]
    # BM25 alone has no vector side for Deep Memory to transform: the store says so rather than ignore it.
    with pytest.raises(SampleError, match="takes no embedding or deep_memory"):
        index.as_retriever(vector_store_query_mode="text_search",
                           vector_store_kwargs={"deep_memory": True}).retrieve("commit")
