"""Bound expressions and their evaluation over one batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ast
from .derived import DERIVED_CACHE, DerivedCache
from .errors import TQLError, TQLExecutionError
from .functions import Function
from .kernels import normalize
from .printer import expr_to_sql
from .source import Batch, ScanSource
from .vtypes import ValueType

Kernel = Callable[[list[Any], list[bool], "EvalContext"], Any]


@dataclass(eq=False)
class BExpr:
    """A resolved, typed expression. ``const`` ones carry ``value`` and never read data."""

    type: ValueType
    resolved: ast.Expr
    children: tuple[BExpr, ...] = ()
    kernel: Kernel | None = None
    const: bool = False
    value: Any = None
    column: str | None = None
    columns: frozenset[str] = frozenset()
    #: Depends on more than its inputs' values (row positions, dataset state): never cached or folded.
    volatile: bool = False
    function: Function | None = None
    #: Worth caching across queries: derived from object columns by pure functions.
    cacheable: bool = False
    _text: str | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """Canonical TQL of the resolved expression (aliases substituted)."""
        if self._text is None:
            self._text = expr_to_sql(self.resolved)
        return self._text


@dataclass
class EvalContext:
    """One batch being evaluated."""

    batch: Batch
    types: dict[str, ValueType]
    fn_caches: dict[str, dict]
    memo: dict[int, Any] = field(default_factory=dict)
    derived: DerivedCache | None = DERIVED_CACHE
    #: Maps batch positions to original source positions (materialised subqueries).
    row_map: np.ndarray | None = None
    #: The source the query runs against (functions may read source-level facts from it).
    source: ScanSource | None = None

    @property
    def n(self) -> int:
        return len(self.batch.rows)


def evaluate(e: BExpr, ctx: EvalContext) -> Any:
    """Per-row value of ``e`` for the batch (constants come back as constants)."""
    if e.const:
        return e.value
    key = id(e)
    if key in ctx.memo:
        return ctx.memo[key]
    if e.column is not None:
        out = normalize(ctx.batch.values[e.column], e.type, ctx.n)
        ctx.memo[key] = out
        return out
    cache_key = None
    if e.cacheable and ctx.derived is not None:
        keys = [ctx.batch.cache_keys.get(c) for c in sorted(e.columns)]
        if all(k is not None for k in keys):
            cache_key = (tuple(keys), e.text)
            hit = ctx.derived.get(cache_key)
            if hit is not None:
                ctx.memo[key] = hit
                return hit
    vals = [evaluate(c, ctx) for c in e.children]
    out = run_kernel(e, vals, [c.const for c in e.children], ctx)
    if cache_key is not None:
        ctx.derived.put(cache_key, out)
    ctx.memo[key] = out
    return out


def run_kernel(e: BExpr, vals: list[Any], consts: list[bool], ctx: EvalContext) -> Any:
    """``e``'s kernel on its children's values; every failure becomes a :class:`TQLError`."""
    try:
        with np.errstate(all="ignore"):
            return e.kernel(vals, consts, ctx)
    except TQLError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must become a TQLError
        raise TQLExecutionError(f"error evaluating {e.text}: {type(exc).__name__}: {exc}") from exc
