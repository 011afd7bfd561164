"""Index files: a kind's arrays and what the index is, in tensordb's checksummed envelope.

The file names its kind, its tensor, its parameters and how many index entries it
holds; the state that lists it records which chunks those entries came from. The
bytes of a faiss index are faiss's own serialisation, held as one buffer: nothing in
an index file is pickle or can run code.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataCorruptionError
from ..format import arrays as arrays_format
from ..format import envelope
from ..format.manifest import INDEX_PREFIX


@dataclass(frozen=True)
class IndexFile:
    """An index file's content."""

    kind: str
    tensor: str
    params: dict[str, Any]
    entries: int
    payload: dict[str, Any]  # the kind's own header fields
    arrays: dict[str, np.ndarray]


def new_index_key() -> str:
    return f"{INDEX_PREFIX}{uuid.uuid4().hex}"


def encode_index(index: IndexFile) -> envelope.Parts:
    header = {"kind": index.kind, "tensor": index.tensor, "params": index.params, "entries": index.entries,
              "payload": index.payload}
    return arrays_format.pack_arrays(envelope.MAGIC_INDEX, header, index.arrays)


def decode_index(data: bytes | memoryview, what: str) -> IndexFile:
    header, arrays = arrays_format.unpack_arrays(data, what, envelope.MAGIC_INDEX)
    try:
        entries = header["entries"]
        if type(entries) is not int or entries < 0:
            raise ValueError(f"entries is {entries!r:.40}, expected a count")
        fields = {name: header[name] for name in ("kind", "tensor")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise TypeError("kind and tensor must be names")
        params, payload = header["params"], header["payload"]
        if not isinstance(params, Mapping) or not isinstance(payload, Mapping):
            raise TypeError("params and payload must be maps")
    except (KeyError, TypeError, ValueError) as e:
        raise DataCorruptionError(f"{what}: index file is malformed: {type(e).__name__}: {e}") from e
    return IndexFile(fields["kind"], fields["tensor"], dict(params), entries, dict(payload), arrays)
