"""Indexes: derived data that answers searches and filters without a full scan.

Two families share one life cycle (built from a snapshot, stored as an immutable,
checksummed file, listed by the states it belongs to):

* vector indexes (``flat``, ``hnsw``, ``ivf_pq``, ``ivf_sq``; :mod:`.vector`, on faiss,
  imported only when used, since faiss is the optional extra ``tensordb[faiss]``);
* key indexes (``json`` paths, ``scalar`` tensors; :mod:`.keys`).

:mod:`.coverage` maps an index's entries onto a tensor as it is now.
"""

from .coverage import Coverage
from .definitions import (
    DEFAULT_REFINE,
    KEY_KINDS,
    KINDS,
    METRIC_NAMES,
    METRICS,
    SEARCH_PARAMS,
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
    "DEFAULT_REFINE", "KEY_KINDS", "KINDS", "METRICS", "METRIC_NAMES", "SEARCH_PARAMS", "UNINDEXED", "VECTOR_KINDS",
    "Coverage", "IndexFile", "KeyColumn", "KeyIndex", "build_key_column", "check_kind", "check_scalar",
    "decode_index", "encode_index", "family", "json_paths", "metric_name", "new_index_key", "value_at", "vector_dim",
]
