"""Runs a :class:`~query_lang.planner.Plan` over a :class:`ScanSource`, batch by batch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ast
from .binder import BExpr, EvalContext, evaluate
from .errors import TQLError, TQLExecutionError
from .kernels import materialize, truthy
from .ordering import TopK, key_array, sort_order
from .parser import parse
from .planner import Output, Plan, plan_query
from .source import Batch, ColumnInfo, ScanSource
from .vtypes import ValueType

#: Rows per batch when the executor builds batches itself (take-based projections).
PROJECT_BATCH = 8192


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
    try:
        plan = plan_query(q, source)
        return Executor(source).run(plan)
    except TQLError:
        raise
    except RecursionError:
        raise TQLExecutionError("query is too deeply nested to execute") from None
    except Exception as exc:  # noqa: BLE001 - surface every failure as a TQLError
        raise TQLExecutionError(f"{type(exc).__name__}: {exc}") from exc


def gather(v: Any, idx: np.ndarray) -> Any:
    """Select rows ``idx`` of a per-row value."""
    if isinstance(v, np.ndarray):
        return v[idx]
    return [v[i] for i in idx]


def concat(parts: list[Any], t: ValueType | None = None) -> Any:
    """Join per-batch values."""
    if parts and all(isinstance(p, np.ndarray) for p in parts):
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) == 1:
            return np.concatenate(parts)
    out: list[Any] = []
    for p in parts:
        out.extend(list(p))
    if not parts and t is not None and t.kind in ("number", "bool"):
        return np.empty(0, dtype=bool if t.kind == "bool" else np.float64)
    return out


class _GatheredValues(Mapping):
    """The rows ``idx`` of a batch's columns, each gathered on first access.

    A column the rest of the query never reads (or reads only through a cached
    derived value) is never gathered, and a lazily loaded source column is
    never even loaded.
    """

    def __init__(self, values: Mapping[str, Any], idx: np.ndarray) -> None:
        self._source = values
        self._idx = idx
        self._done: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._done:
            self._done[name] = gather(self._source[name], self._idx)
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


def _subset(batch: Batch, idx: np.ndarray) -> Batch:
    # Cache keys describe whole batches, so a subset carries none.
    return Batch(
        rows=batch.rows[idx],
        values=_GatheredValues(batch.values, idx),
        l2_norms={k: np.asarray(v)[idx] for k, v in batch.l2_norms.items()},
    )


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
    """Executes plans; holds per-execution function caches."""

    def __init__(self, source: ScanSource) -> None:
        self.source = source
        self.fn_caches: dict[str, dict] = {}
        self._row_map: np.ndarray | None = None

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

    # -------------------------------------------------------------- row selection

    def _ctx(self, batch: Batch) -> EvalContext:
        return EvalContext(batch, {}, self.fn_caches, row_map=self._row_map, source=self.source)

    def _filtered(self, plan: Plan, source: ScanSource) -> Iterator[tuple[Batch, EvalContext]]:
        for batch in source.scan(plan.scan_columns):
            ctx = self._ctx(batch)
            n = len(batch.rows)
            if n == 0:
                continue
            if plan.where is not None:
                mask = truthy(evaluate(plan.where, ctx), plan.where.type, plan.where.const, n)
                idx = np.flatnonzero(mask)
                if len(idx) == 0:
                    continue
                if len(idx) < n:
                    # Filter first: later expressions only see passing rows.
                    batch = _subset(batch, idx)
                    ctx = self._ctx(batch)
            yield batch, ctx

    def _select_rows(self, plan: Plan, source: ScanSource) -> tuple[np.ndarray, dict[int, Any]]:
        """Result rows (positions in ``source``) and already computed per-output values."""
        n_total = len(source)
        offset = plan.offset
        stop = None if plan.limit is None else offset + plan.limit
        if plan.limit == 0:
            return np.empty(0, dtype=np.int64), {}
        if plan.strategy == "positions":
            return np.arange(n_total, dtype=np.int64)[offset:stop], {}
        if plan.strategy == "scan":
            return self._scan_filter(plan, source, offset, stop)
        keys_desc = [d for _, d in plan.order]
        if plan.strategy == "topk":
            topk = TopK(stop, keys_desc)
            for batch, ctx in self._filtered(plan, source):
                topk.push(batch.rows, self._keys(plan, ctx))
            rows, keys = topk.result()
        else:
            row_parts, key_parts = [], []
            for batch, ctx in self._filtered(plan, source):
                row_parts.append(batch.rows)
                key_parts.append(self._keys(plan, ctx))
            if not row_parts:
                return np.empty(0, dtype=np.int64), {}
            all_rows = np.concatenate(row_parts)
            all_keys = [_join_keys([p[i] for p in key_parts]) for i in range(len(plan.order))]
            order = sort_order(all_keys, keys_desc, all_rows)
            rows, keys = all_rows[order], [k[order] for k in all_keys]
        rows = rows[offset:stop]
        known = {id(e): k[offset:stop] for (e, _), k in zip(plan.order, keys, strict=False)}
        return rows, known

    def _keys(self, plan: Plan, ctx: EvalContext) -> list[np.ndarray]:
        n = ctx.n
        out = []
        for expr, _ in plan.order:
            v = evaluate(expr, ctx)
            if expr.const:
                v = materialize(v, expr.type, n) if expr.type.kind != "null" else [None] * n
            out.append(key_array(v, n))
        return out

    def _scan_filter(self, plan: Plan, source: ScanSource, offset: int,
                     stop: int | None) -> tuple[np.ndarray, dict[int, Any]]:
        row_parts: list[np.ndarray] = []
        value_parts: dict[int, list[Any]] = {id(o.expr): [] for o in plan.outputs if o.virtual}
        count = 0
        for batch, ctx in self._filtered(plan, source):
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


def _join_keys(parts: list[np.ndarray]) -> np.ndarray:
    if any(p.dtype == object for p in parts):
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        i = 0
        for p in parts:
            out[i : i + len(p)] = p
            i += len(p)
        return out
    return np.concatenate(parts)


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
