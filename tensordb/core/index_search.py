"""The core's side of query_lang's index requests: key dictionaries and vector candidates.

query_lang asks in terms of columns and row positions; this module finds the
fitting index of the snapshot being queried, loads it, and maps between index
entries and the rows as they are now (fresh rows are handed back to be scanned,
deleted ones are masked inside the search).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from query_lang.cache import BoundedCache
from query_lang.source import KeyDictionary, VectorCandidates, VectorSearch

from ..errors import IndexDefinitionError, IndexNotFoundError
from ..format.manifest import DatasetState, IndexRef
from ..indexes import DEFAULT_REFINE, SEARCH_PARAMS, family
from ..storage import Store
from .index_catalog import coverage, load, vector_module

#: A filtered vector search whose WHERE passes at most this many rows, or this share of the indexed rows,
#: scores them all exactly: below about 3% a graph search must visit most of the graph to fill its
#: result list with passing rows (hnsw recall@10 .86 at ef 1024 for a 1% filter, measured on 200k rows),
#: while the exact scan of the passing rows is cheap and exact.
EXACT_FILTERED_ROWS = 4096
EXACT_FILTERED_SHARE = 0.03
#: Key codes laid out over the rows of one snapshot, per index file, tensor content and key.
KEY_CODES: BoundedCache[tuple[Any, ...], np.ndarray] = BoundedCache(512 << 20)


def check_search_params(search_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``search_params`` as a dict, refusing names no index kind takes (kinds check their own later)."""
    if search_params is None:
        return {}
    if not isinstance(search_params, Mapping):
        raise IndexDefinitionError(f"search_params must be a dict, got {type(search_params).__name__}")
    unknown = sorted(set(search_params) - SEARCH_PARAMS)
    if unknown:
        raise IndexDefinitionError(f"unknown search_params {unknown}; expected some of {sorted(SEARCH_PARAMS)}")
    return dict(search_params)


class IndexAccess:
    """The indexes of one snapshot, as a query over its first ``length`` rows may use them."""

    def __init__(self, store: Store, state: DatasetState, length: int, exact: bool,
                 search_params: Mapping[str, Any]) -> None:
        self._store, self._state, self._length = store, state, length
        self._exact, self._params = exact, dict(search_params)

    def key_dictionary(self, column: str, path: tuple[str, ...]) -> KeyDictionary | None:
        for ref in self._refs(column, "key"):
            indexed = [tuple(p) for p in ref.params["paths"]] if ref.kind == "json" else [()]
            if path not in indexed:
                continue
            loaded = load(self._store, ref)
            key_column = None if loaded is None else loaded.column(path)
            if key_column is None:
                continue
            codes = self._codes_by_row(ref, path, key_column.codes)
            return KeyDictionary(key_column.values, codes[: self._length])
        return None

    def _codes_by_row(self, ref: IndexRef, path: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
        """An index's codes laid out over the tensor's rows now (-1 for fresh rows)."""
        t = self._state.tensors[ref.tensor]
        return KEY_CODES.get_or_compute(
            (self._store.url, ref.key, t.chunk_keys, path),
            lambda: coverage(ref, t).spread(codes, -1),
            lambda spread: spread.nbytes,
        )

    def vector_candidates(self, search: VectorSearch) -> VectorCandidates | None:
        ref = self._vector_ref(search)
        if ref is None:
            return None
        params = vector_module().check_search_params(ref.kind, {k: v for k, v in self._params.items() if k != "index"})
        cover = coverage(ref, self._state.tensors[search.column])
        if search.allowed is not None and search.allowed_count <= max(EXACT_FILTERED_ROWS,
                                                                      EXACT_FILTERED_SHARE * cover.entries):
            return None
        index = load(self._store, ref)
        if index is None:
            return None
        fresh = cover.fresh[cover.fresh < self._length]
        selected = cover.alive()
        if search.allowed is not None:
            selected = cover.entry_mask(search.allowed)  # passing rows are present rows: alive is implied
            fresh = fresh[search.allowed[fresh]]
        fetch = min(search.k * params.get("refine", DEFAULT_REFINE[ref.kind]), cover.entries)
        if fetch == 0:
            return VectorCandidates([np.empty(0, dtype=np.int64) for _ in search.queries], fresh)
        ids, _ = index.search(search.queries, fetch, selected, params)
        positions = cover.positions_of(ids)
        hits = [row[(row >= 0) & (row < self._length)] for row in positions]
        return VectorCandidates(hits, fresh)

    def _vector_ref(self, search: VectorSearch) -> IndexRef | None:
        """The vector index a search uses: the one named by ``search_params["index"]``, else the first that fits."""
        if self._exact:
            return None
        named = self._params.get("index")
        if named is not None and named not in self._state.indexes:
            raise IndexNotFoundError(f"search_params names index {named!r}; indexes are {sorted(self._state.indexes)}")
        fitting = [ref for ref in self._refs(search.column, "vector")
                   if ref.params["metric"] == search.metric and named in (None, ref.name)]
        return fitting[0] if fitting else None

    def _refs(self, column: str, wanted: str) -> list[IndexRef]:
        return [ref for _, ref in sorted(self._state.indexes.items())
                if ref.tensor == column and family(ref.kind) == wanted]
