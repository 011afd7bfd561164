"""The function registry. Other packages extend TQL by registering :class:`Function`s.

A function is checked once at plan time (``check`` returns the result type or
raises :class:`TQLTypeError`) and evaluated once per batch on whole columns
(``evaluate``). Example (what tensordb does for Deep Memory)::

    class DeepMemoryDistance(Function):
        name = "deepmemory_distance"
        min_args = max_args = 2
        extra_columns = ("id",)     # also read for every batch: ctx.column("id")
        vector_score = True         # ORDER BY ... LIMIT k uses the top-k fast path
        def check(self, args): ...  # return vtypes.NUMBER
        def evaluate(self, args, ctx): ...  # ctx.cache persists across batches

    register_function(DeepMemoryDistance())
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import TQLExecutionError, TQLNameError, TQLTypeError
from .kernels import rows_iter, vectors
from .source import UNIT_NORM_TOLERANCE, Batch, ScanSource
from .vtypes import NUMBER, ValueType


@dataclass(frozen=True)
class Arg:
    """What ``check`` knows about one argument."""

    type: ValueType
    is_const: bool = False
    value: Any = None  #: the constant value when ``is_const``
    text: str = ""  #: the argument as written, for messages


@dataclass
class CallContext:
    """What ``evaluate`` sees: the (filtered) batch, per-argument facts and a cache."""

    batch: Batch
    n: int
    arg_consts: tuple[bool, ...] = ()
    arg_columns: tuple[str | None, ...] = ()  #: source column when an argument is a bare tensor
    cache: dict[Hashable, Any] = field(default_factory=dict)  #: per executor, per function
    row_map: np.ndarray | None = None
    #: The source being queried; ``source.owner`` is what the rows come from (e.g. a dataset).
    source: ScanSource | None = None

    @property
    def rows(self) -> np.ndarray:
        """Source positions of the rows being evaluated."""
        rows = np.asarray(self.batch.rows, dtype=np.int64)
        return rows if self.row_map is None else self.row_map[rows]

    def column(self, name: str) -> Any:
        """Values of a column read in this batch (including ``extra_columns``)."""
        return self.batch.values[name]

    def l2_norms(self, name: str | None) -> np.ndarray | None:
        """Precomputed row norms of a column, when the source provides them."""
        return None if name is None else self.batch.l2_norms.get(name)

    def unit_norm(self, name: str | None) -> bool:
        """Whether every row of a column in this batch has L2 norm 1, per the source."""
        return name is not None and name in self.batch.unit_norm

    def cache_key(self, name: str) -> Hashable | None:
        """The source's identity of a column's data in this batch, if any."""
        return self.batch.cache_keys.get(name)


@dataclass(frozen=True)
class IndexQuery:
    """How a vector index can serve ``ORDER BY f(column, vector) LIMIT k`` for a function ``f``.

    The index searches ``vector`` under ``metric``; ``descending`` is the ORDER BY direction
    it serves. ``extra_rows`` (positions) are scored too, whatever the index finds, and
    the index fetches ``overfetch`` times ``k`` candidates. The function itself then
    scores every candidate exactly.
    """

    metric: str
    vector: np.ndarray
    descending: bool
    extra_rows: np.ndarray | None = None
    overfetch: int = 1


class Function:
    """Base class of TQL functions; subclass and override ``check``/``evaluate``."""

    name: str = ""
    min_args: int = 0
    max_args: int | None = None
    #: Columns read for every batch in addition to the arguments' columns.
    extra_columns: tuple[str, ...] = ()
    #: A per-row similarity/distance of a vector argument; ORDER BY ... LIMIT uses top-k.
    vector_score: bool = False
    #: The result depends only on the arguments' values (enables caching and constant folding);
    #: False for functions of row positions or of state outside the columns.
    pure: bool = True
    #: A constant float32 vector argument (an ARRAY literal holding an ``ast.Float32Vector``)
    #: reaches ``evaluate`` as that float32 array instead of widened to float64. Set it only
    #: when the results are the same either way.
    float32_vectors: bool = False

    def check(self, args: Sequence[Arg]) -> ValueType:
        """Validate argument types at plan time and return the result type."""
        raise NotImplementedError

    def index_query(self, vector: np.ndarray, column: str, source: ScanSource) -> IndexQuery | None:
        """How a vector index on ``column`` can find the best rows of ``f(column, vector)``; None: it cannot."""
        return None

    def all_scores(self, column: str, value: Any, source: ScanSource) -> np.ndarray | None:
        """``f(column, value)`` for every row of ``source`` at once, when the source can give it (e.g. from
        an index); None: evaluate batch by batch. ``ORDER BY f(column, value) LIMIT k`` then reads no rows."""
        return None

    def evaluate(self, args: list[Any], ctx: CallContext) -> Any:
        """Compute the per-row result for a batch of ``ctx.n`` rows."""
        raise NotImplementedError

    def evaluate_many(self, args: list[Any], vary: int, values: list[Any],
                      ctx: CallContext) -> list[Any]:
        """Results for several calls that differ only in the constant argument ``vary``.

        ``values`` are that argument's constants; ``args`` holds the others. Used by
        batched execution (:func:`query_lang.execute_many`); the default simply calls
        :meth:`evaluate` once per value. Overrides must give the same results.
        """
        out = []
        for v in values:
            call_args = list(args)
            call_args[vary] = v
            out.append(self.evaluate(call_args, ctx))
        return out

    def shared_state(self, owner: object | None) -> Any:
        """What, beyond its arguments, this function reads of the source's ``owner`` (e.g. which trained
        model), taken where a query is planned so that the workers that run its parts use the same
        (see :meth:`use_shared_state`); None: nothing."""
        return None

    def use_shared_state(self, owner: object | None, state: Any) -> None:
        """In a worker: compute with ``state``, as :meth:`shared_state` took it on the planning side."""

    def check_arity(self, nargs: int) -> None:
        """Raise :class:`TQLTypeError` for a wrong argument count."""
        hi = self.max_args
        if nargs < self.min_args or (hi is not None and nargs > hi):
            want = str(self.min_args) if hi == self.min_args else (
                f"{self.min_args} or more" if hi is None else f"{self.min_args} to {hi}"
            )
            raise TQLTypeError(f"{self.name}() takes {want} argument(s), got {nargs}")


_REGISTRY: dict[str, Function] = {}


def register_function(fn: Function, *, replace: bool = False) -> Function:
    """Add ``fn`` to the registry under ``fn.name`` (lower-cased). Returns ``fn``."""
    name = fn.name.lower()
    if not name.isidentifier():
        raise ValueError(f"invalid function name {fn.name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"function {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def unregister_function(name: str) -> None:
    """Remove a function (mainly for tests)."""
    _REGISTRY.pop(name.lower(), None)


def get_function(name: str) -> Function:
    """Look a function up; raises :class:`TQLNameError` with a suggestion if unknown."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise TQLNameError("function", name, _REGISTRY) from None


def function_names() -> list[str]:
    """All registered function names, sorted."""
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------- builtins


def _vector_arg(fname: str, a: Arg) -> int | None:
    """Check an argument is a vector; return its length when known."""
    t = a.type
    if t.kind != "array":
        raise TQLTypeError(f"{fname} expects an embedding or numeric array, but {t.describe()}")
    if t.shape is None:
        return None
    if len(t.shape) != 1:
        where = f"tensor '{t.column}'" if t.column else f"'{a.text}'"
        raise TQLTypeError(f"{fname} expects a vector, but {where} has per-row shape {t.shape}")
    return t.shape[0]


def check_same_dim(fname: str, a: Arg, b: Arg) -> None:
    """Raise when two vector arguments have different known lengths."""
    da, db = _vector_arg(fname, a), _vector_arg(fname, b)
    if da is None or db is None or da == db:
        return
    for x, y, dx, dy in ((a, b, da, db), (b, a, db, da)):
        if x.is_const and y.type.column is not None:
            raise TQLTypeError(
                f"{fname}: ARRAY has {dx} elements but tensor '{y.type.column}' has dimension {dy}"
            )
    raise TQLTypeError(f"{fname}: vector lengths differ ({da} vs {db})")


def _norms(v: Any, const: bool, column: str | None, ctx: CallContext) -> Any:
    if const:
        # In float64, as for the text form of the vector (a float32 one widens exactly).
        return float(np.linalg.norm(np.asarray(v, dtype=np.float64)))
    pre = ctx.l2_norms(column)
    if pre is not None:
        return np.asarray(pre, dtype=np.float64)
    if isinstance(v, list):
        return np.asarray([np.linalg.norm(x) for x in v], dtype=np.float64)
    return np.linalg.norm(v, axis=1).astype(np.float64)


def _dots(a: Any, ac: bool, b: Any, bc: bool, n: int) -> np.ndarray:
    if isinstance(a, list) or isinstance(b, list):
        pairs = zip(rows_iter(a, ac, n), rows_iter(b, bc, n), strict=False)
        return np.asarray([_safe_dot(x, y) for x, y in pairs], dtype=np.float64)
    if bc or ac:
        # BLAS gemv per chunk: on an idle machine as fast as one product over the whole matrix
        # (einsum's single-threaded loop measured about 1.5x slower here).
        rows, vec = (a, b) if bc else (b, a)
        return (rows @ vec.astype(rows.dtype, copy=False)).astype(np.float64)
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def _many_dots(args: list[Any], vary: int, values: list[Any],
               ctx: CallContext) -> tuple[np.ndarray, list[np.ndarray], np.ndarray] | None:
    """Per-row vectors, the constant vectors, and all their dot products in one matrix
    product (``(len(values), n)``), for a (column, constant) pair of arguments; None
    when the arguments are not of that form."""
    other = 1 - vary
    if ctx.arg_consts[other] or not ctx.arg_consts[vary]:
        return None
    rows = vectors(args[other], False)
    consts = [vectors(v, True) for v in values]
    if (not isinstance(rows, np.ndarray) or rows.ndim != 2
            or any(c.shape != rows.shape[1:] for c in consts)):
        return None
    matrix = np.stack(consts).astype(rows.dtype, copy=False)
    return rows, consts, (matrix @ rows.T).astype(np.float64)


def _safe_dot(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(x, y)) if x.shape == y.shape else math.nan


class _VectorPair(Function):
    min_args = max_args = 2
    vector_score = True
    # Products take the rows' dtype and norms are float64: a float32 constant scores as its text form.
    float32_vectors = True

    def check(self, args: Sequence[Arg]) -> ValueType:
        check_same_dim(self.name, args[0], args[1])
        return NUMBER


class CosineSimilarity(_VectorPair):
    """Cosine of the angle between two vectors; NaN when either is all zeros."""

    name = "cosine_similarity"

    def index_query(self, vector: np.ndarray, column: str, source: ScanSource) -> IndexQuery | None:
        if not np.any(vector):
            return None  # every cosine with a zero vector is NaN: the scan's order (by row) is the answer
        return IndexQuery("cosine", vector, descending=True)

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        (ac, bc) = ctx.arg_consts
        a, b = vectors(args[0], ac), vectors(args[1], bc)
        return self._finish(_dots(a, ac, b, bc, ctx.n), a, b, ctx)

    def evaluate_many(self, args: list[Any], vary: int, values: list[Any],
                      ctx: CallContext) -> list[Any]:
        many = _many_dots(args, vary, values, ctx)
        if many is None:
            return super().evaluate_many(args, vary, values, ctx)
        rows, consts, dots = many
        return [self._finish(dots[j], *((rows, c) if vary == 1 else (c, rows)), ctx)
                for j, c in enumerate(consts)]

    @staticmethod
    def _finish(dots: np.ndarray, a: Any, b: Any, ctx: CallContext) -> np.ndarray:
        (ac, bc), (acol, bcol) = ctx.arg_consts, ctx.arg_columns
        if ac != bc:
            # Unit query against rows the source vouches are unit length: the dot is the cosine.
            const, column = (a, bcol) if ac else (b, acol)
            if ctx.unit_norm(column) and abs(_norms(const, True, None, ctx) - 1.0) <= UNIT_NORM_TOLERANCE:
                return dots
        na, nb = _norms(a, ac, acol, ctx), _norms(b, bc, bcol, ctx)
        with np.errstate(all="ignore"):
            denom = na * nb
            return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), np.nan)


class Dot(_VectorPair):
    """Inner product of two vectors."""

    name = "dot"

    def index_query(self, vector: np.ndarray, column: str, source: ScanSource) -> IndexQuery:
        return IndexQuery("dot", vector, descending=True)

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        ac, bc = ctx.arg_consts
        return _dots(vectors(args[0], ac), ac, vectors(args[1], bc), bc, ctx.n)

    def evaluate_many(self, args: list[Any], vary: int, values: list[Any],
                      ctx: CallContext) -> list[Any]:
        many = _many_dots(args, vary, values, ctx)
        if many is None:
            return super().evaluate_many(args, vary, values, ctx)
        return list(many[2])


class _Norm(Function):
    min_args = max_args = 1
    vector_score = True
    ord: float = 2

    def check(self, args: Sequence[Arg]) -> ValueType:
        t = args[0].type
        if t.kind != "array":
            raise TQLTypeError(
                f"{self.name} expects an embedding or numeric array, but {t.describe()}"
            )
        return NUMBER

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        if self.ord == 2:
            pre = ctx.l2_norms(ctx.arg_columns[0])
            if pre is not None:
                return np.asarray(pre, dtype=np.float64)
        v = vectors(args[0], False)
        if isinstance(v, list):
            return np.asarray(
                [np.linalg.norm(x, ord=self.ord) if x.size else 0.0 for x in v], dtype=np.float64
            )
        if v.shape[1] == 0:
            return np.zeros(ctx.n)
        return np.linalg.norm(v, ord=self.ord, axis=1).astype(np.float64)


class L1Norm(_Norm):
    """Sum of absolute values per row."""

    name, ord = "l1_norm", 1


class L2Norm(_Norm):
    """Euclidean length per row (uses the source's precomputed norms for bare tensors)."""

    name, ord = "l2_norm", 2

    def index_query(self, vector: np.ndarray, column: str, source: ScanSource) -> IndexQuery:
        # Called for l2_norm(column - vector): the distance to the vector, nearest first.
        return IndexQuery("l2", vector, descending=False)


class LinfNorm(_Norm):
    """Largest absolute value per row."""

    name, ord = "linf_norm", math.inf


class Contains(Function):
    """Substring test for text; membership for lists, JSON lists/dicts and arrays."""

    name = "contains"
    min_args = max_args = 2

    def check(self, args: Sequence[Arg]) -> ValueType:
        t = args[0].type
        if t.kind not in ("text", "list", "object", "array"):
            raise TQLTypeError(f"contains expects text, a list or an array, but {t.describe()}")
        if t.kind == "text" and args[1].type.kind not in ("text", "null", "object"):
            raise TQLTypeError("contains(text, x) expects a text second argument")
        return ValueType("bool")

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        xs, needle = args
        xc, nc = ctx.arg_consts
        if isinstance(xs, np.ndarray) and nc and not xc:
            if needle is None or isinstance(needle, str):
                return np.zeros(ctx.n, dtype=bool)
            eq = xs == needle
            return eq.reshape(ctx.n, -1).any(axis=1)
        out = []
        for x, y in zip(rows_iter(xs, xc, ctx.n), rows_iter(needle, nc, ctx.n), strict=False):
            out.append(_contains(x, y))
        return np.asarray(out, dtype=bool)


def _contains(x: Any, y: Any) -> bool:
    if x is None or y is None:
        return False
    if isinstance(x, str):
        return isinstance(y, str) and y in x
    if isinstance(x, np.ndarray):
        return not isinstance(y, str) and bool(np.any(x == y))
    if isinstance(x, (list, tuple, dict)):
        try:
            return y in x
        except TypeError:
            return False
    return False


class _Reduce(Function):
    min_args = max_args = 1
    reducer: Any = None

    def check(self, args: Sequence[Arg]) -> ValueType:
        if args[0].type.kind == "text":
            raise TQLTypeError(f"{self.name} expects an array or list, but {args[0].type.describe()}")
        return ValueType("bool")

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        v = args[0]
        if isinstance(v, np.ndarray):
            arr = v.reshape(ctx.n, -1)
            if arr.dtype.kind == "f":
                arr = (arr != 0) & ~np.isnan(arr)
            return self.reducer(arr.astype(bool), axis=1)
        out = []
        for x in v:
            if x is None:
                out.append(False)
            elif isinstance(x, np.ndarray):
                out.append(bool(self.reducer(x.astype(bool))))
            elif isinstance(x, (list, tuple, dict)):
                out.append(bool(self.reducer([bool(e) for e in x])) if x else self.name == "all")
            else:
                out.append(bool(x))
        return np.asarray(out, dtype=bool)


class Any_(_Reduce):
    """True when any element of the row is truthy."""

    name, reducer = "any", staticmethod(np.any)


class All_(_Reduce):
    """True when every element of the row is truthy."""

    name, reducer = "all", staticmethod(np.all)


class Len(Function):
    """String length, list length, or the first dimension of an array; NULL → NaN."""

    name = "len"
    min_args = max_args = 1

    def check(self, args: Sequence[Arg]) -> ValueType:
        t = args[0].type
        if t.kind in ("number", "bool") or (t.kind == "array" and t.shape == ()):
            raise TQLTypeError(f"len expects text, a list or an array, but {t.describe()}")
        return NUMBER

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        v = args[0]
        if isinstance(v, np.ndarray):
            return np.full(ctx.n, v.shape[1] if v.ndim > 1 else 1, dtype=np.int64)
        out = [_len(x) for x in v]
        if any(x is None for x in out):
            return np.asarray([np.nan if x is None else x for x in out], dtype=np.float64)
        return np.asarray(out, dtype=np.int64)


def _len(x: Any) -> int | None:
    if isinstance(x, np.ndarray):
        return x.shape[0] if x.ndim else 1
    if isinstance(x, (str, list, tuple, dict)):
        return len(x)
    return None


class Shape(Function):
    """Per-row shape of an array as an int vector."""

    name = "shape"
    min_args = max_args = 1

    def check(self, args: Sequence[Arg]) -> ValueType:
        t = args[0].type
        if t.kind != "array":
            raise TQLTypeError(f"shape expects an array, but {t.describe()}")
        return ValueType("array", shape=None if t.shape is None else (len(t.shape),))

    def evaluate(self, args: list[Any], ctx: CallContext) -> Any:
        v = args[0]
        if isinstance(v, np.ndarray):
            return np.broadcast_to(np.asarray(v.shape[1:], dtype=np.int64), (ctx.n, v.ndim - 1))
        shapes = [np.asarray(np.shape(x), dtype=np.int64) for x in v]
        if len({s.shape for s in shapes}) <= 1 and shapes:
            return np.stack(shapes)
        return shapes if shapes else np.empty((0, 0), dtype=np.int64)


class Bm25Similarity(Function):
    """BM25 relevance of a text tensor's rows to a query text (higher is better; 0: no query term occurs).

    The scores come from the source's full-text index (``text_scores``), since a row's score
    depends on term statistics over the whole table, not on its own text alone.
    """

    name = "bm25_similarity"
    min_args = max_args = 2
    pure = False

    def check(self, args: Sequence[Arg]) -> ValueType:
        text, query = args
        if text.type.kind != "text" or text.type.column is None or text.is_const:
            raise TQLTypeError(f"bm25_similarity expects a text tensor first, but '{text.text}' {text.type.describe()}")
        if not query.is_const or query.type.kind != "text":
            raise TQLTypeError(
                f"bm25_similarity expects a query text (a string literal) second, but '{query.text}' "
                f"{query.type.describe()}"
            )
        if not str(query.value).strip():
            raise TQLTypeError("bm25_similarity: the query text is empty")
        return NUMBER

    def all_scores(self, column: str, value: Any, source: ScanSource) -> np.ndarray:
        find = getattr(source, "text_scores", None)
        if find is None:
            raise TQLExecutionError("bm25_similarity needs a table with full-text indexes")
        return np.asarray(find(column, value), dtype=np.float64)

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        column, query = ctx.arg_columns[0], args[1]
        key = (column, query)
        scores = ctx.cache.get(key)
        if scores is None:
            scores = ctx.cache[key] = self.all_scores(column, query, ctx.source)
        return scores[ctx.rows]


class RowNumber(Function):
    """Position of the row in the source."""

    name = "row_number"
    pure = False

    def check(self, args: Sequence[Arg]) -> ValueType:
        return NUMBER

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        return np.asarray(ctx.rows, dtype=np.int64)


for _fn in (CosineSimilarity(), Dot(), L1Norm(), L2Norm(), LinfNorm(), Contains(), Any_(), All_(),
            Len(), Shape(), Bm25Similarity(), RowNumber()):
    register_function(_fn)
