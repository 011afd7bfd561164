"""Manifests and records: what a version of a dataset consists of.

* ``dataset``: the format marker written once at creation.
* ``states/<id>``: an immutable snapshot: every tensor's metadata and its
  ordered list of chunks with their row counts.
* ``commits/<id>``: an immutable commit record pointing at a state.
* ``refs``: the only mutable file: each branch's head commit and working state.
  Replacing it (``Store.publish``) is the single atomic step of every write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DataCorruptionError
from . import envelope

DATASET_KEY = "dataset"
REFS_KEY = "refs"
STATE_PREFIX = "states/"
COMMIT_PREFIX = "commits/"
CHUNK_PREFIX = "chunks/"


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
        shape = d["shape"]
        return cls(
            name=str(d["name"]),
            htype=str(d["htype"]),
            dtype=d["dtype"],
            shape=None if shape is None else tuple(shape),
            compression=d["compression"],
            chunk_bytes=int(d["chunk_bytes"]),
            class_names=tuple(d.get("class_names", ())),
            dim=d.get("dim"),
        )


@dataclass(frozen=True)
class TensorState:
    """One tensor in one snapshot: its schema and the chunks holding its rows, in order."""

    meta: TensorMeta
    chunk_keys: tuple[str, ...] = ()
    chunk_rows: tuple[int, ...] = ()
    chunk_nbytes: tuple[int, ...] = ()

    @property
    def nrows(self) -> int:
        return sum(self.chunk_rows)


@dataclass(frozen=True)
class DatasetState:
    """An immutable snapshot of all tensors. Chunks are shared between snapshots."""

    tensors: dict[str, TensorState] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def chunk_keys(self) -> set[str]:
        return {k for t in self.tensors.values() for k in t.chunk_keys}


@dataclass(frozen=True)
class CommitRecord:
    """An immutable commit: a named, dated pointer to a state."""

    id: str
    parent: str | None
    branch: str
    message: str
    time: float
    state: str


@dataclass(frozen=True)
class BranchRef:
    """Where a branch stands: its last commit and its working (uncommitted) state."""

    head: str | None
    state: str


def encode_state(state: DatasetState) -> bytes:
    record = {
        "tensors": [
            {
                "meta": t.meta.to_dict(),
                "chunk_keys": list(t.chunk_keys),
                "chunk_rows": list(t.chunk_rows),
                "chunk_nbytes": list(t.chunk_nbytes),
            }
            for t in state.tensors.values()
        ],
        "info": state.info,
    }
    return envelope.pack_record(envelope.MAGIC_STATE, record)


def _corrupt(what: str, e: Exception) -> DataCorruptionError:
    return DataCorruptionError(f"{what}: manifest is malformed: {type(e).__name__}: {e}")


def decode_state(data: bytes, what: str) -> DatasetState:
    record = envelope.unpack_record(data, what, envelope.MAGIC_STATE)
    try:
        tensors = {}
        for t in record["tensors"]:
            meta = TensorMeta.from_dict(t["meta"])
            keys = tuple(str(k) for k in t["chunk_keys"])
            rows = tuple(int(r) for r in t["chunk_rows"])
            sizes = tuple(int(n) for n in t["chunk_nbytes"])
            if not len(keys) == len(rows) == len(sizes) or any(r <= 0 for r in rows):
                raise ValueError(f"tensor {meta.name!r}: chunk list, row counts and sizes disagree")
            if any(not k.startswith(CHUNK_PREFIX) or ".." in k for k in keys):
                raise ValueError(f"tensor {meta.name!r}: chunk key outside {CHUNK_PREFIX!r}")
            tensors[meta.name] = TensorState(meta, keys, rows, sizes)
        return DatasetState(tensors, dict(record.get("info", {})))
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(what, e) from e


def encode_commit(c: CommitRecord) -> bytes:
    return envelope.pack_record(envelope.MAGIC_COMMIT, c.__dict__)


def decode_commit(data: bytes, what: str) -> CommitRecord:
    record = envelope.unpack_record(data, what, envelope.MAGIC_COMMIT)
    try:
        return CommitRecord(**record)
    except TypeError as e:
        raise _corrupt(what, e) from e


def encode_refs(branches: dict[str, BranchRef]) -> bytes:
    record = {"branches": {name: {"head": b.head, "state": b.state} for name, b in branches.items()}}
    return envelope.pack_record(envelope.MAGIC_REFS, record)


def decode_refs(data: bytes, what: str) -> dict[str, BranchRef]:
    record = envelope.unpack_record(data, what, envelope.MAGIC_REFS)
    try:
        return {str(n): BranchRef(b["head"], str(b["state"])) for n, b in record["branches"].items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise _corrupt(what, e) from e


def encode_dataset_marker(created: float) -> bytes:
    return envelope.pack_record(envelope.MAGIC_DATASET, {"format": "tensordb", "created": created})


def decode_dataset_marker(data: bytes, what: str) -> dict[str, Any]:
    return envelope.unpack_record(data, what, envelope.MAGIC_DATASET)
