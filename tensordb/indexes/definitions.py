"""What an index may be: its kind, the tensors it fits, and its parameters, checked before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import IndexDefinitionError

#: Vector kinds (on faiss, see ``vector``), key kinds (distinct values and codes, see ``keys``) and
#: text kinds (BM25 on bm25s, see ``bm25``).
VECTOR_KINDS = ("flat", "hnsw", "ivf_pq", "ivf_sq")
METRICS = ("cosine", "l2", "dot")
KEY_KINDS = ("json", "scalar")
TEXT_KINDS = ("bm25",)
KINDS = VECTOR_KINDS + KEY_KINDS + TEXT_KINDS
#: Every ``search_params`` key any vector kind takes, plus ``index`` (use the vector index of that name).
SEARCH_PARAMS = frozenset({"ef_search", "nprobe", "refine", "index"})
#: Candidates fetched per result row when ``refine`` is not given: quantised kinds over-fetch, and the
#: candidates are then scored exactly.
DEFAULT_REFINE = {"flat": 1, "hnsw": 1, "ivf_sq": 2, "ivf_pq": 10}
#: htypes a scalar index takes (a numeric tensor needs one number per row).
SCALAR_HTYPES = ("generic", "class_label", "text", "id")
#: Every spelling of a metric a user may give (tensordb's, TQL's function names, Deep Lake's), and what it means.
METRIC_NAMES = {
    "cosine": "cosine", "cos": "cosine", "cosine_similarity": "cosine", "COS": "cosine",
    "l2": "l2", "L2": "l2", "l2_norm": "l2", "euclidean": "l2",
    "dot": "dot", "ip": "dot", "IP": "dot", "inner_product": "dot",
}


def family(kind: str) -> str:
    """``"vector"``, ``"key"`` or ``"text"``."""
    return "vector" if kind in VECTOR_KINDS else "text" if kind in TEXT_KINDS else "key"


def check_kind(kind: Any, tensor: str) -> str:
    if kind not in KINDS:
        raise IndexDefinitionError(f"tensor {tensor!r}: unknown index kind {kind!r}; expected one of {list(KINDS)}")
    return kind


def metric_name(metric: Any, tensor: str) -> str:
    if not isinstance(metric, str) or metric not in METRIC_NAMES:
        raise IndexDefinitionError(
            f"tensor {tensor!r}: unknown metric {metric!r}; expected one of {sorted(set(METRIC_NAMES.values()))} "
            f"(or {sorted(k for k in METRIC_NAMES if k not in METRIC_NAMES.values())})"
        )
    return METRIC_NAMES[metric]


def vector_dim(tensor: str, htype: str, dtype: str | None, shape: tuple[int | None, ...] | None,
               dim: int | None) -> int:
    """The vector length of a tensor a vector index can cover; ``IndexDefinitionError`` for any other tensor."""
    if htype == "embedding" and dim is not None:
        return dim
    if htype == "embedding":
        raise IndexDefinitionError(
            f"tensor {tensor!r} has no rows yet, so its vector length is unknown: add rows, then create the index"
        )
    fixed = shape is not None and len(shape) == 1 and shape[0] is not None
    if htype == "generic" and fixed and dtype is not None and np.dtype(dtype).kind == "f":
        return int(shape[0])
    got = f"htype {htype!r}" + ("" if shape is None else f" with rows of shape {tuple(shape)}")
    raise IndexDefinitionError(
        f"tensor {tensor!r}: a vector index needs an embedding tensor (or float vectors of one length) "
        f"with rows, got {got}"
    )


def json_paths(tensor: str, htype: str, params: Mapping[str, Any]) -> list[list[str]]:
    """The JSON paths of a json index: each a key name, or a list of nested key names."""
    if htype != "json":
        raise IndexDefinitionError(f"tensor {tensor!r}: a json index needs a json tensor, got htype {htype!r}")
    unknown = sorted(set(params) - {"paths"})
    if unknown:
        raise IndexDefinitionError(f"tensor {tensor!r}: unknown json index parameter(s) {unknown}; expected 'paths'")
    paths = params.get("paths")
    if isinstance(paths, str) or not isinstance(paths, (list, tuple)) or not paths:
        raise IndexDefinitionError(
            f"tensor {tensor!r}: a json index needs paths=[...], a non-empty list of keys, got {paths!r:.80}"
        )
    out = []
    for path in paths:
        parts = [path] if isinstance(path, str) else path
        if not isinstance(parts, (list, tuple)) or not parts or not all(isinstance(p, str) and p for p in parts):
            raise IndexDefinitionError(
                f"tensor {tensor!r}: json path {path!r:.80} must be a key name or a list of key names"
            )
        if list(parts) in out:
            raise IndexDefinitionError(f"tensor {tensor!r}: json path {path!r:.80} is given twice")
        out.append(list(parts))
    return out


def check_scalar(tensor: str, htype: str, shape: tuple[int | None, ...] | None,
                 params: Mapping[str, Any]) -> None:
    if params:
        raise IndexDefinitionError(f"tensor {tensor!r}: a scalar index takes no parameters, got {sorted(params)}")
    one_value = htype in ("text", "id") or shape in ((), None) and htype == "class_label" or shape == ()
    if htype not in SCALAR_HTYPES or not one_value:
        got = f"htype {htype!r}" + ("" if shape is None else f" with rows of shape {tuple(shape)}")
        raise IndexDefinitionError(
            f"tensor {tensor!r}: a scalar index needs one number, label or text per row, got {got}"
        )
