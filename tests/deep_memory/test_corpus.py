"""Deep Memory over any document corpus (ids, embeddings, query embedder), not only a VectorStore."""

from __future__ import annotations

import uuid

import numpy as np

import tensordb
from tensordb import HashingEmbedding, VectorStore
from tensordb.deep_memory.api import DeepMemory
from tensordb.deep_memory.corpus import DocumentCorpus

from .corpora import ArrayCorpus

DIM = 16


def _corpus(path: str | None = None) -> ArrayCorpus:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((40, DIM)).astype(np.float32)
    ids = [f"d{i}" for i in range(40)]
    queries = {f"q{i}": docs[i] + 0.1 * rng.standard_normal(DIM).astype(np.float32) for i in range(10)}
    ds = tensordb.empty(path or f"mem://{uuid.uuid4().hex}", overwrite=True)
    return ArrayCorpus(ds, ids, docs, queries)


def test_an_array_corpus_satisfies_the_protocol() -> None:
    assert isinstance(_corpus(), DocumentCorpus)


def test_deep_memory_trains_and_evaluates_on_a_plain_corpus(vs_path) -> None:
    corpus = _corpus(vs_path)
    dm = DeepMemory(corpus)
    queries = [f"q{i}" for i in range(10)]
    relevance = [[(f"d{i}", 1.0)] for i in range(10)]
    job = dm.train(queries, relevance, max_seconds=5, seed=0)
    assert dm.wait(job, timeout=60)["status"] == "completed"
    out = dm.evaluate(queries, relevance, top_k=(1, 10), show=False)
    assert set(out) == {"without model", "with model"}
    assert out["without model"]["recall@10"] == 1.0


def test_vector_store_embeds_queries_publicly_and_is_a_corpus(vs_path) -> None:
    vs = VectorStore(vs_path, embedding_function=HashingEmbedding(DIM), overwrite=True)
    vs.add(text=["alpha beta", "gamma delta"], id=["a", "b"])
    assert isinstance(vs, DocumentCorpus)
    vectors = vs.embed_queries(["alpha beta"])
    assert vectors.shape == (1, DIM)
    ids, embeddings = vs.ids_and_embeddings()
    assert ids == ["a", "b"]
    np.testing.assert_allclose(vectors[0], embeddings[0], rtol=1e-6)
