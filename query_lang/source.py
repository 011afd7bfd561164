"""The narrow scan interface that query_lang plans and executes against.

query_lang never touches storage: a dataset (or any other table) hands it an
object that satisfies :class:`ScanSource`. Rows are numbered ``0..len-1`` in the
source's own order; results are expressed as positions in that numbering.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: htypes whose values are Python objects (str, dict, list, None) rather than numbers.
OBJECT_HTYPES = frozenset({"text", "json", "list", "id"})
#: How far from 1 a row's L2 norm may be for the row to count as unit length.
UNIT_NORM_TOLERANCE = 1e-6


def unit_norm_range(smallest: float, largest: float) -> bool:
    """Whether rows whose L2 norms lie in ``[smallest, largest]`` all count as unit length."""
    return 1.0 - UNIT_NORM_TOLERANCE <= smallest and largest <= 1.0 + UNIT_NORM_TOLERANCE


@dataclass(frozen=True)
class ColumnInfo:
    """What the planner may know about a column before reading it.

    ``shape`` is the per-row shape; ``None`` marks a dimension that varies
    between rows, and ``shape`` itself is ``None`` when even the rank varies or
    the column holds objects.
    """

    name: str
    htype: str
    dtype: np.dtype | None
    shape: tuple[int | None, ...] | None


@dataclass
class Batch:
    """A run of rows read together, usually one storage chunk.

    ``rows`` are source positions. ``values[name]`` is either an ndarray of
    shape ``(len(rows), *row_shape)`` for fixed-shape numeric columns, or a
    list of per-row values (str, dict, list, ndarray or None) otherwise.
    ``l2_norms[name]`` holds precomputed row norms for embedding columns when the
    storage has them, so cosine similarity need not re-read the vectors.
    ``unit_norm`` names columns whose every row in this batch has L2 norm 1
    (within ``UNIT_NORM_TOLERANCE``), so a cosine against a unit vector is a plain dot product.
    ``cache_keys[name]`` identifies the exact data of that column in this batch:
    equal keys mean equal data, so derived values may be cached by it.
    """

    rows: np.ndarray
    values: dict[str, Any]
    l2_norms: dict[str, np.ndarray] = field(default_factory=dict)
    cache_keys: dict[str, Hashable] = field(default_factory=dict)
    unit_norm: frozenset[str] = frozenset()


class ScanSource(Protocol):
    """A table that query_lang can scan."""

    #: The object the rows come from, for functions that need more than columns (for tensordb,
    #: the dataset; e.g. a trained model stored with it), or None. query_lang never looks inside it.
    owner: object | None

    def __len__(self) -> int:
        """The number of rows."""
        ...

    def column_names(self) -> list[str]:
        """All column names, in display order."""
        ...

    def column_info(self, name: str) -> ColumnInfo:
        """Metadata of one column; raises ``KeyError`` for an unknown name."""
        ...

    def scan(self, columns: Sequence[str], rows: np.ndarray | None = None) -> Iterator[Batch]:
        """Yield batches covering ``rows`` (all rows when ``None``) in ascending order.

        ``rows`` must be sorted and unique. Only ``columns`` are read.
        """
        ...

    def take(self, column: str, rows: np.ndarray) -> Any:
        """Read one column at the given positions (any order), as in :class:`Batch`."""
        ...


# -- optional: indexes a source may offer ---------------------------------------------------------
# A source may also have the methods of :class:`IndexedSource`; the executor looks for them with
# ``getattr`` and falls back to scanning whenever one is absent or answers None.


@dataclass(frozen=True)
class KeyDictionary:
    """An indexed key (a column, or a JSON path in one) as distinct values and a code per row.

    ``values`` are the distinct values as a scan of that key would give them (an ndarray,
    or a list of Python values); ``codes[i]`` is the position in ``values`` of row ``i``'s
    value, or -1 where the index does not know it (the row must be evaluated by a scan).
    """

    values: Any
    codes: np.ndarray


@dataclass(frozen=True)
class VectorSearch:
    """A request for the rows nearest some query vectors under one metric.

    ``metric`` is ``"cosine"``, ``"dot"`` (higher is nearer) or ``"l2"`` (lower is).
    ``allowed``, a bool mask over the source's rows, restricts the answer to rows that pass the
    WHERE; ``allowed_count`` is how many it holds.
    """

    column: str
    metric: str
    queries: np.ndarray  # (m, dim) float32
    k: int
    allowed: np.ndarray | None = None
    allowed_count: int = 0


@dataclass(frozen=True)
class VectorCandidates:
    """What an index found: per query, candidate positions, plus the rows it does not cover.

    The executor scores every candidate and every ``fresh`` row exactly, so the index
    only chooses which rows get scored.
    """

    hits: list[np.ndarray]
    fresh: np.ndarray


class IndexedSource(Protocol):
    """The index methods a :class:`ScanSource` may add."""

    def key_dictionary(self, column: str, path: tuple[str, ...]) -> KeyDictionary | None:
        """The indexed key ``column[path[0]][path[1]]...`` (``path`` empty: the column), or None."""
        ...

    def vector_candidates(self, search: VectorSearch) -> VectorCandidates | None:
        """Candidates from a vector index, or None to have the executor scan exactly."""
        ...

    def text_scores(self, column: str, text: str) -> np.ndarray:
        """Every row's full-text (BM25) score of ``column`` for the query ``text``; raises when no index can."""
        ...

    def substring_candidates(self, column: str, needles: Sequence[str]) -> np.ndarray | None:
        """A bool mask of the rows whose ``column`` may contain every needle (a superset), or None."""
        ...

    def serves_vector_search(self, column: str, metric: str) -> bool:
        """Whether a vector index may propose candidates for searches of ``column`` under ``metric``."""
        ...


# -- optional: how a source's scans may be divided ------------------------------------------------


class DivisibleSource(Protocol):
    """A source whose scans can be cut into row ranges that are each scanned exactly as in a whole scan."""

    def split_points(self, columns: Sequence[str]) -> np.ndarray:
        """Ascending row numbers from 0 to ``len``: a scan of ``columns`` starts a batch at each of them.

        Between two neighbours lies a *unit*. The executor never merges rows of different units
        into one batch, so a scan of any run of whole units meets exactly the batches, and
        computes exactly the values, that a scan of the whole source meets there.
        """
        ...
