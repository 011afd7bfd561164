"""Train Deep Memory on fixed small problems and save every array the result holds, and model scores.

Run as ``python training_golden.py OUT.npz``; the training test runs it under the code
before the training refactor and under today's, and compares the files bit for bit.
"""

from __future__ import annotations

import sys

import numpy as np

from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.deep_memory.training import TrainingConfig, train_model

CASES = {
    # name: (docs, queries, config overrides)
    "holdout_refit": (300, 260, {"max_epochs": 6, "patience": 3}),
    "cross_validation": (200, 150, {"max_epochs": 8, "patience": 3, "lr_query": 1e-2, "lr_memory": 1e-2}),
    "hard_negatives": (300, 240, {"max_epochs": 4, "patience": 2, "full_softmax_max_docs": 100,
                                  "hard_negatives": 32}),
}


def problem(n_docs: int, n_q: int, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n_docs, dim)).astype(np.float32)
    targets = rng.integers(0, n_docs, n_q)
    mix = rng.standard_normal((dim, dim)).astype(np.float32) * 0.5
    queries = (docs[targets] @ mix + 0.6 * rng.standard_normal((n_q, dim))).astype(np.float32)
    ids = [f"d{i}" for i in range(n_docs)]
    relevance = [[(ids[t], 1.0), (ids[(t + 1) % n_docs], 0.5)] for t in targets]
    return docs, ids, queries, relevance


def arrays() -> dict[str, np.ndarray]:
    out = {}
    for name, (n_docs, n_q, overrides) in CASES.items():
        docs, ids, queries, relevance = problem(n_docs, n_q)
        result = train_model(docs, ids, queries, relevance, seed=3, max_seconds=1e6,
                             config=TrainingConfig(**overrides))
        model = result.model
        out[f"{name}/A"] = model.query_matrix
        out[f"{name}/memory"] = model.memory_vectors
        out[f"{name}/memory_ids"] = np.array(model.memory_ids, dtype=str)
        out[f"{name}/facts"] = np.array([result.improved, result.best_epoch, result.refitted,
                                         result.n_train_queries, result.n_val_queries], dtype=np.int64)
        out[f"{name}/history"] = np.array([[h[k] for k in sorted(h)] for h in result.history], dtype=np.float64)
        out[f"{name}/before"] = np.array([result.val_metrics_before[k] for k in sorted(result.val_metrics_before)])
        out[f"{name}/after"] = np.array([result.val_metrics_after[k] for k in sorted(result.val_metrics_after)])
        ranked = model.search(queries[:20], docs, ids, k=10)
        out[f"{name}/ranked"] = np.array(ranked, dtype=str)
    out.update(scores())
    return out


def scores() -> dict[str, np.ndarray]:
    """``score_block`` under every combination of its arguments, on a block with a zero row."""
    rng = np.random.default_rng(7)
    dim, n = 12, 40
    ids = [f"d{i}" for i in range(n)]
    model = DeepMemoryModel(np.eye(dim, dtype=np.float32) + 0.3 * rng.standard_normal((dim, dim)).astype(np.float32),
                            ids[::3], rng.standard_normal((len(ids[::3]), dim)).astype(np.float32))
    block = rng.standard_normal((n, dim)).astype(np.float32)
    block[5] = 0
    unit_block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    index = model.memory_index(ids)
    rows = np.flatnonzero(index >= 0)
    out = {}
    for label, q in (("single", rng.standard_normal(dim).astype(np.float32)),
                     ("batch", rng.standard_normal((3, dim)).astype(np.float32))):
        qp = model.transform_queries(q)
        calls = {
            "plain": {},
            "norms": {"doc_norms": np.linalg.norm(block, axis=1)},
            "index": {"memory_index": index},
            "index_scores": {"memory_index": index, "memory_scores": model.memory_scores(qp)},
            "rows": {"memory_rows": (rows, index[rows])},
        }
        for name, kwargs in calls.items():
            out[f"score/{label}/{name}"] = model.score_block(qp, block, **kwargs)
        out[f"score/{label}/unit"] = model.score_block(qp, unit_block, memory_index=index, unit_rows=True)
        folded = model.fold_block(block, (rows, index[rows]))
        out[f"score/{label}/folded"] = model.score_block(model.unit_queries(q), folded, np.linalg.norm(block, axis=1))
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **arrays())
