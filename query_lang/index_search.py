"""ORDER BY <similarity> LIMIT k through a vector index: which searches an index can serve.

A search is served when its single ORDER BY key is a vector function of one column
and one constant vector, in the direction the function's :class:`IndexQuery` says
(``cosine_similarity`` and ``dot`` descending, ``l2_norm(column - vector)``
ascending; other functions, e.g. Deep Memory's, describe themselves). The index
only proposes candidates: the executor scores them, and the rows the index does
not cover, with the function itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ast
from .evaluate import BExpr
from .functions import IndexQuery, L2Norm
from .planner import Plan
from .source import ScanSource


@dataclass(frozen=True)
class VectorRequest:
    column: str
    query: IndexQuery


def vector_request(plan: Plan, source: ScanSource) -> VectorRequest | None:
    """What an index must search for ``plan``'s top-k, or None when no index can serve it."""
    if plan.sub is not None or not plan.vector_fast_path or plan.limit is None:
        return None
    key, descending = plan.order[0]
    found = _column_and_vector(key)
    if found is None:
        return None
    column, vector = found
    query = key.function.index_query(vector, column, source)
    if query is None or query.descending != descending:
        return None
    return VectorRequest(column, query)


def _column_and_vector(key: BExpr) -> tuple[str, np.ndarray] | None:
    """``(column, vector)`` of ``f(column, vector)``, ``f(vector, column)`` or ``l2_norm(column - vector)``."""
    args = key.children
    if isinstance(key.function, L2Norm):
        if len(args) != 1 or not (isinstance(args[0].resolved, ast.Binary) and args[0].resolved.op == "-"):
            return None
        args = args[0].children
    if len(args) != 2:
        return None
    columns = [a for a in args if a.column is not None and not a.children and not a.const]
    vectors = [a for a in args if a.const and isinstance(a.value, np.ndarray) and a.value.ndim == 1]
    if len(columns) != 1 or len(vectors) != 1:
        return None
    return columns[0].column, np.asarray(vectors[0].value, dtype=np.float32)
