"""Name resolution and type checking: AST expressions → bound, evaluable expressions."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ast
from .errors import TQLError, TQLExecutionError, TQLNameError, TQLTypeError
from .evaluate import BExpr, EvalContext, Kernel, run_kernel
from .functions import Arg, CallContext, Function, get_function
from .kernels import (
    first,
    is_null,
    materialize,
    numeric_binary,
    object_binary,
    rows_iter,
    truthy,
)
from .like import like_matcher
from .printer import expr_to_sql
from .source import Batch
from .vtypes import BOOL, NULL, NUMBER, OBJECT, TEXT, ValueType, unnamed

_OBJECTISH = ("text", "object", "list")
_CMP = ("==", "!=", "<", "<=", ">", ">=")


class Scope:
    """Names visible to an expression: tensors of the source and (optionally) aliases."""

    def __init__(self, columns: dict[str, BExpr], aliases: dict[str, BExpr] | None = None,
                 hidden_aliases: set[str] | None = None,
                 source_names: list[str] | None = None) -> None:
        self.columns = columns
        #: Every tensor of the scanned source (functions' extra columns come from here).
        self.source_names = list(columns) if source_names is None else source_names
        self.aliases = aliases or {}
        self.hidden_aliases = hidden_aliases or set()

    def lookup(self, name: str) -> BExpr:
        if name in self.aliases:
            return self.aliases[name]
        if name in self.columns:
            return self.columns[name]
        hint = ""
        if name in self.hidden_aliases:
            hint = (f"'{name}' is an alias defined in SELECT; to filter on it, select from a "
                    f"subquery: SELECT * FROM (SELECT ..., <expr> AS {name}) WHERE {name} ...")
        raise TQLNameError("tensor", name, list(self.columns) + list(self.aliases), hint)


def column_expr(name: str, t: ValueType) -> BExpr:
    """A bound reference to a source column."""
    cacheable_src = t.kind in _OBJECTISH
    return BExpr(type=t, resolved=ast.Column(name), column=name, columns=frozenset([name]),
                 cacheable=cacheable_src)


def const_expr(value: Any, t: ValueType, resolved: ast.Expr) -> BExpr:
    return BExpr(type=t, resolved=resolved, const=True, value=value)


def _literal_type(v: Any) -> ValueType:
    if v is None:
        return NULL
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, (int, float)):
        return NUMBER
    if isinstance(v, str):
        return TEXT
    if isinstance(v, np.ndarray):
        return ValueType("array", shape=v.shape)
    return OBJECT


def make_node(t: ValueType, resolved: ast.Expr, children: list[BExpr], kernel: Kernel,
              function: Function | None = None, extra_columns: tuple[str, ...] = ()) -> BExpr:
    """Build a node, folding it to a constant when all inputs are constant."""
    columns = frozenset().union(*(c.columns for c in children), extra_columns)
    volatile = any(c.volatile for c in children) or (function is not None and not function.pure)
    node = BExpr(type=t, resolved=resolved, children=tuple(children), kernel=kernel,
                 columns=columns, volatile=volatile, function=function)
    if all(c.const for c in children) and not columns and not volatile:
        ctx = EvalContext(Batch(rows=np.zeros(1, dtype=np.int64), values={}), {}, {}, derived=None)
        vals = [materialize(c.value, c.type, 1) for c in children]
        out = run_kernel(node, vals, [False] * len(children), ctx)
        value = first(out) if not (isinstance(out, np.ndarray) and out.ndim == 0) else out.item()
        if t.kind == "array":
            value = np.asarray(value)
        return const_expr(value, unnamed(t) if t.kind != "null" else NULL, resolved)
    # Cache results derived from object columns: decoding JSON/text per row is the slow part.
    node.cacheable = (not volatile and bool(columns)
                      and any(c.cacheable or c.type.kind in _OBJECTISH for c in children)
                      and (function is None or function.pure))
    return node


def bind(e: ast.Expr, scope: Scope) -> BExpr:
    """Resolve names in ``e`` and type-check it; raises TQLNameError / TQLTypeError."""
    if isinstance(e, ast.Literal):
        return const_expr(e.value, _literal_type(e.value), e)
    if isinstance(e, ast.ArrayLiteral):
        return _bind_array(e)
    if isinstance(e, ast.Column):
        return scope.lookup(e.name)
    if isinstance(e, ast.Index):
        return _bind_index(e, scope)
    if isinstance(e, ast.Call):
        return _bind_call(e, scope)
    if isinstance(e, ast.Unary):
        x = bind(e.operand, scope)
        if e.op == "NOT":
            _check_boolish(x, "NOT")
            return make_node(BOOL, ast.Unary("NOT", x.resolved), [x],
                         lambda v, c, ctx: ~truthy(v[0], x.type, c[0], ctx.n))
        return _bind_neg(x)
    if isinstance(e, ast.Binary):
        left, right = bind(e.left, scope), bind(e.right, scope)
        return binary(e.op, left, right)
    if isinstance(e, ast.BoolOp):
        ops = [bind(o, scope) for o in e.operands]
        for o in ops:
            _check_boolish(o, e.op)
        resolved = ast.BoolOp(e.op, tuple(o.resolved for o in ops))
        return make_node(BOOL, resolved, ops, boolop_kernel(e.op, ops))
    if isinstance(e, ast.InList):
        x = bind(e.expr, scope)
        items = [bind(i, scope) for i in e.items]
        tests = [binary("==", x, i) for i in items]
        resolved = ast.InList(x.resolved, tuple(i.resolved for i in items), e.negated)
        return make_node(BOOL, resolved, tests, _any_of_kernel(e.negated))
    if isinstance(e, ast.Between):
        return _bind_between(e, scope)
    if isinstance(e, ast.Like):
        return _bind_like(e, scope)
    if isinstance(e, ast.IsNull):
        return _bind_is_null(e, scope)
    raise TQLTypeError(f"unsupported expression {type(e).__name__}")


def _bind_between(e: ast.Between, scope: Scope) -> BExpr:
    x, lo, hi = bind(e.expr, scope), bind(e.low, scope), bind(e.high, scope)
    tests = [binary(">=", x, lo), binary("<=", x, hi)]
    resolved = ast.Between(x.resolved, lo.resolved, hi.resolved, e.negated)

    def between_kernel(v, c, ctx):
        m = truthy(v[0], BOOL, c[0], ctx.n) & truthy(v[1], BOOL, c[1], ctx.n)
        return ~m if e.negated else m

    return make_node(BOOL, resolved, tests, between_kernel)


def _bind_is_null(e: ast.IsNull, scope: Scope) -> BExpr:
    x = bind(e.expr, scope)

    def null_kernel(v, c, ctx):
        m = is_null(v[0], x.type, c[0], ctx.n)
        return ~m if e.negated else m

    return make_node(BOOL, ast.IsNull(x.resolved, e.negated), [x], null_kernel)


def _bind_array(e: ast.ArrayLiteral) -> BExpr:
    """An ARRAY literal as a float64 vector, as TQL numbers are (float32 values widen exactly)."""
    values = e.values
    arr = values.array.astype(np.float64) if isinstance(values, ast.Float32Vector) else np.asarray(values, np.float64)
    return const_expr(arr, ValueType("array", shape=arr.shape), e)


def _float32_vectors(args: list[BExpr]) -> list[BExpr]:
    """``args`` with each constant float32 vector given to the function as that array itself."""
    if all(a.const for a in args):
        return args  # folded to a constant: computed as in text form
    out = []
    for a in args:
        values = a.resolved.values if isinstance(a.resolved, ast.ArrayLiteral) else None
        if a.const and isinstance(values, ast.Float32Vector):
            a = const_expr(values.array, a.type, a.resolved)
        out.append(a)
    return out


def _check_boolish(x: BExpr, where: str) -> None:
    if x.type.kind in ("array", "list"):
        raise TQLTypeError(
            f"{where} expects a true/false value per row, but '{x.text}' is an array; "
            "use any(...) or all(...)"
        )


def boolop_kernel(op: str, ops: list[BExpr]) -> Kernel:
    """The kernel of ``ops[0] AND ops[1] ...`` (or OR): NULL/NaN operands count as false."""

    def kernel(v, c, ctx):
        masks = [truthy(x, o.type, cc, ctx.n) for x, o, cc in zip(v, ops, c, strict=False)]
        out = masks[0].copy()
        for m in masks[1:]:
            out = (out & m) if op == "AND" else (out | m)
        return out

    return kernel


def _any_of_kernel(negated: bool) -> Kernel:
    def kernel(v, c, ctx):
        out = np.zeros(ctx.n, dtype=bool)
        for x, cc in zip(v, c, strict=False):
            out |= truthy(x, BOOL, cc, ctx.n)
        return ~out if negated else out

    return kernel


def _bind_neg(x: BExpr) -> BExpr:
    kind = x.type.kind
    if kind in ("text", "list"):
        raise TQLTypeError(f"cannot negate '{x.text}': {x.type.describe()}")
    resolved = ast.Unary("-", x.resolved)
    if kind == "null":
        return const_expr(None, NULL, resolved)
    if kind == "object":
        return make_node(OBJECT, resolved, [x],
                     lambda v, c, ctx: object_binary("*", v[0], c[0], -1, True, ctx.n, False))
    t = NUMBER if kind in ("number", "bool") else unnamed(x.type)

    def neg_kernel(v, c, ctx):
        val = v[0]
        if isinstance(val, list):
            return [-np.asarray(r) for r in val]
        arr = np.asarray(val)
        return -(arr.astype(np.int64) if arr.dtype == bool else arr)

    return make_node(t, resolved, [x], neg_kernel)


def _array_result_shape(op: str, a: ValueType, b: ValueType, la: BExpr, lb: BExpr) -> Any:
    sa = () if a.kind in ("number", "bool") else a.shape
    sb = () if b.kind in ("number", "bool") else b.shape
    if sa is None or sb is None or None in sa or None in sb:
        if sa is not None and sb is not None and len(sa) == len(sb):
            return tuple(x if x == y else None for x, y in zip(sa, sb, strict=False))
        return None
    try:
        return np.broadcast_shapes(sa, sb)
    except ValueError:
        for x, y, sx, sy in ((la, lb, sa, sb), (lb, la, sb, sa)):
            if x.const and y.type.column is not None and len(sx) == 1 and len(sy) == 1:
                raise TQLTypeError(
                    f"ARRAY has {sx[0]} elements but tensor '{y.type.column}' has dimension "
                    f"{sy[0]}"
                ) from None
        raise TQLTypeError(
            f"cannot apply '{op}' to shapes {sa} and {sb} ('{la.text}', '{lb.text}')"
        ) from None


def binary(op: str, left: BExpr, right: BExpr) -> BExpr:
    """Bind ``left op right`` (arithmetic or comparison)."""
    resolved = ast.Binary(op, left.resolved, right.resolved)
    ka, kb = left.type.kind, right.type.kind
    cmp = op in _CMP
    if ka == "null" or kb == "null":
        return const_expr(False, BOOL, resolved) if cmp else const_expr(None, NULL, resolved)
    numeric = ("number", "bool", "array")
    if ka in numeric and kb in numeric:
        if ka == "array" or kb == "array":
            shape = _array_result_shape(op, left.type, right.type, left, right)
            t = ValueType("array", shape=shape)
        else:
            t = BOOL if cmp else NUMBER
        return make_node(t, resolved, [left, right],
                     lambda v, c, ctx: numeric_binary(op, v[0], c[0], v[1], c[1], ctx.n))
    if "array" in (ka, kb):
        raise TQLTypeError(f"cannot apply '{op}' to '{left.text}' ({left.type.describe()}) and "
                           f"'{right.text}' ({right.type.describe()})")
    if not cmp and ("text" in (ka, kb) or "list" in (ka, kb)):
        raise TQLTypeError(f"operator '{op}' is not defined for text or lists ('{left.text}' "
                           f"{op} '{right.text}')")
    if cmp and "object" not in (ka, kb) and "list" not in (ka, kb):
        kinds = {ka, kb}
        if "text" in kinds and kinds != {"text"}:
            raise TQLTypeError(f"cannot compare text with a number: '{left.text} {op} "
                               f"{right.text}'")
    t = BOOL if cmp else OBJECT
    return make_node(t, resolved, [left, right],
                 lambda v, c, ctx: object_binary(op, v[0], c[0], v[1], c[1], ctx.n, cmp))


def _bind_like(e: ast.Like, scope: Scope) -> BExpr:
    x, p = bind(e.expr, scope), bind(e.pattern, scope)
    if x.type.kind not in ("text", "object", "null"):
        raise TQLTypeError(f"LIKE expects text, but {x.type.describe()}")
    if not (p.const and isinstance(p.value, str)):
        raise TQLTypeError("LIKE pattern must be a text literal")
    matches = like_matcher(p.value, e.case_insensitive)
    resolved = ast.Like(x.resolved, p.resolved, e.case_insensitive, e.negated)

    def like_kernel(v, c, ctx):
        m = np.fromiter((isinstance(s, str) and matches(s) for s in rows_iter(v[0], c[0], ctx.n)),
                        dtype=bool)
        return ~m if e.negated else m

    return make_node(BOOL, resolved, [x, p], like_kernel)


def _bind_call(e: ast.Call, scope: Scope) -> BExpr:
    fn = get_function(e.name)
    fn.check_arity(len(e.args))
    args = [bind(a, scope) for a in e.args]
    if fn.float32_vectors:
        args = _float32_vectors(args)
    infos = [Arg(a.type, a.const, a.value, _arg_text(a)) for a in args]
    try:
        t = fn.check(infos)
    except TQLError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TQLTypeError(f"{fn.name}: {exc}") from exc
    for col in fn.extra_columns:
        if col not in scope.source_names:
            raise TQLNameError("tensor", col, scope.source_names,
                               f"{fn.name}() needs tensor '{col}' in the dataset.")
    arg_columns = tuple(a.column for a in args)

    def call_kernel(v, c, ctx):
        cc = CallContext(ctx.batch, ctx.n, tuple(c), arg_columns,
                         ctx.fn_caches.setdefault(fn.name, {}), ctx.row_map, ctx.source)
        return fn.evaluate(v, cc)

    resolved = ast.Call(e.name, tuple(a.resolved for a in args))
    return make_node(t, resolved, args, call_kernel, function=fn, extra_columns=fn.extra_columns)


#: Longer ARRAY literals are abbreviated in the text handed to ``Function.check``.
_ARG_ARRAY_SHOWN = 8


def _arg_text(a: BExpr) -> str:
    """An argument as written, for messages; a long ARRAY literal (a query vector) is
    abbreviated rather than printed number by number on every query."""
    r = a.resolved
    if a.const and isinstance(r, ast.ArrayLiteral) and len(r.values) > 2 * _ARG_ARRAY_SHOWN:
        head = expr_to_sql(ast.ArrayLiteral(r.values[:_ARG_ARRAY_SHOWN]))[:-1]
        return f"{head}, ... ({len(r.values)} values)]"
    return a.text


def _bind_index(e: ast.Index, scope: Scope) -> BExpr:
    base = bind(e.base, scope)
    items = e.items
    resolved = ast.Index(base.resolved, items)
    kind = base.type.kind
    if kind in ("number", "bool", "null"):
        raise TQLTypeError(f"cannot index '{base.text}': {base.type.describe()}")
    if kind in ("object", "list", "text"):
        t = TEXT if kind == "text" else OBJECT

        def obj_kernel(v, c, ctx):
            return [_index_object(x, items) for x in rows_iter(v[0], c[0], ctx.n)]

        return make_node(t, resolved, [base], obj_kernel)
    if any(isinstance(i, str) for i in items):
        raise TQLTypeError(f"cannot use a text key on '{base.text}': {base.type.describe()}")
    key = tuple(slice(i.start, i.stop, i.step) if isinstance(i, ast.Slice) else i for i in items)
    if any(isinstance(k, slice) and k.step == 0 for k in key):
        raise TQLTypeError("slice step cannot be zero")
    shape = base.type.shape
    if shape is not None and None not in shape:
        try:
            out_shape = np.empty(shape, dtype=np.int8)[key].shape
        except IndexError as exc:
            raise TQLTypeError(f"bad index on '{base.text}' of per-row shape {shape}: {exc}") \
                from None
        t = NUMBER if out_shape == () else ValueType("array", shape=out_shape)

        def fixed_kernel(v, c, ctx):
            arr = np.asarray(v[0])
            return arr[key] if c[0] else arr[(slice(None), *key)]

        return make_node(t, resolved, [base], fixed_kernel)
    scalar = shape is not None and len(shape) == len(key) and all(isinstance(k, int) for k in key)
    t = NUMBER if scalar else ValueType("array", shape=None)

    def ragged_kernel(v, c, ctx):
        out = []
        for x in rows_iter(v[0], c[0], ctx.n):
            try:
                out.append(np.asarray(x)[key])
            except IndexError:
                if not scalar:
                    raise TQLExecutionError(f"index {key} out of range in {resolved}") from None
                out.append(np.nan)
        return np.asarray(out, dtype=np.float64) if scalar else out

    return make_node(t, resolved, [base], ragged_kernel)


def _index_object(x: Any, items: tuple[ast.IndexItem, ...]) -> Any:
    for i in items:
        if x is None:
            return None
        if isinstance(i, str):
            x = x.get(i) if isinstance(x, dict) else None
        elif isinstance(i, ast.Slice):
            x = x[slice(i.start, i.stop, i.step)] if isinstance(x, (list, str)) else None
        elif isinstance(x, (list, str)):
            x = x[i] if -len(x) <= i < len(x) else None
        else:
            x = None
    return x
