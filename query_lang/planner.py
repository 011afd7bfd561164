"""Query AST → :class:`Plan`: resolved names, checked types, columns to read, strategy."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast
from .binder import Scope, bind, boolop_kernel, column_expr, make_node
from .errors import TQLTypeError
from .evaluate import BExpr
from .source import ScanSource
from .vtypes import BOOL, ValueType, column_type


@dataclass
class Output:
    """One result column. ``virtual`` outputs are computed (``expr``) rather than read."""

    name: str
    expr: BExpr
    virtual: bool


@dataclass
class Plan:
    """How to run one query level.

    ``strategy`` is ``"positions"`` (no WHERE/ORDER BY: rows are just a range),
    ``"scan"`` (filter in source order), ``"topk"`` (ORDER BY with LIMIT: streaming
    top-k) or ``"sort"`` (ORDER BY without LIMIT: full stable sort).
    ``sub`` is a subquery that must be materialised first (it has ORDER BY/LIMIT/OFFSET);
    subqueries without them are merged into this plan instead.
    """

    outputs: list[Output]
    where: BExpr | None = None
    order: list[tuple[BExpr, bool]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    sub: Plan | None = None
    scan_columns: list[str] = field(default_factory=list)
    strategy: str = "positions"
    #: Single ORDER BY key computed by a vector-score function (cosine, dot, ...).
    vector_fast_path: bool = False
    #: Names of the materialised subquery's computed columns (they stay virtual here).
    sub_virtual: frozenset[str] = frozenset()

    @property
    def mergeable(self) -> bool:
        return not self.order and self.limit is None and not self.offset


def _htype_for(t: ValueType) -> str:
    if t.htype is not None:
        return t.htype
    return {"text": "text", "object": "json", "list": "list"}.get(t.kind, "generic")


def _base_scope(source: ScanSource) -> dict[str, BExpr]:
    cols = {}
    for name in source.column_names():
        cols[name] = column_expr(name, column_type(source.column_info(name)))
    return cols


def _and(a: BExpr | None, b: BExpr | None) -> BExpr | None:
    if a is None or b is None:
        return a or b
    resolved = ast.BoolOp("AND", (a.resolved, b.resolved))
    return make_node(BOOL, resolved, [a, b], boolop_kernel("AND", [a, b]))


def plan_query(q: ast.Query, source: ScanSource) -> Plan:
    """Resolve and type-check ``q`` against ``source``; nothing is read."""
    sub: Plan | None = None
    inherited_where: BExpr | None = None
    sub_virtual: frozenset[str] = frozenset()
    base_names = list(source.column_names())
    if q.source is None:
        columns = _base_scope(source)
    else:
        inner = plan_query(q.source, source)
        columns = {}
        if inner.mergeable:
            # Inline the subquery: its outputs become this level's names.
            for o in inner.outputs:
                columns.setdefault(o.name, o.expr)
            sub, inherited_where, sub_virtual = inner.sub, inner.where, inner.sub_virtual
            sub_virtual = sub_virtual | {o.name for o in inner.outputs if o.virtual}
            if sub is not None:
                base_names = list(dict.fromkeys(o.name for o in sub.outputs))
        else:
            sub = inner
            for o in inner.outputs:
                if o.name not in columns:
                    t = o.expr.type
                    columns[o.name] = column_expr(
                        o.name, ValueType(t.kind, t.shape, _htype_for(t), o.name))
            sub_virtual = frozenset(o.name for o in inner.outputs if o.virtual)
            base_names = list(columns)
    aliases = {s.alias for s in q.select if isinstance(s, ast.SelectItem) and s.alias}
    where = None
    if q.where is not None:
        where = bind(q.where, Scope(columns, hidden_aliases=aliases - set(columns),
                                    source_names=base_names))
        if where.type.kind in ("array", "list"):
            raise TQLTypeError(f"WHERE must give one true/false value per row, but "
                               f"'{where.text}' is an array; use any(...) or all(...)")
    where = _and(inherited_where, where)

    outputs: list[Output] = []
    alias_exprs: dict[str, BExpr] = {}
    scope = Scope(columns, source_names=base_names)
    for item in q.select:
        if isinstance(item, ast.Star):
            for name, expr in columns.items():
                outputs.append(Output(name, expr, _is_virtual(name, expr, sub_virtual)))
            continue
        expr = bind(item.expr, scope)
        if item.alias is not None:
            name = item.alias
            alias_exprs[name] = expr
            virtual = True
        else:
            name = item.expr.name if isinstance(item.expr, ast.Column) else expr.text
            virtual = _is_virtual(name, expr, sub_virtual)
        outputs.append(Output(name, expr, virtual))

    order_scope = Scope(columns, aliases=alias_exprs, source_names=base_names)
    order = []
    for key in q.order_by:
        expr = bind(key.expr, order_scope)
        if expr.type.kind in ("array", "null") and not expr.const:
            raise TQLTypeError(f"cannot ORDER BY '{expr.text}': it is an array per row")
        order.append((expr, key.descending))
    if any(isinstance(s, ast.Star) for s in q.select):
        taken = {o.name for o in outputs}
        for key, (expr, _) in zip(q.order_by, order, strict=False):
            if isinstance(key.expr, ast.Column) or expr.const:
                continue
            name, i = "score", 1
            while name in taken:
                i += 1
                name = f"score_{i}"
            taken.add(name)
            outputs.append(Output(name, expr, True))

    plan = Plan(outputs=outputs, where=where, order=order, limit=q.limit,
                offset=q.offset or 0, sub=sub, sub_virtual=sub_virtual)
    needed: set[str] = set()
    if where is not None:
        needed |= where.columns
    for expr, _ in order:
        needed |= expr.columns
    if order:
        plan.strategy = "topk" if q.limit is not None else "sort"
    elif where is not None:
        plan.strategy = "scan"
        for o in outputs:
            if o.virtual:
                needed |= o.expr.columns
    order_keys = [e for e, _ in order if not e.const]
    plan.vector_fast_path = (
        plan.strategy == "topk" and len(order_keys) == 1
        and order_keys[0].function is not None and order_keys[0].function.vector_score
    )
    plan.scan_columns = sorted(needed)
    return plan


def _is_virtual(name: str, expr: BExpr, sub_virtual: frozenset[str]) -> bool:
    return expr.column != name or name in sub_virtual
