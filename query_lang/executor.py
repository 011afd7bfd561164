"""Runs a :class:`~query_lang.planner.Plan` over a :class:`ScanSource`, batch by batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ast
from .errors import TQLError, TQLExecutionError
from .evaluate import BExpr, EvalContext, evaluate
from .filtering import concat, filter_batches, gather
from .functions import CallContext
from .index_filter import indexed_where, scanned_passing
from .index_search import vector_request
from .kernels import materialize
from .ordering import TopK, join_keys, key_array, sort_order
from .parser import parse
from .planner import Output, Plan, plan_query
from .source import Batch, ColumnInfo, ScanSource, VectorSearch
from .vtypes import ValueType

#: Rows per batch when the executor builds batches itself (take-based projections).
PROJECT_BATCH = 8192
#: Candidate rows (from an index) a top-k reads in one gather, rather than one per chunk they lie in.
GATHER_ROWS = 8192


@dataclass
class QueryResult:
    """Rows (source positions, in result order), output names, and computed values.

    ``virtual[name]`` is aligned with ``rows`` (an ndarray, or a list for
    text/JSON/ragged values); names in ``columns`` but not in ``virtual`` are
    plain tensors to be read at ``rows``.
    """

    rows: np.ndarray
    columns: list[str]
    virtual: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


def execute(query: str | ast.Query, source: ScanSource) -> QueryResult:
    """Parse (if needed), plan and run ``query`` against ``source``."""
    q = parse(query) if isinstance(query, str) else query
    with _as_tql_errors():
        return Executor(source).run(plan_query(q, source))


def execute_many(queries: Sequence[str | ast.Query], source: ScanSource) -> list[QueryResult]:
    """Run several queries over ``source``; results are the same as ``execute`` one by one.

    Top-k vector searches that differ only in their query vector (same WHERE, same
    ordering function and column, same LIMIT/OFFSET and outputs) share one scan:
    the filter is evaluated once per batch, and all their scores come from one
    matrix product per batch instead of one matrix-vector product per query.
    Other queries run one by one.
    """
    parsed = [parse(q) if isinstance(q, str) else q for q in queries]
    with _as_tql_errors():
        plans = [plan_query(q, source) for q in parsed]
        results: list[QueryResult | None] = [None] * len(plans)
        for members in vector_groups(plans):
            batch = Executor(source).run_vector_batch([plans[i] for i in members])
            for i, r in zip(members, batch, strict=True):
                results[i] = r
        return [r if r is not None else Executor(source).run(plans[i]) for i, r in enumerate(results)]


def vector_groups(plans: Sequence[Plan]) -> list[list[int]]:
    """The positions of the plans that share one scan, per group of two or more (see ``execute_many``)."""
    groups: dict[Any, list[int]] = {}
    for i, plan in enumerate(plans):
        sig = _vector_signature(plan)
        if sig is not None:
            groups.setdefault(sig, []).append(i)
    return [members for members in groups.values() if len(members) > 1]


@contextmanager
def _as_tql_errors() -> Iterator[None]:
    """Surface every failure of planning or execution as a TQLError."""
    try:
        yield
    except TQLError:
        raise
    except RecursionError:
        raise TQLExecutionError("query is too deeply nested to execute") from None
    except Exception as exc:  # noqa: BLE001 - surface every failure as a TQLError
        raise TQLExecutionError(f"{type(exc).__name__}: {exc}") from exc


def _vector_signature(plan: Plan) -> Any:
    """What must be equal for top-k vector searches to share a scan, or None."""
    if plan.sub is not None or not plan.vector_fast_path or len(plan.order) != 1:
        return None
    key, desc = plan.order[0]
    if key.function is None or len(key.children) != 2:
        return None
    consts = [c.const for c in key.children]
    if consts.count(True) != 1:
        return None
    vary = consts.index(True)
    column = key.children[1 - vary]
    if column.column is None or not isinstance(key.children[vary].value, np.ndarray):
        return None
    outputs = []
    for o in plan.outputs:
        if o.virtual and o.expr is not key and not o.expr.const:
            return None
        outputs.append((o.name, o.virtual, o.expr is key, o.expr.text if o.expr.const else None))
    return (key.function.name, vary, column.column, desc, plan.limit, plan.offset,
            None if plan.where is None else plan.where.text, tuple(outputs),
            tuple(plan.scan_columns))


class _DerivedSource:
    """A materialised subquery result seen as a table (rows numbered by result order)."""

    def __init__(self, base: ScanSource, result: QueryResult, plan: Plan) -> None:
        self.base = base
        self.result = result
        self.infos: dict[str, ColumnInfo] = {}
        for o in plan.outputs:
            if o.name in self.infos:
                continue
            t = o.expr.type
            if not o.virtual:
                info = base.column_info(o.name)
            else:
                shape = () if t.kind in ("number", "bool") else t.shape
                dtype = np.dtype(bool) if t.kind == "bool" else None
                info = ColumnInfo(o.name, t.htype or "generic", dtype, shape)
            self.infos[o.name] = info

    @property
    def owner(self) -> object | None:
        return self.base.owner

    def __len__(self) -> int:
        return len(self.result.rows)

    def column_names(self) -> list[str]:
        return list(self.infos)

    def column_info(self, name: str) -> ColumnInfo:
        return self.infos[name]

    def take(self, column: str, rows: np.ndarray) -> Any:
        if column in self.result.virtual:
            return gather(self.result.virtual[column], np.asarray(rows, dtype=np.int64))
        return self.base.take(column, self.result.rows[rows])

    def scan(self, columns: Sequence[str], rows: np.ndarray | None = None) -> Iterator[Batch]:
        positions = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        for start in range(0, len(positions), PROJECT_BATCH):
            part = positions[start : start + PROJECT_BATCH]
            yield Batch(rows=part, values={c: self.take(c, part) for c in columns})


class Executor:
    """Executes plans; holds per-execution function caches.

    With ``rows_range`` ``(start, stop)``, a run of whole units of the source (see
    :class:`~query_lang.source.DivisibleSource`), a top-k, sort or filter scans only those
    rows: what it selects there is the part of the whole answer that :mod:`.distributed` merges.
    """

    def __init__(self, source: ScanSource, rows_range: tuple[int, int] | None = None) -> None:
        self.source = source
        self.fn_caches: dict[str, dict] = {}
        self._row_map: np.ndarray | None = None
        self._range = rows_range

    def run(self, plan: Plan, source: ScanSource | None = None) -> QueryResult:
        """Execute ``plan`` and return rows in result order with computed columns."""
        source = self.source if source is None else source
        inner: QueryResult | None = None
        if plan.sub is not None:
            inner = self.run(plan.sub, source)
            scan_source: ScanSource = _DerivedSource(source, inner, plan.sub)
        else:
            scan_source = source
        # row_number() reports positions in the original source, even inside subqueries.
        self._row_map = None if inner is None else inner.rows
        rows, known = self._select_rows(plan, scan_source)
        virtual = self._project(plan, scan_source, rows, known)
        if inner is not None:
            rows = inner.rows[rows]
        return QueryResult(np.asarray(rows, dtype=np.int64), [o.name for o in plan.outputs],
                           virtual)

    def run_vector_batch(self, plans: list[Plan]) -> list[QueryResult]:
        """Execute top-k vector searches sharing a :func:`_vector_signature` in one scan."""
        found = self.vector_batch_rows(plans)
        return [self._result(plan, plan.order[0][0], rows, keys) for plan, (rows, keys) in zip(plans, found)]

    def vector_batch_rows(self, plans: list[Plan]) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """The best ``offset + limit`` rows of each plan and their keys, from one shared scan (or index search)."""
        first = plans[0]
        passing = None if first.where is None else indexed_where(first.where, self.source, self._ctx)
        indexed, passing = self._indexed_topk(plans, self.source, passing)
        if indexed is not None:
            return indexed
        keys = [p.order[0][0] for p in plans]
        vary = [c.const for c in keys[0].children].index(True)
        column = keys[0].children[1 - vary]
        fn = keys[0].function
        values = [k.children[vary].value for k in keys]
        stop = first.offset + first.limit
        topks = [TopK(stop, [first.order[0][1]]) for _ in plans] if first.limit else []
        self._row_map = None
        arg_consts = tuple(c.const for c in keys[0].children)
        arg_columns = tuple(c.column for c in keys[0].children)
        for batch, ctx in (self._filtered(first, self.source, passing) if topks else ()):
            args: list[Any] = [None, None]
            args[1 - vary] = evaluate(column, ctx)
            cc = CallContext(ctx.batch, ctx.n, arg_consts, arg_columns,
                             ctx.fn_caches.setdefault(fn.name, {}), ctx.row_map, ctx.source)
            with np.errstate(all="ignore"):
                scores = [key_array(v, ctx.n) for v in fn.evaluate_many(args, vary, values, cc)]
            _push_many(topks, batch.rows, scores, stop, first.order[0][1])
        empty: tuple[np.ndarray, list[np.ndarray]] = (np.empty(0, dtype=np.int64), [])
        return [topk.result() for topk in topks] if topks else [empty for _ in plans]

    def _result(self, plan: Plan, key: BExpr, rows: np.ndarray, keys: list[np.ndarray]) -> QueryResult:
        """One vector search's result from its top rows and their scores (before OFFSET)."""
        stop = plan.offset + plan.limit
        rows = rows[plan.offset : stop]
        known = {id(key): keys[0][plan.offset : stop]} if keys else {}
        virtual = self._project(plan, self.source, rows, known)
        return QueryResult(np.asarray(rows, dtype=np.int64), [o.name for o in plan.outputs], virtual)

    # -------------------------------------------------------------- row selection

    def _ctx(self, batch: Batch) -> EvalContext:
        return EvalContext(batch, {}, self.fn_caches, row_map=self._row_map, source=self.source)

    def _filtered(self, plan: Plan, source: ScanSource,
                  passing: np.ndarray | None = None) -> Iterator[tuple[Batch, EvalContext]]:
        ranged = self._range is not None and source is self.source
        batches = source.scan(plan.scan_columns, np.arange(*self._range, dtype=np.int64) if ranged else None)
        if plan.where is not None:
            # A plain scan may stop at LIMIT: hand on rows at once rather than merging batches.
            yield from filter_batches(batches, plan.where, self._ctx, merge=plan.strategy != "scan",
                                      passing=passing, units=split_points(source, plan.scan_columns))
            return
        for batch in batches:
            if len(batch.rows):
                yield batch, self._ctx(batch)

    def select_rows(self, plan: Plan) -> tuple[np.ndarray, dict[int, Any]]:
        """``plan``'s result rows and the values already computed for them, keyed by ``id`` of the
        expression: the ORDER BY keys of a top-k or sort, the outputs of a filter."""
        return self._select_rows(plan, self.source)

    def project(self, plan: Plan, rows: np.ndarray, known: dict[int, Any]) -> dict[str, Any]:
        """The computed outputs of ``plan`` at ``rows``, reusing ``known`` values (see :meth:`select_rows`)."""
        return self._project(plan, self.source, rows, known)

    def _select_rows(self, plan: Plan, source: ScanSource) -> tuple[np.ndarray, dict[int, Any]]:
        """Result rows (positions in ``source``) and already computed per-output values."""
        n_total = len(source)
        offset = plan.offset
        stop = None if plan.limit is None else offset + plan.limit
        if plan.limit == 0:
            return np.empty(0, dtype=np.int64), {}
        if plan.strategy == "positions":
            return np.arange(n_total, dtype=np.int64)[offset:stop], {}
        passing = None if plan.where is None else indexed_where(plan.where, source, self._ctx)
        if plan.strategy == "scan":
            return self._scan_filter(plan, source, offset, stop, passing)
        keys_desc = [d for _, d in plan.order]
        if plan.strategy == "topk":
            scored = self._scored_topk(plan, source, passing)
            indexed, passing = (None, passing) if scored is not None else self._indexed_topk([plan], source, passing)
            rows, keys = scored or (indexed[0] if indexed is not None else self._topk(plan, source, passing))
        else:
            row_parts, key_parts = [], []
            for batch, ctx in self._filtered(plan, source, passing):
                row_parts.append(batch.rows)
                key_parts.append(self._keys(plan, ctx))
            if not row_parts:
                return np.empty(0, dtype=np.int64), {}
            all_rows = np.concatenate(row_parts)
            all_keys = [join_keys([p[i] for p in key_parts]) for i in range(len(plan.order))]
            order = sort_order(all_keys, keys_desc, all_rows)
            rows, keys = all_rows[order], [k[order] for k in all_keys]
        rows = rows[offset:stop]
        known = {id(e): k[offset:stop] for (e, _), k in zip(plan.order, keys, strict=False)}
        return rows, known

    def _topk(self, plan: Plan, source: ScanSource, passing: np.ndarray | None,
              rows: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """The best ``offset + limit`` rows by scanning: all rows, or only ``rows`` (sorted, all passing)."""
        topk = TopK(plan.offset + plan.limit, [d for _, d in plan.order])
        if rows is not None and len(rows) <= GATHER_ROWS:
            # A few candidates: read them in one go (a scan would cut them at every chunk boundary).
            columns = sorted(set().union(*(e.columns for e, _ in plan.order)))
            batch = Batch(rows=rows, values={c: source.take(c, rows) for c in columns})
            batches: Iterator[tuple[Batch, EvalContext]] = iter([(batch, self._ctx(batch))] if len(rows) else [])
        elif rows is not None:
            batches = ((b, self._ctx(b)) for b in source.scan(plan.scan_columns, rows) if len(b.rows))
        else:
            batches = self._filtered(plan, source, passing)
        for batch, ctx in batches:
            topk.push(batch.rows, self._keys(plan, ctx))
        return topk.result()

    def _scored_topk(self, plan: Plan, source: ScanSource, passing: np.ndarray | None
                     ) -> tuple[np.ndarray, list[np.ndarray]] | None:
        """Top-k by a function that scores every row at once (:meth:`Function.all_scores`), or None."""
        if plan.sub is not None or len(plan.order) != 1:
            return None
        key, descending = plan.order[0]
        if key.function is None or len(key.children) != 2:
            return None
        column, value = key.children
        if column.column is None or column.children or not value.const:
            return None
        scores = key.function.all_scores(column.column, value.value, source)
        if scores is None:
            return None
        if passing is None and plan.where is not None:
            passing = self._where_mask(plan, source)
        rows = np.arange(len(source), dtype=np.int64) if passing is None else np.flatnonzero(passing)
        if self._range is not None:
            rows = rows[(rows >= self._range[0]) & (rows < self._range[1])]
        keys = scores if len(rows) == len(scores) else scores[rows]
        stop = plan.offset + plan.limit
        if np.isnan(keys).any():  # NaN sorts last either way: the general top-k knows how
            topk = TopK(stop, [descending])
            topk.push(rows, [keys])
            return topk.result()
        if stop < len(rows):
            # Only rows at least as good as the stop-th best can make the result (ties kept: rows break them).
            position = len(keys) - stop if descending else stop - 1
            kth = np.partition(keys, position)[position]
            keep = np.flatnonzero(keys >= kth if descending else keys <= kth)
            rows, keys = rows[keep], keys[keep]
        order = np.lexsort((rows, -keys if descending else keys))[:stop]  # ties: the lower row first
        return rows[order], [keys[order]]

    def _indexed_topk(self, plans: list[Plan], source: ScanSource, passing: np.ndarray | None
                      ) -> tuple[list[tuple[np.ndarray, list[np.ndarray]]] | None, np.ndarray | None]:
        """Top-k of each plan (same column, WHERE and LIMIT) from a vector index's candidates, or None;
        and the WHERE's mask, if it had to be computed (the exact scan then reuses it).

        The index proposes candidates; they, the rows it does not cover and any rows the
        function must always score are scored exactly. If fewer than k come back while more
        rows pass, that plan is scanned exactly instead, so k rows come back whenever k pass.
        """
        # A part of a divided query scans exactly: :mod:`.distributed` runs indexed searches whole.
        find = getattr(source, "vector_candidates", None) if self._range is None else None
        requests = [vector_request(p, source) for p in plans]
        if find is None or any(r is None for r in requests):
            return None, passing
        if passing is None and plans[0].where is not None:
            passing = self._where_mask(plans[0], source)  # no key index answered it: the index needs it anyway
        passing_rows = len(source) if passing is None else int(np.count_nonzero(passing))
        stop = plans[0].offset + plans[0].limit
        first = requests[0]
        fetch = stop * max(r.query.overfetch for r in requests)
        queries = np.stack([r.query.vector for r in requests]).astype(np.float32, copy=False)
        found = find(VectorSearch(first.column, first.query.metric, queries, fetch, passing, passing_rows))
        if found is None:
            return None, passing
        out = []
        for plan, request, hits in zip(plans, requests, found.hits, strict=True):
            extra = request.query.extra_rows
            parts = [hits, found.fresh] + ([] if extra is None else [np.asarray(extra, dtype=np.int64)])
            rows = np.unique(np.concatenate(parts))
            if passing is not None:
                rows = rows[passing[rows]]
            result = self._topk(plan, source, passing, rows)
            if len(result[0]) < min(stop, passing_rows):
                result = self._topk(plan, source, passing)
            out.append(result)
        return out, passing

    def _where_mask(self, plan: Plan, source: ScanSource) -> np.ndarray:
        """The rows passing ``plan``'s WHERE, as a mask, by scanning only its columns."""
        mask = np.zeros(len(source), dtype=bool)
        mask[scanned_passing(plan.where, source, self._ctx)] = True
        return mask

    def _keys(self, plan: Plan, ctx: EvalContext) -> list[np.ndarray]:
        n = ctx.n
        out = []
        for expr, _ in plan.order:
            v = evaluate(expr, ctx)
            if expr.const:
                v = materialize(v, expr.type, n) if expr.type.kind != "null" else [None] * n
            out.append(key_array(v, n))
        return out

    def _scan_filter(self, plan: Plan, source: ScanSource, offset: int, stop: int | None,
                     passing: np.ndarray | None) -> tuple[np.ndarray, dict[int, Any]]:
        row_parts: list[np.ndarray] = []
        value_parts: dict[int, list[Any]] = {id(o.expr): [] for o in plan.outputs if o.virtual}
        count = 0
        for batch, ctx in self._filtered(plan, source, passing):
            rows = batch.rows
            if stop is not None:
                rows = rows[: stop - count]
            # Skip computing projections for rows that the offset drops anyway.
            lo = max(0, offset - count)
            count += len(rows)
            if lo < len(rows):
                keep = np.arange(lo, len(rows))
                row_parts.append(rows[keep])
                for o in plan.outputs:
                    if o.virtual and not o.expr.const:
                        value_parts[id(o.expr)].append(gather(evaluate(o.expr, ctx), keep))
            if stop is not None and count >= stop:
                break
        rows = np.concatenate(row_parts) if row_parts else np.empty(0, dtype=np.int64)
        known = {}
        for o in plan.outputs:
            if o.virtual and not o.expr.const:
                known[id(o.expr)] = concat(value_parts[id(o.expr)], o.expr.type)
        return rows, known

    # ----------------------------------------------------------------- projection

    def _project(self, plan: Plan, source: ScanSource, rows: np.ndarray,
                 known: dict[int, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        todo: list[Output] = []
        for o in plan.outputs:
            if not o.virtual:
                continue
            if o.expr.const:
                out[o.name] = _const_values(o.expr, len(rows))
            elif id(o.expr) in known:
                out[o.name] = _as_values(known[id(o.expr)], o.expr.type)
            else:
                todo.append(o)
        if todo:
            columns = sorted(set().union(*(o.expr.columns for o in todo)))
            parts: dict[str, list[Any]] = {o.name: [] for o in todo}
            for start in range(0, len(rows), PROJECT_BATCH):
                part = rows[start : start + PROJECT_BATCH]
                batch = Batch(rows=part, values={c: source.take(c, part) for c in columns})
                ctx = self._ctx(batch)
                for o in todo:
                    parts[o.name].append(evaluate(o.expr, ctx))
            for o in todo:
                out[o.name] = _as_values(concat(parts[o.name], o.expr.type), o.expr.type)
        return out


def split_points(source: ScanSource, columns: Sequence[str]) -> np.ndarray | None:
    """The source's units for a scan of ``columns`` (see :class:`DivisibleSource`), or None."""
    points = getattr(source, "split_points", None)
    return None if points is None else points(columns)


def _push_many(topks: list[TopK], rows: np.ndarray, scores: list[np.ndarray], k: int,
               descending: bool) -> None:
    """Push one batch's scores into many top-k heaps, pre-selecting with one partition.

    Only rows scoring at least each query's k-th best in this batch (ties included,
    so the tie-break by row stays exact) can reach its result.
    """
    n = len(rows)
    if n <= k or any(s.dtype.kind != "f" for s in scores):
        for topk, s in zip(topks, scores, strict=True):
            topk.push(rows, [s])
        return
    matrix = np.stack(scores)
    if descending:
        np.negative(matrix, out=matrix)
    kth = np.partition(matrix, k - 1, axis=1)[:, k - 1]
    for j, (topk, s) in enumerate(zip(topks, scores, strict=True)):
        if np.isnan(kth[j]):
            topk.push(rows, [s])
            continue
        keep = np.flatnonzero(matrix[j] <= kth[j])
        topk.push(rows[keep], [s[keep]])


def _const_values(e: BExpr, n: int) -> Any:
    if e.type.kind == "null":
        return [None] * n
    return materialize(e.value, e.type, n)


def _as_values(v: Any, t: ValueType) -> Any:
    """Result representation: ndarrays for numbers/fixed arrays, lists otherwise."""
    if isinstance(v, np.ndarray) and v.dtype == object:
        return list(v)
    if t.kind in ("number", "bool") and isinstance(v, list):
        return np.asarray(v)
    return v
