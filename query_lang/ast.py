"""Immutable AST of TQL queries.

Normal form produced by the parser: comparison operators are ``== != < <= > >=``
(``=`` and ``<>`` are spellings), function names are lower-case, and a minus
sign directly before a numeric literal is folded into the literal, so
``Unary('-', Literal(3))`` never occurs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Literal:
    """A scalar constant: int, float, str, bool or None (NULL)."""

    value: int | float | str | bool | None


class Float32Vector:
    """The values of an ARRAY literal held as one read-only float32 vector (e.g. a query embedding).

    It stays a float32 array from the caller to the kernels, with no detour through Python
    floats. As a value it is the tuple of its numbers: it compares and hashes equal to
    ``tuple(float(x) for x in array)``, so an ARRAY literal holding it equals the one the
    parser reads back from its printed text.
    """

    __slots__ = ("_hash", "array")

    def __init__(self, values: Iterable[float] | np.ndarray) -> None:
        array = np.array(values, dtype=np.float32)  # a copy: the AST owns its data
        if array.ndim != 1:
            raise ValueError(f"Float32Vector: expected a 1-d vector, got shape {array.shape}")
        array.flags.writeable = False
        self.array = array
        self._hash: int | None = None

    def __len__(self) -> int:
        return len(self.array)

    def __iter__(self) -> Iterator[float]:
        return iter(self.array.tolist())

    def __getitem__(self, i: int | slice) -> Any:
        """One value as a Python float, or a slice as a tuple of them."""
        part = self.array[i]
        return tuple(part.tolist()) if isinstance(i, slice) else float(part)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Float32Vector):
            return bool(np.array_equal(self.array, other.array))
        if isinstance(other, tuple):
            return len(other) == len(self.array) and tuple(self.array.tolist()) == other
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self.array.tolist()))
        return self._hash

    def __repr__(self) -> str:
        return f"Float32Vector({self.array.tolist()!r})"


@dataclass(frozen=True)
class ArrayLiteral:
    """``ARRAY[1, 2.5, -3]``: a constant numeric vector."""

    values: tuple[int | float, ...] | Float32Vector


@dataclass(frozen=True)
class Column:
    """A reference to a tensor or an alias."""

    name: str


@dataclass(frozen=True)
class Slice:
    """``start:stop:step`` inside brackets; each part optional."""

    start: int | None = None
    stop: int | None = None
    step: int | None = None


IndexItem = int | str | Slice


@dataclass(frozen=True)
class Index:
    """``base[i, j:k]`` or ``json['key']``."""

    base: Expr
    items: tuple[IndexItem, ...]


@dataclass(frozen=True)
class Call:
    """``name(args...)``."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Unary:
    """``-x`` or ``NOT x`` (op is ``'-'`` or ``'NOT'``)."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary:
    """Arithmetic ``+ - * /`` or comparison ``== != < <= > >=``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class BoolOp:
    """``a AND b AND c`` / ``a OR b``: two or more operands."""

    op: str
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class InList:
    """``x [NOT] IN (a, b, ...)``."""

    expr: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    """``x [NOT] BETWEEN low AND high`` (inclusive)."""

    expr: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(frozen=True)
class Like:
    """``x [NOT] LIKE pattern`` / ``ILIKE`` (case-insensitive)."""

    expr: Expr
    pattern: Expr
    case_insensitive: bool = False
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    """``x IS [NOT] NULL``."""

    expr: Expr
    negated: bool = False


Expr = (Literal | ArrayLiteral | Column | Index | Call | Unary | Binary | BoolOp | InList | Between
        | Like | IsNull)


@dataclass(frozen=True)
class Star:
    """``*`` in a select list."""


@dataclass(frozen=True)
class SelectItem:
    """``expr [AS alias]``."""

    expr: Expr
    alias: str | None = None


@dataclass(frozen=True)
class OrderKey:
    """One ``ORDER BY`` key."""

    expr: Expr
    descending: bool = False


@dataclass(frozen=True)
class Query:
    """``SELECT ... [FROM (subquery)] [WHERE] [ORDER BY] [LIMIT] [OFFSET]``."""

    select: tuple[Star | SelectItem, ...]
    source: Query | None = None
    where: Expr | None = None
    order_by: tuple[OrderKey, ...] = ()
    limit: int | None = None
    offset: int | None = None


Node = Expr | Star | SelectItem | OrderKey | Query


def children(node: Node) -> Iterator[Node]:
    """Direct child nodes, for iterative walks that must not recurse."""
    if isinstance(node, Index):
        yield node.base
    elif isinstance(node, Call):
        yield from node.args
    elif isinstance(node, Unary):
        yield node.operand
    elif isinstance(node, Binary):
        yield node.left
        yield node.right
    elif isinstance(node, BoolOp):
        yield from node.operands
    elif isinstance(node, InList):
        yield node.expr
        yield from node.items
    elif isinstance(node, Between):
        yield node.expr
        yield node.low
        yield node.high
    elif isinstance(node, Like):
        yield node.expr
        yield node.pattern
    elif isinstance(node, IsNull):
        yield node.expr
    elif isinstance(node, SelectItem):
        yield node.expr
    elif isinstance(node, OrderKey):
        yield node.expr
    elif isinstance(node, Query):
        yield from node.select
        if node.source is not None:
            yield node.source
        if node.where is not None:
            yield node.where
        yield from node.order_by


def depth(node: Node) -> int:
    """Nesting depth of ``node``, computed without recursion."""
    best = 0
    stack = [(node, 1)]
    while stack:
        cur, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in children(cur))
    return best
