"""Manifests and records: what a version of a dataset consists of.

* ``dataset``: the format marker written once at creation.
* ``states/<id>``: an immutable snapshot: every tensor's metadata and its
  ordered list of chunk references: key, row count, file size and (from state
  format 2) the chunk's header checksum, so a chunk file copied over another is
  recognised as the wrong one.
  From state format 3 a state also lists the indexes built on its tensors
  (:class:`IndexRef`): an index belongs to the states that list it, so time travel
  finds the index of its own version.
* ``indexes/<id>``: an immutable index file (derived data, see ``tensordb.indexes``).
* ``commits/<id>``: an immutable commit record pointing at a state.
* ``refs``: the only mutable file: each branch's head commit and working state.
  Replacing it (``Store.publish``) is the single atomic step of every write.
"""

from __future__ import annotations

import datetime
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataCorruptionError
from . import codecs, envelope

DATASET_KEY = "dataset"
REFS_KEY = "refs"
STATE_PREFIX = "states/"
COMMIT_PREFIX = "commits/"
CHUNK_PREFIX = "chunks/"
INDEX_PREFIX = "indexes/"
#: Files that never change once written (each key names new content): remote stores may cache them.
IMMUTABLE_PREFIXES = (CHUNK_PREFIX, STATE_PREFIX, COMMIT_PREFIX, INDEX_PREFIX)


@dataclass(frozen=True)
class TensorMeta:
    """A tensor's schema: its htype, dtype, per-row shape and storage settings.

    ``shape`` is the per-row shape seen so far; ``None`` marks a dimension that
    varies, and ``shape`` is ``None`` when nothing is known yet or the rank varies.
    """

    name: str
    htype: str
    dtype: str | None
    shape: tuple[int | None, ...] | None
    compression: str | None
    chunk_bytes: int
    class_names: tuple[str, ...] = ()
    dim: int | None = None  # embeddings: the fixed vector length, once known

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "htype": self.htype,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
            "compression": self.compression,
            "chunk_bytes": self.chunk_bytes,
            "class_names": list(self.class_names),
            "dim": self.dim,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorMeta:
        """A schema as a state stores it; every field is checked, since sizes are computed from it."""
        shape = d["shape"]
        meta = cls(
            name=_typed(d["name"], str, "name"),
            htype=_typed(d["htype"], str, "htype"),
            dtype=_typed(d["dtype"], (str, type(None)), "dtype"),
            shape=None if shape is None else tuple(_dim(s) for s in _typed(shape, list, "shape")),
            compression=codecs.validate(d["compression"]),
            chunk_bytes=_count(d["chunk_bytes"], "chunk_bytes"),
            class_names=tuple(_typed(n, str, "class name") for n in _typed(d.get("class_names", []), list, "classes")),
            dim=None if d.get("dim") is None else _count(d["dim"], "dim"),
        )
        if meta.dtype is not None:
            numeric_dtype(meta.dtype)
        return meta

    def row_nbytes(self) -> int | None:
        """Bytes of one row when every row has the same known shape and dtype, else ``None``."""
        if self.dtype is None or self.shape is None or None in self.shape:
            return None
        return math.prod(self.shape) * numeric_dtype(self.dtype).itemsize


def numeric_dtype(spec: Any) -> np.dtype:
    """``spec`` as a plain numeric or bool numpy dtype (what chunks store); ``ValueError`` otherwise."""
    if not isinstance(spec, str):
        raise ValueError(f"dtype {spec!r:.80} is not a string")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as e:
        raise ValueError(f"dtype {spec!r:.80} is not a numpy dtype: {e}") from None
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise ValueError(f"dtype {spec!r:.80} is not a numeric or bool dtype")
    return dtype


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{what} is {type(value).__name__} {value!r:.80}")
    return value


def _count(value: Any, what: str, minimum: int = 0) -> int:
    """A non-negative integer field (bool is no integer here)."""
    if type(value) is not int or value < minimum:
        raise ValueError(f"{what} is {value!r:.80}, expected an integer >= {minimum}")
    return value


def _dim(value: Any) -> int | None:
    return None if value is None else _count(value, "a shape dimension")


@dataclass(frozen=True)
class TensorState:
    """One tensor in one snapshot: its schema and the chunks holding its rows, in order.

    ``chunk_checksums[i]`` is chunk ``i``'s header checksum, or ``None`` for a
    reference written before states recorded it (state format 1); left empty, it
    means ``None`` for every chunk.
    """

    meta: TensorMeta
    chunk_keys: tuple[str, ...] = ()
    chunk_rows: tuple[int, ...] = ()
    chunk_nbytes: tuple[int, ...] = ()
    chunk_checksums: tuple[int | None, ...] = ()

    def __post_init__(self) -> None:
        if not self.chunk_checksums and self.chunk_keys:
            object.__setattr__(self, "chunk_checksums", (None,) * len(self.chunk_keys))
        if not len(self.chunk_keys) == len(self.chunk_rows) == len(self.chunk_nbytes) == len(self.chunk_checksums):
            raise ValueError(f"tensor {self.meta.name!r}: chunk keys, row counts, sizes and checksums disagree")

    @property
    def nrows(self) -> int:
        return sum(self.chunk_rows)

    def reference(self, key: str) -> ChunkRef:
        """What this state says chunk ``key`` holds (``KeyError`` if it lists no such chunk)."""
        return self._references[key]

    @functools.cached_property
    def _references(self) -> dict[str, ChunkRef]:
        refs = zip(self.chunk_keys, self.chunk_rows, self.chunk_nbytes, self.chunk_checksums)
        return {key: ChunkRef(key, rows, nbytes, crc) for key, rows, nbytes, crc in refs}


@dataclass(frozen=True)
class ChunkRef:
    """A state's reference to one chunk: enough to recognise the file as the one it meant."""

    key: str
    nrows: int
    nbytes: int
    checksum: int | None  # the chunk's header checksum; None in states of format 1


@dataclass(frozen=True)
class IndexRef:
    """A state's reference to one index: its file, what it is, and exactly which rows it covers.

    An index covers the rows of ``tensor`` that lay in the chunks ``chunk_keys`` (with
    ``chunk_rows`` rows each) when it was built; index entry ``i`` is the ``i``-th row of
    those chunks, in order. Chunks are immutable, so a later state still holding one of
    them still holds those rows; a row in any other chunk is *fresh* (not in the index).
    """

    name: str
    tensor: str
    kind: str
    key: str  # the index file, under INDEX_PREFIX
    nbytes: int
    checksum: int  # the index file's header checksum: names its content
    params: dict[str, Any]  # JSON-like: what the index was built with (metric, paths, ...)
    chunk_keys: tuple[str, ...]
    chunk_rows: tuple[int, ...]

    @property
    def nrows(self) -> int:
        return sum(self.chunk_rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "tensor": self.tensor, "kind": self.kind, "key": self.key, "nbytes": self.nbytes,
            "checksum": self.checksum, "params": self.params, "chunk_keys": list(self.chunk_keys),
            "chunk_rows": list(self.chunk_rows),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexRef:
        name = _typed(d["name"], str, "an index name")
        where = f"index {name!r}"
        keys = tuple(_typed(k, str, f"{where}: a chunk key") for k in _typed(d["chunk_keys"], list, "chunk_keys"))
        rows = tuple(_count(r, f"{where}: a chunk row count", 1) for r in _typed(d["chunk_rows"], list, "chunk_rows"))
        key = _typed(d["key"], str, f"{where}: file key")
        if len(keys) != len(rows):
            raise ValueError(f"{where}: chunk list and row counts disagree")
        if not key.startswith(INDEX_PREFIX) or ".." in key or any(not k.startswith(CHUNK_PREFIX) for k in keys):
            raise ValueError(f"{where}: file or chunk key outside the dataset's folders")
        return cls(
            name=name,
            tensor=_typed(d["tensor"], str, f"{where}: tensor"),
            kind=_typed(d["kind"], str, f"{where}: kind"),
            key=key,
            nbytes=_count(d["nbytes"], f"{where}: size"),
            checksum=_count(d["checksum"], f"{where}: checksum"),
            params=dict(_typed(d["params"], dict, f"{where}: params")),
            chunk_keys=keys,
            chunk_rows=rows,
        )


@dataclass(frozen=True)
class DatasetState:
    """An immutable snapshot of all tensors and their indexes. Chunks are shared between snapshots."""

    tensors: dict[str, TensorState] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    indexes: dict[str, IndexRef] = field(default_factory=dict)

    def chunk_keys(self) -> set[str]:
        return {k for t in self.tensors.values() for k in t.chunk_keys}

    def file_keys(self) -> set[str]:
        """Every immutable file this snapshot uses: its chunks and its index files."""
        return self.chunk_keys() | {ref.key for ref in self.indexes.values()}

    @property
    def nrows(self) -> int:
        """The rows every tensor has: the dataset's length (tensors may differ while being filled)."""
        return min((t.nrows for t in self.tensors.values()), default=0)

    def with_tensors(self, tensors: dict[str, TensorState]) -> DatasetState:
        """This snapshot with other tensors; indexes of tensors that are gone go with them."""
        indexes = {name: ref for name, ref in self.indexes.items() if ref.tensor in tensors}
        return DatasetState(tensors, self.info, indexes)

    def with_indexes(self, indexes: dict[str, IndexRef]) -> DatasetState:
        return DatasetState(self.tensors, self.info, indexes)


@dataclass(frozen=True)
class CommitRecord:
    """An immutable commit: a named, dated pointer to a state."""

    id: str
    parent: str | None
    branch: str
    message: str
    time: float
    state: str


#: How many of a branch's last installed snapshots ``refs`` remembers (see ``BranchRef.recent``).
RECENT_STATES = 32


@dataclass(frozen=True)
class BranchRef:
    """Where a branch stands: its last commit and its working (uncommitted) state.

    ``recent`` lists the snapshots last installed on the branch, newest first. A writer whose
    swap of ``refs`` landed but whose answer was lost finds its snapshot there, and so never
    applies its write twice. It is an optional field that readers of 0.4.0 ignore.
    """

    head: str | None
    state: str
    recent: tuple[str, ...] = field(default=(), compare=False)

    def installing(self, head: str | None, state: str) -> BranchRef:
        """The ref after installing ``state`` (at commit ``head``), remembering it among the recent ones."""
        recent = self.recent if self.recent[:1] == (state,) else (state, *self.recent)[:RECENT_STATES]
        return BranchRef(head, state, recent)


def encode_state(state: DatasetState) -> bytes:
    record = {
        "tensors": [
            {
                "meta": t.meta.to_dict(),
                "chunk_keys": list(t.chunk_keys),
                "chunk_rows": list(t.chunk_rows),
                "chunk_nbytes": list(t.chunk_nbytes),
                "chunk_checksums": list(t.chunk_checksums),
            }
            for t in state.tensors.values()
        ],
        "info": state.info,
        "indexes": [ref.to_dict() for ref in state.indexes.values()],
    }
    return envelope.pack_record(envelope.MAGIC_STATE, record)


def _corrupt(what: str, e: Exception) -> DataCorruptionError:
    return DataCorruptionError(f"{what}: manifest is malformed: {type(e).__name__}: {e}")


def decode_state(data: bytes, what: str) -> DatasetState:
    record, version = envelope.unpack_versioned_record(data, what, envelope.MAGIC_STATE)
    try:
        tensors = {}
        for t in _typed(record["tensors"], list, "tensors"):
            state = _tensor_state(_typed(t, dict, "a tensor entry"), with_checksums=version >= 2)
            if state.meta.name in tensors:
                raise ValueError(f"tensor {state.meta.name!r} is listed twice")
            tensors[state.meta.name] = state
        indexes = _index_refs(record, tensors) if version >= 3 else {}
        return DatasetState(tensors, dict(_typed(record.get("info", {}), dict, "info")), indexes)
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(what, e) from e


def _index_refs(record: dict[str, Any], tensors: dict[str, TensorState]) -> dict[str, IndexRef]:
    indexes: dict[str, IndexRef] = {}
    for entry in _typed(record["indexes"], list, "indexes"):
        ref = IndexRef.from_dict(_typed(entry, dict, "an index entry"))
        if ref.name in indexes:
            raise ValueError(f"index {ref.name!r} is listed twice")
        if ref.tensor not in tensors:
            raise ValueError(f"index {ref.name!r} is on tensor {ref.tensor!r}, which the state does not hold")
        _check_covered_rows(ref, tensors[ref.tensor])
        indexes[ref.name] = ref
    return indexes


def _check_covered_rows(ref: IndexRef, t: TensorState) -> None:
    """A chunk the index covers and the tensor still lists holds the same rows for both (chunks never change)."""
    rows_of = dict(zip(t.chunk_keys, t.chunk_rows))
    if len(set(ref.chunk_keys)) != len(ref.chunk_keys):
        raise ValueError(f"index {ref.name!r} lists a chunk twice")
    for key, rows in zip(ref.chunk_keys, ref.chunk_rows):
        if key in rows_of and rows_of[key] != rows:
            raise ValueError(f"index {ref.name!r} says chunk {key!r} holds {rows} rows; the tensor says {rows_of[key]}")


def _tensor_state(t: dict[str, Any], with_checksums: bool) -> TensorState:
    meta = TensorMeta.from_dict(_typed(t["meta"], dict, "meta"))
    where = f"tensor {meta.name!r}"
    keys = tuple(_typed(k, str, f"{where}: a chunk key") for k in _typed(t["chunk_keys"], list, "chunk_keys"))
    rows = tuple(_count(r, f"{where}: a chunk row count", 1) for r in _typed(t["chunk_rows"], list, "chunk_rows"))
    sizes = tuple(_count(n, f"{where}: a chunk size") for n in _typed(t["chunk_nbytes"], list, "chunk_nbytes"))
    crcs: tuple[int | None, ...] = (None,) * len(keys)
    if with_checksums:
        crcs = tuple(None if c is None else _count(c, f"{where}: a chunk checksum")
                     for c in _typed(t["chunk_checksums"], list, "chunk_checksums"))
    if not len(keys) == len(rows) == len(sizes) == len(crcs):
        raise ValueError(f"{where}: chunk list, row counts, sizes and checksums disagree")
    if any(not k.startswith(CHUNK_PREFIX) or ".." in k for k in keys):
        raise ValueError(f"{where}: chunk key outside {CHUNK_PREFIX!r}")
    _check_rows_fit(meta, keys, rows, sizes)
    return TensorState(meta, keys, rows, sizes, crcs)


def _check_rows_fit(meta: TensorMeta, keys: tuple[str, ...], rows: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    """Each chunk's declared rows must fit in its declared size, so no read sizes a buffer from a forged count.

    Rows of a known shape take their bytes; any other row takes at least a byte (a
    ragged shape entry or blob offset takes 8), except zero-size rows, of which a
    chunk holds at most its target size. A compressed chunk expands at most
    ``envelope.MAX_EXPANSION`` times.
    """
    row_nbytes = meta.row_nbytes()
    expansion = 1 if meta.compression is None else envelope.MAX_EXPANSION
    for key, nrows, nbytes in zip(keys, rows, sizes):
        capacity = nbytes * expansion
        if row_nbytes:
            fits = nrows * row_nbytes <= capacity
        else:
            fits = nrows <= max(capacity, meta.chunk_bytes if row_nbytes == 0 else 0)
        if not fits:
            raise ValueError(f"tensor {meta.name!r}, chunk {key!r}: {nrows} rows cannot fit in {nbytes} bytes")


def encode_commit(c: CommitRecord) -> bytes:
    return envelope.pack_record(envelope.MAGIC_COMMIT, c.__dict__)


_MAX_TIME = datetime.datetime.max.replace(tzinfo=datetime.timezone.utc).timestamp() - 86400


def decode_commit(data: bytes, what: str) -> CommitRecord:
    record = envelope.unpack_record(data, what, envelope.MAGIC_COMMIT)
    try:
        commit = CommitRecord(**record)
        for name in ("id", "branch", "message", "state"):
            _typed(getattr(commit, name), str, name)
        _typed(commit.parent, (str, type(None)), "parent")
        if type(commit.time) not in (int, float) or not 0 <= commit.time <= _MAX_TIME:
            raise ValueError(f"time {commit.time!r:.80} is not a date")
        return commit
    except (TypeError, ValueError) as e:
        raise _corrupt(what, e) from e


def encode_refs(branches: dict[str, BranchRef]) -> bytes:
    record = {
        "branches": {
            name: {"head": b.head, "state": b.state, **({"recent": list(b.recent)} if b.recent else {})}
            for name, b in branches.items()
        }
    }
    return envelope.pack_record(envelope.MAGIC_REFS, record)


def decode_refs(data: bytes, what: str) -> dict[str, BranchRef]:
    record = envelope.unpack_record(data, what, envelope.MAGIC_REFS)
    try:
        refs = {}
        for name, b in _typed(record["branches"], dict, "branches").items():
            _typed(name, str, "a branch name")
            _typed(b, dict, f"branch {name!r}")
            head = _typed(b["head"], (str, type(None)), f"branch {name!r}: head")
            recent = _typed(b.get("recent", []), list, f"branch {name!r}: recent")
            for key in recent:
                _typed(key, str, f"branch {name!r}: a recent snapshot")
            refs[name] = BranchRef(head, _typed(b["state"], str, f"branch {name!r}: state"),
                                   tuple(recent[:RECENT_STATES]))
        return refs
    except (KeyError, TypeError, AttributeError) as e:
        raise _corrupt(what, e) from e


def encode_dataset_marker(created: float) -> bytes:
    return envelope.pack_record(envelope.MAGIC_DATASET, {"format": "tensordb", "created": created})


def decode_dataset_marker(data: bytes, what: str) -> dict[str, Any]:
    record = envelope.unpack_record(data, what, envelope.MAGIC_DATASET)
    created = record.get("created")
    if record.get("format") != "tensordb" or type(created) not in (int, float) or not math.isfinite(created):
        raise DataCorruptionError(f"{what}: not a tensordb dataset marker: {record!r:.200}")
    return record
