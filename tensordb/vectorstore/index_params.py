"""Deep Lake v3's ``index_params``: a vector store builds (and renews) its vector index by itself;
and ``text_index``: likewise for a bm25 index of its text.

``{"threshold": N, "distance_metric": "COS" | "L2" | "IP", "additional_params": {...}}``: once the
store holds at least ``threshold`` chunks, a write builds an hnsw index of the embeddings
(``additional_params`` are its ``M``, ``efConstruction``, ``efSearch``). ``threshold=-1``, the
default as in Deep Lake, never builds one. Rows written later are searched exactly beside the
index until they make up ``STALE_SHARE`` of it; the next write then rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core import Dataset
from ..core.tensor import DEEPLAKE_HNSW_PARAMS
from ..errors import IndexDefinitionError
from ..indexes import bm25_params

#: The names of the indexes a vector store keeps by itself.
INDEX_NAME = "vector_store_index"
TEXT_INDEX_NAME = "vector_store_text_index"
#: Fresh plus deleted rows, as a share of the indexed rows, past which a write rebuilds the index.
STALE_SHARE = 0.25
_METRICS = {"COS": "cosine", "L2": "l2", "IP": "dot", "cos": "cosine", "l2": "l2", "dot": "dot"}
_ADDITIONAL = {"M": "M", "ef_construction": "ef_construction", "ef_search": "ef_search", **DEEPLAKE_HNSW_PARAMS}


@dataclass(frozen=True)
class IndexPolicy:
    """When and how a vector store indexes its embeddings."""

    threshold: int = -1
    metric: str = "cosine"
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, index_params: Mapping[str, Any] | None) -> IndexPolicy:
        """The policy of Deep Lake v3's ``index_params``; IndexDefinitionError names any unknown or bad entry."""
        if index_params is None:
            return cls()
        if not isinstance(index_params, Mapping):
            raise IndexDefinitionError(f"index_params must be a dict, got {type(index_params).__name__}")
        unknown = sorted(set(index_params) - {"threshold", "distance_metric", "additional_params"})
        if unknown:
            raise IndexDefinitionError(
                f"index_params: unknown key(s) {unknown}; expected threshold, distance_metric, additional_params"
            )
        threshold = index_params.get("threshold", -1)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < -1:
            raise IndexDefinitionError(f"index_params: threshold must be an integer >= -1, got {threshold!r}")
        metric = index_params.get("distance_metric", "COS")
        if metric not in _METRICS:
            raise IndexDefinitionError(f"index_params: distance_metric must be one of COS, L2, IP, got {metric!r}")
        additional = dict(index_params.get("additional_params") or {})
        bad = sorted(set(additional) - set(_ADDITIONAL))
        if bad:
            raise IndexDefinitionError(
                f"index_params: unknown additional_params {bad}; expected M, efConstruction, efSearch"
            )
        return cls(threshold, _METRICS[metric], {_ADDITIONAL[k]: v for k, v in additional.items()})

    def maintain(self, dataset: Dataset) -> None:
        """Build the index once the store is large enough, and rebuild it once it has gone stale."""
        if self.threshold < 0 or len(dataset) < max(self.threshold, 1):
            return
        info = dataset.embedding.indexes.get(INDEX_NAME)
        if info is None:
            dataset.embedding.create_index(INDEX_NAME, kind="hnsw", metric=self.metric, **self.params)
        elif info["fresh_rows"] + info["deleted_rows"] > STALE_SHARE * max(info["rows"], 1):
            dataset.embedding.rebuild_index(INDEX_NAME)


@dataclass(frozen=True)
class TextIndexPolicy:
    """Whether a vector store keeps a bm25 index of its text, and its parameters.

    ``text_index`` is a language (``"english"``), or a dict of bm25 index parameters, or None
    (no index). The index is built once the store holds a chunk and renewed as the vector
    index is: when fresh plus deleted rows pass ``STALE_SHARE`` of it (they are searched
    exactly until then).
    """

    params: dict[str, Any] | None = None

    @classmethod
    def parse(cls, text_index: str | Mapping[str, Any] | None) -> TextIndexPolicy:
        if text_index is None:
            return cls()
        if isinstance(text_index, str):
            params: dict[str, Any] = {"language": text_index}
        elif isinstance(text_index, Mapping):
            params = dict(text_index)
        else:
            raise IndexDefinitionError(
                f"text_index must be a language such as 'english' or a dict of bm25 parameters, got {text_index!r:.80}"
            )
        bm25_params("text", "text", params)  # refuse bad parameters now, before any write
        return cls(params)

    def maintain(self, dataset: Dataset) -> None:
        """Build the index once the store has rows, and rebuild it once it has gone stale."""
        if self.params is None or len(dataset) == 0:
            return
        info = dataset.text.indexes.get(TEXT_INDEX_NAME)
        if info is None:
            dataset.text.create_index(TEXT_INDEX_NAME, kind="bm25", **self.params)
        elif info["fresh_rows"] + info["deleted_rows"] > STALE_SHARE * max(info["rows"], 1):
            dataset.text.rebuild_index(TEXT_INDEX_NAME)
