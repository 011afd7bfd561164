"""Turning a VectorStore ``filter`` (dict, TQL string, expression or callable) into a TQL WHERE expression.

A ``query_lang.ast.Expr`` is used as it is, so code that builds filters (the framework
integrations) never prints them to text for this module to parse back.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from query_lang import ast, parse

from ..errors import SampleError


@lru_cache(maxsize=256)
def _parse_where(text: str) -> ast.Expr:
    query = parse(f"select * where {text}")
    return query.where


def metadata_equals(filter: Mapping[str, Any]) -> ast.Expr:
    """``{"a": 1, "b": "x"}`` → ``metadata['a'] == 1 AND metadata['b'] == 'x'``."""
    terms = []
    for key, value in filter.items():
        if not isinstance(key, str):
            raise SampleError(f"filter keys must be metadata field names (str), got {key!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise SampleError(f"filter[{key!r}]: expected a str, number, bool or None, got {type(value).__name__}")
        field = ast.Index(ast.Column("metadata"), (key,))
        terms.append(ast.IsNull(field) if value is None else ast.Binary("==", field, ast.Literal(value)))
    if not terms:
        raise SampleError("filter dict is empty: give at least one metadata field to match")
    return terms[0] if len(terms) == 1 else ast.BoolOp("AND", tuple(terms))


def where_expression(filter: Any) -> ast.Expr | None:
    """The WHERE expression for a dict, TQL-string or expression filter (callables are handled by the store)."""
    if filter is None:
        return None
    if isinstance(filter, ast.Expr):
        return filter
    if isinstance(filter, Mapping):
        return metadata_equals(filter)
    if isinstance(filter, str):
        return _parse_where(filter)
    raise SampleError(
        f"filter must be a dict, a TQL WHERE string, a query_lang.ast.Expr or a callable, got {type(filter).__name__}"
    )
