"""One query over row ranges in parallel, merged into exactly the answer of a whole run.

The planner's plan says what may be divided. A filter, a top-k or a sort is run by
*parts*, each over a run of whole units of the source (see
:class:`~query_lang.source.DivisibleSource`): a part scans, filters and keeps its
best ``offset + limit`` rows with their ORDER BY keys, so only those travel back.
:func:`merge` then orders the parts' rows as a whole run orders them (keys, then row:
ties included), cuts OFFSET and LIMIT, and computes the remaining outputs for the
result rows, as a whole run computes them. Because a unit is scanned in the same
batches either way, every score is bit for bit the one a whole run computes.

Some plans run *whole*, in one task: a materialised subquery, a plain row range, and
top-k searches that an index serves (vector indexes, and scores that come whole,
such as BM25's), where the index, not the scan, chooses the rows.
This module runs nothing remotely: the caller sends parts to its workers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ast
from .executor import Executor, QueryResult, split_points, vector_groups
from .filtering import concat, gather
from .functions import Function
from .index_search import vector_request
from .ordering import join_keys, sort_order
from .parser import parse
from .planner import Plan, plan_query
from .source import ScanSource


@dataclass
class Part:
    """What one part of a divided query sends back: its rows (source positions, in order) and, aligned
    with them, the ORDER BY keys (top-k, sort) or the computed outputs by output position (filter)."""

    rows: np.ndarray
    keys: list[np.ndarray] = field(default_factory=list)
    outputs: dict[int, Any] = field(default_factory=dict)


def divide(plan: Plan, source: ScanSource, parts: int) -> list[tuple[int, int]]:
    """The row ranges to run ``plan`` over in parallel, at most ``parts``; empty: run it whole."""
    if parts < 2 or _runs_whole(plan, source):
        return []
    units = split_points(source, plan.scan_columns)
    if units is None or len(units) < 3:
        return []
    return _even_ranges(np.asarray(units, dtype=np.int64), parts)


def _runs_whole(plan: Plan, source: ScanSource) -> bool:
    if plan.sub is not None or plan.strategy == "positions":
        return True
    if plan.strategy != "topk" or len(plan.order) != 1:
        return False
    fn = plan.order[0][0].function
    if fn is not None and type(fn).all_scores is not Function.all_scores:
        return True  # the scores come whole from an index: a part would score every row again
    request = vector_request(plan, source)
    serves = getattr(source, "serves_vector_search", None)
    return request is not None and serves is not None and serves(request.column, request.query.metric)


def _even_ranges(units: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Cut the units into at most ``parts`` runs of about equal rows."""
    total = int(units[-1])
    targets = np.arange(1, parts) * total / parts
    cuts = np.unique(units[np.searchsorted(units, targets)])
    bounds = [0, *[int(c) for c in cuts if 0 < c < total], total]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def called_functions(query: ast.Query) -> set[str]:
    """The names (lower case) of every function ``query`` calls, subqueries included."""
    found: set[str] = set()
    pending: list[Any] = [query]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Call):
            found.add(node.name.lower())
        if dataclasses.is_dataclass(node):
            pending += [getattr(node, f.name) for f in dataclasses.fields(node)]
        elif isinstance(node, (tuple, list)):
            pending += node
    return found


def part_plan(plan: Plan) -> Plan:
    """What a part runs: every row up to ``offset + limit``, as the merge cuts OFFSET itself."""
    stop = None if plan.limit is None else plan.offset + plan.limit
    return dataclasses.replace(plan, offset=0, limit=stop)


def run_parts(queries: Sequence[str | ast.Query], source: ScanSource, rows_range: tuple[int, int]) -> list[Part]:
    """Each query's part over ``rows_range``. Queries that a whole run would batch (one scan for
    several top-k vector searches) are batched here too, so their scores are the same."""
    plans = [plan_query(parse(q) if isinstance(q, str) else q, source) for q in queries]
    executor = Executor(source, rows_range)
    out: list[Part | None] = [None] * len(plans)
    for members in vector_groups(plans):
        found = executor.vector_batch_rows([part_plan(plans[i]) for i in members])
        for i, (rows, keys) in zip(members, found, strict=True):
            out[i] = Part(rows, keys)
    for i, plan in enumerate(plans):
        if out[i] is None:
            out[i] = _part(executor, part_plan(plan))
    return [p for p in out if p is not None]


def _part(executor: Executor, plan: Plan) -> Part:
    rows, known = executor.select_rows(plan)
    if plan.strategy == "scan":
        outputs = {i: known[id(o.expr)] for i, o in enumerate(plan.outputs) if id(o.expr) in known}
        return Part(rows, outputs=outputs)
    keys = [known[id(e)] for e, _ in plan.order] if len(rows) else []
    return Part(rows, keys)


def merge(plan: Plan, source: ScanSource, parts: Sequence[Part]) -> QueryResult:
    """The whole answer of ``plan`` from its parts, in the order of their ranges."""
    parts = [p for p in parts if len(p.rows)]
    stop = None if plan.limit is None else plan.offset + plan.limit
    if not parts or plan.limit == 0:
        rows, known = np.empty(0, dtype=np.int64), {}
    elif plan.strategy == "scan":
        rows, known = _merged_filter(plan, parts, stop)
    else:
        rows, known = _merged_order(plan, parts, stop)
    virtual = Executor(source).project(plan, rows, known)
    return QueryResult(rows, [o.name for o in plan.outputs], virtual)


def _merged_filter(plan: Plan, parts: list[Part], stop: int | None) -> tuple[np.ndarray, dict[int, Any]]:
    """Parts of a filter follow each other in row order: join them, then cut OFFSET and LIMIT."""
    rows = np.concatenate([p.rows for p in parts])[plan.offset : stop]
    keep = np.arange(plan.offset, plan.offset + len(rows))
    known = {}
    for i, o in enumerate(plan.outputs):
        if i in parts[0].outputs:
            known[id(o.expr)] = gather(concat([p.outputs[i] for p in parts], o.expr.type), keep)
    return rows, known


def _merged_order(plan: Plan, parts: list[Part], stop: int | None) -> tuple[np.ndarray, dict[int, Any]]:
    """Parts of a top-k or sort: order their rows as a whole run does (keys, then row), then cut."""
    all_rows = np.concatenate([p.rows for p in parts])
    all_keys = [join_keys([p.keys[i] for p in parts]) for i in range(len(plan.order))]
    order = sort_order(all_keys, [d for _, d in plan.order], all_rows)[plan.offset : stop]
    known = {id(e): k[order] for (e, _), k in zip(plan.order, all_keys, strict=True)}
    return all_rows[order], known
