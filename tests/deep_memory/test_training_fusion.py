"""train_model(..., lexical_rankings=): the hybrid fusion fitted on validation queries with the held-out model."""

from __future__ import annotations

import numpy as np
import pytest

from tensordb.deep_memory import training
from tensordb.deep_memory.fusion import ALPHA_GRID, FusionChoice, Ranking
from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.deep_memory.training import TrainingConfig, train_model

from .corpora import rotated_queries

# Few epochs and a hold-out split from 20 queries on: small problems, a held-out model and a refit.
CONFIG = TrainingConfig(max_epochs=20, patience=5, min_queries_for_transform=20, cv_below_queries=20)
CV = TrainingConfig(max_epochs=20, patience=5, min_queries_for_transform=20)


def _problem(n_q: int, n_docs: int = 300, dim: int = 32, seed: int = 0):
    """Queries are noisy rotations of their document (learning helps); BM25 finds the document at a random
    rank among strong junk for half of the queries, and not at all for the rest."""
    rng = np.random.default_rng(seed)
    docs, ids, queries, target = rotated_queries(rng, n_docs, dim, n_q)
    lexical = []
    for t in target:
        junk = [ids[j] for j in rng.choice(n_docs, 20, replace=False) if j != t][:15]
        if rng.random() < 0.5:
            junk.insert(int(rng.integers(0, 3)), ids[t])
        lexical.append(Ranking(junk, np.sort(rng.uniform(1, 10, len(junk)))[::-1]))
    return docs, ids, queries, [{ids[t]: 1.0} for t in target], lexical


HOLDOUT = _problem(100, n_docs=150)


@pytest.fixture(scope="module")
def holdout():
    """A hold-out split, then a refit on all queries (so the held-out and shipped models differ)."""
    docs, ids, queries, relevance, lexical = HOLDOUT
    result = train_model(docs, ids, queries, relevance, seed=1, max_seconds=60, config=CONFIG,
                         lexical_rankings=lexical)
    return (docs, ids, queries, relevance, lexical), result


def test_the_fusion_is_stored_in_the_result_and_the_model_metadata(holdout):
    _, result = holdout
    assert result.improved and result.refitted  # the case where held-out and shipped models differ
    assert isinstance(result.fusion, FusionChoice)
    assert result.model.metadata["fusion"] == result.fusion.to_dict()
    assert FusionChoice.from_dict(result.model.metadata["fusion"]) == result.fusion
    assert result.fusion.method in ("dense", "lexical", "rrf", "convex")
    if result.fusion.method == "convex":
        assert result.fusion.alpha in ALPHA_GRID
    v = result.fusion.validation
    assert set(v) == {"chosen", "dense", "lexical", "rrf", "best_convex"}
    assert v["chosen"] == max(v["dense"], v["lexical"], v["rrf"], v["best_convex"]) or result.fusion.method in (
        "dense", "lexical")


def test_the_fusion_is_judged_with_the_held_out_model(holdout):
    # The fusion's "dense" score is the held-out model's validation score (what val_metrics_after reports),
    # not the refit's (which has seen the validation queries and would score higher).
    _, result = holdout
    after = result.val_metrics_after
    assert result.fusion.validation["dense"] == pytest.approx(0.5 * after["ndcg@10"] + 0.5 * after["recall@10"],
                                                              abs=1e-5)


def test_scored_search_runs_with_the_held_out_model_not_the_refit(monkeypatch):
    docs, ids, queries, relevance, lexical = HOLDOUT
    seen: list[DeepMemoryModel] = []
    original = DeepMemoryModel.scored_search

    def spy(self, *args, **kwargs):
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeepMemoryModel, "scored_search", spy)
    result = train_model(docs, ids, queries, relevance, seed=1, max_seconds=60, config=CONFIG,
                         lexical_rankings=lexical)
    assert result.refitted and seen
    assert all(model is not result.model for model in seen)
    # The held-out model's memory covers the training split's documents only; the refit's, every query's.
    assert set(seen[0].memory_ids) < set(result.model.memory_ids)


def test_without_a_refit_the_shipped_model_is_the_one_judged(monkeypatch):
    docs, ids, queries, relevance, lexical = HOLDOUT
    seen: list[DeepMemoryModel] = []
    original = DeepMemoryModel.scored_search
    monkeypatch.setattr(DeepMemoryModel, "scored_search", lambda self, *a, **k: seen.append(self) or original(
        self, *a, **k))
    cfg = TrainingConfig(max_epochs=20, patience=5, min_queries_for_transform=20, cv_below_queries=20, refit=False)
    result = train_model(docs, ids, queries, relevance, seed=1, max_seconds=60, config=cfg, lexical_rankings=lexical)
    assert not result.refitted and seen
    for model in seen:  # the held-out model judged is the one shipped, weight for weight
        assert np.array_equal(model.query_matrix, result.model.query_matrix)
        assert list(model.memory_ids) == list(result.model.memory_ids)


def test_the_same_inputs_give_the_same_fusion(holdout):
    (docs, ids, queries, relevance, lexical), first = holdout
    again = train_model(docs, ids, queries, relevance, seed=1, max_seconds=60, config=CONFIG,
                        lexical_rankings=lexical)
    assert again.fusion == first.fusion
    assert again.model.metadata["fusion"] == first.model.metadata["fusion"]


def test_cross_validation_fits_a_fusion_too():
    docs, ids, queries, relevance, lexical = _problem(40, n_docs=100, seed=2)
    result = train_model(docs, ids, queries, relevance, seed=0, max_seconds=30, config=CV,
                         lexical_rankings=lexical)
    assert result.model.metadata["folds"] > 1
    assert result.fusion is not None and result.model.metadata["fusion"] == result.fusion.to_dict()


def test_without_lexical_rankings_no_fusion_is_fitted():
    docs, ids, queries, relevance, _ = _problem(60, n_docs=120, seed=2)
    result = train_model(docs, ids, queries, relevance, seed=0, max_seconds=30, config=CONFIG)
    assert result.fusion is None and "fusion" not in result.model.metadata


def test_bm25_alone_is_kept_when_the_embedding_is_useless():
    # Query embeddings are noise; BM25 puts the relevant document first every time.
    docs, ids, queries, relevance, _ = _problem(60, n_docs=120, seed=3)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(queries.shape).astype(np.float32)
    perfect = [Ranking([next(iter(r)), "doc0" if next(iter(r)) != "doc0" else "doc1"], np.asarray([5.0, 1.0]))
               for r in relevance]
    result = train_model(docs, ids, noise, relevance, seed=0, max_seconds=30, config=CONFIG,
                         lexical_rankings=perfect)
    assert result.fusion.method == "lexical"
    assert result.fusion.validation["lexical"] == pytest.approx(1.0)


def test_a_validation_set_without_its_lexical_rankings_is_refused_before_training(monkeypatch):
    docs, ids, queries, relevance, lexical = _problem(80, n_docs=120, seed=4)
    monkeypatch.setattr(training, "_select_epochs", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ValueError, match=r"validation_lexical_rankings: expected one ranking per validation query "
                                         r"\(20\), got none"):
        train_model(docs, ids, queries[:60], relevance[:60], seed=0, max_seconds=30, config=CONFIG,
                    lexical_rankings=lexical[:60], validation_query_embeddings=queries[60:],
                    validation_relevance=relevance[60:])


def test_a_validation_set_with_its_lexical_rankings_fits_on_it():
    docs, ids, queries, relevance, lexical = _problem(80, n_docs=120, seed=4)
    result = train_model(docs, ids, queries[:60], relevance[:60], seed=0, max_seconds=30, config=CONFIG,
                         lexical_rankings=lexical[:60], validation_query_embeddings=queries[60:],
                         validation_relevance=relevance[60:], validation_lexical_rankings=lexical[60:])
    assert result.n_val_queries == 20 and result.fusion is not None
    # BM25's score on the validation queries is computable from their own rankings.
    found = [next(iter(r)) in [str(k) for k in x.keys[:10]] for r, x in zip(relevance[60:], lexical[60:],
                                                                           strict=True)]
    ranks = [[str(k) for k in x.keys].index(next(iter(r))) if ok else None
             for r, x, ok in zip(relevance[60:], lexical[60:], found, strict=True)]
    ndcg = np.mean([0.0 if r is None else 1 / np.log2(r + 2) for r in ranks])
    assert result.fusion.validation["lexical"] == pytest.approx(0.5 * ndcg + 0.5 * np.mean(found), abs=1e-5)


def test_lexical_rankings_not_aligned_with_the_queries_are_refused():
    # BUG: train_model does not check that lexical_rankings has one ranking per query: a list that is too long
    # (or too short, when the held-out positions happen to fall inside it) silently misaligns BM25's rankings
    # with the queries, and the fusion is fitted on the wrong pairs.
    docs, ids, queries, relevance, lexical = _problem(60, n_docs=120, seed=2)
    with pytest.raises(ValueError, match="lexical_rankings"):
        train_model(docs, ids, queries, relevance, seed=0, max_seconds=30, config=CONFIG,
                    lexical_rankings=lexical[1:] + lexical[:1] + lexical[:5])
