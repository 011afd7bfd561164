"""vs.search(engine="ray"): the same chunks, scores and order as a local search, Deep Memory and hybrid too."""

from __future__ import annotations

import numpy as np
import pytest
from ray_helpers import assert_same

import tensordb
from query_lang import parse, plan_query
from query_lang.distributed import divide
from tensordb import HashingEmbedding, VectorStore
from tensordb.core.scan import TableSource

WORDS = ("salt river stone light night grass wind flock marsh heron reed tide dune cliff moss fern "
         "ember frost cedar birch").split()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> VectorStore:
    """A store of 400 chunks with a bm25 index and a Deep Memory model trained for a few seconds."""
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(400)]
    path = str(tmp_path_factory.mktemp("ray-vs") / "vs")
    ds = tensordb.empty(path)  # the store's tensors, made first with small chunks: the searches are divided
    for name, htype in [("text", "text"), ("metadata", "json"), ("id", "id")]:
        ds.create_tensor(name, htype=htype, max_chunk_size=4096)
    ds.create_tensor("embedding", htype="embedding", dtype="float32", max_chunk_size=4096)
    ds.close()
    vs = VectorStore(path, embedding_function=HashingEmbedding(64), text_index="english")
    vs.add(text=texts, id=[f"c{i}" for i in range(len(texts))], metadata=[{"n": i % 4} for i in range(len(texts))])
    queries = [" ".join(t.split()[:3]) for t in texts[:80]]
    job = vs.deep_memory.train(queries, [[(f"c{i}", 1.0)] for i in range(80)], max_seconds=4)
    assert vs.deep_memory.wait(job, timeout=120)["status"] == "completed"
    assert vs.deep_memory.model() is not None
    source = TableSource(vs.dataset)
    search = plan_query(parse("SELECT * ORDER BY cosine_similarity(embedding, ARRAY[" + ", ".join(["0.1"] * 64)
                              + "]) DESC LIMIT 3"), source)
    assert len(divide(search, source, 2)) == 2  # the searches below are divided, not run whole
    return vs


@pytest.mark.parametrize("mode, deep_memory", [("vector", False), ("vector", True), ("hybrid", False),
                                                ("hybrid", True), ("text", False)])  # text takes no model
def test_search_on_ray_answers_as_locally(ray_cluster, trained, mode, deep_memory):
    for query, where in [("salt river heron", None), ("frost cedar moss", {"n": 2})]:
        asked = {"embedding_data": query, "k": 10, "mode": mode, "deep_memory": deep_memory, "filter": where,
                 "return_view": True}
        local = trained.search(**asked)
        ray = trained.search(**asked, engine="ray", num_workers=2)
        assert len(local) == 10 or where is not None
        assert_same(local, ray, f"{mode} {query} {where}")


def test_a_tql_query_and_an_ids_search_on_ray_answer_as_locally(ray_cluster, trained):
    vector = HashingEmbedding(64)(["wind tide dune"])[0]
    text = ("SELECT * ORDER BY deepmemory_distance(embedding, ARRAY[" + ", ".join(f"{x:.6f}" for x in vector)
            + "]) DESC LIMIT 8")
    assert_same(trained.search(query=text, return_view=True),
                trained.search(query=text, return_view=True, engine="ray"), text)
    ids = [f"c{i}" for i in range(0, 400, 3)]
    asked = {"embedding_data": "ember birch", "k": 6, "ids": ids, "deep_memory": True, "return_view": True}
    assert_same(trained.search(**asked), trained.search(**asked, engine="ray", num_workers=2), "ids")


def test_workers_score_with_the_model_trained_after_they_opened_the_store(ray_cluster, tmp_path):
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, size=6)) for _ in range(150)]
    vs = VectorStore(str(tmp_path / "late"), embedding_function=HashingEmbedding(32))
    vs.add(text=texts, id=[f"c{i}" for i in range(150)])
    asked = {"embedding_data": "salt moss tide", "k": 5, "return_view": True}
    assert_same(vs.search(**asked), vs.search(**asked, engine="ray", num_workers=2), "before training")
    for seed in (0, 1):  # a second model replaces the first
        job = vs.deep_memory.train([" ".join(t.split()[:2]) for t in texts[:40]],
                                   [[(f"c{i}", 1.0)] for i in range(40)], max_seconds=2, seed=seed)
        assert vs.deep_memory.wait(job, timeout=120)["status"] == "completed"
        assert_same(vs.search(**asked, deep_memory=True),
                    vs.search(**asked, deep_memory=True, engine="ray", num_workers=2), f"model {seed}")

