"""The demo: shipped corpus (Deep Memory must help on the test questions) and a BEIR folder."""

from __future__ import annotations

import json
import os

import numpy as np

from tensordb import demo


def test_shipped_corpus_is_well_formed():
    data = demo.load_shipped()
    assert 100 <= len(data.ids) <= 150
    assert len(set(data.ids)) == len(data.ids)
    assert len(data.train_queries) >= 50 and len(data.test_queries) >= 15
    known = set(data.ids)
    assert all(doc in known for rel in data.train_relevance + data.test_relevance for doc, _ in rel)
    assert not set(data.train_queries) & set(data.test_queries)


def test_demo_shipped_corpus_gains(tmp_path, capsys):
    out = demo.main(["--quiet", "--path", str(tmp_path / "store"), "--max-seconds", "15"])
    assert capsys.readouterr().out == ""
    assert out["status"] == "completed"
    without, with_model = out["results"]["without model"], out["results"]["with model"]
    assert with_model["recall@10"] > without["recall@10"]
    assert len(out["search"]["id"]) == 3
    assert "deepmemory_distance(embedding, ARRAY[" in out["tql"]
    assert len(out["tql_hits"]["id"]) == 3
    # The TQL query ranks with the same model as search(deep_memory=True).
    assert out["tql_hits"]["id"] == out["search"]["id"]
    assert os.path.exists(tmp_path / "store" / "dataset")


def _fake_beir(root, n_docs=60, n_queries=30, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root / "qrels")
    doc_ids = [f"d{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    with open(root / "corpus.jsonl", "w") as f:
        for d in doc_ids:
            f.write(json.dumps({"_id": d, "title": f"title {d}", "text": f"text of {d}"}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for q in query_ids:
            f.write(json.dumps({"_id": q, "text": f"question {q}"}) + "\n")
    (root / "corpus_ids.txt").write_text("\n".join(doc_ids) + "\n")
    (root / "query_ids.txt").write_text("\n".join(query_ids) + "\n")
    docs = rng.normal(size=(n_docs, dim)).astype(np.float32)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    np.save(root / "corpus_emb.npy", docs / np.linalg.norm(docs, axis=1, keepdims=True))
    np.save(root / "queries_emb.npy", queries / np.linalg.norm(queries, axis=1, keepdims=True))
    for name, qs in (("train.tsv", query_ids[:20]), ("dev.tsv", query_ids[20:])):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{doc_ids[i % n_docs]}\t1" for i, q in enumerate(qs)]
        (root / "qrels" / name).write_text("\n".join(lines) + "\n")


def test_demo_beir_folder(tmp_path, capsys):
    _fake_beir(tmp_path / "beir")
    out = demo.main(["--data", str(tmp_path / "beir"), "--path", str(tmp_path / "store"), "--max-seconds", "3"])
    text = capsys.readouterr().out
    assert out["status"] == "completed"
    assert set(out["results"]) == {"without model", "with model"}
    assert "---- Evaluating without Deep Memory ----" in text
    assert "Recall@10" in text
    assert len(out["tql_hits"]["id"]) == 3


def test_demo_beir_loader_maps_queries(tmp_path):
    _fake_beir(tmp_path / "beir")
    data = demo.load_beir(str(tmp_path / "beir"))
    assert len(data.ids) == 60 and data.embeddings.shape == (60, 16)
    assert len(data.train_queries) == 20 and len(data.test_queries) == 10
    vectors = data.embedding_function(data.train_queries[:2])
    assert np.allclose(vectors[0], np.load(tmp_path / "beir" / "queries_emb.npy")[0])
