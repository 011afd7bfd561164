"""Indexes: derived data that answers searches and filters without a full scan.

Two families share one life cycle (built from a snapshot, stored as an immutable,
checksummed file, listed by the states it belongs to):

* vector indexes (``flat``, ``hnsw``, ``ivf_pq``, ``ivf_sq``; :mod:`.vector`, on faiss,
  imported only when used, since faiss is the optional extra ``tensordb[faiss]``);
* key indexes (``json`` paths, ``scalar`` tensors; :mod:`.keys`);
* text indexes (``bm25``; :mod:`.bm25` with :mod:`.text`'s analyzer, on bm25s and PyStemmer, the
  optional extra ``tensordb[text]``, imported only when used).

:mod:`.coverage` maps an index's entries onto a tensor as it is now.
"""

from .bm25 import Bm25Index, FreshSegment, bm25_params
from .coverage import Coverage
from .definitions import (
    DEFAULT_REFINE,
    KEY_KINDS,
    KINDS,
    METRIC_NAMES,
    METRICS,
    SEARCH_PARAMS,
    TEXT_KINDS,
    VECTOR_KINDS,
    check_kind,
    check_scalar,
    family,
    json_paths,
    metric_name,
    vector_dim,
)
from .files import IndexFile, decode_index, encode_index, new_index_key
from .keys import UNINDEXED, KeyColumn, KeyIndex, build_key_column, value_at

__all__ = [
    "DEFAULT_REFINE", "KEY_KINDS", "KINDS", "METRICS", "METRIC_NAMES", "SEARCH_PARAMS", "TEXT_KINDS", "UNINDEXED",
    "VECTOR_KINDS", "Bm25Index", "Coverage", "FreshSegment", "IndexFile", "KeyColumn", "KeyIndex", "bm25_params",
    "build_key_column", "check_kind", "check_scalar", "decode_index", "encode_index", "family", "json_paths",
    "metric_name", "new_index_key", "value_at", "vector_dim",
]
