"""TensorDB (LangChain vector store) against the real langchain-core, offline (hashing embeddings)."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from tensordb.errors import ReadOnlyError
from tensordb.integrations.langchain import TensorDB
from tensordb.vectorstore import HashingEmbedding, VectorStore


class HashEmbeddings(Embeddings):
    """A LangChain Embeddings around tensordb's offline HashingEmbedding."""

    def __init__(self) -> None:
        self.inner = HashingEmbedding()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


@pytest.fixture(scope="module")
def embedding() -> HashEmbeddings:
    return HashEmbeddings()


def mem() -> str:
    return f"mem://langchain-{uuid.uuid4().hex}"


@pytest.fixture
def db(corpus, embedding) -> TensorDB:
    return TensorDB.from_texts(corpus.texts[:30], embedding, metadatas=corpus.metadata[:30], ids=corpus.ids[:30],
                               path=mem())


def test_from_texts_and_similarity_search(db, corpus, embedding):
    assert db.embeddings is embedding and isinstance(db.vectorstore, VectorStore) and len(db.vectorstore) == 30
    docs = db.similarity_search(corpus.texts[4], k=3)
    assert len(docs) == 3 and isinstance(docs[0], Document)
    assert docs[0].id == corpus.ids[4] and docs[0].page_content == corpus.texts[4]
    assert docs[0].metadata == corpus.metadata[4]

    scored = db.similarity_search_with_score(corpus.texts[4], k=5)
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-5)
    relevant = db.similarity_search_with_relevance_scores(corpus.texts[4], k=5)
    assert all(0.0 <= s <= 1.0 for _, s in relevant) and relevant[0][0].id == corpus.ids[4]

    by_vector = db.similarity_search_by_vector(embedding.embed_query(corpus.texts[9]), k=2)
    assert by_vector[0].id == corpus.ids[9]

    l2 = db.similarity_search_with_score(corpus.texts[4], k=3, distance_metric="l2")
    assert l2[0][0].id == corpus.ids[4] and l2[0][1] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        db.similarity_search("x", deepmemory=True)


def test_metadata_filter_and_tql(db, corpus):
    source = corpus.metadata[0]["source"]
    of_source = {i for i, m in zip(corpus.ids[:30], corpus.metadata[:30]) if m["source"] == source}
    docs = db.similarity_search("how do I search", k=30, filter={"source": source})
    assert {d.id for d in docs} == of_source
    docs = db.similarity_search("how do I search", k=30, filter=f"metadata['source'] != '{source}'")
    assert {d.id for d in docs} == set(corpus.ids[:30]) - of_source
    docs = db.similarity_search("how do I search", k=30, filter=lambda row: row["id"] == corpus.ids[2])
    assert [d.id for d in docs] == [corpus.ids[2]]

    tql = f"select * where id == '{corpus.ids[5]}' or id == '{corpus.ids[6]}' order by id desc"
    docs = db.similarity_search("ignored when tql is given", tql=tql)
    assert [d.id for d in docs] == [corpus.ids[6], corpus.ids[5]]
    scored = db.similarity_search_with_score("ignored", tql="select * limit 2")
    assert len(scored) == 2  # no score computed by this query: NaN
    vector = ", ".join(str(x) for x in HashingEmbedding().embed_query(corpus.texts[7]))
    ranked = db.similarity_search_with_score(
        "ignored", tql=f"select * order by cosine_similarity(embedding, ARRAY[{vector}]) desc limit 3")
    assert ranked[0][0].id == corpus.ids[7] and ranked[0][1] == pytest.approx(1.0, abs=1e-5)


def test_max_marginal_relevance_search(db, corpus):
    query = corpus.texts[4]
    mmr = db.max_marginal_relevance_search(query, k=4, fetch_k=12, lambda_mult=0.3)
    top12 = [d.id for d in db.similarity_search(query, k=12)]
    assert len(mmr) == 4 and len({d.id for d in mmr}) == 4
    assert mmr[0].id == corpus.ids[4] and {d.id for d in mmr} <= set(top12)
    assert {d.id for d in db.max_marginal_relevance_search(query, k=4, fetch_k=4)} == set(top12[:4])
    filtered = db.max_marginal_relevance_search(query, k=3, fetch_k=10, filter={"source": corpus.metadata[4]["source"]})
    assert all(d.metadata["source"] == corpus.metadata[4]["source"] for d in filtered)


def test_add_documents_delete_and_get_by_ids(corpus, embedding):
    db = TensorDB(mem(), embedding)
    assert db.similarity_search("empty store", k=2) == []
    ids = db.add_documents([Document(page_content=t, metadata=m, id=i)
                            for t, m, i in zip(corpus.texts[:6], corpus.metadata[:6], corpus.ids[:6])])
    assert ids == corpus.ids[:6]
    fresh = db.add_texts(["an extra text without an id"], [{"source": "extra"}])
    assert len(fresh) == 1 and len(db.vectorstore) == 7
    assert [d.id for d in db.get_by_ids([corpus.ids[3], "missing", corpus.ids[1]])] == [corpus.ids[3], corpus.ids[1]]

    db.add_texts(["replacement"], ids=[corpus.ids[0]])  # same id: replaced, not duplicated
    assert len(db.vectorstore) == 7 and db.get_by_ids([corpus.ids[0]])[0].page_content == "replacement"

    assert db.delete([corpus.ids[0], corpus.ids[1], "missing"])
    assert len(db.vectorstore) == 5 and not db.get_by_ids([corpus.ids[0]])
    assert db.delete(filter={"source": "extra"}) and len(db.vectorstore) == 4
    with pytest.raises(ValueError, match="delete_all"):
        db.delete()
    assert db.delete(delete_all=True) and len(db.vectorstore) == 0


def test_retriever_invoke(db, corpus):
    retriever = db.as_retriever(search_kwargs={"k": 2})
    docs = retriever.invoke(corpus.texts[12])
    assert [d.id for d in docs][0] == corpus.ids[12] and len(docs) == 2
    mmr = db.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 10}).invoke(corpus.texts[12])
    assert len(mmr) == 3
    source = corpus.metadata[12]["source"]
    filtered = db.as_retriever(search_kwargs={"k": 5, "filter": {"source": source}}).invoke("anything")
    assert filtered and all(d.metadata["source"] == source for d in filtered)


def test_persistence_and_read_only(corpus, embedding, tmp_path):
    path = str(tmp_path / "lc")
    db = TensorDB.from_texts(corpus.texts[:10], embedding, ids=corpus.ids[:10], path=path)
    db.close()
    reopened = TensorDB(path, embedding, read_only=True)
    assert reopened.similarity_search(corpus.texts[3], k=1)[0].id == corpus.ids[3]
    with pytest.raises(ReadOnlyError):
        reopened.add_texts(["more"])
    reopened.close()
    again = TensorDB.from_texts(corpus.texts[:2], embedding, path=path, overwrite=True)
    assert len(again.vectorstore) == 2
    again.close()


def test_deep_memory_flag(corpus, targets, embedding):
    db = TensorDB.from_texts(corpus.texts, embedding, metadatas=corpus.metadata, ids=corpus.ids, path=mem())
    with pytest.raises(Exception, match="no trained Deep Memory model"):
        db.similarity_search("anything", deep_memory=True)

    chosen = targets[12:24]
    train_q, train_ids = corpus.split("train", chosen)
    test_q, test_ids = corpus.split("test", chosen)
    assert len(train_q) >= 15 and len(test_q) >= 5
    job = db.deep_memory.train(train_q, [[(doc_id, 1.0)] for doc_id in train_ids], max_seconds=15)
    assert db.deep_memory.wait(job, timeout=120)["status"] == "completed"

    def hits(**kwargs) -> int:
        found = [{d.id for d in db.similarity_search(q, k=5, **kwargs)} for q in test_q]
        return sum(answer in ids for answer, ids in zip(test_ids, found))

    assert hits(deep_memory=True) > hits()
    retriever = db.as_retriever(search_kwargs={"k": 5, "deep_memory": True})
    assert sum(a in {d.id for d in retriever.invoke(q)} for q, a in zip(test_q, test_ids)) == hits(deep_memory=True)
    scored = db.similarity_search_with_score(test_q[0], k=3, deep_memory=True)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    assert len(db.max_marginal_relevance_search(test_q[0], k=2, fetch_k=6, deep_memory=True)) == 2
