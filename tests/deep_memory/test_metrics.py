import math

import pytest

from tensordb.deep_memory.metrics import (
    evaluate_rankings,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)

RANKED = [["a", "b", "c", "d"], ["x", "y", "z", "w"]]
REL = [{"b": 1.0, "d": 1.0, "e": 1.0}, [("x", 0.5), ("w", 1.0), ("q", 0.0)]]


def test_recall_by_hand():
    # q1: relevant {b,d,e}; q2: relevant {x,w} (q has score 0: not relevant)
    assert recall_at_k(RANKED, REL, 1) == pytest.approx((0 / 3 + 1 / 2) / 2)
    assert recall_at_k(RANKED, REL, 2) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert recall_at_k(RANKED, REL, 4) == pytest.approx((2 / 3 + 2 / 2) / 2)


def test_hit_rate_and_mrr_by_hand():
    assert hit_rate_at_k(RANKED, REL, 1) == pytest.approx(0.5)
    assert hit_rate_at_k(RANKED, REL, 2) == pytest.approx(1.0)
    assert mrr_at_k(RANKED, REL, 1) == pytest.approx((0 + 1) / 2)
    assert mrr_at_k(RANKED, REL, 4) == pytest.approx((1 / 2 + 1) / 2)


def test_ndcg_graded_by_hand():
    # q1 gains at ranks 2 and 4; ideal has three gains of 1 at ranks 1..3.
    dcg1 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg1 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    # q2: x (0.5) at rank 1, w (1.0) at rank 4; ideal w then x.
    dcg2 = 0.5 + 1.0 / math.log2(5)
    idcg2 = 1.0 + 0.5 / math.log2(3)
    assert ndcg_at_k(RANKED, REL, 4) == pytest.approx((dcg1 / idcg1 + dcg2 / idcg2) / 2)
    # Cut at k=2: ideal also cut at 2.
    assert ndcg_at_k(RANKED, REL, 2) == pytest.approx(
        ((1 / math.log2(3)) / (1 + 1 / math.log2(3)) + 0.5 / (1 + 0.5 / math.log2(3))) / 2
    )


def test_perfect_ranking_scores_one_and_duplicates_not_double_counted():
    assert ndcg_at_k([["a", "b"]], [{"a": 1.0, "b": 0.5}], 10) == pytest.approx(1.0)
    assert recall_at_k([["a", "a", "a"]], [{"a": 1, "b": 1}], 3) == pytest.approx(0.5)


def test_evaluate_rankings_keys_and_errors():
    m = evaluate_rankings(RANKED, REL, top_k=(1, 10))
    assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg", "mrr", "hit_rate") for k in (1, 10)}
    assert m["recall@1"] == pytest.approx(recall_at_k(RANKED, REL, 1))
    with pytest.raises(ValueError):
        recall_at_k(RANKED, REL[:1], 1)
    with pytest.raises(ValueError):
        ndcg_at_k(RANKED, REL, 0)


def test_query_without_relevant_counts_zero():
    assert recall_at_k([["a"]], [{}], 1) == 0.0
    assert ndcg_at_k([["a"]], [{"a": 0.0}], 1) == 0.0
