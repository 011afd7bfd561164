"""The demo: shipped corpus (Deep Memory must help on the test questions) and a BEIR folder."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tensordb import HashingEmbedding, MissingExtraError, SentenceTransformerEmbedding, TensorDBError, demo


def test_shipped_corpus_is_well_formed():
    data = demo.load_shipped()
    assert 100 <= len(data.ids) <= 150
    assert len(set(data.ids)) == len(data.ids)
    assert len(data.train_queries) >= 50 and len(data.test_queries) >= 15
    known = set(data.ids)
    assert all(doc in known for rel in data.train_relevance + data.test_relevance for doc, _ in rel)
    assert not set(data.train_queries) & set(data.test_queries)


def test_demo_shipped_corpus_gains(tmp_path, capsys):
    out = demo.main(["--quiet", "--path", str(tmp_path / "store"), "--max-seconds", "15", "--embedding", "hashing"])
    assert capsys.readouterr().out == ""
    assert out["status"] == "completed"
    without, with_model = out["results"]["without model"], out["results"]["with model"]
    assert with_model["recall@10"] > without["recall@10"]
    comparison = out["comparison"]
    assert list(comparison) == ["BM25", "dense", "hybrid", "Deep Memory", "DM hybrid"]
    assert comparison["dense"] == without and comparison["Deep Memory"] == with_model
    assert all(0 <= m["ndcg@10"] <= 1 for m in comparison.values())
    assert len(out["search"]["id"]) == 3
    assert "deepmemory_distance(embedding, ARRAY[" in out["tql"]
    assert len(out["tql_hits"]["id"]) == 3
    # The TQL query ranks with the same model as search(deep_memory=True).
    assert out["tql_hits"]["id"] == out["search"]["id"]
    assert os.path.exists(tmp_path / "store" / "dataset")
    assert out["plot"] == str(tmp_path / "recall_at_k.png")
    assert (tmp_path / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_with_minilm_prints_tables_and_writes_the_plot(tmp_path, capsys):
    out = demo.main(["--path", str(tmp_path / "store"), "--max-seconds", "4", "--embedding", "minilm"])
    text = capsys.readouterr().out
    assert "embeddings: SentenceTransformerEmbedding('all-MiniLM-L6-v2', dim=384)" in text
    assert "---- Evaluating without Deep Memory ----" in text and "---- Evaluating with Deep Memory ----" in text
    assert "R@10" in text and "with model" in text and "without model" in text
    assert "== BM25 vs dense vs hybrid vs Deep Memory (held-out questions) ==" in text and "DM hybrid" in text
    assert f"recall@k plot written to {tmp_path / 'recall_at_k.png'}" in text
    assert (tmp_path / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    without, with_model = out["results"]["without model"], out["results"]["with model"]
    assert with_model["recall@10"] > without["recall@10"]
    assert len(out["search"]["id"]) == 3 and out["tql_hits"]["id"] == out["search"]["id"]


def test_demo_defaults_to_minilm_when_the_models_extra_is_installed():
    function, note = demo.choose_embedding(None)
    assert isinstance(function, SentenceTransformerEmbedding) and function.dim == 384
    assert note is None


def test_demo_falls_back_to_hashing_and_says_so(monkeypatch):
    monkeypatch.setattr(demo, "models_extra_available", lambda: False)
    function, note = demo.choose_embedding(None)
    assert isinstance(function, HashingEmbedding)
    assert note.count("\n") == 0 and "HashingEmbedding" in note and 'pip install "tensordb[models]"' in note


def test_demo_hashing_when_asked(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # must not be needed
    function, note = demo.choose_embedding("hashing")
    assert isinstance(function, HashingEmbedding) and note is None


def test_demo_minilm_asked_without_the_extra_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match="tensordb\\[models\\]"):
        demo.choose_embedding("minilm")


def test_demo_embedding_option_is_checked(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--embedding", "word2vec"])
    assert "invalid choice" in capsys.readouterr().err


def test_demo_no_plot(tmp_path):
    out = demo.main(["--quiet", "--path", str(tmp_path / "store"), "--max-seconds", "2", "--embedding", "hashing",
                     "--no-plot"])
    assert out["plot"] is None and not (tmp_path / "recall_at_k.png").exists()


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
    assert "precomputed" in text
    assert (tmp_path / "recall_at_k.png").exists()


def test_demo_beir_loader_maps_queries(tmp_path):
    _fake_beir(tmp_path / "beir")
    data = demo.load_beir(str(tmp_path / "beir"))
    assert len(data.ids) == 60 and data.embeddings.shape == (60, 16)
    assert len(data.train_queries) == 20 and len(data.test_queries) == 10
    vectors = data.embedding_function(data.train_queries[:2])
    assert np.allclose(vectors[0], np.load(tmp_path / "beir" / "queries_emb.npy")[0])


def test_demo_bad_plot_path_is_refused_before_any_work(tmp_path):
    with pytest.raises(TensorDBError, match="no-such-folder"):
        demo.main(["--quiet", "--path", str(tmp_path / "store"), "--embedding", "hashing",
                   "--plot", str(tmp_path / "no-such-folder" / "recall.png")])
    assert not (tmp_path / "store").exists()
