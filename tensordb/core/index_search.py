"""The core's side of query_lang's index requests: key dictionaries, vector candidates and text scores.

query_lang asks in terms of columns and row positions; this module finds the
fitting index of the snapshot being queried, loads it, and maps between index
entries and the rows as they are now (fresh rows are handed back to be scanned,
deleted ones are masked inside the search).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from query_lang.cache import BoundedCache
from query_lang.source import KeyDictionary, VectorCandidates, VectorSearch

from ..errors import IndexDefinitionError, IndexNotFoundError
from ..format.manifest import DatasetState, IndexRef, TensorState
from ..indexes import DEFAULT_REFINE, SEARCH_PARAMS, FreshSegment, family
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
#: Term counts of the rows a bm25 index does not cover, per index file and tensor content.
FRESH_SEGMENTS: BoundedCache[tuple[Any, ...], FreshSegment] = BoundedCache(256 << 20)
#: Reads a text tensor's values at some dataset rows (for the rows an index does not cover).
ReadTexts = Callable[[np.ndarray], Sequence[Any]]


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
        ref = self._vector_ref(search.column, search.metric)
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

    def serves_vector_search(self, column: str, metric: str) -> bool:
        """Whether a vector index would be asked for candidates of such a search."""
        return self._vector_ref(column, metric) is not None

    def _vector_ref(self, column: str, metric: str) -> IndexRef | None:
        """The vector index a search uses: the one named by ``search_params["index"]``, else the first that fits."""
        if self._exact:
            return None
        named = self._named("vector")
        fitting = [ref for ref in self._refs(column, "vector")
                   if ref.params["metric"] == metric and named in (None, ref.name)]
        return fitting[0] if fitting else None

    def text_scores(self, column: str, text: str, read_texts: ReadTexts) -> np.ndarray:
        """Every row's BM25 score for the query ``text`` (0 where no term matches), from the
        bm25 index of ``column``; the rows it does not cover are scored with its statistics."""
        ref = self._text_ref(column)
        index = load(self._store, ref)
        if index is None:
            raise IndexNotFoundError(
                f"bm25 index {ref.name!r} on tensor {column!r} could not be used (see the warning); rebuild it with "
                f"ds.{column}.rebuild_index({ref.name!r})"
            )
        t = self._state.tensors[column]
        cover = coverage(ref, t)
        terms = index.query_terms(text)
        scores = cover.spread(index.scores(terms), 0.0)
        if len(cover.fresh):
            fresh = self._fresh_segment(ref, t, index, cover.fresh, read_texts)
            scores[cover.fresh] = index.fresh_scores(terms, fresh)
        return scores[: self._length]

    def substring_candidates(self, column: str, needles: Sequence[str]) -> np.ndarray | None:
        """A mask of the rows whose ``column`` may contain every one of ``needles``, from its bm25 index's
        words (rows it does not cover may); None when there is no such index or it cannot tell."""
        refs = self._refs(column, "text")
        index = None if not refs else load(self._store, refs[0])
        if index is None:
            return None
        masks = [m for m in (index.substring_entries(needle) for needle in needles) if m is not None]
        if not masks:
            return None
        entries = np.logical_and.reduce(masks)
        return coverage(refs[0], self._state.tensors[column]).spread(entries, True)[: self._length]

    def _text_ref(self, column: str) -> IndexRef:
        """The bm25 index a text search uses: the one ``search_params["index"]`` names, else the first."""
        named = self._named("text")
        # A name of another tensor's bm25 index falls back to this tensor's first.
        refs = [ref for ref in self._refs(column, "text") if named in (None, ref.name)] or self._refs(column, "text")
        if not refs:
            raise IndexNotFoundError(
                f"bm25_similarity needs a bm25 index on tensor {column!r}, and it has none; create one with "
                f"ds.{column}.create_index('{column}_bm25', kind='bm25', language='english')"
            )
        return refs[0]

    def _fresh_segment(self, ref: IndexRef, t: TensorState, index: Any, fresh: np.ndarray,
                       read_texts: ReadTexts) -> FreshSegment:
        return FRESH_SEGMENTS.get_or_compute(
            (self._store.url, ref.key, t.chunk_keys),
            lambda: FreshSegment(index.analyzer, read_texts(fresh)),
            lambda segment: segment.terms.entries.nbytes * 3 + segment.lengths.nbytes,
        )

    def _named(self, wanted: str) -> str | None:
        """The index of family ``wanted`` that ``search_params["index"]`` names, or None; a name of another
        family's index is no choice here (one search_params serves both sides of a hybrid search)."""
        named = self._params.get("index")
        if named is None:
            return None
        if named not in self._state.indexes:
            raise IndexNotFoundError(f"search_params names index {named!r}; indexes are {sorted(self._state.indexes)}")
        return named if family(self._state.indexes[named].kind) == wanted else None

    def _refs(self, column: str, wanted: str) -> list[IndexRef]:
        return [ref for _, ref in sorted(self._state.indexes.items())
                if ref.tensor == column and family(ref.kind) == wanted]
