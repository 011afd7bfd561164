"""Ranking metrics for Deep Memory evaluation.

Every metric takes ``ranked_ids`` (one ranked list of document ids per query, best
first) and ``relevance`` (one judgement per query: a mapping ``doc_id -> score`` or a
sequence of ``(doc_id, score)`` pairs, score in [0, 1], graded) and returns the mean
over queries. A document is *relevant* when its score is > 0.

Queries without any relevant document count as 0 for every metric, so they lower
the mean rather than being silently dropped; callers that want them excluded should
filter before calling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Relevance = Mapping[str, float] | Sequence[tuple[str, float]]

DEFAULT_TOP_K: tuple[int, ...] = (1, 3, 5, 10, 50, 100)


def _as_dict(rel: Relevance) -> dict[str, float]:
    items: Iterable[tuple[str, float]] = rel.items() if isinstance(rel, Mapping) else rel
    out: dict[str, float] = {}
    for doc_id, score in items:
        # Duplicate judgements: keep the strongest one.
        out[str(doc_id)] = max(float(score), out.get(str(doc_id), 0.0))
    return out


def _check(ranked_ids: Sequence[Sequence[str]], relevance: Sequence[Relevance], k: int) -> None:
    if len(ranked_ids) != len(relevance):
        raise ValueError(f"ranked_ids has {len(ranked_ids)} queries but relevance has {len(relevance)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _top_k_unique(ranked: Sequence[str], k: int) -> list[str]:
    # A duplicated id must not be credited twice.
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        if len(out) == k:
            break
        doc_id = str(doc_id)
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
    return out


def recall_at_k(ranked_ids: Sequence[Sequence[str]], relevance: Sequence[Relevance], k: int) -> float:
    """Mean of |relevant ∩ top-k| / |relevant|."""
    _check(ranked_ids, relevance, k)
    vals = []
    for ranked, rel in zip(ranked_ids, relevance, strict=True):
        pos = {d for d, s in _as_dict(rel).items() if s > 0}
        if not pos:
            vals.append(0.0)
            continue
        vals.append(sum(d in pos for d in _top_k_unique(ranked, k)) / len(pos))
    return _mean(vals)


def hit_rate_at_k(ranked_ids: Sequence[Sequence[str]], relevance: Sequence[Relevance], k: int) -> float:
    """Fraction of queries with at least one relevant document in the top k."""
    _check(ranked_ids, relevance, k)
    vals = []
    for ranked, rel in zip(ranked_ids, relevance, strict=True):
        pos = {d for d, s in _as_dict(rel).items() if s > 0}
        vals.append(float(any(d in pos for d in _top_k_unique(ranked, k))))
    return _mean(vals)


def mrr_at_k(ranked_ids: Sequence[Sequence[str]], relevance: Sequence[Relevance], k: int) -> float:
    """Mean reciprocal rank of the first relevant document (0 if none in the top k)."""
    _check(ranked_ids, relevance, k)
    vals = []
    for ranked, rel in zip(ranked_ids, relevance, strict=True):
        pos = {d for d, s in _as_dict(rel).items() if s > 0}
        rr = 0.0
        for rank, d in enumerate(_top_k_unique(ranked, k), start=1):
            if d in pos:
                rr = 1.0 / rank
                break
        vals.append(rr)
    return _mean(vals)


def ndcg_at_k(ranked_ids: Sequence[Sequence[str]], relevance: Sequence[Relevance], k: int) -> float:
    """Mean nDCG@k with linear graded gains (gain = score) and a log2(rank + 1) discount.

    The ideal DCG is computed from the query's full relevance list.
    """
    _check(ranked_ids, relevance, k)
    vals = []
    for ranked, rel in zip(ranked_ids, relevance, strict=True):
        gains = _as_dict(rel)
        ideal_gains = sorted((s for s in gains.values() if s > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal_gains))
        if idcg <= 0:
            vals.append(0.0)
            continue
        dcg = sum(
            gains.get(d, 0.0) / math.log2(i + 2)
            for i, d in enumerate(_top_k_unique(ranked, k))
            if gains.get(d, 0.0) > 0
        )
        vals.append(dcg / idcg)
    return _mean(vals)


def evaluate_rankings(
    ranked_ids: Sequence[Sequence[str]],
    relevance: Sequence[Relevance],
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> dict[str, float]:
    """All metrics at every k, keyed ``"recall@10"``, ``"ndcg@10"``, ``"mrr@10"``,
    ``"hit_rate@10"`` and so on."""
    out: dict[str, float] = {}
    for k in top_k:
        out[f"recall@{k}"] = recall_at_k(ranked_ids, relevance, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked_ids, relevance, k)
        out[f"mrr@{k}"] = mrr_at_k(ranked_ids, relevance, k)
        out[f"hit_rate@{k}"] = hit_rate_at_k(ranked_ids, relevance, k)
    return out


def recall_curve(ranked_ids: Sequence[Sequence[str]], relevance: Sequence[Relevance], max_k: int) -> dict[int, float]:
    """Recall@k for every k in 1..``max_k`` from one pass over each ranking (equal to :func:`recall_at_k` at each k)."""
    _check(ranked_ids, relevance, max_k)
    per_query: list[list[float]] = []  # per_query[q][k - 1]: recall@k of query q
    for ranked, rel in zip(ranked_ids, relevance, strict=True):
        pos = {d for d, s in _as_dict(rel).items() if s > 0}
        if not pos:
            per_query.append([0.0] * max_k)
            continue
        hits, found = [], 0
        top = _top_k_unique(ranked, max_k)
        for rank in range(max_k):
            found += rank < len(top) and top[rank] in pos
            hits.append(found / len(pos))
        per_query.append(hits)
    return {k: _mean([q[k - 1] for q in per_query]) for k in range(1, max_k + 1)}
