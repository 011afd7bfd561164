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


@dataclass
class _Level:
    """What one query level's expressions can name, and what it inherits from its FROM subquery."""

    columns: dict[str, BExpr]
    #: Every tensor of the scanned source (functions' extra columns come from here).
    base_names: list[str]
    sub: Plan | None = None
    inherited_where: BExpr | None = None
    sub_virtual: frozenset[str] = frozenset()


def plan_query(q: ast.Query, source: ScanSource) -> Plan:
    """Resolve and type-check ``q`` against ``source``; nothing is read."""
    level = _from_clause(q, source)
    where = _and(level.inherited_where, _bind_where(q, level))
    outputs, alias_exprs = _bind_select(q, level)
    order = _bind_order(q, level, alias_exprs)
    outputs += _order_key_outputs(q, order, outputs)
    plan = Plan(outputs=outputs, where=where, order=order, limit=q.limit,
                offset=q.offset or 0, sub=level.sub, sub_virtual=level.sub_virtual)
    _choose_strategy(plan)
    return plan


def _from_clause(q: ast.Query, source: ScanSource) -> _Level:
    """The names of the source, or of the FROM subquery (merged in, or materialised first)."""
    if q.source is None:
        return _Level(_base_scope(source), list(source.column_names()))
    inner = plan_query(q.source, source)
    return _merged_subquery(inner, source) if inner.mergeable else _materialised_subquery(inner)


def _merged_subquery(inner: Plan, source: ScanSource) -> _Level:
    """Inline the subquery: its outputs become this level's names, its WHERE is inherited."""
    columns: dict[str, BExpr] = {}
    for o in inner.outputs:
        columns.setdefault(o.name, o.expr)
    sub_virtual = inner.sub_virtual | {o.name for o in inner.outputs if o.virtual}
    base_names = list(source.column_names())
    if inner.sub is not None:
        base_names = list(dict.fromkeys(o.name for o in inner.sub.outputs))
    return _Level(columns, base_names, inner.sub, inner.where, sub_virtual)


def _materialised_subquery(inner: Plan) -> _Level:
    """A subquery with ORDER BY/LIMIT/OFFSET runs first; its outputs are read like columns."""
    columns: dict[str, BExpr] = {}
    for o in inner.outputs:
        if o.name not in columns:
            t = o.expr.type
            columns[o.name] = column_expr(o.name, ValueType(t.kind, t.shape, _htype_for(t), o.name))
    sub_virtual = frozenset(o.name for o in inner.outputs if o.virtual)
    return _Level(columns, list(columns), inner, None, sub_virtual)


def _bind_where(q: ast.Query, level: _Level) -> BExpr | None:
    if q.where is None:
        return None
    aliases = {s.alias for s in q.select if isinstance(s, ast.SelectItem) and s.alias}
    scope = Scope(level.columns, hidden_aliases=aliases - set(level.columns), source_names=level.base_names)
    where = bind(q.where, scope)
    if where.type.kind in ("array", "list"):
        raise TQLTypeError(f"WHERE must give one true/false value per row, but "
                           f"'{where.text}' is an array; use any(...) or all(...)")
    return where


def _bind_select(q: ast.Query, level: _Level) -> tuple[list[Output], dict[str, BExpr]]:
    """The outputs of the select list, and the expressions of its aliases (ORDER BY may use them)."""
    outputs: list[Output] = []
    alias_exprs: dict[str, BExpr] = {}
    scope = Scope(level.columns, source_names=level.base_names)
    for item in q.select:
        if isinstance(item, ast.Star):
            for name, expr in level.columns.items():
                outputs.append(Output(name, expr, _is_virtual(name, expr, level.sub_virtual)))
            continue
        expr = bind(item.expr, scope)
        if item.alias is not None:
            name = item.alias
            alias_exprs[name] = expr
            virtual = True
        else:
            name = item.expr.name if isinstance(item.expr, ast.Column) else expr.text
            virtual = _is_virtual(name, expr, level.sub_virtual)
        outputs.append(Output(name, expr, virtual))
    return outputs, alias_exprs


def _bind_order(q: ast.Query, level: _Level, alias_exprs: dict[str, BExpr]) -> list[tuple[BExpr, bool]]:
    scope = Scope(level.columns, aliases=alias_exprs, source_names=level.base_names)
    order = []
    for key in q.order_by:
        expr = bind(key.expr, scope)
        if expr.type.kind in ("array", "null") and not expr.const:
            raise TQLTypeError(f"cannot ORDER BY '{expr.text}': it is an array per row")
        order.append((expr, key.descending))
    return order


def _order_key_outputs(q: ast.Query, order: list[tuple[BExpr, bool]], outputs: list[Output]) -> list[Output]:
    """With ``SELECT *``, computed ORDER BY keys are output too, as ``score``, ``score_2``, ..."""
    if not any(isinstance(s, ast.Star) for s in q.select):
        return []
    taken = {o.name for o in outputs}
    extra = []
    for key, (expr, _) in zip(q.order_by, order, strict=False):
        if isinstance(key.expr, ast.Column) or expr.const:
            continue
        name, i = "score", 1
        while name in taken:
            i += 1
            name = f"score_{i}"
        taken.add(name)
        extra.append(Output(name, expr, True))
    return extra


def _choose_strategy(plan: Plan) -> None:
    """Set how ``plan`` finds its rows, and which columns the scan must read for that."""
    needed: set[str] = set()
    if plan.where is not None:
        needed |= plan.where.columns
    for expr, _ in plan.order:
        needed |= expr.columns
    if plan.order:
        plan.strategy = "topk" if plan.limit is not None else "sort"
    elif plan.where is not None:
        plan.strategy = "scan"
        for o in plan.outputs:
            if o.virtual:
                needed |= o.expr.columns
    order_keys = [e for e, _ in plan.order if not e.const]
    plan.vector_fast_path = (
        plan.strategy == "topk" and len(order_keys) == 1
        and order_keys[0].function is not None and order_keys[0].function.vector_score
    )
    plan.scan_columns = sorted(needed)


def _is_virtual(name: str, expr: BExpr, sub_virtual: frozenset[str]) -> bool:
    return expr.column != name or name in sub_virtual
