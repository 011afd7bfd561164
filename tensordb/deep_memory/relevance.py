"""Validation of training and evaluation inputs: queries and their relevance lists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import SampleError


def check_relevance(
    queries: Sequence[Any], relevance: Sequence[Any], known_ids: set[str]
) -> list[list[tuple[str, float]]]:
    """Return relevance as ``[(id, score), ...]`` per query, or raise ``SampleError`` saying what is wrong.

    Each item is ``(id, score)`` with ``score`` in [0, 1]; a bare id means score 1.
    """
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
        raise SampleError(f"queries must be a list of strings, got {type(queries).__name__}")
    if isinstance(relevance, (str, bytes)) or not isinstance(relevance, Sequence):
        raise SampleError(f"relevance must be a list (one list per query), got {type(relevance).__name__}")
    if len(queries) != len(relevance):
        raise SampleError(f"got {len(queries)} queries but {len(relevance)} relevance lists; expected one per query")
    if not queries:
        raise SampleError("no queries given: expected at least one query with its relevance list")
    out: list[list[tuple[str, float]]] = []
    unknown: list[str] = []
    for q, (query, items) in enumerate(zip(queries, relevance)):
        if not isinstance(query, str):
            raise SampleError(f"query {q}: expected a str, got {type(query).__name__}")
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise SampleError(f"relevance[{q}]: expected a list of (id, score) pairs, got {type(items).__name__}")
        if not items:
            raise SampleError(f"relevance[{q}] is empty: every query needs at least one relevant id")
        pairs = []
        for i, item in enumerate(items):
            doc_id, score = (item, 1.0) if isinstance(item, str) else _pair(q, i, item)
            if doc_id not in known_ids:
                unknown.append(doc_id)
            pairs.append((doc_id, score))
        out.append(pairs)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise SampleError(f"relevance names {len(unknown)} ids that are not in the store: {shown}{more}")
    return out


def _pair(q: int, i: int, item: Any) -> tuple[str, float]:
    if not isinstance(item, Sequence) or len(item) != 2 or not isinstance(item[0], str):
        raise SampleError(f"relevance[{q}][{i}]: expected an (id, score) pair, got {item!r}")
    score = item[1]
    if (
        isinstance(score, bool)
        or not isinstance(score, (int, float))
        or not math.isfinite(score)
        or not 0 <= score <= 1
    ):
        raise SampleError(f"relevance[{q}][{i}]: score must be a number in [0, 1], got {score!r}")
    return item[0], float(score)
