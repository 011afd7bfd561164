"""AST → TQL text, such that ``parse(to_sql(q)) == q``."""

from __future__ import annotations

import math
import re

from . import ast
from .errors import TQLError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEYWORDS = frozenset(
    "select from where order by asc desc limit offset as and or not in between like ilike "
    "is null true false array".split()
)

# Binding strength; higher binds tighter.
_PREC = {"OR": 1, "AND": 2, "NOT": 3, "CMP": 4, "+": 5, "-": 5, "*": 6, "/": 6, "NEG": 7}


def quote_name(name: str) -> str:
    """A name as it must be written in a query (double-quoted if needed)."""
    if _IDENT.fullmatch(name) and name.lower() not in KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _number(v: int | float) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            raise TQLError(f"cannot write non-finite number {v!r} in TQL")
        return repr(v)
    return str(int(v))


def _literal(v: object) -> str:
    if v is None:
        return "NULL"
    if v is True:
        return "TRUE"
    if v is False:
        return "FALSE"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, (int, float)):
        return _number(v)
    raise TQLError(f"cannot write literal of type {type(v).__name__}")


def _prec(e: ast.Expr) -> int:
    if isinstance(e, ast.BoolOp):
        return _PREC[e.op]
    if isinstance(e, ast.Unary):
        return _PREC["NOT"] if e.op == "NOT" else _PREC["NEG"]
    if isinstance(e, ast.Binary):
        return _PREC.get(e.op, _PREC["CMP"])
    if isinstance(e, (ast.InList, ast.Between, ast.Like, ast.IsNull)):
        return _PREC["CMP"]
    if isinstance(e, ast.Literal) and isinstance(e.value, (int, float)) and e.value < 0:
        return _PREC["NEG"]
    return 100


def _wrap(e: ast.Expr, min_prec: int) -> str:
    text = expr_to_sql(e)
    return f"({text})" if _prec(e) < min_prec else text


def _index_item(item: ast.IndexItem) -> str:
    if isinstance(item, ast.Slice):
        parts = ["" if p is None else str(p) for p in (item.start, item.stop)]
        text = ":".join(parts)
        if item.step is not None:
            text += f":{item.step}"
        return text
    if isinstance(item, str):
        return _literal(item)
    return str(item)


def expr_to_sql(e: ast.Expr) -> str:
    """Render one expression."""
    if isinstance(e, ast.Literal):
        return _literal(e.value)
    if isinstance(e, ast.ArrayLiteral):
        return "ARRAY[" + ", ".join(_number(v) for v in e.values) + "]"
    if isinstance(e, ast.Column):
        return quote_name(e.name)
    if isinstance(e, ast.Index):
        base = _wrap(e.base, 100)
        if base.startswith("-"):  # "-1[0]" would parse as -(1[0])
            base = f"({base})"
        return base + "[" + ", ".join(_index_item(i) for i in e.items) + "]"
    if isinstance(e, ast.Call):
        return quote_name(e.name) + "(" + ", ".join(expr_to_sql(a) for a in e.args) + ")"
    if isinstance(e, ast.Unary):
        if e.op == "NOT":
            return "NOT " + _wrap(e.operand, _PREC["NOT"])
        inner = _wrap(e.operand, _PREC["NEG"])
        # "- -x" must not become "--x", and "-(3)" keeps an explicit negation of a literal.
        return "- " + inner if inner.startswith("-") else "-" + inner
    if isinstance(e, ast.Binary):
        p = _prec(e)
        if p == _PREC["CMP"]:
            return f"{_wrap(e.left, p + 1)} {e.op} {_wrap(e.right, p + 1)}"
        return f"{_wrap(e.left, p)} {e.op} {_wrap(e.right, p + 1)}"
    if isinstance(e, ast.BoolOp):
        p = _PREC[e.op]
        return f" {e.op} ".join(_wrap(o, p + 1) for o in e.operands)
    cmp = _PREC["CMP"] + 1
    neg = "NOT " if getattr(e, "negated", False) else ""
    if isinstance(e, ast.InList):
        items = ", ".join(expr_to_sql(i) for i in e.items)
        return f"{_wrap(e.expr, cmp)} {neg}IN ({items})"
    if isinstance(e, ast.Between):
        return f"{_wrap(e.expr, cmp)} {neg}BETWEEN {_wrap(e.low, cmp)} AND {_wrap(e.high, cmp)}"
    if isinstance(e, ast.Like):
        op = "ILIKE" if e.case_insensitive else "LIKE"
        return f"{_wrap(e.expr, cmp)} {neg}{op} {_wrap(e.pattern, cmp)}"
    if isinstance(e, ast.IsNull):
        return f"{_wrap(e.expr, cmp)} IS {neg}NULL"
    raise TQLError(f"cannot print {type(e).__name__}")


def to_sql(q: ast.Query) -> str:
    """Render a whole query."""
    items = []
    for s in q.select:
        if isinstance(s, ast.Star):
            items.append("*")
        else:
            text = expr_to_sql(s.expr)
            items.append(text if s.alias is None else f"{text} AS {quote_name(s.alias)}")
    out = "SELECT " + ", ".join(items)
    if q.source is not None:
        out += f" FROM ({to_sql(q.source)})"
    if q.where is not None:
        out += " WHERE " + expr_to_sql(q.where)
    if q.order_by:
        keys = [expr_to_sql(k.expr) + (" DESC" if k.descending else "") for k in q.order_by]
        out += " ORDER BY " + ", ".join(keys)
    if q.limit is not None:
        out += f" LIMIT {q.limit}"
    if q.offset is not None:
        out += f" OFFSET {q.offset}"
    return out
