"""Maximal marginal relevance: pick results that are close to the query and far from each other.

Shared by the LangChain and LlamaIndex integrations, so both diversify the same way
(and neither needs the other framework installed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SampleError

__all__ = ["maximal_marginal_relevance"]


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; a zero row stays zero (its cosine with anything counts as 0)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def maximal_marginal_relevance(
    query: Sequence[float] | np.ndarray,
    candidates: Sequence[Sequence[float]] | np.ndarray,
    k: int = 4,
    lambda_mult: float = 0.5,
) -> list[int]:
    """Positions in ``candidates`` of ``k`` picks by maximal marginal relevance, in the order picked.

    Each step picks the candidate maximising ``lambda_mult * cos(query, c) - (1 - lambda_mult) *
    max(cos(c, picked))``: ``lambda_mult=1`` is plain similarity order, lower values favour
    candidates unlike those already picked. The first pick is always the one closest to the query.
    Ties go to the earlier candidate, so a store's own ranking breaks them.
    """
    if not 0.0 <= float(lambda_mult) <= 1.0:
        raise SampleError(f"maximal_marginal_relevance: lambda_mult must be in [0, 1], got {lambda_mult!r}")
    vectors = np.asarray(candidates, dtype=np.float64)
    if k < 1 or vectors.size == 0:
        return []
    if vectors.ndim != 2:
        raise SampleError(f"maximal_marginal_relevance: candidates must be vectors, got shape {vectors.shape}")
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    if q.shape[0] != vectors.shape[1]:
        raise SampleError(f"maximal_marginal_relevance: the query has {q.shape[0]} dimensions, "
                         f"the candidates {vectors.shape[1]}")
    unit = _unit_rows(vectors)
    relevance = unit @ _unit_rows(q[None, :])[0]
    closest_picked = np.full(len(unit), -np.inf)  # max cosine of each candidate with the picks so far
    available = np.ones(len(unit), dtype=bool)
    picked: list[int] = []
    for _ in range(min(k, len(unit))):
        if picked:
            score = lambda_mult * relevance - (1.0 - lambda_mult) * closest_picked
        else:
            score = relevance.copy()
        score[~available] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        available[best] = False
        closest_picked = np.maximum(closest_picked, unit @ unit[best])
    return picked
