"""train(..., validation_queries=, validation_relevance=): a few real questions judge synthetic training data.

The corpus is built so that the training labels are consistently wrong: every training
query near document ``i`` is labelled ``σ(i)``, another document. Those labels agree with
each other, so a model trained on them beats the identity on their own split; on real
questions (near ``i``, labelled ``i``) the same model is worse. Given the real questions,
model selection and the never-worse guard must listen to them alone and ship the identity.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import tensordb
from tensordb.deep_memory.api import DeepMemory
from tensordb.deep_memory.metrics import recall_at_k
from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.deep_memory.training import train_model
from tensordb.errors import SampleError

from .corpora import ArrayCorpus

DIM, N_DOCS, N_PAIRS, PER_PAIR = 16, 60, 20, 5


def _problem():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(N_DOCS)]
    # σ(i): the nearest of the other documents, a plausible confuser the wrong labels can pull up.
    wrong = {i: N_PAIRS + int(np.argmax(docs[N_PAIRS:] @ docs[i])) for i in range(N_PAIRS)}

    def near(i: int, n: int) -> np.ndarray:
        return (docs[i] + 0.15 * rng.standard_normal((n, DIM))).astype(np.float32)

    train_q = np.concatenate([near(i, PER_PAIR) for i in range(N_PAIRS)])
    train_rel = [[(ids[wrong[i]], 1.0)] for i in range(N_PAIRS) for _ in range(PER_PAIR)]
    val_q = np.concatenate([near(i, 1) for i in range(N_PAIRS)])
    val_rel = [[(ids[i], 1.0)] for i in range(N_PAIRS)]
    return docs, ids, train_q, train_rel, val_q, val_rel


def test_the_mislabelled_training_set_helps_its_own_split_and_hurts_real_questions():
    docs, ids, train_q, train_rel, val_q, val_rel = _problem()
    result = train_model(docs, ids, train_q, train_rel, seed=0, max_seconds=30)
    assert result.improved  # the trap: judged on itself, the wrong labels look like a gain
    assert result.validated_on == "k-fold on training queries (5 folds, 100 queries)"
    identity = DeepMemoryModel.identity(DIM)
    before = recall_at_k(identity.search(val_q, docs, ids, k=10), val_rel, 1)
    after = recall_at_k(result.model.search(val_q, docs, ids, k=10), val_rel, 1)
    assert before == 1.0 and after < 0.5  # on the real questions the shipped model is much worse


def test_a_given_validation_set_decides_and_the_identity_ships():
    docs, ids, train_q, train_rel, val_q, val_rel = _problem()
    result = train_model(docs, ids, train_q, train_rel, seed=0, max_seconds=30,
                         validation_query_embeddings=val_q, validation_relevance=val_rel)
    assert not result.improved
    assert np.array_equal(result.model.query_matrix, DeepMemoryModel.identity(DIM).query_matrix)
    assert result.model.memory_ids == []
    assert result.validated_on == "given validation set (20 queries)"
    assert result.n_val_queries == N_PAIRS and result.n_train_queries == N_PAIRS * PER_PAIR
    assert result.val_metrics_before["recall@1"] == 1.0  # the real questions sit on their documents
    assert result.history and result.best_epoch == 0  # no epoch beat the identity on them


def test_a_helpful_validation_set_lets_the_model_ship_unrefitted():
    docs, ids, train_q, train_rel, _, _ = _problem()
    rng = np.random.default_rng(1)
    real_q = np.concatenate([(docs[i] + 0.15 * rng.standard_normal((1, DIM))).astype(np.float32)
                             for i in range(N_PAIRS)])
    agreeing = [train_rel[i * PER_PAIR] for i in range(N_PAIRS)]  # questions that share the training labels
    result = train_model(docs, ids, train_q, train_rel, seed=0, max_seconds=30,
                         validation_query_embeddings=real_q, validation_relevance=agreeing)
    assert result.improved and not result.refitted  # the shipped model is the one that was validated
    assert result.val_metrics_after["recall@1"] > result.val_metrics_before["recall@1"]


@pytest.fixture
def corpus_and_sets():
    docs, ids, train_q, train_rel, val_q, val_rel = _problem()
    queries = {f"t{i}": v for i, v in enumerate(train_q)} | {f"v{i}": v for i, v in enumerate(val_q)}
    corpus = ArrayCorpus(tensordb.empty(f"mem://{uuid.uuid4().hex}", overwrite=True), ids, docs, queries)
    return corpus, [f"t{i}" for i in range(len(train_q))], train_rel, [f"v{i}" for i in range(len(val_q))], val_rel


def test_status_says_which_set_decided(corpus_and_sets, capsys):
    corpus, tq, tr, vq, vr = corpus_and_sets
    dm = DeepMemory(corpus)
    job = dm.train(tq, tr, max_seconds=30, validation_queries=vq, validation_relevance=vr)
    info = dm.wait(job, timeout=120)
    assert info["status"] == "completed"
    assert info["validated_on"] == "given validation set (20 queries)"
    assert dm.model().memory_ids == []  # the identity shipped
    dm.status(job)
    assert "given validation set (20 queries)" in capsys.readouterr().out
    plain = dm.wait(dm.train(tq, tr, max_seconds=30), timeout=120)
    assert plain["validated_on"].startswith("k-fold on training queries")


@pytest.mark.parametrize("vq, vr, message", [
    (["v0"], None, "both"),
    (None, [["d0"]], "both"),
    (["v0", "v1"], [["d0"]], "validation set: got 2 queries but 1 relevance lists"),
    (["v0"], [["nowhere"]], "validation set: relevance names 1 ids that are not in the store: 'nowhere'"),
    (["v0"], [[("d0", 2.0)]], r"validation set: relevance\[0\]\[0\]: score must be a number in \[0, 1\]"),
    ([], [], "validation set: no queries given"),
])
def test_bad_validation_input_is_refused_before_anything_is_written(corpus_and_sets, vq, vr, message):
    corpus, tq, tr, _, _ = corpus_and_sets
    dm = DeepMemory(corpus)
    with pytest.raises(SampleError, match=message):
        dm.train(tq, tr, validation_queries=vq, validation_relevance=vr)
    assert corpus.dataset.list_attachments("") == []
