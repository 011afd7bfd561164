"""Filter first: turn scanned batches into batches of only the rows that pass WHERE.

Later expressions (distances, projections) see the passing rows only. Three
things keep a selective filter cheap:

* the passing positions of a batch are cached by the WHERE's text and the
  identity of its input columns, so a repeated WHERE is not evaluated again;
* the passing rows of consecutive batches are merged into one batch of at least
  ``MERGE_ROWS`` rows (spanning at most ``MERGE_BATCHES`` batches), so per-batch
  costs and small matrix products are paid per merged batch, not per chunk;
* columns are gathered only when read, and a gathered numeric array of a
  selective filter is cached too, so a repeated WHERE scans a compact copy.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .derived import DerivedCache
from .evaluate import BExpr, EvalContext, evaluate
from .kernels import truthy
from .source import Batch
from .vtypes import ValueType

#: Passing rows collected before a merged batch is handed on.
MERGE_ROWS = 8192
#: Source batches one merged batch may span (bounds what stays loaded meanwhile).
MERGE_BATCHES = 8
#: Gathered rows are cached only when the filter keeps at most this share of the rows:
#: the copies stay small, and a dense filter costs little to redo.
GATHER_CACHE_MAX_SHARE = 0.25


def gather(v: Any, idx: np.ndarray) -> Any:
    """Select rows ``idx`` of a per-row value."""
    if isinstance(v, np.ndarray):
        # np.take copies whole rows in one pass; it is markedly faster than v[idx]
        # on wide rows (e.g. gathering the passing embeddings of a filtered batch).
        return np.take(v, idx, axis=0) if v.ndim else v[idx]
    return [v[i] for i in idx]


def concat(parts: list[Any], t: ValueType | None = None) -> Any:
    """Join per-batch values."""
    if parts and all(isinstance(p, np.ndarray) for p in parts):
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) == 1:
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
    out: list[Any] = []
    for p in parts:
        out.extend(list(p))
    if not parts and t is not None and t.kind in ("number", "bool"):
        return np.empty(0, dtype=bool if t.kind == "bool" else np.float64)
    return out


def filter_batches(batches: Iterable[Batch], where: BExpr, make_ctx: Callable[[Batch], EvalContext],
                   merge: bool = True, passing: np.ndarray | None = None,
                   units: np.ndarray | None = None) -> Iterator[tuple[Batch, EvalContext]]:
    """Yield ``(batch, context)`` pairs holding only the rows where ``where`` is true, in order.

    ``merge=False`` hands on each batch's passing rows at once (for a scan that may stop early).
    ``passing``, a mask over source positions, is ``where``'s answer when already known (from indexes).
    ``units``, the source's split points, bound the merging: rows of two units never share a batch,
    so a scan of some units alone computes what a whole scan computes there.
    """
    pending: list[_Part] = []
    pending_rows = 0
    derived: DerivedCache | None = None
    unit_end = None
    for batch in batches:
        n = len(batch.rows)
        if n == 0:
            continue
        if units is not None and (unit_end is None or batch.rows[0] >= unit_end):
            if pending:  # a new unit begins: what is pending belongs to the last one
                yield _emit(pending, derived, make_ctx)
                pending, pending_rows = [], 0
            unit_end = _unit_end(units, int(batch.rows[0]))
        ctx = make_ctx(batch)
        derived = ctx.derived
        idx, where_key = _passing(where, batch, ctx, passing)
        if len(idx) == 0:
            continue
        if len(idx) == n:
            if pending:
                yield _emit(pending, derived, make_ctx)
                pending, pending_rows = [], 0
            yield batch, ctx
            continue
        pending.append(_Part(batch, idx, where_key))
        pending_rows += len(idx)
        if not merge or pending_rows >= MERGE_ROWS or len(pending) >= MERGE_BATCHES:
            yield _emit(pending, derived, make_ctx)
            pending, pending_rows = [], 0
    if pending:
        yield _emit(pending, derived, make_ctx)


def _unit_end(units: np.ndarray, row: int) -> int | None:
    """The first split point after ``row`` (None past the last one)."""
    i = int(np.searchsorted(units, row, side="right"))
    return int(units[i]) if i < len(units) else None


class _Part:
    """Rows ``idx`` of one source batch, chosen by the WHERE identified by ``where_key``."""

    __slots__ = ("batch", "idx", "where_key")

    def __init__(self, batch: Batch, idx: np.ndarray, where_key: Hashable | None) -> None:
        self.batch, self.idx, self.where_key = batch, idx, where_key


def _passing(where: BExpr, batch: Batch, ctx: EvalContext,
             known: np.ndarray | None = None) -> tuple[np.ndarray, Hashable | None]:
    """Positions in ``batch`` where ``where`` is true, and the identity of that result."""
    where_key = where_identity(where, batch) if ctx.derived is not None else None
    if known is not None:
        return np.flatnonzero(known[batch.rows]), where_key
    idx = None if where_key is None else ctx.derived.get(("passing", where_key))  # type: ignore[union-attr]
    if idx is None:
        idx = np.flatnonzero(truthy(evaluate(where, ctx), where.type, where.const, len(batch.rows)))
        if where_key is not None:
            ctx.derived.put(("passing", where_key), idx)  # type: ignore[union-attr]
    return idx, where_key


def where_identity(where: BExpr, batch: Batch) -> Hashable | None:
    """The identity of a WHERE's result on ``batch``: its text and its inputs' data, if known."""
    if where.volatile or not where.columns:
        return None
    keys = tuple(batch.cache_keys.get(c) for c in sorted(where.columns))
    return None if any(k is None for k in keys) else (where.text, keys)


def _emit(parts: list[_Part], derived: DerivedCache | None,
          make_ctx: Callable[[Batch], EvalContext]) -> tuple[Batch, EvalContext]:
    batch = _merge(parts, derived)
    return batch, make_ctx(batch)


def _merge(parts: list[_Part], derived: DerivedCache | None) -> Batch:
    """One batch of the passing rows of ``parts``, whose columns are gathered on first read."""
    batches = [p.batch for p in parts]
    keys: dict[str, Hashable] = {}
    if all(p.where_key is not None for p in parts):
        for c in set.intersection(*(set(b.cache_keys) for b in batches)):
            keys[c] = ("where", tuple((p.batch.cache_keys[c], p.where_key) for p in parts))
    norms = {
        c: concat([np.asarray(b.l2_norms[c])[p.idx] for b, p in zip(batches, parts, strict=True)])
        for c in set.intersection(*(set(b.l2_norms) for b in batches))
    }
    return Batch(
        rows=concat([b.rows[p.idx] for b, p in zip(batches, parts, strict=True)]),
        values=_GatheredValues(parts, keys, derived),
        l2_norms=norms,
        cache_keys=keys,
        unit_norm=frozenset.intersection(*(b.unit_norm for b in batches)),
    )


class _GatheredValues(Mapping):
    """The passing rows of several batches' columns, each gathered on first access.

    A column the rest of the query never reads (or reads only through a cached
    derived value) is never gathered, and a lazily loaded source column is
    never even loaded.
    """

    def __init__(self, parts: list[_Part], cache_keys: Mapping[str, Hashable],
                 derived: DerivedCache | None) -> None:
        self._parts = parts
        self._done: dict[str, Any] = {}
        share = sum(len(p.idx) for p in parts) / max(sum(len(p.batch.rows) for p in parts), 1)
        cache = derived is not None and share <= GATHER_CACHE_MAX_SHARE
        self._keys = cache_keys if cache else {}
        self._derived = derived

    def __getitem__(self, name: str) -> Any:
        if name not in self._done:
            key = self._keys.get(name)
            value = None if key is None else self._derived.get(("gathered", key))  # type: ignore[union-attr]
            if value is None:
                value = concat([gather(p.batch.values[name], p.idx) for p in self._parts])
                if key is not None and isinstance(value, np.ndarray):
                    self._derived.put(("gathered", key), value)  # type: ignore[union-attr]
            self._done[name] = value
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts[0].batch.values)

    def __len__(self) -> int:
        return len(self._parts[0].batch.values)
