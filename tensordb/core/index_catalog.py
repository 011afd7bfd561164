"""A dataset's indexes: defining, building, loading and describing them.

An index is derived data: built from one snapshot of one tensor, written as an
immutable, checksummed file, and listed (with the chunks it covers) by the states
that use it. Publishing the state that lists it is the one atomic step of a build,
so a build that dies leaves the dataset as it was (and an orphan file vacuum removes).
Loaded indexes are cached per process, keyed by their file: a file never changes.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from query_lang.cache import BoundedCache

from ..errors import DataCorruptionError, IndexDefinitionError, IndexExistsError, MissingExtraError, StorageError
from ..format import envelope
from ..format.manifest import IndexRef, TensorState
from ..indexes import (
    Bm25Index,
    Coverage,
    IndexFile,
    KeyIndex,
    bm25_params,
    build_key_column,
    check_kind,
    check_scalar,
    decode_index,
    encode_index,
    family,
    json_paths,
    metric_name,
    new_index_key,
    value_at,
    vector_dim,
)
from ..storage import Store
from .chunk_io import ChunkReader, read_all_fixed, read_rows

INDEX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,127}")
#: Bytes of loaded indexes kept per process (``TENSORDB_INDEX_CACHE_BYTES``); an index larger than this is
#: loaded for every query that uses it, so keep it above your largest index.
INDEX_CACHE_BYTES = int(os.environ.get("TENSORDB_INDEX_CACHE_BYTES", 16 << 30))
LOADED: BoundedCache[tuple[str, str], Any] = BoundedCache(INDEX_CACHE_BYTES, max_entries=64)
#: Index-entry to row mappings, per index file and tensor content (small: a few arrays per chunk).
COVERAGES: BoundedCache[tuple[str, tuple[str, ...]], Coverage] = BoundedCache(sys.maxsize, max_entries=256)
#: Stands in the cache for an index file that failed to load, so a query does not retry it every time.
_BROKEN = object()


def vector_module() -> Any:
    """:mod:`tensordb.indexes.vector`, which needs faiss (the ``faiss`` extra)."""
    try:
        from ..indexes import vector
    except ImportError as e:
        raise MissingExtraError(
            "vector indexes need faiss-cpu, which is not installed: pip install 'tensordb[faiss]'"
        ) from e
    return vector


def check_name(name: Any, taken: Mapping[str, IndexRef]) -> str:
    """A valid, unused index name (names are unique per dataset)."""
    if not isinstance(name, str) or not INDEX_NAME.fullmatch(name):
        raise IndexDefinitionError(
            f"invalid index name {name!r}: expected a letter or '_' then letters, digits, '_' or '-'"
        )
    if name in taken:
        raise IndexExistsError(
            f"an index named {name!r} already exists (on tensor {taken[name].tensor!r}); "
            f"drop it, rebuild it, or choose another name"
        )
    return name


class IndexFamily(Protocol):
    """What the catalog needs of one family of index kinds (vector, key, text)."""

    def define(self, t: TensorState, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters to store, checked and completed; ``IndexDefinitionError`` for anything wrong."""
        ...

    def build(self, reader: ChunkReader, t: TensorState, kind: str, params: dict[str, Any]) -> IndexFile:
        """The index file over every row of ``t``."""
        ...

    def load(self, ref: IndexRef, file: IndexFile, what: str) -> Any:
        """The searchable index a checked file holds; ``DataCorruptionError`` naming ``what`` if it is unsound."""
        ...


class VectorFamily:
    """flat, hnsw, ivf_pq, ivf_sq: faiss indexes of an embedding tensor."""

    def define(self, t: TensorState, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        meta, rest = t.meta, dict(params)
        metric = metric_name(rest.pop("metric", "cosine"), meta.name)
        dim = vector_dim(meta.name, meta.htype, meta.dtype, meta.shape, meta.dim)
        spec = vector_module().vector_spec(kind, metric, dim, rest, t.nrows)
        return {"metric": metric, "dim": dim, **spec.params}

    def build(self, reader: ChunkReader, t: TensorState, kind: str, params: dict[str, Any]) -> IndexFile:
        vectors = read_all_fixed(reader, t) if t.nrows else np.empty((0, params["dim"]), dtype=np.float32)
        vectors = np.ascontiguousarray(vectors.reshape(len(vectors), -1), dtype=np.float32)
        index = vector_module().build_vector_index(self._spec(kind, params), vectors)
        return IndexFile(kind, t.meta.name, params, t.nrows, {}, {"faiss": index.to_bytes()})

    def load(self, ref: IndexRef, file: IndexFile, what: str) -> Any:
        data = file.arrays.get("faiss")
        if data is None:
            raise DataCorruptionError(f"{what}: the index file holds no faiss index (arrays {sorted(file.arrays)})")
        return vector_module().VectorIndex.from_bytes(self._spec(ref.kind, ref.params), data, ref.nrows, what)

    @staticmethod
    def _spec(kind: str, params: Mapping[str, Any]) -> Any:
        build_params = {k: v for k, v in params.items() if k not in ("metric", "dim")}
        return vector_module().VectorIndexSpec(kind, params["metric"], params["dim"], build_params)


class KeyFamily:
    """json (paths in a json tensor) and scalar (a numeric, label or text tensor): distinct values and codes."""

    def define(self, t: TensorState, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "json":
            return {"paths": json_paths(t.meta.name, t.meta.htype, params)}
        check_scalar(t.meta.name, t.meta.htype, t.meta.shape, params)
        return {}

    def build(self, reader: ChunkReader, t: TensorState, kind: str, params: dict[str, Any]) -> IndexFile:
        paths = [tuple(p) for p in params["paths"]] if kind == "json" else [()]
        per_path: dict[tuple[str, ...], list[Any]] = {p: [] for p in paths}
        numeric: list[np.ndarray] = []
        for key, rows in zip(t.chunk_keys, t.chunk_rows):
            values = reader.chunk(t, key).take(np.arange(rows))
            if isinstance(values, np.ndarray):
                numeric.append(values.reshape(rows))
                continue
            for path in paths:
                per_path[path].extend(value_at(v, path) for v in values)  # the empty path: the value itself
        if numeric and len(numeric) == len(t.chunk_keys):
            columns = [build_key_column((), np.concatenate(numeric))]
        else:
            columns = [build_key_column(path, values) for path, values in per_path.items()]
        payload, arrays = KeyIndex(columns).to_arrays()
        return IndexFile(kind, t.meta.name, params, t.nrows, payload, arrays)

    def load(self, ref: IndexRef, file: IndexFile, what: str) -> Any:
        return KeyIndex.from_arrays(file.payload, file.arrays, ref.nrows, what)


class TextFamily:
    """bm25: a full-text index of a text tensor."""

    def define(self, t: TensorState, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return bm25_params(t.meta.name, t.meta.htype, params)

    def build(self, reader: ChunkReader, t: TensorState, kind: str, params: dict[str, Any]) -> IndexFile:
        texts = read_rows(reader, t, np.arange(t.nrows, dtype=np.int64))
        payload, arrays = Bm25Index.build(params, texts).to_arrays()
        return IndexFile(kind, t.meta.name, params, t.nrows, payload, arrays)

    def load(self, ref: IndexRef, file: IndexFile, what: str) -> Any:
        return Bm25Index.from_arrays(ref.params, file.payload, file.arrays, ref.nrows, what)


#: Each family of index kinds (``tensordb.indexes.family`` names a kind's family).
FAMILIES: dict[str, IndexFamily] = {"vector": VectorFamily(), "key": KeyFamily(), "text": TextFamily()}


def define(t: TensorState, kind: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters an index of ``kind`` on ``t`` is stored with, checked and completed; nothing is built."""
    kind = check_kind(kind, t.meta.name)
    return FAMILIES[family(kind)].define(t, kind, params)


def build(store: Store, reader: ChunkReader, t: TensorState, name: str, kind: str,
          params: dict[str, Any]) -> IndexRef:
    """Build an index over every row of ``t`` and write its file; the caller publishes the returned reference."""
    file = FAMILIES[family(kind)].build(reader, t, kind, params)
    key = new_index_key()
    parts = encode_index(file)
    store.put(key, parts)
    return IndexRef(name, t.meta.name, kind, key, envelope.parts_nbytes(parts), envelope.header_checksum(parts[0]),
                    params, t.chunk_keys, t.chunk_rows)


def load(store: Store, ref: IndexRef) -> Any | None:
    """The loaded index of ``ref`` (a faiss ``VectorIndex``, a ``KeyIndex`` or a ``Bm25Index``), or None, with a
    warning, so the query scans exactly instead. A damaged file stays refused for the process (``verify`` reports
    it); a file that could not be read (an I/O error) is tried again by the next query."""
    cache_key = (store.url, ref.key)
    found = LOADED.get(cache_key)
    if found is not None:
        return None if found is _BROKEN else found
    try:
        found = open_index(store, ref)
    except DataCorruptionError as e:
        _warn(ref, f"{e}. Rebuild it with ds.{ref.tensor}.rebuild_index({ref.name!r})")
        LOADED.put(cache_key, _BROKEN, 0)
        return None
    except StorageError as e:
        _warn(ref, f"its file could not be read ({e}); the next query tries again")
        return None
    LOADED.put(cache_key, found, ref.nbytes)
    return found


def _warn(ref: IndexRef, why: str) -> None:
    # Vector and key indexes only speed a query up; a bm25 index is what bm25_similarity ranks with.
    then = "bm25_similarity cannot rank without it" if family(ref.kind) == "text" else "The query scans exactly instead"
    warnings.warn(f"index {ref.name!r} on tensor {ref.tensor!r} is not used: {why}. {then}", RuntimeWarning,
                  stacklevel=3)


def read_file(store: Store, ref: IndexRef) -> IndexFile:
    """The index file of ``ref``, checked whole and against what the state says it is."""
    what = f"{store.url}/{ref.key} (index {ref.name!r})"
    data = store.map(ref.key)
    if len(data) != ref.nbytes or envelope.header_checksum(data[: envelope.PREFIX.size]) != ref.checksum:
        raise DataCorruptionError(f"{what}: the file is not the one the state names (size or checksum differ)")
    file = decode_index(data, what)
    if (file.kind, file.tensor, file.entries) != (ref.kind, ref.tensor, ref.nrows):
        raise DataCorruptionError(
            f"{what}: the file holds a {file.kind} index of {file.entries} rows of {file.tensor!r}, "
            f"the state names a {ref.kind} index of {ref.nrows} rows of {ref.tensor!r}"
        )
    return file


def open_index(store: Store, ref: IndexRef) -> Any:
    """Read, check and load the index of ``ref``, uncached (``verify`` checks every index this way)."""
    file = read_file(store, ref)
    return FAMILIES[family(ref.kind)].load(ref, file, f"{store.url}/{ref.key} (index {ref.name!r})")


def coverage(ref: IndexRef, t: TensorState) -> Coverage:
    """How ``ref``'s entries map onto ``t``'s rows now (cached per index file and tensor content)."""
    return COVERAGES.get_or_compute(
        (ref.key, t.chunk_keys), lambda: Coverage(ref.chunk_keys, ref.chunk_rows, t.chunk_keys, t.chunk_rows), 1
    )


def describe(ref: IndexRef, t: TensorState) -> dict[str, Any]:
    """What ``indexes`` reports of one index."""
    cover = coverage(ref, t)
    params = dict(ref.params)
    metric = params.pop("metric", None)
    if isinstance(params.get("stop_words"), list):  # the words themselves are in the file's parameters
        params["stop_words"] = f"{len(params['stop_words'])} words"
    out: dict[str, Any] = {"kind": ref.kind}
    if metric is not None:
        out["metric"] = metric
    out.update({"rows": cover.entries - cover.deleted, "fresh_rows": len(cover.fresh), "deleted_rows": cover.deleted,
                "params": params, "nbytes": ref.nbytes})
    return out
