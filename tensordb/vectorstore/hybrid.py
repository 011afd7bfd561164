"""A vector store's search modes beyond the vector search: BM25 text search, and hybrid search that fuses both.

Both sides of a hybrid search run on one snapshot with the same WHERE, so a filter applies
before fusion. Each side fetches ``max(k, CANDIDATES)`` rows (``sparse_top_k`` sets the text
side's), and :mod:`~tensordb.deep_memory.fusion` merges them into the top ``k``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from query_lang import ast

from ..core import Table
from ..deep_memory.fusion import RRF_K, FusionChoice, Ranking, check_fusion, fusion_or_default
from ..errors import IndexNotFoundError, SampleError

MODES = ("vector", "text", "hybrid")
#: Rows each side of a hybrid search fetches at least, whatever ``k``: fusion needs depth to choose from.
CANDIDATES = 100


@dataclass(frozen=True)
class HybridRequest:
    """A checked search mode and its fusion settings (``fusion``/``alpha`` None: the defaults, or what
    Deep Memory learned)."""

    mode: str
    fusion: str | None
    alpha: float | None
    rrf_k: int
    sparse_top_k: int | None

    @classmethod
    def parse(cls, mode: Any, fusion: Any, alpha: Any, rrf_k: Any, sparse_top_k: Any) -> HybridRequest:
        if mode not in MODES:
            raise SampleError(f"search: mode must be one of {list(MODES)}, got {mode!r}")
        if fusion is not None or alpha is not None or rrf_k != RRF_K:
            if mode != "hybrid":
                raise SampleError(f"search: fusion, alpha and rrf_k apply to mode='hybrid', not mode={mode!r}")
            fusion = fusion or ("convex" if alpha is not None else "rrf")
            _, _, rrf_k = check_fusion(fusion, 0.5 if alpha is None else alpha, rrf_k)
            if alpha is not None and fusion != "convex":
                raise SampleError(f"search: alpha weighs fusion='convex'; fusion={fusion!r} takes no alpha")
        bad_depth = isinstance(sparse_top_k, bool) or not isinstance(sparse_top_k, numbers.Integral)
        if sparse_top_k is not None and (bad_depth or sparse_top_k < 1):
            raise SampleError(f"search: sparse_top_k must be a positive integer, got {sparse_top_k!r}")
        return cls(mode, fusion, None if alpha is None else float(alpha), rrf_k,
                   None if sparse_top_k is None else int(sparse_top_k))

    def choice(self, learned: Mapping[str, Any] | None) -> FusionChoice:
        """The fusion to apply: the one asked for, else the learned one, else the default (convex, alpha 0.5)."""
        if self.fusion is not None:
            return FusionChoice(self.fusion, 0.5 if self.alpha is None else self.alpha, self.rrf_k, {})
        return fusion_or_default(learned)


def text_query(text: Any, where: ast.Expr | None, limit: int) -> ast.Query:
    """``SELECT * [WHERE ...] ORDER BY bm25_similarity(text, <text>) DESC LIMIT limit``."""
    if not isinstance(text, str) or not text.strip():
        raise SampleError(f"search: text and hybrid modes need the query text as embedding_data, got {text!r:.80}")
    score = ast.OrderKey(ast.Call("bm25_similarity", (ast.Column("text"), ast.Literal(text))), descending=True)
    return ast.Query(select=(ast.Star(),), where=where, order_by=(score,), limit=limit)


def has_text_index(table: Table) -> bool:
    """Whether ``text`` has a bm25 index."""
    return any(info["kind"] == "bm25" for info in table.text.indexes.values())


def check_text_index(table: Table, mode: str) -> None:
    """Refuse a text or hybrid search of a store without a bm25 index on ``text``, saying how to make one."""
    if not has_text_index(table):
        raise IndexNotFoundError(
            f"search: mode={mode!r} needs a bm25 index on the store's text, and it has none; open the store with "
            f"VectorStore(path, ..., text_index='english'), or run vs.dataset.text.create_index('fts', kind='bm25')"
        )


def ranking(view: Table, drop_zero: bool = False, by_id: bool = False) -> Ranking:
    """A query result's rows (dataset positions, or ids with ``by_id``) and scores; ``drop_zero`` leaves out
    the rows no query term matched."""
    keys = np.asarray(view.id.numpy(aslist=True), dtype=object) if by_id else view.row_positions
    scores = np.asarray(view.virtual_columns["score"], dtype=np.float64)
    if drop_zero:
        keep = scores > 0
        keys, scores = keys[keep], scores[keep]
    return Ranking(keys.tolist() if by_id else keys, scores)


def fused_rows(dense: Ranking, lexical: Ranking, choice: FusionChoice, k: int) -> Ranking:
    """The top ``k`` of the fused ranking."""
    fused = choice.apply(dense, lexical)
    return Ranking(np.asarray(fused.keys[:k], dtype=np.int64), np.asarray(fused.scores[:k], dtype=np.float64))
