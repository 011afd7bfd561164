"""TensorDBVectorStore against the real llama-index-core, offline (hashing embeddings, no LLM)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.evaluation import RetrieverEvaluator
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_models import HashEmbedding, global_embed_model

from tensordb.errors import ReadOnlyError
from tensordb.integrations.llama_index import TensorDBVectorStore, metadata_filters_to_tql
from tensordb.vectorstore import VectorStore


@pytest.fixture(scope="module")
def embed_model():
    with global_embed_model(HashEmbedding()) as model:
        yield model


def make_nodes(corpus, limit: int | None = None) -> list[TextNode]:
    """One node per chunk; its source file is the node's document (ref_doc_id)."""
    rows = list(zip(corpus.ids, corpus.texts, corpus.metadata))[:limit]
    return [
        TextNode(id_=i, text=t, metadata={**m, "n": k},
                 relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=m["source"])})
        for k, (i, t, m) in enumerate(rows)
    ]


def build_index(corpus, embed_model, path=None, limit=None, **kwargs):
    path = path or f"mem://llama-{uuid.uuid4().hex}"
    store = TensorDBVectorStore(path, overwrite=True, embed_model=embed_model, **kwargs)
    context = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex(make_nodes(corpus, limit), storage_context=context, embed_model=embed_model)
    return store, index


def embedded(embed_model, text: str) -> list[float]:
    return embed_model.get_query_embedding(text)


# -- basics ----------------------------------------------------------------------------------------
def test_add_and_query_round_trip(corpus, embed_model):
    store, index = build_index(corpus, embed_model, limit=30)
    assert store.stores_text and isinstance(store.client, VectorStore) and len(store.client) == 30
    result = store.query(VectorStoreQuery(query_embedding=embedded(embed_model, corpus.texts[3]), similarity_top_k=5))
    assert result.ids[0] == corpus.ids[3] and len(result.ids) == 5
    assert result.similarities == sorted(result.similarities, reverse=True)
    node = result.nodes[0]
    assert node.node_id == corpus.ids[3] and node.get_content() == corpus.texts[3]
    assert node.metadata["source"] == corpus.metadata[3]["source"] and node.metadata["n"] == 3
    assert node.ref_doc_id == corpus.metadata[3]["source"]

    retrieved = index.as_retriever(similarity_top_k=3).retrieve(corpus.texts[7])
    assert [r.node.node_id for r in retrieved][0] == corpus.ids[7] and len(retrieved) == 3


def test_add_replaces_nodes_with_the_same_id(corpus, embed_model):
    store, _ = build_index(corpus, embed_model, limit=5)
    node = TextNode(id_=corpus.ids[0], text="replaced text", embedding=embedded(embed_model, "replaced text"))
    assert store.add([node]) == [corpus.ids[0]]
    assert len(store.client) == 5
    assert store.get_nodes(node_ids=[corpus.ids[0]])[0].get_content() == "replaced text"


def test_delete_ref_doc_removes_all_its_nodes(corpus, embed_model):
    store, index = build_index(corpus, embed_model, limit=30)
    doc = corpus.metadata[0]["source"]
    of_doc = [i for i, m in zip(corpus.ids[:30], corpus.metadata[:30]) if m["source"] == doc]
    assert len(of_doc) > 1
    index.delete_ref_doc(doc)
    assert len(store.client) == 30 - len(of_doc)
    assert not store.get_nodes(node_ids=of_doc)
    store.delete("no-such-doc")  # a no-op
    store.delete_nodes(node_ids=[corpus.ids[29]])
    assert len(store.client) == 29 - len(of_doc)
    store.clear()
    assert len(store.client) == 0
    assert store.query(VectorStoreQuery(query_embedding=embedded(embed_model, "x"), similarity_top_k=3)).ids == []


def _ids(store, embed_model, top_k=200, **query):
    vector = embedded(embed_model, "how do I search")
    return set(store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=top_k, **query)).ids)


def test_query_filters_node_ids_and_doc_ids(corpus, embed_model):
    store, _ = build_index(corpus, embed_model, limit=40)
    meta = dict(zip(corpus.ids[:40], corpus.metadata[:40]))
    source = corpus.metadata[0]["source"]
    of_source = {i for i, m in meta.items() if m["source"] == source}
    n_of = {i: k for k, i in enumerate(corpus.ids[:40])}

    exact = MetadataFilters(filters=[ExactMatchFilter(key="source", value=source)])
    assert metadata_filters_to_tql(exact) == "metadata['source'] == " + repr(source)
    assert _ids(store, embed_model, filters=exact) == of_source
    ne = MetadataFilters(filters=[MetadataFilter(key="source", value=source, operator=FilterOperator.NE)])
    assert _ids(store, embed_model, filters=ne) == set(meta) - of_source
    gt = MetadataFilters(filters=[MetadataFilter(key="n", value=30, operator=FilterOperator.GT)])
    assert _ids(store, embed_model, filters=gt) == {i for i, k in n_of.items() if k > 30}
    either = MetadataFilters(
        filters=[MetadataFilter(key="n", value=[1, 2], operator=FilterOperator.IN),
                 MetadataFilter(key="n", value=39, operator=FilterOperator.GTE)],
        condition=FilterCondition.OR,
    )
    assert _ids(store, embed_model, filters=either) == {corpus.ids[1], corpus.ids[2], corpus.ids[39]}
    nested = MetadataFilters(filters=[exact, MetadataFilters(filters=[MetadataFilter(
        key="n", value=[0], operator=FilterOperator.NIN)])])
    assert _ids(store, embed_model, filters=nested) == of_source - {corpus.ids[0]}
    negated = MetadataFilters(filters=[ExactMatchFilter(key="source", value=source)], condition=FilterCondition.NOT)
    assert _ids(store, embed_model, filters=negated) == set(meta) - of_source
    # TEXT_MATCH_INSENSITIVE has no exact TQL form: evaluated in Python, same answer
    fuzzy = MetadataFilters(filters=[MetadataFilter(key="source", value=source.upper(),
                                                    operator=FilterOperator.TEXT_MATCH_INSENSITIVE)])
    assert metadata_filters_to_tql(fuzzy) is None
    assert _ids(store, embed_model, filters=fuzzy) == of_source

    assert _ids(store, embed_model, node_ids=corpus.ids[5:9]) == set(corpus.ids[5:9])
    assert _ids(store, embed_model, node_ids=corpus.ids[:10], filters=exact) == of_source & set(corpus.ids[:10])
    assert _ids(store, embed_model, doc_ids=[source]) == of_source
    assert _ids(store, embed_model, node_ids=[]) == set(meta)  # what as_retriever passes: no restriction
    assert len(_ids(store, embed_model, top_k=2, filters=exact)) == 2

    retriever = VectorStoreIndex.from_vector_store(store, embed_model=embed_model).as_retriever(
        similarity_top_k=50, filters=exact)
    assert {r.node.node_id for r in retriever.retrieve("anything")} == of_source


def test_reopen_with_from_vector_store(corpus, embed_model, tmp_path):
    path = str(tmp_path / "store")
    store, index = build_index(corpus, embed_model, path=path, limit=30)
    before = [(r.node.node_id, r.score) for r in index.as_retriever(similarity_top_k=4).retrieve(corpus.texts[11])]
    store.close()

    reopened = TensorDBVectorStore(path, read_only=True)
    assert len(reopened.client) == 30
    index = VectorStoreIndex.from_vector_store(reopened, embed_model=embed_model)
    after = index.as_retriever(similarity_top_k=4).retrieve(corpus.texts[11])
    assert [r.node.node_id for r in after] == [node_id for node_id, _ in before]
    assert [r.score for r in after] == pytest.approx([score for _, score in before])
    node = after[0].node
    assert node.get_content() == corpus.texts[11] and node.ref_doc_id == corpus.metadata[11]["source"]
    assert node.metadata["n"] == 11
    with pytest.raises(ReadOnlyError):
        reopened.add([TextNode(id_="new", text="new", embedding=embedded(embed_model, "new"))])
    reopened.close()

    # An open VectorStore works too.
    vs = VectorStore(path)
    assert TensorDBVectorStore(vector_store=vs).client is vs
    assert TensorDBVectorStore(vs).client is vs
    vs.close()


def test_deep_memory_requires_a_trained_model(corpus, embed_model):
    store, index = build_index(corpus, embed_model, limit=5)
    retriever = index.as_retriever(similarity_top_k=2, vector_store_kwargs={"deep_memory": True})
    with pytest.raises(Exception, match="no trained Deep Memory model"):
        retriever.retrieve("anything")


# -- Deep Memory -----------------------------------------------------------------------------------
def _evaluate(retriever, questions: list[str], answers: list[str]) -> dict[str, float]:
    evaluator = RetrieverEvaluator.from_metric_names(["mrr", "hit_rate"], retriever=retriever)

    async def run():
        return await asyncio.gather(*(evaluator.aevaluate(q, [a]) for q, a in zip(questions, answers)))

    results = asyncio.run(run())
    return {name: sum(r.metric_vals_dict[name] for r in results) / len(results) for name in ("mrr", "hit_rate")}


def test_deep_memory_improves_retriever_on_held_out_questions(corpus, targets, embed_model):
    store, index = build_index(corpus, embed_model)
    chosen = targets[:12]
    train_q, train_ids = corpus.split("train", chosen)
    test_q, test_ids = corpus.split("test", chosen)
    assert len(train_q) >= 20 and len(test_q) >= 8

    # Node ids are the relevance ids; the questions are embedded with the index's embed model.
    # max_seconds bounds the test: training would otherwise run until validation stops improving.
    job = store.deep_memory.train(train_q, [[(doc_id, 1.0)] for doc_id in train_ids], max_seconds=15)
    status = store.deep_memory.wait(job, timeout=120)
    assert status["status"] == "completed", status

    plain = _evaluate(index.as_retriever(similarity_top_k=10), test_q, test_ids)
    deep = _evaluate(index.as_retriever(similarity_top_k=10, vector_store_kwargs={"deep_memory": True}),
                     test_q, test_ids)
    assert deep["hit_rate"] > plain["hit_rate"], (plain, deep)
    assert deep["mrr"] > plain["mrr"], (plain, deep)

    # The sync path forwards vector_store_kwargs as well.
    retriever = index.as_retriever(similarity_top_k=10, vector_store_kwargs={"deep_memory": True})
    hits = sum(answer in {r.node.node_id for r in retriever.retrieve(q)} for q, answer in zip(test_q, test_ids))
    assert hits / len(test_q) == pytest.approx(deep["hit_rate"])
