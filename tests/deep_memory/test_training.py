import numpy as np
import pytest

from tensordb.deep_memory.metrics import evaluate_rankings
from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.deep_memory.training import TrainingCancelled, TrainingConfig, train_model

from .corpora import rotated_queries

# Short schedules keep the suite fast; the defaults are tuned for real corpora.
FAST = TrainingConfig(max_epochs=40, patience=5, lr_query=3e-3, lr_memory=3e-3)


def _problem(n_docs=500, dim=32, n_q=300, noise=0.6, seed=0):
    """Queries are noisy rotations of their relevant document: cosine ranks them poorly."""
    docs, ids, q, target = rotated_queries(np.random.default_rng(seed), n_docs, dim, n_q, noise)
    return docs, ids, q, [{ids[t]: 1.0} for t in target]


def test_training_improves_over_identity():
    docs, ids, q, rel = _problem()
    seen = []
    res = train_model(
        docs,
        ids,
        q[:240],
        rel[:240],
        seed=0,
        max_seconds=20,
        config=FAST,
        progress=lambda e, n, m: seen.append((e, n, m)),
    )
    assert res.improved and not res.model.is_identity
    assert res.val_metrics_after["recall@10"] > res.val_metrics_before["recall@10"] + 0.1
    assert seen and seen[0][0] == 1 and "ndcg@10" in seen[0][2]
    # Unseen queries also benefit, not only the validation split.
    test_q, test_rel = q[240:], rel[240:]
    base = evaluate_rankings(DeepMemoryModel.identity(32).search(test_q, docs, ids, 100), test_rel)
    tuned = evaluate_rankings(res.model.search(test_q, docs, ids, 100), test_rel)
    assert tuned["recall@10"] > base["recall@10"] + 0.1
    assert tuned["ndcg@10"] > base["ndcg@10"]
    # The shipped model persists.
    back = DeepMemoryModel.from_state(*res.model.to_state())
    assert back.search(test_q, docs, ids, 10) == res.model.search(test_q, docs, ids, 10)


def test_memory_learns_from_few_queries():
    # Below the transform threshold only the sparse memory is trained.
    docs, ids, q, rel = _problem(n_q=40, noise=0.1, seed=3)
    # Pairs of queries per document so validation queries hit memory documents.
    q = np.concatenate([q, q + 0.05 * np.random.default_rng(4).standard_normal(q.shape)])
    rel = rel + rel
    res = train_model(docs, ids, q.astype(np.float32), rel, seed=1, max_seconds=20, config=FAST)
    assert np.array_equal(res.model.query_matrix, np.eye(32, dtype=np.float32))
    if res.improved:
        assert res.model.memory_ids
        assert res.val_metrics_after["ndcg@10"] >= res.val_metrics_before["ndcg@10"]


def test_unlearnable_labels_ship_identity():
    docs, ids, q, _ = _problem(n_q=150)
    rng = np.random.default_rng(9)
    rel = [{ids[int(rng.integers(0, len(ids)))]: 1.0} for _ in range(len(q))]
    res = train_model(docs, ids, q, rel, seed=0, max_seconds=10, config=FAST)
    if not res.improved:
        assert res.model.is_identity
        assert res.val_metrics_after == res.val_metrics_before
    else:  # shipping requires a real validation gain
        assert res.val_metrics_after["ndcg@10"] + res.val_metrics_after["recall@10"] > (
            res.val_metrics_before["ndcg@10"] + res.val_metrics_before["recall@10"]
        )


def test_should_stop_cancels():
    docs, ids, q, rel = _problem(n_q=200)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingCancelled):
        train_model(docs, ids, q, rel, should_stop=stop, max_seconds=20)


def test_hard_negative_path_runs():
    docs, ids, q, rel = _problem(n_q=240)
    cfg = TrainingConfig(max_epochs=15, patience=5, full_softmax_max_docs=100, hard_negatives=64)
    res = train_model(docs, ids, q, rel, seed=0, max_seconds=20, config=cfg)
    assert res.history and res.val_metrics_after["recall@10"] >= res.val_metrics_before["recall@10"]
