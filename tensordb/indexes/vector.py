"""Vector index kinds on faiss-cpu: flat, hnsw, ivf_pq and ivf_sq.

Pure building block: numpy arrays in, ``(ids, scores)`` out, and a byte form that is validated before use.
It knows nothing about datasets, files or chunks; row ids are ``0..n-1`` in the order the vectors were given.

Scores, best first:

- ``cosine`` and ``dot``: inner product (cosine on unit-normalised rows and queries), higher is better;
- ``l2``: squared L2 distance, lower is better.

Cosine normalises rows at build and queries at search (all-zero rows stay zero). flat, hnsw and ivf_sq then use
inner product; ivf_pq ranks unit vectors by L2 instead and reports ``1 - d/2`` (the same cosine), because its
quantised L2 estimate ranks far better than its quantised inner product (recall@10 0.73 against 0.42 at the
default ``m`` on clustered 32-d data; 0.61 against 0.48 within the top 40 at 1M x 384, m=48). ivf_sq keeps inner
product: on 1M unit vectors, L2 k-means left lists twice as unbalanced and searches 3x slower (2.8 ms against
0.93 ms at nprobe 32, recall@10 .984 against .968). The one visible difference: an all-zero row scores 0 in
flat / hnsw / ivf_sq and 0.5 in ivf_pq.

Missing results (fewer than ``k`` found) have id ``-1`` and score ``-inf`` (cosine, dot) or ``+inf`` (l2).

A serialized index is checked twice before a search can touch it: a walk over the bytes that mirrors faiss's
reader checks every size field against the bytes that are left (faiss allocates a forged size before it reads,
and divides by a forged PQ ``M``), the header against the spec, and the graph and inverted lists against
``ntotal``; then the object faiss builds is checked again for its type, dimension, size and metric.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import DataCorruptionError, IndexDefinitionError
from .definitions import METRICS, SEARCH_PARAMS, VECTOR_KINDS

ALL_SEARCH_PARAMS = SEARCH_PARAMS - {"index"}
SQ_QTYPES = ("SQ8", "SQ4", "SQfp16")

THREADS_ENV = "TENSORDB_NUM_THREADS"

_SEARCH_PARAMS = {
    "flat": frozenset({"refine"}),
    "hnsw": frozenset({"ef_search", "refine"}),
    "ivf_pq": frozenset({"nprobe", "refine"}),
    "ivf_sq": frozenset({"nprobe", "refine"}),
}
_BUILD_PARAMS = {
    "flat": (),
    "hnsw": ("M", "ef_construction", "ef_search"),
    "ivf_pq": ("nlist", "m", "nbits", "nprobe"),
    "ivf_sq": ("nlist", "qtype", "nprobe"),
}
# Upper bounds keep a typo from asking faiss for absurd memory or time; they are far above useful values.
_INT_PARAM_MAX = {"M": 512, "ef_construction": 1 << 16, "ef_search": 1 << 16, "nlist": 1 << 24, "m": 1 << 16,
                  "nbits": 16, "nprobe": 1 << 24, "refine": 1 << 16}

_HNSW_DEFAULTS = {"M": 32, "ef_construction": 200, "ef_search": 64}
_MIN_POINTS_PER_LIST = 39  # faiss k-means warns below 39 training points per centroid
_TRAIN_POINTS_PER_LIST = 256  # at most this many training rows per list (faiss's own k-means cap)
_TRAIN_SEED = 1234
# Filtered search widens ef and nprobe as selectivity falls (see VectorIndex.search), up to these caps.
_MAX_FILTERED_EF = 1024

_SQ_TYPES = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "SQ4": faiss.ScalarQuantizer.QT_4bit,
             "SQfp16": faiss.ScalarQuantizer.QT_fp16}


@dataclass(frozen=True)
class VectorIndexSpec:
    """What a vector index is: kind, metric, dimension, and its build parameters with defaults filled in."""

    kind: str
    metric: str
    dim: int
    params: dict[str, Any]


# --------------------------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _positive_int(kind: str, name: str, value: Any) -> int:
    limit = _INT_PARAM_MAX.get(name, 1 << 31)
    if not _is_int(value) or not 1 <= int(value) <= limit:
        raise IndexDefinitionError(
            f"{kind} index parameter {name!r}: expected a positive int <= {limit}, got {value!r}")
    return int(value)


def _check_kind_metric(kind: Any, metric: Any) -> None:
    if kind not in VECTOR_KINDS:
        raise IndexDefinitionError(f"unknown vector index kind {kind!r}: expected one of {', '.join(VECTOR_KINDS)}")
    if metric not in METRICS:
        raise IndexDefinitionError(f"unknown metric {metric!r} for a {kind} index: expected one of "
                                   f"{', '.join(METRICS)}")


def _default_nlist(rows: int) -> int:
    return max(1, min(round(4 * math.sqrt(rows)), rows // _MIN_POINTS_PER_LIST))


def _default_nprobe(nlist: int) -> int:
    return min(nlist, max(8, round(math.sqrt(nlist))))


def _default_pq_m(dim: int) -> int:
    """The largest divisor of dim that is <= dim / 4 (sub-vectors of >= 4 dimensions, 8-bit codes)."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def vector_spec(kind: str, metric: str, dim: int, params: Mapping[str, Any], rows: int) -> VectorIndexSpec:
    """Validate kind, metric and build params and fill in defaults (which may depend on ``rows``).

    Defaults: hnsw ``M=32, ef_construction=200, ef_search=64``; ivf ``nlist = 4*sqrt(rows)`` capped so every
    list gets >= 39 training rows, ``nprobe = max(8, sqrt(nlist))`` capped at nlist; ivf_pq ``m`` = the largest
    divisor of dim <= dim/4, ``nbits=8``; ivf_sq ``qtype="SQ8"`` (also ``"SQ4"``, ``"SQfp16"``).
    """
    _check_kind_metric(kind, metric)
    if not _is_int(dim) or int(dim) < 1:
        raise IndexDefinitionError(f"{kind} index: dim must be a positive int, got {dim!r}")
    if not _is_int(rows) or int(rows) < 0:
        raise IndexDefinitionError(f"{kind} index: rows must be a non-negative int, got {rows!r}")
    dim, rows = int(dim), int(rows)
    if not isinstance(params, Mapping):
        raise IndexDefinitionError(f"{kind} index parameters must be a mapping, got {type(params).__name__}")
    accepted = _BUILD_PARAMS[kind]
    unknown = sorted(str(name) for name in params if name not in accepted)
    if unknown:
        raise IndexDefinitionError(f"unknown {kind} index parameter(s) {', '.join(map(repr, unknown))}: "
                                   f"accepted: {', '.join(accepted) or 'none'}")
    given = dict(params)
    out: dict[str, Any] = {}
    if kind == "hnsw":
        for name, default in _HNSW_DEFAULTS.items():
            out[name] = _positive_int(kind, name, given.get(name, default))
        if out["M"] < 2:
            raise IndexDefinitionError(f"hnsw index parameter 'M': expected an int >= 2, got {out['M']}")
    elif kind in ("ivf_pq", "ivf_sq"):
        out["nlist"] = _positive_int(kind, "nlist", given.get("nlist", _default_nlist(rows)))
        if kind == "ivf_pq":
            out["m"] = _positive_int(kind, "m", given.get("m", _default_pq_m(dim)))
            if dim % out["m"]:
                raise IndexDefinitionError(f"ivf_pq index parameter 'm': must divide dim {dim}, got {out['m']}")
            out["nbits"] = _positive_int(kind, "nbits", given.get("nbits", 8))
        else:
            qtype = given.get("qtype", "SQ8")
            if qtype not in SQ_QTYPES:
                raise IndexDefinitionError(f"ivf_sq index parameter 'qtype': expected one of "
                                           f"{', '.join(SQ_QTYPES)}, got {qtype!r}")
            out["qtype"] = qtype
        out["nprobe"] = _positive_int(kind, "nprobe", given.get("nprobe", _default_nprobe(out["nlist"])))
    return VectorIndexSpec(kind=kind, metric=metric, dim=dim, params=out)


def search_param_names(kind: str) -> frozenset[str]:
    """The search params a kind accepts: flat {refine}; hnsw {ef_search, refine}; ivf_* {nprobe, refine}."""
    if kind not in _SEARCH_PARAMS:
        raise IndexDefinitionError(f"unknown vector index kind {kind!r}: expected one of {', '.join(VECTOR_KINDS)}")
    return _SEARCH_PARAMS[kind]


def check_search_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``params``: each must apply to ``kind`` and be a positive int."""
    accepted = search_param_names(kind)
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name not in accepted:
            raise IndexDefinitionError(f"search parameter {name!r} does not apply to a {kind} index: "
                                       f"it takes {', '.join(sorted(accepted))}")
        out[name] = _positive_int(kind, name, value)
    return out


def num_threads() -> int | None:
    """Threads faiss may use, from ``TENSORDB_NUM_THREADS``; None (faiss's default) when unset or empty."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise IndexDefinitionError(f"{THREADS_ENV}: expected a positive int, got {raw!r}")
    return value


@contextlib.contextmanager
def _faiss_threads() -> Iterator[None]:
    wanted = num_threads()
    if wanted is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(wanted)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# ------------------------------------------------------------------------------------------------- build


def _uses_l2(spec: VectorIndexSpec) -> bool:
    """Whether the faiss index ranks by L2: for l2, and for cosine in ivf_pq (see the module docstring)."""
    return spec.metric == "l2" or (spec.metric == "cosine" and spec.kind == "ivf_pq")


def _faiss_metric(spec: VectorIndexSpec) -> int:
    return faiss.METRIC_L2 if _uses_l2(spec) else faiss.METRIC_INNER_PRODUCT


def _flat(spec: VectorIndexSpec) -> faiss.Index:
    return faiss.IndexFlatL2(spec.dim) if _uses_l2(spec) else faiss.IndexFlatIP(spec.dim)


def _normalized(x: np.ndarray) -> np.ndarray:
    """Unit-length float32 copy of the rows of x; all-zero rows stay zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    inv = np.zeros_like(norms)
    np.divide(1.0, norms, out=inv, where=norms > 0)
    out = np.empty(x.shape, dtype=np.float32)
    np.multiply(x, inv[:, None], out=out)
    return out


def _as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != dim:
        raise IndexDefinitionError(f"{what}: expected shape (n, {dim}), got {x.shape}")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    return x


def _training_sample(x: np.ndarray, nlist: int) -> np.ndarray:
    most = _TRAIN_POINTS_PER_LIST * nlist
    if len(x) <= most:
        return x
    rows = np.sort(np.random.default_rng(_TRAIN_SEED).choice(len(x), size=most, replace=False))
    return x[rows]


def _new_index(spec: VectorIndexSpec) -> faiss.Index:
    p, metric, dim = spec.params, _faiss_metric(spec), spec.dim
    if spec.kind == "flat":
        return _flat(spec)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, p["M"], metric)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
        return index
    quantizer = _flat(spec)  # the faiss wrapper keeps a reference to it
    if spec.kind == "ivf_pq":
        index = faiss.IndexIVFPQ(quantizer, dim, p["nlist"], p["m"], p["nbits"], metric)
    else:
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, p["nlist"], _SQ_TYPES[p["qtype"]], metric)
    index.nprobe = min(p["nprobe"], p["nlist"])
    return index


def build_vector_index(spec: VectorIndexSpec, vectors: np.ndarray) -> VectorIndex:
    """Build the index of ``spec`` over ``vectors`` ((n, dim) float32; may be a read-only memmap).

    Ids are 0..n-1 in order. IVF kinds train on a fixed-seed sample of at most 256*nlist rows and need at least
    nlist rows (ivf_pq also 2**nbits rows).
    """
    x = _as_matrix(vectors, spec.dim, f"vectors for a {spec.kind} index")
    if spec.metric == "cosine":
        x = _normalized(x)
    index = _new_index(spec)
    if spec.kind in ("ivf_pq", "ivf_sq"):
        needed = spec.params["nlist"]
        if spec.kind == "ivf_pq":
            needed = max(needed, 1 << spec.params["nbits"])
        if len(x) < needed:
            raise IndexDefinitionError(f"{spec.kind} index with {spec.params}: needs at least {needed} rows to "
                                       f"train, got {len(x)} (use a flat index, or a smaller nlist / nbits)")
    with _faiss_threads():
        if not index.is_trained:
            index.train(_training_sample(x, spec.params["nlist"]))
        if len(x):
            index.add(x)
    return VectorIndex(spec, index)


# ------------------------------------------------------------------------------------------------ search


class VectorIndex:
    """A built or loaded faiss index with its spec. Make one with :func:`build_vector_index` or
    :meth:`from_bytes`."""

    def __init__(self, spec: VectorIndexSpec, index: faiss.Index) -> None:
        self.spec = spec
        self._index = index

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def nbytes(self) -> int:
        """Approximate memory (and serialized) size in bytes."""
        index, d = self._index, self.spec.dim
        if self.spec.kind == "flat":
            return self.ntotal * d * 4
        if self.spec.kind == "hnsw":
            hnsw = index.hnsw
            return self.ntotal * d * 4 + hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + self.ntotal * 4
        codebook = index.pq.centroids.size() * 4 if self.spec.kind == "ivf_pq" else 0
        return self.ntotal * (index.code_size + 8) + index.nlist * d * 4 + codebook

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               params: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows for each query: ``(ids (m, k) int64, scores (m, k) float32)``, best first.

        Scores are higher-is-better for cosine and dot and squared L2 (lower is better) for l2; missing
        results are id -1 with score -inf (cosine, dot) or +inf (l2). ``allowed`` (a bool mask of length
        ntotal) restricts the ids faiss may return, inside the search. Because a filter hides much of what
        the search visits, a filtered search widens: hnsw ``ef = max(ef_search, 2 k / selectivity)`` capped
        at 1024, and when at most ``ef * M`` rows are allowed (about what that graph search would visit) it
        scans the allowed rows exactly instead; ivf ``nprobe * sqrt(1 / selectivity)`` capped at nlist
        (measured on 200k clustered 384-d rows at 10%: hnsw recall@10 .984 at ef 200, against .994 at ef
        1024 for seven times the latency). ``params`` as from :func:`check_search_params`; ``refine`` is
        the caller's over-fetch and is ignored here.
        """
        spec = self.spec
        x = _as_matrix(queries, spec.dim, f"queries for a {spec.kind} index")
        if not _is_int(k) or int(k) < 1:
            raise IndexDefinitionError(f"{spec.kind} index search: k must be a positive int, got {k!r}")
        k = int(k)
        chosen = check_search_params(spec.kind, params or {})
        worst = np.float32(np.inf if spec.metric == "l2" else -np.inf)
        n = self.ntotal
        count = n
        bits = None
        if allowed is not None:
            mask = np.asarray(allowed)
            if mask.dtype != np.bool_ or mask.shape != (n,):
                raise IndexDefinitionError(f"{spec.kind} index search: allowed must be a bool mask of shape "
                                           f"({n},), got {mask.dtype} {mask.shape}")
            count = int(np.count_nonzero(mask))
            if count < n:
                bits = np.packbits(mask, bitorder="little")  # referenced until the search returns
        if len(x) == 0 or count == 0:
            return np.full((len(x), k), -1, dtype=np.int64), np.full((len(x), k), worst, dtype=np.float32)
        if spec.metric == "cosine":
            x = _normalized(x)
        selector = None if bits is None else faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        index, search_params = self._index, None
        widen = n / count
        if spec.kind == "flat":
            search_params = None if selector is None else faiss.SearchParameters(sel=selector)
        elif spec.kind == "hnsw":
            ef = max(chosen.get("ef_search", spec.params["ef_search"]), k)
            if selector is not None:
                # The result list holds only allowed rows, so it needs about k / selectivity visits to fill.
                ef = max(ef, min(math.ceil(2 * k * widen), _MAX_FILTERED_EF))
                if count <= ef * spec.params["M"]:
                    index = faiss.downcast_index(self._index.storage)  # exact scan of the allowed rows
                    search_params = faiss.SearchParameters(sel=selector)
            if search_params is None:
                search_params = faiss.SearchParametersHNSW(efSearch=ef, sel=selector)
        else:
            nlist = spec.params["nlist"]
            nprobe = min(chosen.get("nprobe", spec.params["nprobe"]), nlist)
            if selector is not None:
                # The probed lists still hold selectivity * their rows of allowed ones; the filtered
                # neighbours lie a little farther out, so probe sqrt(1 / selectivity) times as many lists.
                nprobe = min(max(nprobe, math.ceil(nprobe * math.sqrt(widen))), nlist)
            search_params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
        with _faiss_threads():
            scores, ids = index.search(x, k, params=search_params)
        del bits, selector
        if spec.metric == "cosine" and _uses_l2(spec):
            scores = 1 - scores / 2  # squared L2 between unit vectors is 2 - 2 cos
        scores[ids < 0] = worst
        return ids, scores

    # ------------------------------------------------------------------------------------------ bytes

    def to_bytes(self) -> np.ndarray:
        """The faiss serialization, as a uint8 array."""
        return faiss.serialize_index(self._index)

    @classmethod
    def from_bytes(cls, spec: VectorIndexSpec, data: np.ndarray, rows: int, what: str) -> VectorIndex:
        """Load what :meth:`to_bytes` wrote, for ``spec`` over ``rows`` rows.

        Raises DataCorruptionError naming ``what`` unless the bytes are a structurally sound index of exactly
        this kind, dimension, metric, size and parameters (see the module docstring).
        """
        buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise DataCorruptionError(f"{what}: expected a 1-d uint8 buffer, got {buf.dtype} {buf.shape}")
        buf = np.ascontiguousarray(buf)
        _walk_serialized(buf, spec, int(rows), what)
        try:
            index = faiss.deserialize_index(buf)
        except (RuntimeError, MemoryError, ValueError) as e:
            raise DataCorruptionError(f"{what}: faiss could not read the {spec.kind} index: {e}") from e
        _check_loaded(index, spec, int(rows), what)
        return cls(spec, index)


# ------------------------------------------------------------------------------- serialized-form checks


def _fourcc(code: str) -> int:
    return struct.unpack("<I", code.encode("ascii"))[0]


class _Reader:
    """Walks faiss's serialized bytes; every read is checked against what is left."""

    def __init__(self, buf: np.ndarray, what: str) -> None:
        self.buf, self.what, self.pos = buf, what, 0
        self.view = memoryview(buf)

    def fail(self, message: str) -> DataCorruptionError:
        return DataCorruptionError(f"{self.what}: corrupt vector index: {message}")

    def take(self, nbytes: int, field: str) -> np.ndarray:
        if nbytes < 0 or nbytes > len(self.buf) - self.pos:
            raise self.fail(f"{field} needs {nbytes} bytes at offset {self.pos}, "
                            f"only {len(self.buf) - self.pos} left")
        out = self.buf[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return out

    def scalar(self, fmt: str, field: str) -> Any:
        size = struct.calcsize(fmt)
        self.take(size, field)
        return struct.unpack_from(fmt, self.view, self.pos - size)[0]

    def u64(self, field: str) -> int:
        return self.scalar("<Q", field)

    def i32(self, field: str) -> int:
        return self.scalar("<i", field)

    def flag(self, field: str) -> int:
        value = self.scalar("<B", field)
        if value > 1:  # a C++ bool must be 0 or 1
            raise self.fail(f"{field}: expected 0 or 1, got {value}")
        return value

    def array(self, dtype: str, count: int, field: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        if count > (len(self.buf) - self.pos) // item:
            raise self.fail(f"{field}: {count} items of {item} bytes at offset {self.pos}, "
                            f"only {len(self.buf) - self.pos} bytes left")
        return self.take(count * item, field).view(dtype)

    def vector(self, dtype: str, field: str) -> np.ndarray:
        return self.array(dtype, self.u64(f"{field} size"), field)

    def expect(self, field: str, got: Any, expected: Any) -> None:
        if got != expected:
            raise self.fail(f"{field}: expected {expected!r}, got {got!r}")


def _read_header(r: _Reader, spec: VectorIndexSpec, ntotal: int, part: str) -> None:
    r.expect(f"{part} dimension", r.i32(f"{part} d"), spec.dim)
    r.expect(f"{part} ntotal", r.scalar("<q", f"{part} ntotal"), ntotal)
    r.take(16, f"{part} header")  # two unused int64 fields
    r.expect(f"{part} is_trained", r.flag(f"{part} is_trained"), 1)
    r.expect(f"{part} metric type", r.i32(f"{part} metric"), _faiss_metric(spec))


def _read_flat(r: _Reader, spec: VectorIndexSpec, ntotal: int, part: str) -> None:
    code = "IxF2" if _uses_l2(spec) else "IxFI"
    r.expect(f"{part} index type", r.scalar("<I", f"{part} type"), _fourcc(code))
    _read_header(r, spec, ntotal, part)
    r.expect(f"{part} vector count", r.u64(f"{part} vectors size"), ntotal * spec.dim)
    r.take(ntotal * spec.dim * 4, f"{part} vectors")


def _read_hnsw(r: _Reader, spec: VectorIndexSpec, rows: int) -> None:
    _read_header(r, spec, rows, "hnsw")
    r.vector("<f8", "hnsw assign_probas")
    cum = r.vector("<i4", "hnsw cum_nneighbor_per_level").astype(np.int64)
    levels = r.vector("<i4", "hnsw levels").astype(np.int64)
    offsets = r.vector("<u8", "hnsw offsets")
    neighbors = r.vector("<i4", "hnsw neighbors")
    entry_point, max_level = r.i32("hnsw entry_point"), r.i32("hnsw max_level")
    ef_construction, ef_search = r.i32("hnsw efConstruction"), r.i32("hnsw efSearch")
    r.i32("hnsw unused field")
    _read_flat(r, spec, rows, "hnsw storage")

    if len(cum) < 2 or cum[0] != 0 or np.any(np.diff(cum) < 0):
        raise r.fail(f"hnsw cum_nneighbor_per_level is not a non-decreasing list from 0: {cum[:8].tolist()}")
    r.expect("hnsw levels size", len(levels), rows)
    r.expect("hnsw offsets size", len(offsets), rows + 1)
    if rows and (levels.min() < 1 or levels.max() > len(cum) - 1):
        raise r.fail(f"hnsw levels outside [1, {len(cum) - 1}]: {levels.min()}..{levels.max()}")
    offsets = offsets.astype(np.int64)  # a forged huge value wraps and then fails the diff test
    if offsets[0] != 0 or np.any(np.diff(offsets) != cum[levels]):
        raise r.fail("hnsw offsets do not match the levels")
    r.expect("hnsw neighbors size", len(neighbors), int(offsets[-1]))
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= rows):
        raise r.fail(f"hnsw neighbor ids outside [-1, {rows}): {neighbors.min()}..{neighbors.max()}")
    if ef_construction < 1 or ef_search < 1:
        raise r.fail(f"hnsw efConstruction {ef_construction} / efSearch {ef_search} not positive")
    if rows == 0:
        r.expect("hnsw entry_point of an empty graph", (entry_point, max_level), (-1, -1))
        return
    if not 0 <= entry_point < rows:
        raise r.fail(f"hnsw entry_point {entry_point} outside [0, {rows})")
    top = int(levels.max()) - 1
    if max_level != top or levels[entry_point] - 1 != top:
        raise r.fail(f"hnsw max_level {max_level}: the levels say {top}, "
                     f"the entry point's level is {levels[entry_point] - 1}")
    # The search walks level l through neighbors that must themselves reach level l: faiss would read
    # another node's (or no node's) neighbor slots otherwise.
    for level in range(1, top + 1):
        nodes = np.flatnonzero(levels > level)
        width = int(cum[level + 1] - cum[level])
        if width == 0 or len(nodes) == 0:
            continue
        slots = (offsets[nodes] + cum[level])[:, None] + np.arange(width)
        found = neighbors[slots.ravel()].astype(np.int64)
        found = found[found >= 0]
        if len(found) and levels[found].min() <= level:
            raise r.fail(f"hnsw level {level} links to a node that does not reach that level")


def _read_invlists(r: _Reader, nlist: int, code_size: int, rows: int) -> None:
    r.expect("inverted lists type", r.scalar("<I", "inverted lists type"), _fourcc("ilar"))
    r.expect("inverted lists nlist", r.u64("inverted lists nlist"), nlist)
    r.expect("inverted lists code_size", r.u64("inverted lists code_size"), code_size)
    layout = r.scalar("<I", "inverted lists layout")
    if layout == _fourcc("full"):
        sizes = r.vector("<u8", "inverted list sizes")
        r.expect("inverted list sizes count", len(sizes), nlist)
    elif layout == _fourcc("sprs"):
        pairs = r.vector("<u8", "inverted list sizes")
        if len(pairs) % 2:
            raise r.fail(f"sparse inverted list sizes: odd length {len(pairs)}")
        lists, counts = pairs[0::2], pairs[1::2]
        if len(lists) and (lists.max() >= nlist or np.any(np.diff(lists.astype(np.int64)) <= 0)):
            raise r.fail(f"sparse inverted list numbers not increasing within [0, {nlist})")
        sizes = np.zeros(nlist, dtype=np.uint64)
        sizes[lists.astype(np.int64)] = counts
    else:
        raise r.fail(f"inverted lists layout {layout:#x}: expected 'full' or 'sprs'")
    if len(sizes) and sizes.max() > rows:
        raise r.fail(f"an inverted list holds {int(sizes.max())} ids, more than the {rows} rows")
    r.expect("total ids in the inverted lists", int(sizes.sum()), rows)
    ids = []
    for list_no in np.flatnonzero(sizes):
        size = int(sizes[list_no])
        r.take(size * code_size, f"inverted list {list_no} codes")
        ids.append(r.array("<i8", size, f"inverted list {list_no} ids"))
    if rows:
        all_ids = np.concatenate(ids)
        if all_ids.min() < 0 or all_ids.max() >= rows:
            raise r.fail(f"inverted list ids outside [0, {rows}): {all_ids.min()}..{all_ids.max()}")
        if np.any(np.bincount(all_ids, minlength=rows) != 1):
            raise r.fail("inverted lists hold a row id twice")


def _sq_layout(qtype: str, dim: int) -> tuple[int, int]:
    """(code_size, trained floats) faiss uses for a scalar quantizer type."""
    if qtype == "SQ8":
        return dim, 2 * dim
    if qtype == "SQ4":
        return (dim + 1) // 2, 2 * dim
    return 2 * dim, 0


def _read_ivf(r: _Reader, spec: VectorIndexSpec, rows: int) -> None:
    p = spec.params
    _read_header(r, spec, rows, "ivf")
    r.expect("ivf nlist", r.u64("ivf nlist"), p["nlist"])
    r.u64("ivf nprobe")  # every search passes its own nprobe
    _read_flat(r, spec, p["nlist"], "ivf quantizer")
    r.expect("ivf direct map type", r.scalar("<B", "ivf direct map"), 0)
    r.expect("ivf direct map size", r.u64("ivf direct map size"), 0)
    if spec.kind == "ivf_pq":
        r.expect("ivf_pq by_residual", r.flag("ivf_pq by_residual"), 1)
        code_size = (p["m"] * p["nbits"] + 7) // 8
        r.expect("ivf_pq code_size", r.u64("ivf_pq code_size"), code_size)
        r.expect("pq d", r.u64("pq d"), spec.dim)
        r.expect("pq M", r.u64("pq M"), p["m"])
        r.expect("pq nbits", r.u64("pq nbits"), p["nbits"])
        r.expect("pq centroid floats", r.u64("pq centroids size"), spec.dim << p["nbits"])
        r.take((spec.dim << p["nbits"]) * 4, "pq centroids")
    else:
        code_size, trained = _sq_layout(p["qtype"], spec.dim)
        r.expect("sq qtype", r.i32("sq qtype"), int(_SQ_TYPES[p["qtype"]]))
        rangestat = r.i32("sq rangestat")
        if not 0 <= rangestat <= 3:
            raise r.fail(f"sq rangestat {rangestat} outside [0, 3]")
        r.take(4, "sq rangestat_arg")
        r.expect("sq d", r.u64("sq d"), spec.dim)
        r.expect("sq code_size", r.u64("sq code_size"), code_size)
        r.expect("sq trained floats", r.u64("sq trained size"), trained)
        r.take(trained * 4, "sq trained")
        r.expect("ivf_sq code_size", r.u64("ivf_sq code_size"), code_size)
        r.expect("ivf_sq by_residual", r.flag("ivf_sq by_residual"), 1)
    _read_invlists(r, p["nlist"], code_size, rows)


_TOP_FOURCC = {"hnsw": "IHNf", "ivf_pq": "IwPQ", "ivf_sq": "IwSq"}


def _walk_serialized(buf: np.ndarray, spec: VectorIndexSpec, rows: int, what: str) -> None:
    """Check the serialized index field by field, in faiss's order, before faiss reads it."""
    r = _Reader(buf, what)
    if spec.kind == "flat":
        _read_flat(r, spec, rows, "flat")
    else:
        r.expect(f"{spec.kind} index type", r.scalar("<I", "index type"), _fourcc(_TOP_FOURCC[spec.kind]))
        (_read_hnsw if spec.kind == "hnsw" else _read_ivf)(r, spec, rows)
    if r.pos != len(buf):
        raise r.fail(f"{len(buf) - r.pos} unexpected bytes after the index")


_FAISS_TYPES = {"flat": (faiss.IndexFlatL2, faiss.IndexFlatIP), "hnsw": (faiss.IndexHNSWFlat,),
                "ivf_pq": (faiss.IndexIVFPQ,), "ivf_sq": (faiss.IndexIVFScalarQuantizer,)}


def _check_loaded(index: faiss.Index, spec: VectorIndexSpec, rows: int, what: str) -> None:
    """The object faiss built agrees with the spec (second line of defence after the byte walk)."""
    problems = []
    if not isinstance(index, _FAISS_TYPES[spec.kind]):
        problems.append(f"type {type(index).__name__} is not a {spec.kind} index")
    elif index.d != spec.dim or index.ntotal != rows or index.metric_type != _faiss_metric(spec):
        problems.append(f"d={index.d} ntotal={index.ntotal} metric={index.metric_type}, expected "
                        f"d={spec.dim} ntotal={rows} metric={_faiss_metric(spec)}")
    elif spec.kind in ("ivf_pq", "ivf_sq"):
        ivf = faiss.extract_index_ivf(index)
        if ivf.nlist != spec.params["nlist"] or ivf.quantizer.ntotal != ivf.nlist:
            problems.append(f"nlist {ivf.nlist} with {ivf.quantizer.ntotal} centroids, "
                            f"expected {spec.params['nlist']}")
    if problems:
        raise DataCorruptionError(f"{what}: corrupt vector index: {'; '.join(problems)}")
