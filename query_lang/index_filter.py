"""WHERE through key indexes: which rows pass, found from distinct values instead of a scan.

Each leaf of the WHERE's AND/OR/NOT tree that reads one indexed key (a column, or a
JSON path in one) is evaluated once per distinct value of that key, with the very
kernels a scan uses, and spread to the rows through their codes: so the answer is
the scan's answer. A ``contains(text, 'literal')`` or ``text LIKE 'pattern'`` leaf on a
tensor with a full-text index fails the rows whose words cannot hold the literal, and
leaves the others unknown. A leaf no index can answer leaves its rows *unknown*; unknown
rows (and rows an index does not cover) are then evaluated by scanning only them.
TQL's logic is two-valued (NULL compares false and NOT flips it), so a row is
either known to pass, known to fail, or unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import ast
from .evaluate import BExpr, EvalContext, evaluate
from .filtering import filter_batches
from .functions import Contains
from .kernels import truthy
from .like import literal_pieces
from .source import Batch, KeyDictionary, ScanSource

MakeContext = Callable[[Batch], EvalContext]


@dataclass(frozen=True)
class Lookup:
    """How leaves find indexes: ``source.key_dictionary`` and ``source.substring_candidates`` (either None)."""

    key: Callable[[str, tuple[str, ...]], KeyDictionary | None] | None
    substring: Callable[[str, list[str]], np.ndarray | None] | None


@dataclass
class _Answer:
    """Per row: known to pass (``yes``), or not known (``unknown``); every other row fails."""

    yes: np.ndarray
    unknown: np.ndarray


def indexed_where(where: BExpr, source: ScanSource, make_ctx: MakeContext) -> np.ndarray | None:
    """A mask of the rows passing ``where``, using the source's key indexes; None if no index helps."""
    lookup = Lookup(getattr(source, "key_dictionary", None), getattr(source, "substring_candidates", None))
    if lookup.key is None and lookup.substring is None:
        return None
    n = len(source)
    answer = _answer(where, lookup, n, make_ctx)
    if answer is None:
        return None
    unknown = np.flatnonzero(answer.unknown)
    if len(unknown):
        answer.yes[scanned_passing(where, source, make_ctx, unknown)] = True
    return answer.yes


def _answer(e: BExpr, lookup: Lookup, n: int, make_ctx: MakeContext) -> _Answer | None:
    if e.const:
        return None  # folded at plan time (e.g. NOT true): no children left, and nothing to look up
    resolved = e.resolved
    if isinstance(resolved, ast.BoolOp):
        parts = [_answer(c, lookup, n, make_ctx) for c in e.children]
        if all(p is None for p in parts):
            return None
        parts = [p if p is not None else _Answer(np.zeros(n, bool), np.ones(n, bool)) for p in parts]
        return _and(parts) if resolved.op == "AND" else _or(parts)
    if isinstance(resolved, ast.Unary) and resolved.op == "NOT":
        inner = _answer(e.children[0], lookup, n, make_ctx)
        return None if inner is None else _Answer(~inner.yes & ~inner.unknown, inner.unknown)
    return _leaf(e, lookup, n, make_ctx)


def _and(parts: list[_Answer]) -> _Answer:
    yes, unknown, no = parts[0].yes.copy(), parts[0].unknown.copy(), ~parts[0].yes & ~parts[0].unknown
    for p in parts[1:]:
        yes &= p.yes
        unknown |= p.unknown
        no |= ~p.yes & ~p.unknown
    unknown &= ~no
    return _Answer(yes & ~unknown, unknown)


def _or(parts: list[_Answer]) -> _Answer:
    yes, unknown = parts[0].yes.copy(), parts[0].unknown.copy()
    for p in parts[1:]:
        yes |= p.yes
        unknown |= p.unknown
    return _Answer(yes, unknown & ~yes)


def _leaf(e: BExpr, lookup: Lookup, n: int, make_ctx: MakeContext) -> _Answer | None:
    if e.const or len(e.columns) != 1 or not _pure(e):
        return None
    answer = None if lookup.key is None else _key_leaf(e, lookup.key, n, make_ctx)
    if answer is None and lookup.substring is not None:
        answer = _substring_leaf(e, lookup.substring, n)
    return answer


def _substring_leaf(e: BExpr, lookup: Callable[[str, list[str]], np.ndarray | None], n: int) -> _Answer | None:
    """``contains(column, 'literal')`` or ``column [NOT] LIKE 'pattern'``: the rows a full-text index rules out."""
    resolved, args = e.resolved, e.children
    if isinstance(e.function, Contains) and len(args) == 2:
        needles, negated = ([args[1].value] if isinstance(args[1].value, str) else None), False
    elif isinstance(resolved, ast.Like) and not resolved.case_insensitive and len(args) == 2:
        needles, negated = (literal_pieces(args[1].value) if isinstance(args[1].value, str) else None), resolved.negated
    else:
        return None
    column = args[0]
    if not needles or column.column is None or column.children or column.type.kind != "text" or not args[1].const:
        return None
    maybe = lookup(column.column, needles)
    if maybe is None or len(maybe) != n:
        return None
    return _Answer(~maybe if negated else np.zeros(n, dtype=bool), maybe.copy())


def _key_leaf(e: BExpr, lookup: Callable[[str, tuple[str, ...]], KeyDictionary | None], n: int,
              make_ctx: MakeContext) -> _Answer | None:
    """A predicate on one indexed key, evaluated over the key's distinct values."""
    keys = _key_nodes(e)
    paths = {path for _, path in keys}
    if len(paths) != 1:
        return None
    (column,) = e.columns
    (path,) = paths
    dictionary = lookup(column, path)
    if dictionary is None or len(dictionary.codes) != n:
        return None
    values = dictionary.values
    batch = Batch(rows=np.arange(len(values), dtype=np.int64), values={column: values} if not path else {})
    ctx = make_ctx(batch)
    for node, node_path in keys:
        if node_path:
            ctx.memo[id(node)] = list(values)
    table = truthy(evaluate(e, ctx), e.type, False, len(values))
    # Code -1 (not indexed) picks the appended False; those rows are unknown instead.
    yes = np.append(table, False)[dictionary.codes]
    return _Answer(yes, dictionary.codes < 0)


def _pure(e: BExpr) -> bool:
    """No part of ``e`` depends on row positions or on state beyond its inputs."""
    if e.volatile or (e.function is not None and not e.function.pure):
        return False
    return all(_pure(c) for c in e.children)


def _key_nodes(e: BExpr) -> list[tuple[BExpr, tuple[str, ...]]]:
    """Every place ``e`` reads its column: the column itself, or the longest ``column['a']['b']...`` path."""
    path = _path(e)
    if path is not None:
        return [(e, path)]
    found = []
    for child in e.children:
        found += _key_nodes(child)
    return found


def _path(e: BExpr) -> tuple[str, ...] | None:
    """``()`` for a bare column, the key names of ``column['a']['b']``, or None for anything else."""
    if e.column is not None and not e.children:
        return ()
    resolved = e.resolved
    if isinstance(resolved, ast.Index) and len(e.children) == 1 and all(isinstance(i, str) for i in resolved.items):
        inner = _path(e.children[0])
        if inner is not None and e.children[0].type.kind == "object":
            return inner + tuple(resolved.items)
    return None


def scanned_passing(where: BExpr, source: ScanSource, make_ctx: MakeContext,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """The positions (among ``rows``, sorted; all rows when None) where ``where`` holds, by scanning only its
    columns (per-batch results are cached, as in any filtered scan)."""
    batches = filter_batches(source.scan(sorted(where.columns), rows), where, make_ctx)
    passing = [batch.rows for batch, _ in batches]
    return np.concatenate(passing) if passing else np.empty(0, dtype=np.int64)
